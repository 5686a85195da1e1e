"""A ToolWOZ episode: execute an agent's tool calls against one task and score them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .database import first_index, last_index
from .matching import clean, is_subset, normalise
from .scoring import EpisodeScore, RecordedCall, goals_met, recorded_value, score_calls
from .tasks import GoalCall, Task
from .tools import (
    ERROR_INVALID,
    ERROR_LIST_OR_DICT,
    ERROR_NOT_A_DICT,
    ERROR_NOT_ALLOWED,
    split_tool_name,
    uid_key,
)

if TYPE_CHECKING:
    from .benchmark import ToolWOZ


def _copy_row(row: Mapping[str, Any]) -> dict[str, Any]:
    # Database cells nest one level at most (locations, prices); copying that deep keeps
    # the shared tables safe from whatever the caller does with a result.
    return {k: (v.copy() if isinstance(v, (list, dict)) else v) for k, v in row.items()}


def _copy_args(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return {k: (_copy_args(v) if isinstance(v, (list, dict)) else v) for k, v in arguments.items()}
    if isinstance(arguments, list):
        return [_copy_args(v) for v in arguments]
    return arguments


@dataclass(frozen=True)
class _Steering:
    """Per task and domain: what the hidden goal needs to pick the single search row."""

    goal_args: dict[str, Any]
    goal_clean: dict[str, Any]
    has_booking: bool
    goal_rows: int  # rows r with goal ⊆ r
    booked_rows: int  # rows whose uid is the booked uid


class ToolWOZEnv:
    """One episode of one task. Cheap to copy: the database and task are shared, only the
    list of recorded calls is per episode (JOSH copies an episode for every branch)."""

    __slots__ = ("_calls", "task", "toolwoz")

    def __init__(self, toolwoz: ToolWOZ, task: Task, calls: list[RecordedCall] | None = None):
        self.toolwoz = toolwoz
        self.task = task
        self._calls: list[RecordedCall] = calls if calls is not None else []

    # -- episode state ---------------------------------------------------------------
    @property
    def calls(self) -> list[RecordedCall]:
        """The calls recorded so far (read-only view: a copy of the list)."""
        return list(self._calls)

    @property
    def num_calls(self) -> int:
        return len(self._calls)

    def copy(self) -> ToolWOZEnv:
        """An independent episode with the same history (records are immutable, so shallow)."""
        return ToolWOZEnv(self.toolwoz, self.task, list(self._calls))

    __copy__ = copy

    def __deepcopy__(self, memo: dict) -> ToolWOZEnv:
        return self.copy()

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The tool schemas to show the agent."""
        return self.toolwoz.tools.openai_tools()

    # -- execution -------------------------------------------------------------------
    def call(self, name: Any, arguments: Any = None, *, record: bool = True) -> Any:
        """Execute one tool call and return exactly what the agent sees.

        Never raises on bad input: a malformed call gets the reference's error string. The
        call is recorded (with the agent's raw arguments) unless ``record`` is False.
        """
        if arguments is None:
            arguments = {}
        result = self._execute(name, arguments)
        if record:
            self._calls.append(RecordedCall(name, _copy_args(arguments), recorded_value(name, result)))
        if isinstance(result, list):
            return [_copy_row(r) for r in result]
        if isinstance(result, dict):
            return {"success": result["success"], "return": _copy_row(result["return"])}
        return result

    def _execute(self, name: Any, arguments: Any) -> Any:
        if not isinstance(arguments, dict):
            return ERROR_NOT_A_DICT
        allowed = self.toolwoz.tools.allowed.get(name) if isinstance(name, str) else None
        if allowed is None or not all(isinstance(k, str) and k in allowed for k in arguments):
            return ERROR_NOT_ALLOWED
        for v in arguments.values():
            if isinstance(v, (list, dict)):
                return ERROR_LIST_OR_DICT
        parsed = split_tool_name(name)
        if parsed is None:
            return ERROR_INVALID
        action, domain = parsed
        args = {k: normalise(v) for k, v in arguments.items()}
        if action == "search":
            return self._search(domain, args)
        return self._book(domain, args)

    def _search(self, domain: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        table = self.toolwoz.database[domain]
        mask = table.select(args)
        if not mask:
            return []
        steer = self.toolwoz.steering(self.task, domain)
        if steer is None:  # not a domain of this task
            return [table.rows[first_index(mask)]]
        wrong_mask = mask & ~steer.goal_rows
        correct_mask = mask & steer.booked_rows if steer.has_booking else 0
        if _subset_clean(steer.goal_clean, args):
            if steer.has_booking:
                if correct_mask:
                    return [table.rows[last_index(correct_mask)]]
                if wrong_mask:
                    return [table.rows[last_index(wrong_mask)]]
                return []
        elif is_subset(args, steer.goal_args):
            if wrong_mask:
                return [table.rows[last_index(wrong_mask)]]
            if correct_mask:
                return [table.rows[last_index(correct_mask)]]
        return [table.rows[first_index(mask)]]

    def _book(self, domain: str, args: dict[str, Any]) -> dict[str, Any]:
        goal = self.task.goal_call(f"book_{domain}")
        if goal is not None and is_subset(goal.arguments, args):
            return {"success": True, "return": goal.returns or {}}
        return {"success": False, "return": {}}

    # -- scoring ---------------------------------------------------------------------
    def score(self) -> EpisodeScore:
        """Reward, success and missed goal calls of the whole episode so far."""
        return score_calls(self.task.goal_calls, self._calls)

    def goals_met_by(self, calls: Sequence[RecordedCall], remaining: Sequence[GoalCall] | None = None) -> list[GoalCall]:
        """The goals among ``remaining`` (default: all) that ``calls`` alone satisfy.

        JOSH passes the calls of one agent turn and the goals still unmet: a domain whose
        booking is no longer remaining has its search judged as for a task without booking.
        """
        goals = list(self.task.goal_calls if remaining is None else remaining)
        return [g for g, ok in zip(goals, goals_met(goals, calls)) if ok]


def _subset_clean(sub_clean: Mapping[str, Any], main: Mapping[str, Any]) -> bool:
    main_c = clean(main)
    for k, v in sub_clean.items():
        if k not in main_c or not (main_c[k] == v):
            return False
    return True


def build_steering(toolwoz: ToolWOZ, task: Task, domain: str) -> _Steering | None:
    """Precompute the goal-steering masks of ``task`` in ``domain`` (None: not its domain)."""
    if not task.goal.get(domain):
        return None
    search = task.goal_call(f"search_{domain}")
    goal_args = dict(search.arguments) if search else {}
    table = toolwoz.database[domain]
    book = task.goal_call(f"book_{domain}")
    booked_rows = table.uid_mask(uid_key(domain), book.booked_uid) if book else 0
    return _Steering(
        goal_args=goal_args,
        goal_clean=clean(goal_args),
        has_booking=book is not None,
        goal_rows=table.subset_mask(goal_args),
        booked_rows=booked_rows,
    )
