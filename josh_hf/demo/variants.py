"""Goal variants: training tasks whose constraint values are redrawn from the database.

A from-scratch agent has to learn to *copy* what the customer asked for into its tool calls.
ToolWOZ has only ~700 non-test goals, and their values are skewed (half the trains go to
Cambridge, most restaurants are in the centre), so a small model lowers its loss faster by
predicting the frequent value than by copying, and stays there (the README's "Tried since"
list measures this). A variant keeps a training task's structure (domains, which slots are
constrained, what gets booked, what the customer asks about) and redraws every value: the
search constraints from one random database row (so the search still finds it), the booking
details (people, day, time, nights) at random. Values then carry no prior, and copying is the
only way to get them right.

Variants are derived from training tasks only, never from ``test`` / ``test_full`` ones; their
conversations are published with the parent's ``task_id`` (so holding a task out holds out
its variants too) and ``source == "variant"``.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence
from copy import deepcopy
from typing import TYPE_CHECKING, Any

from ..toolwoz.database import first_index
from ..toolwoz.matching import normalise
from ..toolwoz.tasks import GoalCall, Task
from ..toolwoz.tools import uid_key
from ..users.slots import DAYS, DONTCARE

if TYPE_CHECKING:
    from ..toolwoz import ToolWOZ

_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")


def variant_id(task_id: str, index: int) -> str:
    """The id of ``task_id``'s ``index``-th variant (``MUL0003~v1``)."""
    return f"{task_id}~v{index}"


def parent_id(task_id: str) -> str:
    """The training task a (variant) id derives from: ``MUL0003~v1`` -> ``MUL0003``."""
    return task_id.split("~v", 1)[0]


def _minutes(value: str) -> int | None:
    m = _TIME.match(value.strip())
    return int(m.group(1)) * 60 + int(m.group(2)) if m else None


def _clock(minutes: int) -> str:
    minutes = max(0, min(minutes, 23 * 60 + 45))
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _draw_info(table: Any, info: dict[str, Any], rng: random.Random, tries: int = 20) -> dict[str, Any] | None:
    """New search constraints for one domain: the same slots (dontcare kept), values from one
    random row, checked to find rows the way the environment searches."""
    slots = [k for k, v in info.items() if isinstance(v, str) and v != DONTCARE]
    candidates = [r for r in table.rows if all(isinstance(r.get(k), str) and r.get(k) for k in slots)]
    for _ in range(tries if candidates else 0):
        new = _values_of(rng.choice(candidates), info, slots)
        # Some database spellings do not survive the environment's normalisation of arguments
        # ("queens' college"): such a goal could never be met, so draw again.
        if table.select({k: normalise(v) for k, v in new.items()}):
            return new
    return None


def _values_of(row: dict[str, Any], info: dict[str, Any], slots: list[str]) -> dict[str, Any]:
    new = dict(info)
    for k in slots:
        if k == "leaveAt":  # "leave after": a quarter-hour at or before the row's departure
            t = _minutes(row[k])
            new[k] = _clock(t - t % 15) if t is not None else row[k]
        elif k == "arriveBy":  # "arrive by": a quarter-hour at or after the row's arrival
            t = _minutes(row[k])
            new[k] = _clock(t + (-t) % 15) if t is not None else row[k]
        else:
            new[k] = row[k]
    return new


def _draw_book(book: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    new = dict(book)
    for k, v in book.items():
        if not isinstance(v, str) or v == DONTCARE:
            continue
        if k == "people":
            new[k] = str(rng.randint(1, 8))
        elif k == "stay":
            new[k] = str(rng.randint(1, 5))
        elif k == "day":
            new[k] = rng.choice(DAYS)
        elif k == "time":
            new[k] = _clock(rng.randrange(11 * 60, 21 * 60, 15))
    return new


def _reword(sentences: Sequence[str], old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    # The instructions quote values inside <span class='emphasis'> tags; swap the quoted ones.
    out = []
    for s in sentences:
        for k, v in old.items():
            if isinstance(v, str) and isinstance(new.get(k), str) and v != new[k]:
                s = s.replace(f">{v}<", f">{new[k]}<")
        out.append(s)
    return out


def goal_variant(toolwoz: ToolWOZ, task: Task, index: int, rng: random.Random) -> Task | None:
    """One variant of ``task`` (see the module docstring), or None when a domain cannot be redrawn.

    First choices that fail (``fail_info`` / ``fail_book``) are dropped: a variant is the
    straight version of its parent's goal.
    """
    goal = deepcopy(task.goal)
    message = list(goal.get("message") or [])
    calls: list[GoalCall] = []
    for parent_call in task.goal_calls:
        domain = parent_call.domain
        part = goal.get(domain)
        if not isinstance(part, dict):
            return None
        if parent_call.action == "search":
            info = {k: v for k, v in (part.get("info") or {}).items()}
            new_info = _draw_info(toolwoz.database[domain], info, rng)
            if new_info is None:
                return None
            message = _reword(message, info, new_info)
            part["info"] = new_info
            part["fail_info"] = {}
            params = toolwoz.tools.parameters[parent_call.name]
            calls.append(GoalCall(parent_call.name, {p: new_info.get(p, "") for p in params}))
        else:
            book = dict(part.get("book") or {})
            new_book = _draw_book(book, rng)
            message = _reword(message, book, new_book)
            part["book"] = new_book
            part["fail_book"] = {}
            search = next((c for c in calls if c.name == f"search_{domain}"), None)
            table = toolwoz.database[domain]
            mask = table.select({k: normalise(v) for k, v in (search.arguments if search else {}).items()})
            if not mask:
                return None
            # The entity booked is the one a search with the goal's constraints returns first,
            # the one the environment steers the agent's search to.
            key = uid_key(domain)
            uid = table.rows[first_index(mask)].get(key)
            reference = "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(8))
            returns = {k: (uid if k == key else reference) for k in toolwoz.tools.returns.get(parent_call.name, ())}
            args = {p: new_book.get(p, "") for p in toolwoz.tools.parameters[parent_call.name]}
            args[key] = uid
            calls.append(GoalCall(parent_call.name, args, booked_uid=uid, returns=returns))
    goal["message"] = message
    return Task(id=variant_id(task.id, index), goal=goal, goal_calls=calls, dialogue=[])


def with_goal_variants(toolwoz: ToolWOZ, task_ids: Sequence[str], variants: int, seed: int = 0) -> tuple[ToolWOZ, list[str]]:
    """A ToolWOZ that also holds ``variants`` variants of each of ``task_ids`` (same database and
    tools), and the variants' ids. Deterministic for a seed. Raises for a held-out task."""
    from ..toolwoz import ToolWOZ as _ToolWOZ
    from .demonstrations import HELD_OUT_SPLITS

    held_out = {i for s in HELD_OUT_SPLITS for i in toolwoz.splits.get(s, [])}
    leaked = [i for i in task_ids if i in held_out]
    if leaked:
        raise ValueError(f"goal variants must not come from held-out tasks ({', '.join(leaked[:5])} ...)")
    tasks = dict(toolwoz.tasks)
    ids: list[str] = []
    for task_id in task_ids:
        task = toolwoz.task(task_id)
        for index in range(1, variants + 1):
            rng = random.Random(f"{seed}:{task_id}:{index}")
            variant = goal_variant(toolwoz, task, index, rng)
            if variant is not None:
                tasks[variant.id] = variant
                ids.append(variant.id)
    extended = _ToolWOZ(tasks, toolwoz.database, toolwoz.tools, toolwoz.splits, origin=toolwoz.origin, notes=toolwoz.notes)
    return extended, ids


__all__ = ["goal_variant", "parent_id", "variant_id", "with_goal_variants"]
