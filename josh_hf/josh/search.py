"""JOSH's tree search (arXiv 2409.04617), exactly as the reference runs it, batched.

Per task, the root holds the conversation after the user's opening message. One step:

1. **expand**: if ``2 × live leaves ≤ beam_size``, every live leaf gets two children, each a
   copy of its state (agent context, environment episode, user session);
2. **agent turn** on every live leaf, each node sampling with its own seed
   ``stable_seed(config.seed, task_id, node_id)`` (so siblings differ); a leaf whose turn
   failed or ran out of generations ends (``ended="error"``);
3. **reward check**: the calls of this turn only, against the goals still remaining
   (``env.goals_met_by(turn.calls, remaining)``); a leaf that met one is *successful*;
4. **collapse** when some leaf succeeded: the golden leaf is the first successful leaf in
   leaf order (depth first, first child first); successful leaves and their ancestors are
   marked successful, the golden leaf and its ancestors golden; the whole current tree is
   marked recorded; the golden leaf's goals leave the remaining goals (``credit="all"``:
   every successful leaf's goals); the golden leaf becomes the root, other branches are
   dropped;
5. **user turn** on every live leaf, unless all goals are met or this was the last step (a
   reply no agent turn follows adds nothing); a leaf whose user hangs up ends.

The search stops when every goal is met, when no live leaf is left, or after ``max_steps``.

Batching: every task runs at once. Each step sends EVERY live leaf of EVERY task to ONE
:func:`run_agent_turns` call (one ``backend.generate`` per generation round) and then ONE
``user.respond`` call (which also carries the opening message of tasks that start then).
``max_batch`` caps how many leaves go into one call (1 reproduces the reference's
one-branch-at-a-time loop; the results are the same, only slower); ``max_concurrent`` caps the
tasks in flight (memory; earlier trees on disk).

Faults of the reference code that are fixed here: siblings get distinct seeds; a leaf that
ran out of generations ends without a fake "out of retries" message in its context; the
final golden state is recorded however many goals the last turn met; any exception ends
only the branch (or task) it happened in, and is recorded with its message.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..agents.formats import FATAL_ERRORS, OUT_OF_GENERATIONS, USER_ERROR, get_format
from ..agents.turn import OUT_OF_GENERATIONS_TEXT, AgentState, TurnResult, run_agent_turns, stable_seed
from ..backends.base import Backend
from ..toolwoz.benchmark import ToolWOZ
from ..toolwoz.tasks import GoalCall
from ..users.base import UserSession, UserSimulator, UserTurn
from .config import JOSHConfig
from .tree import TreeNode, TreeRecord


def node_seed(seed: int, task_id: str, node_id: int) -> int:
    """The agent's sampling seed at one node: stable across processes and runs."""
    return stable_seed(seed, task_id, node_id)


def user_seed(seed: int, task_id: str) -> int:
    """The user session's seed of one task (every branch copies that one session)."""
    return stable_seed(seed, task_id)


@dataclass(eq=False)
class _Node:
    """A node while the search runs: its record plus the live state (released once frozen)."""

    rec: TreeNode
    parent: _Node | None
    state: AgentState | None
    session: UserSession | None
    children: list[_Node] = field(default_factory=list)
    # Where this node's own part starts in the (cumulative) agent state.
    base_context: int = 0
    base_tool_calls: int = 0
    base_prompt_tokens: int = 0
    base_completion_tokens: int = 0
    step_goals: list[GoalCall] = field(default_factory=list)
    """Goals the current step's turn met (cleared after each collapse check)."""

    @property
    def live(self) -> bool:
        return not self.children and self.rec.ended is None

    def end(self, reason: str, error: str | None = None) -> None:
        self.rec.ended = reason
        self.rec.error = error

    def freeze(self) -> None:
        """Write this node's own part of the state into its record and release the state
        (its content can no longer change: it split, ended or was dropped)."""
        state = self.state
        if state is None:
            return
        # Messages are never mutated once appended (AgentState's contract): slicing suffices.
        self.rec.messages = state.context[self.base_context :]
        self.rec.turn_calls = state.tool_calls[self.base_tool_calls :]
        self.rec.prompt_tokens = state.counters.prompt_tokens - self.base_prompt_tokens
        self.rec.completion_tokens = state.counters.completion_tokens - self.base_completion_tokens
        self.state = None
        self.session = None

    def walk(self) -> Iterator[_Node]:
        """This subtree depth first, first child first."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass
class _TaskSearch:
    """One task's search in flight."""

    task_id: str
    nodes: list[_Node]
    root: _Node
    goal_calls: list[GoalCall]
    remaining: list[GoalCall]
    tools: list[dict[str, Any]]
    step: int = 0
    stopped: str | None = None
    error: str | None = None
    credited: list[tuple[str, int]] = field(default_factory=list)
    """(goal name, id of the node that met it), in the order credited."""
    stats: dict[str, int] = field(
        default_factory=lambda: {"steps": 0, "agent_turns": 0, "generations": 0, "user_turns": 0, "collapses": 0}
    )

    def leaves(self) -> list[_Node]:
        """Live leaves of the current tree, in leaf order (depth first, first child first)."""
        return [n for n in self.root.walk() if n.live]

    def fail(self, e: BaseException) -> None:
        self.error = f"{type(e).__name__}: {e}"
        self.stopped = "error"


class JOSHSearch:
    """Run JOSH on ToolWOZ tasks with an agent ``backend`` and a ``user`` simulator.

    Generic over the episode interface: the environment needs ``copy()``, ``call()``,
    ``tools``, ``num_calls``, ``calls`` and ``goals_met_by(calls, remaining)``, and its
    ``task.goal_calls``.
    """

    def __init__(
        self,
        toolwoz: ToolWOZ,
        backend: Backend,
        user: UserSimulator,
        config: JOSHConfig | None = None,
        *,
        max_batch: int | None = None,
        max_concurrent: int | None = None,
    ):
        self.toolwoz = toolwoz
        self.backend = backend
        self.user = user
        self.config = config or JOSHConfig()
        self.format = get_format(self.config.agent_format)
        if max_batch is not None and max_batch < 1:
            raise ValueError("max_batch must be at least 1 (or None for everything in one call)")
        self.max_batch = max_batch
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1 (or None for every task at once)")
        self.max_concurrent = max_concurrent

    # -- public ------------------------------------------------------------------------
    def run(
        self,
        task_ids: Sequence[str],
        on_done: Callable[[TreeRecord], Any] | None = None,
        skip: Collection[str] = (),
    ) -> list[TreeRecord]:
        """Search every task (all at once, or ``max_concurrent`` at a time: a finished task's
        place goes to the next one); return their records in input order.

        ``skip`` holds task ids not to run (e.g. already in an output file); ``on_done`` is
        called with each record as soon as its task finishes. Unknown ids raise before
        anything runs; a repeated id runs once.
        """
        for task_id in task_ids:
            self.toolwoz.task(task_id)
        skipped = set(skip)
        todo = [t for t in dict.fromkeys(self.toolwoz.task(t).id for t in task_ids) if t not in skipped]
        records: dict[str, TreeRecord] = {}

        def finish(search: _TaskSearch) -> None:
            record = self._record(search)
            records[search.task_id] = record
            if on_done is not None:
                on_done(record)

        queue = deque(todo)
        live: list[_TaskSearch] = []
        talking: list[tuple[_TaskSearch, _Node]] = []
        while True:
            # Admit new tasks up to the cap: their roots join this user phase for the
            # opening message, so openings share the respond call with the running tasks.
            while queue and (self.max_concurrent is None or len(live) < self.max_concurrent):
                new = self._start(queue.popleft())
                if new.stopped is not None:
                    finish(new)
                    continue
                live.append(new)
                talking.append((new, new.root))
            if not live:
                break
            self._user_turns(talking)
            talking = []
            for s in live:
                if s.stopped is None and s.step == 0 and not s.root.live:
                    if s.root.rec.ended == "error":  # the user could not even open
                        s.error, s.stopped = s.root.rec.error, "error"
                    else:
                        s.stopped = "no_live_leaf"
                elif s.stopped is None and not s.leaves():
                    s.stopped = "no_live_leaf"
            live = self._finish_stopped(live, finish)
            if not live:
                continue  # admit more, or end

            for s in live:
                s.step += 1
                s.stats["steps"] = s.step
                self._guard(s, self._expand)
            stepping = [(s, leaf) for s in live if s.stopped is None for leaf in s.leaves()]
            self._agent_turns(stepping)
            for s in live:
                if s.stopped is None:
                    self._guard(s, self._collapse_and_check)
            live = self._finish_stopped(live, finish)
            talking = [(s, leaf) for s in live for leaf in s.leaves()]
        return [records[t] for t in todo]

    @staticmethod
    def _finish_stopped(live: list[_TaskSearch], finish: Callable[[_TaskSearch], None]) -> list[_TaskSearch]:
        for s in live:
            if s.stopped is not None:
                finish(s)
        return [s for s in live if s.stopped is None]

    # -- one task --------------------------------------------------------------------------
    def _start(self, task_id: str) -> _TaskSearch:
        env = self.toolwoz.env(task_id)
        cfg = self.config
        seed = node_seed(cfg.seed, task_id, 0)
        state = AgentState.start(env, self.format, cfg.system_prompt, sampling=cfg.sampling.with_seed(seed))
        root = _Node(rec=TreeNode(id=0, parent=None, step=0, seed=seed), parent=None, state=state, session=None)
        goals = list(env.task.goal_calls)
        search = _TaskSearch(task_id=task_id, nodes=[root], root=root, goal_calls=goals, remaining=list(goals),
                             tools=env.tools)
        try:
            root.session = self.user.new_session(env.task, user_seed(cfg.seed, task_id))
        except Exception as e:  # noqa: BLE001 - this task fails, the others go on
            search.fail(e)
        return search

    def _guard(self, search: _TaskSearch, fn: Callable[[_TaskSearch], None]) -> None:
        try:
            fn(search)
        except Exception as e:  # noqa: BLE001 - a bug or bad episode stops this task only
            search.fail(e)

    def _new_child(self, search: _TaskSearch, parent: _Node) -> _Node:
        assert parent.state is not None
        node_id = len(search.nodes)
        seed = node_seed(self.config.seed, search.task_id, node_id)
        state = parent.state.copy()
        state.sampling = self.config.sampling.with_seed(seed)
        child = _Node(
            rec=TreeNode(id=node_id, parent=parent.rec.id, step=search.step, seed=seed),
            parent=parent,
            state=state,
            session=parent.session.copy() if parent.session is not None else None,
            base_context=len(state.context),
            base_tool_calls=len(state.tool_calls),
            base_prompt_tokens=state.counters.prompt_tokens,
            base_completion_tokens=state.counters.completion_tokens,
        )
        search.nodes.append(child)
        parent.children.append(child)
        parent.rec.children.append(node_id)
        return child

    def _expand(self, search: _TaskSearch) -> None:
        leaves = search.leaves()
        if not leaves or 2 * len(leaves) > self.config.beam_size:
            return
        for leaf in leaves:
            self._new_child(search, leaf)
            self._new_child(search, leaf)
            leaf.freeze()

    def _collapse_and_check(self, search: _TaskSearch) -> None:
        stepped = [n for n in search.root.walk() if not n.children and n.rec.turns and n.rec.turns[-1]["step"] == search.step]
        successful = [n for n in stepped if n.step_goals]
        if successful:
            self._collapse(search, successful)
        for n in stepped:
            n.step_goals = []
        if not search.remaining:
            search.stopped = "all_goals_met"
        elif not search.leaves():
            search.stopped = "no_live_leaf"
        elif search.step >= self.config.max_steps:
            search.stopped = "max_steps"
            for leaf in search.leaves():
                leaf.end("max_steps")

    def _collapse(self, search: _TaskSearch, successful: list[_Node]) -> None:
        root, golden = search.root, successful[0]
        for leaf in successful:
            self._mark_up_to(root, leaf, "successful")
        self._mark_up_to(root, golden, "golden")
        for n in root.walk():
            n.rec.recorded = True
        # Which goals leave the remaining ones, and which node each is credited to.
        if self.config.credit == "first":
            credit = {g.name: golden for g in golden.step_goals}
        else:
            credit = {}
            for leaf in successful:
                for g in leaf.step_goals:
                    credit.setdefault(g.name, leaf)
        for g in search.remaining:  # in the task's goal order
            if g.name in credit:
                search.credited.append((g.name, credit[g.name].rec.id))
        search.remaining = [g for g in search.remaining if g.name not in credit]
        for n in root.walk():
            if n is not golden:
                n.freeze()
        search.root = golden
        search.stats["collapses"] += 1

    @staticmethod
    def _mark_up_to(root: _Node, node: _Node, mark: str) -> None:
        current: _Node | None = node
        while current is not None:
            setattr(current.rec, mark, True)
            if current is root:
                break
            current = current.parent

    # -- batched turns ---------------------------------------------------------------------
    def _chunks(self, items: list) -> Iterator[list]:
        size = self.max_batch or max(len(items), 1)
        for i in range(0, len(items), size):
            yield items[i : i + size]

    def _agent_turns(self, pairs: list[tuple[_TaskSearch, _Node]]) -> None:
        for chunk in self._chunks(pairs):
            starts = [len(leaf.state.context) for _, leaf in chunk]
            try:
                results = run_agent_turns(
                    [leaf.state for _, leaf in chunk],
                    self.backend,
                    self.format,
                    max_generations=self.config.max_generations_per_turn,
                )
            except Exception as e:  # noqa: BLE001 - run_agent_turns isolates rows; this is a bug
                for _, leaf in chunk:
                    leaf.end("error", f"exception: {type(e).__name__}: {e}")
                continue
            for (search, leaf), start, result in zip(chunk, starts, results):
                try:
                    self._after_turn(search, leaf, start, result)
                except Exception as e:  # noqa: BLE001 - this branch ends, the others go on
                    leaf.end("error", f"exception: {type(e).__name__}: {e}")

    def _after_turn(self, search: _TaskSearch, leaf: _Node, start: int, result: TurnResult) -> None:
        state = leaf.state
        assert state is not None
        search.stats["agent_turns"] += 1
        search.stats["generations"] += result.generations
        if result.out_of_generations:
            # The leaf ends here, so the placeholder answer run_agent_turns wrote for the user
            # is dropped: it is no model output and must not be harvested as one.
            placeholder = self.format.speech_message(OUT_OF_GENERATIONS_TEXT)
            if state.context and state.context[-1] == placeholder:
                state.context.pop()
            if state.visible and state.visible[-1] == {"role": "assistant", "content": OUT_OF_GENERATIONS_TEXT}:
                state.visible.pop()
        met = state.env.goals_met_by(result.calls, search.remaining) if result.calls else []
        leaf.step_goals = list(met)
        names = [g.name for g in met]
        leaf.rec.goals_met.extend(names)
        leaf.rec.turns.append({
            "step": search.step,
            "start": start - leaf.base_context,
            "end": len(state.context) - leaf.base_context,
            "goals_met": names,
        })
        if result.failed or result.out_of_generations:
            fatal = [e for e in result.errors if e["kind"] in FATAL_ERRORS or e["kind"] == OUT_OF_GENERATIONS]
            last = fatal[-1] if fatal else {"kind": "error", "message": "the agent turn failed"}
            leaf.end("error", f"{last['kind']}: {last['message']}")

    def _user_turns(self, pairs: list[tuple[_TaskSearch, _Node]]) -> None:
        for chunk in self._chunks(pairs):
            turns = self._respond([leaf for _, leaf in chunk])
            for (search, leaf), turn in zip(chunk, turns):
                search.stats["user_turns"] += 1
                state = leaf.state
                assert state is not None
                if isinstance(turn, Exception):
                    entry = state.record_error(USER_ERROR, f"{type(turn).__name__}: {turn}")
                    leaf.end("error", f"{USER_ERROR}: {entry['message']}")
                elif turn.end:
                    leaf.end("user")
                    leaf.rec.closing_message = turn.text or None
                else:
                    state.add_user_message(turn.text)

    def _respond(self, leaves: list[_Node]) -> list[UserTurn | Exception]:
        return self.user.respond_isolated([(n.session, [dict(m) for m in n.state.visible]) for n in leaves])  # type: ignore[union-attr]

    # -- the record ------------------------------------------------------------------------
    def _record(self, search: _TaskSearch) -> TreeRecord:
        for node in search.nodes:
            node.freeze()
        golden_path: list[int] = []
        if search.root.rec.golden:
            current: _Node | None = search.root
            while current is not None:
                golden_path.append(current.rec.id)
                current = current.parent
            golden_path.reverse()
        on_path = {g for i in golden_path for g in search.nodes[i].rec.goals_met}
        n_goals = len(search.goal_calls)
        credited_names = [name for name, _ in search.credited]
        reward = len(credited_names) / n_goals if n_goals else 0.0
        stats = dict(search.stats)
        stats["nodes"] = len(search.nodes)
        stats["prompt_tokens"] = sum(n.rec.prompt_tokens for n in search.nodes)
        stats["completion_tokens"] = sum(n.rec.completion_tokens for n in search.nodes)
        return TreeRecord(
            task_id=search.task_id,
            seed=self.config.seed,
            config={**self.config.to_dict(), "user": getattr(self.user, "name", type(self.user).__name__)},
            tools=search.tools,
            goal_calls=[g.to_dict() for g in search.goal_calls],
            reward=reward,
            success=bool(n_goals) and not search.remaining,
            goals_met=credited_names,
            golden_path=golden_path,
            nodes=[n.rec for n in search.nodes],
            stats=stats,
            golden_reward=len(on_path) / n_goals if n_goals else 0.0,
            credited_to=dict(search.credited),
            stopped=search.stopped or "error",
            error=search.error,
        )


__all__ = ["JOSHSearch", "node_seed", "user_seed"]
