"""The record of one simulated conversation, JSON-safe (one JSONL line per conversation)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..agents.turn import AgentState

ENDED_BY = ("user", "max_messages", "error")


@dataclass
class Transcript:
    """One conversation: what was said, what the agent saw and called, and its score.

    * ``messages``: the visible conversation (user and assistant, no tool traffic);
    * ``context``: the agent's full context (system prompt, tool calls and results);
    * ``tool_calls``: calls that reached the environment, ``{"name", "arguments", "result"}``
      with the agent-visible result (what the ``toolwoz`` evaluate metric consumes);
    * ``errors``: ``{"turn", "kind", "message"}``; ``turn`` is the 0-based agent turn in
      progress or last finished (-1 before the first); kinds are in ``agents.formats``;
    * ``ended_by``: ``"user"``, ``"max_messages"`` or ``"error"`` (a crash: reward 0).
    """

    task_id: str
    trial: int
    seed: int
    messages: list[dict[str, Any]] = field(default_factory=list)
    context: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    reward: float = 0.0
    success: bool = False
    missed_goal_calls: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    ended_by: str = "user"
    closing_message: str | None = None
    """The user's last words when it ended the conversation (shown to no agent)."""
    agent_format: str = ""

    @classmethod
    def from_state(
        cls,
        state: AgentState,
        *,
        task_id: str,
        trial: int,
        seed: int,
        ended_by: str,
        closing_message: str | None = None,
        agent_format: str = "",
    ) -> Transcript:
        """Snapshot ``state`` and score its episode (a crashed conversation scores 0)."""
        if ended_by not in ENDED_BY:
            raise ValueError(f"ended_by must be one of {ENDED_BY}, got {ended_by!r}")
        if ended_by == "error":
            reward, success = 0.0, False
            missed = [g.to_dict() for g in state.env.task.goal_calls]
        else:
            score = state.env.score()
            reward, success = score.reward, score.success
            missed = [g.to_dict() for g in score.missed]
        return cls(
            task_id=task_id,
            trial=trial,
            seed=seed,
            messages=copy.deepcopy(state.visible),
            context=copy.deepcopy(state.context),
            tool_calls=copy.deepcopy(state.tool_calls),
            reward=reward,
            success=success,
            missed_goal_calls=missed,
            errors=copy.deepcopy(state.errors),
            counters=state.counters.to_dict(),
            ended_by=ended_by,
            closing_message=closing_message,
            agent_format=agent_format,
        )

    @property
    def error_counts(self) -> dict[str, int]:
        """How many errors of each kind."""
        counts: dict[str, int] = {}
        for e in self.errors:
            counts[e["kind"]] = counts.get(e["kind"], 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (``json.dumps`` works on it)."""
        return {
            "task_id": self.task_id,
            "trial": self.trial,
            "seed": self.seed,
            "messages": copy.deepcopy(self.messages),
            "context": copy.deepcopy(self.context),
            "tool_calls": copy.deepcopy(self.tool_calls),
            "reward": self.reward,
            "success": self.success,
            "missed_goal_calls": copy.deepcopy(self.missed_goal_calls),
            "errors": copy.deepcopy(self.errors),
            "counters": dict(self.counters),
            "ended_by": self.ended_by,
            "closing_message": self.closing_message,
            "agent_format": self.agent_format,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Transcript:
        return cls(
            task_id=d["task_id"],
            trial=int(d.get("trial", 0)),
            seed=int(d.get("seed", 0)),
            messages=list(d.get("messages", [])),
            context=list(d.get("context", [])),
            tool_calls=list(d.get("tool_calls", [])),
            reward=float(d.get("reward", 0.0)),
            success=bool(d.get("success", False)),
            missed_goal_calls=list(d.get("missed_goal_calls", [])),
            errors=list(d.get("errors", [])),
            counters=dict(d.get("counters", {})),
            ended_by=d.get("ended_by", "user"),
            closing_message=d.get("closing_message"),
            agent_format=d.get("agent_format", ""),
        )
