"""A scripted backend for tests: it returns outputs given in advance, and records requests.

Not a model. Use it to drive agents, the runner and JOSH with turns known exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Union

from .base import Backend, GenerationOutput, GenerationRequest, ToolCallOutput

ScriptItem = Union[str, GenerationOutput, Callable[[GenerationRequest], "ScriptItem"]]


def tool_call(name: str, arguments: object = None, id: str | None = None) -> ToolCallOutput:
    """Shorthand for a scripted tool call."""
    return ToolCallOutput(name=name, arguments={} if arguments is None else arguments, id=id)


class ScriptedBackend(Backend):
    """Answers requests from a script.

    ``script`` is either a list consumed in order across all calls (one item per request),
    or a callable ``f(request) -> item``. An item is a string (plain text reply), a
    :class:`GenerationOutput`, or a callable of the request returning one of those.
    """

    name = "scripted"

    def __init__(self, script: Iterable[ScriptItem] | Callable[[GenerationRequest], ScriptItem]):
        self._fn = script if callable(script) else None
        self._queue = [] if callable(script) else list(script)
        self.requests: list[GenerationRequest] = []
        self.batch_sizes: list[int] = []

    def _next(self, request: GenerationRequest) -> GenerationOutput:
        if self._fn is not None:
            item: ScriptItem = self._fn(request)
        elif self._queue:
            item = self._queue.pop(0)
        else:
            return GenerationOutput(text="", error="scripted backend: script exhausted")
        while callable(item):
            item = item(request)
        if isinstance(item, GenerationOutput):
            return item
        return GenerationOutput(text=str(item), raw=str(item))

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        self.batch_sizes.append(len(requests))
        self.requests.extend(requests)
        return [self._next(r) for r in requests]
