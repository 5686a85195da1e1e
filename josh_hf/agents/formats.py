"""How an agent talks to the model: prompt, request, parsing, and writing steps back.

An :class:`AgentFormat` turns the agent's context into a :class:`GenerationRequest`, turns
the model's output into an :class:`AgentStep` (tool calls and/or speech, or a format error),
and writes that step, with the tool results, back into the context. Two formats exist:

* ``native`` (:mod:`.native`): the model's own chat template with ``tools=``;
* ``react`` (:mod:`.react`): the reference's ``PLAN`` / ``APICALL`` / ``SPEAK`` text protocol.

Nothing here executes tools or raises on bad model output: malformed output becomes a
:class:`StepError` that the agent loop (:mod:`.turn`) records and answers.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import GenerationOutput, GenerationRequest, SamplingParams

Message = dict[str, Any]

# Error kinds recorded in a transcript's ``errors`` list.
BAD_JSON = "bad_json"
"""A tool call whose parameters are not parseable JSON (not sent to the environment)."""
BAD_CALL = "bad_call"
"""A tool call that parsed but is not a ``{"name": ..., "parameters": ...}`` object (not sent)."""
INVALID_CALL = "invalid_call"
"""The environment refused a call (unknown tool, parameter not allowed, list/dict value, ...)."""
NO_COMMAND = "no_command"
"""A generation with nothing to act on (no command / empty output / a plan without an action)."""
OUT_OF_GENERATIONS = "out_of_generations"
"""The turn used all its generations without speaking to the user."""
BACKEND_ERROR = "backend_error"
"""The backend failed for this conversation; the conversation ends."""
USER_ERROR = "user_error"
"""The user simulator failed for this conversation; the conversation ends."""
EXCEPTION = "exception"
"""Any other exception while advancing this conversation; the conversation ends."""

FORMAT_ERRORS = frozenset({BAD_JSON, BAD_CALL, NO_COMMAND})
FATAL_ERRORS = frozenset({BACKEND_ERROR, USER_ERROR, EXCEPTION})


@dataclass(frozen=True)
class StepError:
    """A problem with the model's output or the conversation, with its kind (constants above)."""

    kind: str
    message: str


@dataclass
class ParsedCall:
    """One tool call the model asked for.

    ``error`` is set when the call could not be parsed into something executable (the call is
    then answered with ``error.message`` and never reaches the environment).
    """

    name: Any
    arguments: Any
    id: str | None = None
    raw: str = ""
    """React: the command's text as the model wrote it (kept verbatim in the context)."""
    plan: str | None = None
    """React: the PLAN text written right before this call."""
    error: StepError | None = None


@dataclass
class AgentStep:
    """What one generation asks for: tool calls, then possibly speech that ends the turn."""

    calls: list[ParsedCall] = field(default_factory=list)
    speech: str | None = None
    """Text for the user; not None means the turn ends after the calls are executed."""
    plan: str | None = None
    """React: the PLAN text before the speech (or a trailing plan with no action)."""
    content: str = ""
    """Native: the assistant's visible content alongside its tool calls."""
    raw: str = ""
    error: StepError | None = None
    """Set when the generation as a whole gave nothing to act on."""

    @property
    def speaks(self) -> bool:
        return self.speech is not None


def tools_json(tools: Sequence[dict[str, Any]]) -> str:
    """The tool schemas as indented JSON, for prompts that list them in text."""
    return json.dumps(list(tools), indent=2, ensure_ascii=False)


def result_text(result: Any) -> str:
    """A tool result as the text the model reads (JSON, as the reference sends it)."""
    return json.dumps(result, ensure_ascii=False)


class AgentFormat(abc.ABC):
    """Prompting and parsing conventions of one agent format."""

    name: str = "format"

    @abc.abstractmethod
    def system_prompt(self, tools: Sequence[dict[str, Any]]) -> str:
        """The default system prompt for an agent with these tools."""

    @abc.abstractmethod
    def request(
        self, context: Sequence[Message], tools: Sequence[dict[str, Any]], sampling: SamplingParams
    ) -> GenerationRequest:
        """The backend request that continues ``context`` (the list is copied)."""

    @abc.abstractmethod
    def parse(self, output: GenerationOutput) -> AgentStep:
        """The step the model asked for. Never raises on malformed output."""

    @abc.abstractmethod
    def tool_result_messages(self, call: ParsedCall, result: Any) -> list[Message]:
        """The messages that hand ``result`` (an env result or error string) back for ``call``."""

    @abc.abstractmethod
    def step_messages(self, step: AgentStep, results: Sequence[Any]) -> list[Message]:
        """The messages that write ``step`` and its call ``results`` (aligned with
        ``step.calls``) into the agent's context, in the order the model should read them."""

    @abc.abstractmethod
    def speech_message(self, text: str) -> Message:
        """An assistant message saying ``text`` to the user in this format (used when the
        turn ends without the model speaking)."""

    def render_system_prompt(self, tools: Sequence[dict[str, Any]], override: str | None = None) -> str:
        """``override`` (with ``{tools}`` replaced by the tool schemas as JSON) or the default."""
        if override is None:
            return self.system_prompt(tools)
        # str.replace, not str.format: prompts often contain JSON braces.
        return override.replace("{tools}", tools_json(tools))


AGENT_FORMATS: tuple[str, ...] = ("native", "react")


def get_format(name: str | AgentFormat) -> AgentFormat:
    """The format called ``name`` (``"native"`` or ``"react"``); an instance passes through."""
    if isinstance(name, AgentFormat):
        return name
    # Imported here: the format modules import this one.
    if name == "native":
        from .native import NativeFormat

        return NativeFormat()
    if name == "react":
        from .react import ReactFormat

        return ReactFormat()
    raise ValueError(f"unknown agent format {name!r}; choose one of {', '.join(AGENT_FORMATS)}")
