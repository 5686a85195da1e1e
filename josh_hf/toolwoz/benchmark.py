"""The ToolWOZ benchmark object: tasks, splits, database and tools, and episodes over them."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

from .database import Database
from .env import ToolWOZEnv, _Steering, build_steering
from .sources import MultiWOZData, load_multiwoz
from .tasks import Task, build_tasks, make_splits
from .tools import ToolSet

SPLIT_ORDER = ("train", "validation", "test", "test_full")


class UnknownTaskError(KeyError):
    """A task id that is not in this ToolWOZ build."""

    def __str__(self) -> str:  # KeyError's default repr-quotes the message
        return str(self.args[0])


class ToolWOZ:
    """ToolWOZ built from MultiWOZ: ``ToolWOZ.from_multiwoz()`` or ``ToolWOZ.from_dataset(dir_or_repo)``.

    >>> tw = ToolWOZ.from_multiwoz()              # ../shared/data/multiwoz or $JOSH_HF_MULTIWOZ
    >>> env = tw.env("MUL0003")                    # a fresh episode
    >>> env.call("search_hotel", {"type": "guesthouse"})
    >>> env.score().reward
    """

    def __init__(
        self,
        tasks: dict[str, Task],
        database: Database,
        tools: ToolSet,
        splits: dict[str, list[str]],
        *,
        origin: str = "",
        notes: list[str] | None = None,
    ):
        self.tasks = tasks
        self.database = database
        self.tools = tools
        self.splits = splits
        self.origin = origin
        self.notes = list(notes or [])
        self._steering: dict[tuple[str, str], _Steering | None] = {}

    # -- construction ----------------------------------------------------------------
    @classmethod
    def from_multiwoz(cls, source: str | os.PathLike[str] | MultiWOZData | None = None) -> ToolWOZ:
        """Build from a MultiWOZ 2.0 source (folder, per-split files, zip, URL; see ``sources``)."""
        data = source if isinstance(source, MultiWOZData) else load_multiwoz(source)
        database = Database(data.databases)
        tools = ToolSet.from_files(data.tools, data.valid_api_defs)
        tasks = build_tasks(data, database, tools)
        splits = make_splits(list(tasks), data.test_ids, data.val_ids, data.has_train)
        return cls(tasks, database, tools, splits, origin=data.origin, notes=data.notes)

    @classmethod
    def from_dataset(cls, path: str | os.PathLike[str], revision: str | None = None) -> ToolWOZ:
        """Build from the dataset that ``build_toolwoz.py`` writes (a local folder or a Hub id)."""
        from .hub import load_toolwoz_dataset

        return load_toolwoz_dataset(cls, str(path), revision=revision)

    @classmethod
    def load(cls, source: str | os.PathLike[str] | None = None) -> ToolWOZ:
        """A built dataset folder or Hub id when ``source`` is one, else a MultiWOZ source."""
        if source is not None:
            from .hub import looks_like_dataset

            if looks_like_dataset(str(source)):
                return cls.from_dataset(source)
        return cls.from_multiwoz(source)

    # -- access ----------------------------------------------------------------------
    def task(self, task_id: str) -> Task:
        try:
            return self.tasks[task_id.removesuffix(".json")]
        except KeyError:
            raise UnknownTaskError(f"unknown ToolWOZ task id {task_id!r} ({len(self.tasks)} tasks loaded)") from None

    def split(self, name: str) -> list[Task]:
        if name not in self.splits:
            raise KeyError(f"split {name!r} is not in this build; available: {', '.join(self.splits)}")
        return [self.tasks[i] for i in self.splits[name]]

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks.values())

    def __len__(self) -> int:
        return len(self.tasks)

    def env(self, task_id: str) -> ToolWOZEnv:
        """A fresh episode of ``task_id``."""
        return ToolWOZEnv(self, self.task(task_id))

    def steering(self, task: Task, domain: str) -> _Steering | None:
        key = (task.id, domain)
        if key not in self._steering:
            self._steering[key] = build_steering(self, task, domain)
        return self._steering[key]

    # -- reporting -------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Split sizes and goal-call counts per split and tool."""
        out: dict[str, Any] = {"num_tasks": len(self.tasks), "splits": {}, "origin": self.origin, "notes": self.notes}
        for name in SPLIT_ORDER:
            if name not in self.splits:
                continue
            tasks = self.split(name)
            per_tool = Counter(g.name for t in tasks for g in t.goal_calls)
            out["splits"][name] = {
                "tasks": len(tasks),
                "goal_calls": sum(per_tool.values()),
                "goal_calls_per_tool": dict(sorted(per_tool.items(), key=lambda kv: (-kv[1], kv[0]))),
            }
        return out
