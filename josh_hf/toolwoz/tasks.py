"""ToolWOZ tasks: which MultiWOZ dialogues qualify, their goal calls, and the splits."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .database import Database, Table, first_index
from .matching import is_empty
from .sources import MultiWOZData
from .tools import DOMAINS, ToolSet, uid_key

EXCLUDED_DOMAINS = ("taxi", "police", "hospital")
GOAL_DOMAIN_ORDER = ("taxi", "police", "hospital", "hotel", "attraction", "train", "restaurant")
TEST_SIZE = 450
_TAG = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class GoalCall:
    """One sparse reward: a call the agent must make (arguments hold every parameter)."""

    name: str
    arguments: dict[str, Any]
    booked_uid: str | None = None
    """For ``book_*``: the booked entity's name / train id."""
    returns: dict[str, Any] | None = None
    """For ``book_*``: the record a successful booking returns."""

    @property
    def domain(self) -> str:
        return self.name.partition("_")[2]

    @property
    def action(self) -> str:
        return self.name.partition("_")[0]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "arguments": dict(self.arguments)}
        if self.action == "book":
            out["booked_uid"] = self.booked_uid
            out["return"] = dict(self.returns or {})
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GoalCall:
        ret = d.get("return")
        return cls(name=d["name"], arguments=dict(d["arguments"]), booked_uid=d.get("booked_uid"),
                   returns=dict(ret) if ret is not None else None)


@dataclass
class Task:
    """One ToolWOZ task: a MultiWOZ goal, its goal calls and the original dialogue."""

    id: str
    goal: dict[str, Any]
    goal_calls: list[GoalCall]
    dialogue: list[dict[str, Any]] = field(default_factory=list)

    @property
    def domains(self) -> list[str]:
        return [d for d in DOMAINS if self.goal.get(d)]

    @property
    def user_goal(self) -> list[str]:
        """The goal's instruction sentences with their HTML tags removed."""
        return [_TAG.sub("", s) for s in self.goal.get("message", [])]

    def goal_call(self, name: str) -> GoalCall | None:
        for g in self.goal_calls:
            if g.name == name:
                return g
        return None

    def booked_uid(self, domain: str) -> str | None:
        g = self.goal_call(f"book_{domain}")
        return g.booked_uid if g else None


def is_toolwoz_goal(goal: Mapping[str, Any]) -> bool:
    """A dialogue is a ToolWOZ task iff its goal has no taxi, police or hospital part."""
    return not any(goal.get(d) for d in EXCLUDED_DOMAINS)


def final_state(log: list[dict[str, Any]]) -> dict[str, Any]:
    """``metadata`` of the last turn, else of the one before it (the final dialogue state)."""
    if log and log[-1].get("metadata"):
        return log[-1]["metadata"]
    if len(log) > 1 and log[-2].get("metadata"):
        return log[-2]["metadata"]
    return {}


def _misaligned_first_row(tools: ToolSet, table: Table, row: Mapping[str, Any]) -> dict[str, Any]:
    # Quirk kept: the reference paired the API's return-key names with a pandas row's values
    # by position (``dict(zip(returns, row.values()))``, columns in first-seen order, NaN where
    # a row lacks a column); the booking fallback reads from that record.
    values = [row.get(c, float("nan")) for c in table.columns]
    return dict(zip(tools.returns.get(f"search_{table.domain}", ()), values))


def build_goal_calls(goal: Mapping[str, Any], log: list[dict[str, Any]], db: Database, tools: ToolSet) -> list[GoalCall]:
    """The goal calls of one dialogue, in the reference's order (per domain: search, book)."""
    calls: list[GoalCall] = []
    state = final_state(log)
    for domain in GOAL_DOMAIN_ORDER:
        part = goal.get(domain)
        if not part or domain not in DOMAINS:
            continue
        search_args: dict[str, Any] | None = None
        info = part.get("info") or {}
        if info:
            search_args = {p: info.get(p, "") for p in tools.parameters[f"search_{domain}"]}
            calls.append(GoalCall(f"search_{domain}", search_args))
        book = part.get("book") or {}
        if not book:
            continue
        booked = list(((state.get(domain) or {}).get("book") or {}).get("booked") or [])
        if not booked:
            continue
        record = dict(booked[-1])
        semi = (state.get(domain) or {}).get("semi") or {}
        for key in tools.returns.get(f"book_{domain}", ()):
            if key in record:
                continue
            if key in semi and not is_empty(semi[key]):
                record[key] = semi[key]
            else:
                mask = db[domain].select(search_args or {})
                row = db[domain].rows[first_index(mask)] if mask else {}
                record[key] = _misaligned_first_row(tools, db[domain], row).get(key)
        args = {p: book.get(p, "") for p in tools.parameters[f"book_{domain}"]}
        uid = record.get(uid_key(domain))
        args[uid_key(domain)] = uid
        calls.append(GoalCall(f"book_{domain}", args, booked_uid=uid, returns=record))
    return calls


def build_tasks(data: MultiWOZData, db: Database, tools: ToolSet) -> dict[str, Task]:
    """Every qualifying dialogue of ``data`` as a Task, keyed by id (sorted)."""
    tasks: dict[str, Task] = {}
    for did in sorted(data.dialogues):
        dial = data.dialogues[did]
        goal = dial["goal"]
        if not is_toolwoz_goal(goal):
            continue
        tasks[did] = Task(
            id=did,
            goal=goal,
            goal_calls=build_goal_calls(goal, dial["log"], db, tools),
            dialogue=[_turn(i, t) for i, t in enumerate(dial["log"])],
        )
    return tasks


def _turn(i: int, t: Mapping[str, Any]) -> dict[str, Any]:
    # MultiWOZ alternates user (even) and system (odd) turns; system turns carry the state.
    out = {"role": "user" if i % 2 == 0 else "assistant", "text": t.get("text", ""), "metadata": t.get("metadata") or {}}
    if "dialog_act" in t:
        out["dialog_act"] = t["dialog_act"]
    return out


def make_splits(task_ids: list[str], test_ids: list[str], val_ids: list[str], has_train: bool = True) -> dict[str, list[str]]:
    """``train``, ``validation``, ``test`` (first 450 sorted test tasks) and ``test_full``."""
    present = set(task_ids)
    test_full = sorted(i for i in set(test_ids) if i in present)
    validation = sorted(i for i in set(val_ids) if i in present)
    held_out = set(test_full) | set(validation)
    splits = {}
    train = sorted(i for i in present if i not in held_out)
    if has_train and train:
        splits["train"] = train
    splits["validation"] = validation
    splits["test"] = test_full[:TEST_SIZE]
    splits["test_full"] = test_full
    return splits
