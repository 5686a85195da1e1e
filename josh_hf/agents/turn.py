"""Agent turns for many conversations at once.

An agent turn answers one user message: the model may call tools (several per generation)
over up to ``max_generations`` generations, and the turn ends when it speaks. Every round of
:func:`run_agent_turns` sends the contexts of all conversations still in their turn to the
backend in ONE ``generate`` call, so a batched backend sees the whole batch.

Nothing a model outputs raises: format errors and refused calls are answered in the context
and recorded in ``AgentState.errors``. Only a backend failure or an unexpected exception for
one conversation marks that conversation's turn as ``failed`` (the others go on).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..backends.base import Backend, GenerationOutput, SamplingParams
from ..toolwoz.env import ToolWOZEnv
from ..toolwoz.scoring import RecordedCall
from ..toolwoz.tools import ERROR_STRINGS
from .formats import (
    BACKEND_ERROR,
    EXCEPTION,
    INVALID_CALL,
    OUT_OF_GENERATIONS,
    AgentFormat,
    Message,
)

OUT_OF_GENERATIONS_TEXT = "Error: the agent ran out of generations for this turn."
"""What the user is shown when a turn ends without the agent speaking (the reference shows
its own error text there too, so the conversation can go on)."""


def stable_seed(*parts: Any) -> int:
    """A seed in ``[0, 2**31)`` from ``parts``, the same in every process (unlike ``hash``)."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (2**31)


@dataclass
class AgentCounters:
    """Running totals of one conversation's agent."""

    agent_turns: int = 0
    generations: int = 0
    tool_calls: int = 0
    """Calls the model asked for, including those that never reached the environment."""
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class AgentState:
    """One conversation as the agent sees it. ``copy()`` is cheap (JOSH branches it): lists are
    copied shallowly (messages are never mutated once appended) and the env is copied.

    ``sampling``, when set, overrides the sampling passed to :func:`run_agent_turns` (JOSH
    gives every branch its own seed).
    """

    context: list[Message]
    env: ToolWOZEnv
    visible: list[Message] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """Calls that reached the environment: ``{"name", "arguments", "result"}`` (agent-visible)."""
    errors: list[dict[str, Any]] = field(default_factory=list)
    counters: AgentCounters = field(default_factory=AgentCounters)
    sampling: SamplingParams | None = None

    @classmethod
    def start(
        cls,
        env: ToolWOZEnv,
        fmt: AgentFormat,
        system_prompt: str | None = None,
        sampling: SamplingParams | None = None,
    ) -> AgentState:
        """A fresh agent for ``env``: the context holds only the system prompt.
        ``system_prompt`` overrides the format's (``{tools}`` in it becomes the tool JSON)."""
        prompt = fmt.render_system_prompt(env.tools, system_prompt)
        return cls(context=[{"role": "system", "content": prompt}], env=env, sampling=sampling)

    def copy(self) -> AgentState:
        return AgentState(
            context=list(self.context),
            env=self.env.copy(),
            visible=list(self.visible),
            tool_calls=list(self.tool_calls),
            errors=list(self.errors),
            counters=replace(self.counters),
            sampling=self.sampling,
        )

    def add_user_message(self, text: str) -> None:
        """The user's message, seen by the agent and part of the visible conversation."""
        message = {"role": "user", "content": text}
        self.context.append(message)
        self.visible.append(dict(message))

    def record_error(self, kind: str, message: str) -> dict[str, Any]:
        """Record an error in the current agent turn (0-based; -1 before the first turn)."""
        entry = {"turn": self.counters.agent_turns - 1, "kind": kind, "message": message}
        self.errors.append(entry)
        return entry


@dataclass
class TurnResult:
    """How one agent turn went."""

    spoke: bool = False
    """The model answered the user (else the turn ran out of generations or failed)."""
    text: str | None = None
    """What the user was shown (the speech, or the out-of-generations message)."""
    calls: list[RecordedCall] = field(default_factory=list)
    """The calls the environment recorded during this turn (for JOSH's per-turn reward)."""
    errors: list[dict[str, Any]] = field(default_factory=list)
    generations: int = 0
    failed: bool = False
    """The conversation cannot go on (backend failure or exception); see ``errors``."""

    @property
    def out_of_generations(self) -> bool:
        return not self.spoke and not self.failed


def generation_sampling(base: SamplingParams, generations_so_far: int) -> SamplingParams:
    """The sampling for a conversation's next generation: a seeded base gets a fresh seed
    derived from (seed, generation count), so repeated generations are not correlated and a
    rerun reproduces them."""
    if base.seed is None:
        return base
    return base.with_seed(stable_seed(base.seed, generations_so_far))


def _resolve_sampling(
    states: Sequence[AgentState], sampling: SamplingParams | Sequence[SamplingParams] | None
) -> list[SamplingParams]:
    if sampling is not None and not isinstance(sampling, SamplingParams):
        per_state = list(sampling)
        if len(per_state) != len(states):
            raise ValueError(f"got {len(per_state)} sampling settings for {len(states)} states")
        return per_state
    shared = sampling or SamplingParams()
    return [s.sampling or shared for s in states]


def _generate_isolated(backend: Backend, requests: list) -> list[GenerationOutput]:
    """``backend.generate`` for the batch; if the batched call raises, each request alone, so a
    failure stays with the conversation that caused it."""
    try:
        outputs = list(backend.generate(requests))
        if len(outputs) == len(requests):
            return outputs
        error = f"backend returned {len(outputs)} outputs for {len(requests)} requests"
    except Exception as e:  # noqa: BLE001 - any backend failure is isolated below
        error = f"{type(e).__name__}: {e}"
    if len(requests) == 1:
        return [GenerationOutput(text="", error=error)]
    return [_generate_isolated(backend, [r])[0] for r in requests]


def _is_env_error(result: Any) -> bool:
    return isinstance(result, str) and (result in ERROR_STRINGS or result.startswith("ERROR"))


def _apply_output(
    state: AgentState, fmt: AgentFormat, output: GenerationOutput, result: TurnResult, calls_before: int
) -> bool:
    """Apply one generation to ``state``; True when the turn is over."""
    state.counters.generations += 1
    state.counters.prompt_tokens += output.prompt_tokens
    state.counters.completion_tokens += output.completion_tokens
    result.generations += 1
    if output.error is not None:
        result.errors.append(state.record_error(BACKEND_ERROR, output.error))
        result.failed = True
        return True

    step = fmt.parse(output)
    results: list[Any] = []
    for call in step.calls:
        state.counters.tool_calls += 1
        if call.id is None:
            # Nine alphanumerics: the strictest chat templates (Mistral) accept exactly that.
            call.id = f"call{state.counters.tool_calls:05d}"
        if call.error is not None:
            result.errors.append(state.record_error(call.error.kind, call.error.message))
            results.append(call.error.message)
            continue
        value = state.env.call(call.name, call.arguments)
        state.tool_calls.append({"name": call.name, "arguments": call.arguments, "result": value})
        if _is_env_error(value):
            result.errors.append(state.record_error(INVALID_CALL, f"{call.name!r}: {value}"))
        results.append(value)
    if step.error is not None:
        result.errors.append(state.record_error(step.error.kind, step.error.message))
    state.context.extend(fmt.step_messages(step, results))
    result.calls = state.env.calls[calls_before:]

    if step.speech is not None:
        state.visible.append({"role": "assistant", "content": step.speech})
        result.spoke, result.text = True, step.speech
        return True
    return False


def _end_without_speech(state: AgentState, fmt: AgentFormat, result: TurnResult, max_generations: int) -> None:
    result.errors.append(
        state.record_error(OUT_OF_GENERATIONS, f"no answer to the user after {max_generations} generations")
    )
    # The user is shown an error message and the context says the same, so the next user
    # message follows an assistant message, as chat templates expect.
    state.context.append(fmt.speech_message(OUT_OF_GENERATIONS_TEXT))
    state.visible.append({"role": "assistant", "content": OUT_OF_GENERATIONS_TEXT})
    result.text = OUT_OF_GENERATIONS_TEXT


def run_agent_turns(
    states: Sequence[AgentState],
    backend: Backend,
    fmt: AgentFormat,
    sampling: SamplingParams | Sequence[SamplingParams] | None = None,
    max_generations: int = 3,
) -> list[TurnResult]:
    """Advance every state by one agent turn, batching each round's generations.

    ``sampling`` is one setting for all (a state's own ``sampling`` wins) or one per state.
    Returns one :class:`TurnResult` per state, in order. States are modified in place.
    """
    if max_generations < 1:
        raise ValueError("max_generations must be at least 1")
    base_sampling = _resolve_sampling(states, sampling)
    results = [TurnResult() for _ in states]
    calls_before = [s.env.num_calls for s in states]
    tools = [s.env.tools for s in states]
    for s in states:
        s.counters.agent_turns += 1
    active = list(range(len(states)))
    while active:
        requests = [
            fmt.request(states[i].context, tools[i], generation_sampling(base_sampling[i], states[i].counters.generations))
            for i in active
        ]
        outputs = _generate_isolated(backend, requests)
        still: list[int] = []
        for i, output in zip(active, outputs):
            state, result = states[i], results[i]
            try:
                done = _apply_output(state, fmt, output, result, calls_before[i])
            except Exception as e:  # noqa: BLE001 - one conversation's crash must not stop the batch
                result.errors.append(state.record_error(EXCEPTION, f"{type(e).__name__}: {e}"))
                result.failed, done = True, True
            if done:
                continue
            if result.generations >= max_generations:
                _end_without_speech(state, fmt, result, max_generations)
            else:
                still.append(i)
        active = still
    return results


__all__ = [
    "OUT_OF_GENERATIONS_TEXT",
    "AgentCounters",
    "AgentState",
    "TurnResult",
    "generation_sampling",
    "run_agent_turns",
    "stable_seed",
]
