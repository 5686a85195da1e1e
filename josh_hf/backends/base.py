"""The one small interface every model backend implements.

"Generate these N chat contexts, with these tools and sampling settings, return N outputs."
Messages use the chat format of ``transformers`` chat templates / the OpenAI API:

* ``{"role": "system"|"user"|"assistant", "content": str}``
* an assistant message may carry ``"tool_calls": [{"type": "function", "id": str,
  "function": {"name": str, "arguments": dict}}]`` (arguments as a dict, as chat templates
  expect; the OpenAI backend serialises them to a JSON string on the wire);
* tool results: ``{"role": "tool", "tool_call_id": str, "name": str, "content": str}``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings. ``temperature == 0`` means greedy; ``seed`` makes sampling repeatable
    per request (JOSH gives every branch its own seed so siblings can differ)."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def with_seed(self, seed: int | None) -> SamplingParams:
        return replace(self, seed=seed)


@dataclass
class GenerationRequest:
    """One chat context to continue with an assistant message."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)


@dataclass
class ToolCallOutput:
    """A tool call the model emitted. ``arguments`` is the parsed dict when it parsed, else the
    raw text (so the agent loop can answer with an error instead of crashing)."""

    name: str
    arguments: Any
    id: str | None = None


@dataclass
class GenerationOutput:
    """What a backend returns for one request."""

    text: str
    """The assistant's visible content (tool-call markup removed when the backend parsed it)."""
    tool_calls: list[ToolCallOutput] = field(default_factory=list)
    raw: str = ""
    """The raw generated text, before any parsing."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None
    """Set when generation failed for this request (the others still return)."""


class Backend(abc.ABC):
    """A model that continues chat contexts. Implementations batch internally."""

    name: str = "backend"

    @abc.abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        """Continue every request; the i-th output answers the i-th request."""

    def close(self) -> None:
        """Release resources (HTTP sessions, GPU memory)."""
