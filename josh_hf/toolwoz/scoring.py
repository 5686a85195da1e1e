"""Sparse-reward scoring of recorded tool calls against goal calls.

This is the one implementation of ToolWOZ's scoring: the environment, JOSH's per-turn
reward check and the ``evaluate`` metric all call :func:`goals_met`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .matching import is_subset
from .tasks import GoalCall
from .tools import uid_key


@dataclass(frozen=True)
class RecordedCall:
    """A call as the environment recorded it: the agent's raw arguments and the returned value.

    For a search, ``returned`` is the single row, or ``None`` when nothing was found; for a
    booking, the ``{"success", "return"}`` dict; for a refused call, the error string.
    """

    name: Any
    arguments: Any
    returned: Any

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments, "returned": self.returned}


def recorded_value(name: Any, result: Any) -> Any:
    """What gets recorded for a call whose agent-visible result is ``result``."""
    if isinstance(name, str) and name.split("_")[0] == "search" and isinstance(result, list):
        return result[0] if result else None
    return result


def _search_met(goal: GoalCall, calls: Iterable[RecordedCall], booked_uid: Any) -> bool:
    key = uid_key(goal.domain)
    for call in calls:
        row = call.returned
        if call.name != goal.name or not row or isinstance(row, str) or not isinstance(row, Mapping):
            continue
        if is_subset(goal.arguments, call.arguments):
            if not booked_uid or row.get(key) == booked_uid:
                return True
        elif is_subset(call.arguments, goal.arguments):
            if booked_uid:
                if row.get(key) == booked_uid:
                    return True
            elif is_subset(goal.arguments, row):
                return True
    return False


def _book_met(goal: GoalCall, calls: Iterable[RecordedCall]) -> bool:
    return any(c.name == goal.name and is_subset(goal.arguments, c.arguments) for c in calls)


def goals_met(goals: Sequence[GoalCall], calls: Sequence[RecordedCall]) -> list[bool]:
    """For each goal, whether ``calls`` satisfy it.

    A search goal is judged against its domain's booked entity only when that domain's
    booking goal is among ``goals``; so passing the *remaining* goals gives JOSH's per-turn
    rule (a met booking no longer steers its search), and passing all goals gives the
    reference's episode score.
    """
    booked = {g.domain: g.booked_uid for g in goals if g.action == "book"}
    out = []
    for g in goals:
        if g.action == "book":
            out.append(_book_met(g, calls))
        elif g.action == "search":
            out.append(_search_met(g, calls, booked.get(g.domain) or ""))
        else:
            out.append(False)
    return out


@dataclass(frozen=True)
class EpisodeScore:
    """Reward (fraction of goal calls met), success (reward 1.0) and the goals met / missed."""

    reward: float
    success: bool
    met: list[GoalCall] = field(default_factory=list)
    missed: list[GoalCall] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reward": self.reward,
            "success": self.success,
            "met": [g.to_dict() for g in self.met],
            "missed": [g.to_dict() for g in self.missed],
        }


def score_calls(goals: Sequence[GoalCall], calls: Sequence[RecordedCall]) -> EpisodeScore:
    """Score a whole conversation's calls against a task's goal calls."""
    flags = goals_met(goals, calls)
    met = [g for g, f in zip(goals, flags) if f]
    missed = [g for g, f in zip(goals, flags) if not f]
    reward = len(met) / len(goals) if goals else 0.0
    return EpisodeScore(reward=reward, success=bool(goals) and not missed, met=met, missed=missed)
