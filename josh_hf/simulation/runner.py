"""Run many agent–user conversations on ToolWOZ in lock-step, batching every model call.

Each step, every live conversation waiting for the agent takes its turn through
:func:`~josh_hf.agents.turn.run_agent_turns` (one backend call per generation round for all of
them), then every conversation waiting for the user gets its next message from ONE
``user.respond`` call. The user opens each conversation. A conversation ends when the user
ends it, when the visible budget is used up, or when something fails for it (then it scores 0
and says why); a failure never stops the others.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..agents.formats import USER_ERROR, AgentFormat, get_format
from ..agents.turn import AgentState, run_agent_turns, stable_seed
from ..backends.base import Backend, SamplingParams
from ..toolwoz.benchmark import ToolWOZ
from ..users.base import UserSession, UserSimulator, UserTurn
from .transcript import Transcript


@dataclass
class RunnerConfig:
    """Settings of a conversation run (defaults are the reference's evaluation budget).

    ``max_visible_messages`` is checked before each user turn, as the reference's loop does:
    once the visible conversation (user and agent messages, no tool traffic) holds that many
    messages, the user does not speak again; the agent always answers the last user message.
    ``sampling.seed`` is replaced by each conversation's seed, derived from ``seed``.
    ``system_prompt`` replaces the format's prompt; ``{tools}`` in it becomes the tool JSON.
    ``max_concurrent`` caps the live conversations (None: all at once); finished ones are
    replaced from the queue.
    """

    max_visible_messages: int = 15
    max_generations_per_turn: int = 3
    agent_format: str | AgentFormat = "react"
    sampling: SamplingParams = field(default_factory=SamplingParams)
    seed: int = 0
    system_prompt: str | None = None
    max_concurrent: int | None = None


def trial_seed(seed: int, task_id: str, trial: int) -> int:
    """The seed of one (task, trial) conversation: stable across processes and runs."""
    return stable_seed(seed, task_id, trial)


@dataclass
class _Conversation:
    index: int
    task_id: str
    trial: int
    seed: int
    state: AgentState
    session: UserSession | None = None
    awaiting: str = "user"  # whose turn it is: "user" or "agent"
    transcript: Transcript | None = None


class ConversationRunner:
    """Simulate conversations between an agent (``backend`` + format) and ``user`` on ToolWOZ."""

    def __init__(
        self,
        toolwoz: ToolWOZ,
        backend: Backend,
        user: UserSimulator,
        config: RunnerConfig | None = None,
    ):
        self.toolwoz = toolwoz
        self.backend = backend
        self.user = user
        self.config = config or RunnerConfig()
        self.format = get_format(self.config.agent_format)
        self._on_done: Callable[[Transcript], Any] | None = None
        if self.config.max_concurrent is not None and self.config.max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1 (or None)")

    # -- public --------------------------------------------------------------------------
    def run(
        self,
        task_ids: Sequence[str],
        trials: int = 1,
        on_done: Callable[[Transcript], Any] | None = None,
        skip: Collection[Any] = frozenset(),
    ) -> list[Transcript]:
        """Run every (task, trial) conversation; return the transcripts in input order.

        ``skip`` holds ``(task_id, trial)`` pairs (or bare task ids, for all their trials) that
        are not run and not returned, e.g. those already in an output file. ``on_done`` is
        called with each transcript as its conversation finishes. Unknown task ids raise
        before anything runs.
        """
        for task_id in task_ids:
            self.toolwoz.task(task_id)
        jobs = [
            (task_id, trial)
            for task_id in task_ids
            for trial in range(trials)
            if (task_id, trial) not in skip and task_id not in skip
        ]
        self._on_done = on_done
        queue = deque(enumerate(jobs))
        finished: list[Transcript | None] = [None] * len(jobs)
        live: list[_Conversation] = []
        cap = self.config.max_concurrent
        while queue or live:
            while queue and (cap is None or len(live) < cap):
                index, (task_id, trial) = queue.popleft()
                live.append(self._start(index, task_id, trial))
            self._agent_step([c for c in live if c.transcript is None and c.awaiting == "agent"])
            self._user_step([c for c in live if c.transcript is None and c.awaiting == "user"])
            for conv in live:
                if conv.transcript is not None:
                    finished[conv.index] = conv.transcript
            live = [c for c in live if c.transcript is None]
        return [t for t in finished if t is not None]

    # -- steps ---------------------------------------------------------------------------
    def _start(self, index: int, task_id: str, trial: int) -> _Conversation:
        seed = trial_seed(self.config.seed, task_id, trial)
        env = self.toolwoz.env(task_id)
        state = AgentState.start(
            env, self.format, self.config.system_prompt, sampling=self.config.sampling.with_seed(seed)
        )
        conv = _Conversation(index=index, task_id=task_id, trial=trial, seed=seed, state=state)
        try:
            conv.session = self.user.new_session(env.task, seed)
        except Exception as e:  # noqa: BLE001 - this conversation fails, the run goes on
            state.record_error(USER_ERROR, f"{type(e).__name__}: {e}")
            self._finish(conv, "error")
        return conv

    def _agent_step(self, convs: list[_Conversation]) -> None:
        if not convs:
            return
        results = run_agent_turns(
            [c.state for c in convs],
            self.backend,
            self.format,
            max_generations=self.config.max_generations_per_turn,
        )
        for conv, result in zip(convs, results):
            if result.failed:
                self._finish(conv, "error")
            else:
                conv.awaiting = "user"

    def _user_step(self, convs: list[_Conversation]) -> None:
        talking = []
        for conv in convs:
            if len(conv.state.visible) >= self.config.max_visible_messages:
                self._finish(conv, "max_messages")
            else:
                talking.append(conv)
        if not talking:
            return
        for conv, turn in zip(talking, self._respond(talking)):
            if isinstance(turn, Exception):
                conv.state.record_error(USER_ERROR, f"{type(turn).__name__}: {turn}")
                self._finish(conv, "error")
            elif turn.end:
                self._finish(conv, "user", closing_message=turn.text or None)
            else:
                conv.state.add_user_message(turn.text)
                conv.awaiting = "agent"

    def _respond(self, convs: list[_Conversation]) -> list[UserTurn | Exception]:
        return self.user.respond_isolated([(c.session, [dict(m) for m in c.state.visible]) for c in convs])

    def _finish(self, conv: _Conversation, ended_by: str, closing_message: str | None = None) -> None:
        conv.transcript = Transcript.from_state(
            conv.state,
            task_id=conv.task_id,
            trial=conv.trial,
            seed=conv.seed,
            ended_by=ended_by,
            closing_message=closing_message,
            agent_format=self.format.name,
        )
        if self._on_done is not None:
            self._on_done(conv.transcript)
