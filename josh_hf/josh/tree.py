"""The record of one task's JOSH search: every node explored, its marks, the golden path.

One :class:`TreeRecord` per task, one JSON object per line in ``trees.jsonl``. A node stores
only the messages it ADDED to its parent's context, so a node's full conversation is the
concatenation along its path from the root (:meth:`TreeRecord.context`):

* the root (id 0) holds the initial context: the system prompt and the user's opening
  message (and, with ``beam_size == 1``, every later turn, since it never splits);
* any other node holds its agent turns (assistant and tool messages), each followed by the
  user's reply when there was one. A node that did not split kept taking turns, as in the
  reference, so a node may hold several turns; ``turns`` says where each one starts.

Marks follow the reference: ``successful`` (a successful leaf or its ancestor at some
collapse), ``golden`` (the golden leaf or its ancestor), ``recorded`` (in the tree when a
collapse recorded it: the reference harvests only recorded nodes). ``ended`` says why a
node's conversation stopped on its own: ``"user"`` (the user hung up), ``"error"`` (the
agent turn failed or ran out of generations, or the user simulator failed; see ``error``),
``"max_steps"`` (still live when the step budget ran out), or null (it split, was dropped
at a collapse, or was live when the search ended for another reason).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

Message = dict[str, Any]

NODE_ENDINGS = (None, "user", "error", "max_steps")
STOP_REASONS = ("all_goals_met", "no_live_leaf", "max_steps", "error")
"""Why a task's search stopped (``TreeRecord.stopped``)."""


@dataclass
class TreeNode:
    """One node of a JOSH tree (see the module docstring for the meaning of each field)."""

    id: int
    parent: int | None
    step: int
    """The step that created it (0: the root)."""
    messages: list[Message] = field(default_factory=list)
    turn_calls: list[dict[str, Any]] = field(default_factory=list)
    """Calls this node's turns made that reached the environment: ``{"name", "arguments", "result"}``
    (the agent-visible result)."""
    goals_met: list[str] = field(default_factory=list)
    """Names of the remaining goals this node's turns met (judged when each turn was taken)."""
    successful: bool = False
    golden: bool = False
    recorded: bool = False
    ended: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seed: int | None = None
    """The agent's base sampling seed at this node: ``stable_seed(run seed, task_id, id)``; each
    generation samples with ``stable_seed(this, generations so far on the path)``."""
    children: list[int] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)
    """One entry per agent turn: ``{"step", "start", "end", "goals_met"}``; ``messages[start:end]``
    are the turn's assistant/tool messages (the user's reply, if any, is at ``end``)."""
    closing_message: str | None = None
    """What the user said when it ended the conversation (shown to no agent)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TreeNode:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


@dataclass
class TreeRecord:
    """Everything one task's JOSH search produced."""

    task_id: str
    seed: int
    """The run's base seed (node seeds and the user's seed derive from it and the task id)."""
    config: dict[str, Any]
    tools: list[dict[str, Any]]
    goal_calls: list[dict[str, Any]]
    reward: float = 0.0
    """JOSH reward: credited goals / goal calls (with ``credit="first"``: goals met on the golden path)."""
    success: bool = False
    goals_met: list[str] = field(default_factory=list)
    """Credited goal names, in the order they were met."""
    golden_path: list[int] = field(default_factory=list)
    """Node ids from the root to the deepest golden node (empty when nothing was ever met)."""
    nodes: list[TreeNode] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    golden_reward: float = 0.0
    """Fraction of goal calls met by the golden path's own turns (equals ``reward`` under
    ``credit="first"``; can be lower under ``credit="all"``)."""
    credited_to: dict[str, int] = field(default_factory=dict)
    """For each credited goal, the node whose turn met it."""
    stopped: str = "max_steps"
    """Why the search stopped: one of :data:`STOP_REASONS`."""
    error: str | None = None
    """Set when the whole task failed (e.g. the user could not open); the reward then counts
    only what was credited before."""

    # -- navigation --------------------------------------------------------------------
    def node(self, node_id: int) -> TreeNode:
        node = self.nodes[node_id] if 0 <= node_id < len(self.nodes) else None
        if node is None or node.id != node_id:  # ids are list positions when built here
            node = next((n for n in self.nodes if n.id == node_id), None)
        if node is None:
            raise KeyError(f"task {self.task_id}: no node {node_id}")
        return node

    def path(self, node_id: int) -> list[int]:
        """Node ids from the root to ``node_id``."""
        out = []
        current: int | None = node_id
        while current is not None:
            out.append(current)
            current = self.node(current).parent
        return out[::-1]

    def context(self, node_id: int) -> list[Message]:
        """The full conversation of ``node_id``: every message from the root to it."""
        return [m for i in self.path(node_id) for m in self.node(i).messages]

    def golden_conversation(self) -> list[Message] | None:
        """The full golden conversation (context of the deepest golden node), or None when
        no goal was ever met."""
        return self.context(self.golden_path[-1]) if self.golden_path else None

    # -- JSON ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["nodes"] = [n.to_dict() for n in self.nodes]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TreeRecord:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["nodes"] = [TreeNode.from_dict(n) for n in d.get("nodes", [])]
        return cls(**known)


def write_tree(f: IO[str], record: TreeRecord) -> None:
    """Append ``record`` as one JSON line and make it durable (a crash loses no finished task)."""
    f.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


def iter_tree_dicts(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The JSON objects of a trees.jsonl file; undecodable lines (a torn last line after a
    crash) are skipped."""
    p = Path(path)
    if not p.exists():
        return
    with open(p, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and "task_id" in obj:
                yield obj


def read_trees(path: str | os.PathLike[str]) -> list[TreeRecord]:
    """Every complete :class:`TreeRecord` in a trees.jsonl file (a torn last line is ignored)."""
    return [TreeRecord.from_dict(d) for d in iter_tree_dicts(path)]


__all__ = ["NODE_ENDINGS", "STOP_REASONS", "TreeNode", "TreeRecord", "iter_tree_dicts", "read_trees", "write_tree"]
