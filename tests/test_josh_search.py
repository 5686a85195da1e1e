"""JOSH search on hand-built trees: every expansion, collapse, mark and stop rule known exactly.

The agent is a ScriptedBackend whose every turn is decided by (task, node id, step): a
node's id is recovered from the request's sampling seed, which JOSH derives from
``stable_seed(config.seed, task_id, node_id)`` and the generation count. Node ids follow
creation order: root 0; step 1 makes 1, 2; step 2 makes 3, 4 (children of 1) and 5, 6
(children of 2); step 3 makes 7..14. The user is a small scripted one (below).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from josh_hf.agents.turn import OUT_OF_GENERATIONS_TEXT, stable_seed
from josh_hf.backends.base import GenerationOutput, GenerationRequest, SamplingParams
from josh_hf.backends.scripted import ScriptedBackend, tool_call
from josh_hf.josh import JOSHConfig, JOSHSearch, TreeRecord, node_seed, read_trees, user_seed, write_tree
from josh_hf.toolwoz import ToolWOZ, default_multiwoz_path
from josh_hf.toolwoz.tasks import Task
from josh_hf.users.base import UserSession, UserSimulator, UserTurn

# Both: search_hotel, book_hotel, search_restaurant, book_restaurant (each met by its own
# goal call, so any subset of them can be met in one turn).
TASK = "MUL0065"
OTHER = "MUL0106"
SEED = 5


@pytest.fixture(scope="module")
def tw() -> ToolWOZ:
    return ToolWOZ.from_multiwoz(default_multiwoz_path())


class LineUser(UserSimulator):
    """A scripted test user: opens with its task id, hangs up when the agent says ``HANGUP``,
    crashes when the agent says ``CRASH-USER``, and otherwise answers ``reply <n>``."""

    name = "line-user"

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []
        self.sessions: list[UserSession] = []

    def new_session(self, task: Task, seed: int = 0) -> UserSession:
        session = UserSession(task, seed)
        self.sessions.append(session)
        return session

    def respond(self, batch: Sequence[tuple[UserSession, list[dict[str, Any]]]]) -> list[UserTurn]:
        self.batch_sizes.append(len(batch))
        turns = []
        for session, visible in batch:
            if not visible:
                turns.append(UserTurn(f"Hi, this is {session.task.id}."))
            elif visible[-1]["content"] == "HANGUP":
                turns.append(UserTurn("Bye then.", end=True))
            elif visible[-1]["content"] == "CRASH-USER":
                raise RuntimeError("user model crashed")
            else:
                turns.append(UserTurn(f"reply {len(visible)}"))
        return turns


class TreeAgent:
    """Scripted native agent: ``plan[(task, node, step)]`` is what the node does that turn.

    * absent: says ``node <id> step <step>``;
    * a list of goal names: calls them (with the goal's own arguments), then says ``Done.``;
    * ``"hangup"`` / ``"crash-user"``: says ``HANGUP`` / ``CRASH-USER``;
    * ``"error"``: the backend fails for this request;
    * ``"loop"``: calls a non-goal tool in every generation (runs out of generations).
    """

    def __init__(self, tw: ToolWOZ, plan: dict[tuple[str, int, int], Any], seed: int = SEED,
                 tasks: Sequence[str] = (TASK, OTHER)):
        self.tw, self.plan = tw, plan
        # The seed of a node's g-th generation is stable_seed(node seed, g) (generation_sampling).
        self.table = {stable_seed(node_seed(seed, t, n), g): (t, n, g) for t in tasks for n in range(64) for g in range(48)}
        self.seen: list[tuple[str, int, int, int]] = []

    def __call__(self, request: GenerationRequest) -> GenerationOutput | str:
        task, node, gen = self.table[request.sampling.seed]
        step = sum(m["role"] == "user" for m in request.messages)
        self.seen.append((task, node, step, gen))
        action = self.plan.get((task, node, step))
        if action == "error":
            return GenerationOutput(text="", error="boom")
        if action == "loop":
            return GenerationOutput(text="", tool_calls=[tool_call("search_attraction", {"area": "north"})])
        if request.messages[-1]["role"] == "tool":
            return "Done."
        if action is None:
            return f"node {node} step {step}"
        if action in ("hangup", "crash-user"):
            return action.upper()
        goals = {g.name: g for g in self.tw.task(task).goal_calls}
        return GenerationOutput(text="", tool_calls=[tool_call(n, dict(goals[n].arguments)) for n in action])


def config(**kw: Any) -> JOSHConfig:
    kw.setdefault("agent_format", "native")
    kw.setdefault("seed", SEED)
    kw.setdefault("sampling", SamplingParams(temperature=1.0))
    return JOSHConfig(**kw)


def search(tw: ToolWOZ, plan: dict, **kw: Any) -> tuple[JOSHSearch, ScriptedBackend, LineUser, TreeAgent]:
    agent = TreeAgent(tw, plan)
    backend, user = ScriptedBackend(agent), LineUser()
    max_batch = kw.pop("max_batch", None)
    return JOSHSearch(tw, backend, user, config(**kw), max_batch=max_batch), backend, user, agent


def ids(record: TreeRecord, flag: str) -> list[int]:
    return [n.id for n in record.nodes if getattr(n, flag)]


# ------------------------------------------------------------------------------ expansion


def test_leaves_grow_1_2_4_8_then_stay_at_the_beam(tw):
    josh, backend, user, _ = search(tw, {}, max_steps=5)
    (rec,) = josh.run([TASK])
    # Live leaves before each step: 1, 2, 4, 8, 8 -> agent turns 2, 4, 8, 8, 8, each one round.
    assert backend.batch_sizes == [2, 4, 8, 8, 8]
    # Opening, then a reply after every step but the last (no agent turn would follow it).
    assert user.batch_sizes == [1, 2, 4, 8, 8]
    assert len(rec.nodes) == 1 + 2 + 4 + 8
    assert [n.parent for n in rec.nodes] == [None, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    assert [n.step for n in rec.nodes] == [0, 1, 1, 2, 2, 2, 2] + [3] * 8
    assert rec.stopped == "max_steps" and rec.stats["steps"] == 5
    assert rec.stats["agent_turns"] == 30 and rec.stats["generations"] == 30
    assert [n.ended for n in rec.nodes] == [None] * 7 + ["max_steps"] * 8
    assert (rec.reward, rec.success, rec.goals_met, rec.golden_path) == (0.0, False, [], [])
    assert ids(rec, "recorded") == [] and ids(rec, "successful") == [] and rec.golden_conversation() is None
    # Leaves 7..14 took three turns each (steps 3, 4, 5): not split, they kept going.
    assert [t["step"] for t in rec.nodes[7].turns] == [3, 4, 5]
    context = rec.context(7)
    assert [m["role"] for m in context] == ["system", "user"] + ["assistant", "user"] * 4 + ["assistant"]
    assert context[-1]["content"] == "node 7 step 5"
    assert [m["content"] for m in context if m["role"] == "assistant"] == [
        "node 1 step 1", "node 3 step 2", "node 7 step 3", "node 7 step 4", "node 7 step 5"]


def test_root_is_the_context_after_the_opening_and_nodes_hold_only_what_they_add(tw):
    josh, *_ = search(tw, {}, max_steps=2)
    (rec,) = josh.run([TASK])
    root = rec.nodes[0]
    assert [m["role"] for m in root.messages] == ["system", "user"]
    assert root.messages[1]["content"] == f"Hi, this is {TASK}."
    assert root.turns == [] and root.seed == node_seed(SEED, TASK, 0)
    assert rec.nodes[1].messages == [{"role": "assistant", "content": "node 1 step 1"},
                                     {"role": "user", "content": "reply 2"}]
    assert rec.nodes[1].turns == [{"step": 1, "start": 0, "end": 1, "goals_met": []}]
    assert rec.nodes[3].messages == [{"role": "assistant", "content": "node 3 step 2"}]  # last step: no reply


def test_siblings_sample_with_distinct_seeds(tw):
    josh, backend, _, _ = search(tw, {}, max_steps=3)
    (rec,) = josh.run([TASK])
    seeds = [n.seed for n in rec.nodes]
    assert seeds == [node_seed(SEED, TASK, i) for i in range(len(rec.nodes))]
    assert len(set(seeds)) == len(seeds)
    first, second = backend.requests[:2]  # nodes 1 and 2: the same context, different seeds
    assert first.messages == second.messages
    assert first.sampling.seed != second.sampling.seed
    assert first.sampling.temperature == 1.0
    assert len({r.sampling.seed for r in backend.requests}) == len(backend.requests)


def test_temperature_zero_is_refused():
    with pytest.raises(ValueError, match="temperature > 0"):
        JOSHConfig(sampling=SamplingParams(temperature=0.0))
    with pytest.raises(ValueError, match="credit"):
        JOSHConfig(credit="most")
    with pytest.raises(ValueError, match="beam_size"):
        JOSHConfig(beam_size=0)


def test_harvest_command_and_trainer_configs_give_the_same_search():
    from josh_hf.commands.harvest import HarvestConfig
    from josh_hf.trainer import JOSHKTOConfig

    expected = JOSHConfig(beam_size=4, max_steps=5, max_generations_per_turn=2, agent_format="native",
                          sampling=SamplingParams(temperature=0.8, top_p=0.9, top_k=20, max_new_tokens=96),
                          seed=7, credit="all", system_prompt="Be brief. {tools}")
    command = HarvestConfig(model="m", beam_size=4, max_steps=5, max_generations_per_turn=2, agent_format="native",
                            temperature=0.8, top_p=0.9, top_k=20, max_new_tokens=96, seed=7, credit="all",
                            system_prompt="Be brief. {tools}")
    trainer = JOSHKTOConfig(output_dir="unused", use_cpu=True, josh_beam_size=4, josh_max_steps=5,
                            josh_max_generations_per_turn=2, josh_agent_format="native", josh_temperature=0.8,
                            josh_top_p=0.9, josh_top_k=20, josh_max_new_tokens=96, seed=7, josh_credit="all",
                            josh_system_prompt="Be brief. {tools}")
    assert command.josh_config() == expected
    assert trainer.josh_search_config() == expected
    # A bad setting is refused by the command's own validation, with the field named.
    with pytest.raises(ValueError, match="beam_size"):
        HarvestConfig(model="m", beam_size=0)


# ------------------------------------------------------------------------------ collapse

COLLAPSE_PLAN = {
    (TASK, 4, 2): ["book_hotel"],
    (TASK, 6, 2): ["book_restaurant"],
    # After the collapse node 4 is the root; at step 3 it splits into 7 and 8.
    (TASK, 8, 3): ["search_hotel", "search_restaurant", "book_restaurant"],
}


def test_first_successful_leaf_collapses_and_only_its_goals_are_removed(tw):
    josh, backend, user, _ = search(tw, COLLAPSE_PLAN)
    (rec,) = josh.run([TASK])
    # Step 2: all 4 leaves, then 4 and 6 after their calls; step 3: 7 and 8, then 8.
    assert backend.batch_sizes == [2, 4, 2, 2, 1]
    # After the collapse at step 2 only node 4 is live; all goals are met at step 3.
    assert user.batch_sizes == [1, 2, 1]
    assert len(rec.nodes) == 9
    assert ids(rec, "successful") == [0, 1, 2, 4, 6, 8]
    assert ids(rec, "golden") == [0, 1, 4, 8]
    assert ids(rec, "recorded") == list(range(9))
    assert rec.nodes[4].goals_met == ["book_hotel"] and rec.nodes[6].goals_met == ["book_restaurant"]
    # book_restaurant, met by node 6 only, stayed remaining: node 8 met it again on the golden path.
    assert rec.nodes[8].goals_met == ["search_hotel", "search_restaurant", "book_restaurant"]
    assert rec.goals_met == ["book_hotel", "search_hotel", "search_restaurant", "book_restaurant"]
    assert rec.credited_to == {"book_hotel": 4, "search_hotel": 8, "search_restaurant": 8, "book_restaurant": 8}
    assert rec.golden_path == [0, 1, 4, 8]
    assert (rec.reward, rec.golden_reward, rec.success, rec.stopped) == (1.0, 1.0, True, "all_goals_met")
    # Dropped branches keep what they had; nothing ended on its own.
    assert [n.ended for n in rec.nodes] == [None] * 9
    assert rec.nodes[4].children == [7, 8] and rec.nodes[5].children == [] and rec.nodes[2].children == [5, 6]


def test_final_golden_state_is_recorded_when_the_last_goals_are_met_together(tw):
    josh, *_ = search(tw, COLLAPSE_PLAN)
    (rec,) = josh.run([TASK])
    golden = rec.golden_conversation()
    assert golden == rec.context(8)
    # The last turn met three goals at once; its calls and answer are all there.
    roles = [m["role"] for m in golden]
    assert roles == ["system", "user", "assistant", "user", "assistant", "tool", "assistant", "user",
                     "assistant", "tool", "tool", "tool", "assistant"]
    assert golden[-1] == {"role": "assistant", "content": "Done."}
    assert [c["name"] for c in rec.nodes[8].turn_calls] == ["search_hotel", "search_restaurant", "book_restaurant"]
    assert rec.nodes[8].turn_calls[2]["result"]["success"] is True
    assert rec.nodes[8].turns == [{"step": 3, "start": 0, "end": 5,
                                   "goals_met": ["search_hotel", "search_restaurant", "book_restaurant"]}]


def test_credit_all_removes_every_successful_leafs_goals(tw):
    josh, *_ = search(tw, COLLAPSE_PLAN, credit="all")
    (rec,) = josh.run([TASK])
    assert ids(rec, "golden") == [0, 1, 4, 8] and ids(rec, "successful") == [0, 1, 2, 4, 6, 8]
    # book_restaurant was credited to node 6 (a dropped branch), so node 8 no longer meets it.
    assert rec.nodes[8].goals_met == ["search_hotel", "search_restaurant"]
    assert rec.goals_met == ["book_hotel", "book_restaurant", "search_hotel", "search_restaurant"]
    assert rec.credited_to == {"book_hotel": 4, "book_restaurant": 6, "search_hotel": 8, "search_restaurant": 8}
    assert (rec.reward, rec.success) == (1.0, True)
    assert rec.golden_reward == 0.75  # what the golden conversation itself achieved
    assert rec.config["credit"] == "all"


def test_golden_leaf_becomes_root_and_growth_restarts(tw):
    plan = {(TASK, 4, 2): ["book_hotel"]}
    josh, backend, user, _ = search(tw, plan, max_steps=5)
    (rec,) = josh.run([TASK])
    # Steps 1-2 as before; from step 3 the tree regrows from node 4: 2, 4, 8 leaves.
    assert backend.batch_sizes == [2, 4, 1, 2, 4, 8]
    assert user.batch_sizes == [1, 2, 1, 2, 4]
    assert rec.golden_path == [0, 1, 4] and rec.goals_met == ["book_hotel"] and rec.reward == 0.25
    assert [n.parent for n in rec.nodes[7:9]] == [4, 4]
    # Nodes made after the last collapse were never recorded.
    assert ids(rec, "recorded") == [0, 1, 2, 3, 4, 5, 6]
    assert rec.stopped == "max_steps" and sum(n.ended == "max_steps" for n in rec.nodes) == 8


# ------------------------------------------------------------------------------ endings


def test_a_failing_leaf_ends_and_the_others_go_on(tw):
    plan = {(TASK, 3, 2): "error", (TASK, 5, 2): "loop"}
    josh, backend, _, _ = search(tw, plan, max_steps=3)
    (rec,) = josh.run([TASK])
    assert rec.nodes[3].ended == "error" and rec.nodes[3].error.startswith("backend_error: ")
    assert "boom" in rec.nodes[3].error
    assert rec.nodes[5].ended == "error" and rec.nodes[5].error.startswith("out_of_generations: ")
    # No "out of generations" message is left in an ended leaf's context.
    assert all(m.get("content") != OUT_OF_GENERATIONS_TEXT for m in rec.nodes[5].messages)
    assert [m["role"] for m in rec.nodes[5].messages] == ["assistant", "tool"] * 3
    # Step 2: 4 leaves, then 5 twice more (the loop); step 3: the 2 live leaves (4, 6) split.
    assert backend.batch_sizes == [2, 4, 1, 1, 4]
    assert [n.parent for n in rec.nodes[7:]] == [4, 4, 6, 6]
    assert rec.stats["agent_turns"] == 2 + 4 + 4


def test_a_user_that_hangs_up_ends_its_leaf(tw):
    josh, backend, _, _ = search(tw, {(TASK, 2, 1): "hangup"}, max_steps=3)
    (rec,) = josh.run([TASK])
    assert rec.nodes[2].ended == "user" and rec.nodes[2].closing_message == "Bye then."
    assert rec.nodes[2].messages == [{"role": "assistant", "content": "HANGUP"}]
    assert backend.batch_sizes == [2, 2, 4]  # only node 1 goes on: 1 -> 3, 4 -> 7..10
    assert rec.nodes[2].children == [] and rec.nodes[1].children == [3, 4]


def test_search_stops_when_no_leaf_is_left(tw):
    plan = {(TASK, 1, 1): "hangup", (TASK, 2, 1): "hangup"}
    josh, backend, user, _ = search(tw, plan)
    (rec,) = josh.run([TASK])
    assert rec.stopped == "no_live_leaf" and rec.stats["steps"] == 1
    assert backend.batch_sizes == [2] and user.batch_sizes == [1, 2]
    assert [n.ended for n in rec.nodes] == [None, "user", "user"]


def test_a_user_crash_ends_only_its_branch(tw):
    josh, _, user, _ = search(tw, {(TASK, 1, 1): "crash-user"}, max_steps=2)
    (rec,) = josh.run([TASK])
    assert rec.nodes[1].ended == "error" and rec.nodes[1].error == "user_error: RuntimeError: user model crashed"
    assert rec.nodes[2].ended is None and rec.nodes[2].children == [3, 4]
    assert user.batch_sizes == [1, 2, 1, 1]  # the failed batch, then each branch alone


def test_beam_one_never_splits(tw):
    josh, backend, _, _ = search(tw, {(TASK, 0, 2): ["book_hotel"]}, beam_size=1, max_steps=3)
    (rec,) = josh.run([TASK])
    assert len(rec.nodes) == 1 and backend.batch_sizes == [1, 1, 1, 1]
    root = rec.nodes[0]
    assert [t["step"] for t in root.turns] == [1, 2, 3] and root.goals_met == ["book_hotel"]
    assert rec.golden_path == [0] and root.golden and root.recorded and rec.reward == 0.25


# ------------------------------------------------------------------------------ batching


def test_one_backend_call_per_round_for_every_leaf_of_every_task(tw):
    plan = {(OTHER, 3, 2): ["book_hotel"]}
    josh, backend, user, _ = search(tw, plan, max_steps=4)
    a, b = josh.run([TASK, OTHER])
    # Step 1: 2 + 2; step 2: 4 + 4, then B's node 3 again; step 3: A's 8 + B's 2 (regrowing
    # from node 3); step 4: A's 8 + B's 4.
    assert backend.batch_sizes == [4, 8, 1, 10, 12]
    assert user.batch_sizes == [2, 4, 4 + 1, 8 + 2]
    assert (a.task_id, b.task_id) == (TASK, OTHER)
    assert b.golden_path == [0, 1, 3] and b.goals_met == ["book_hotel"] and a.goals_met == []
    assert [s.seed for s in user.sessions] == [user_seed(SEED, TASK), user_seed(SEED, OTHER)]


def test_one_leaf_at_a_time_gives_the_same_trees(tw):
    batched, *_ = search(tw, COLLAPSE_PLAN, max_steps=4)
    single, backend, user, _ = search(tw, COLLAPSE_PLAN, max_steps=4, max_batch=1)
    assert [r.to_dict() for r in single.run([TASK, OTHER])] == [r.to_dict() for r in batched.run([TASK, OTHER])]
    assert set(backend.batch_sizes) == {1} and set(user.batch_sizes) == {1}


def test_on_done_skip_and_unknown_tasks(tw):
    josh, *_ = search(tw, COLLAPSE_PLAN, max_steps=4)
    done: list[str] = []
    records = josh.run([OTHER, TASK, TASK], on_done=lambda r: done.append(r.task_id), skip={OTHER})
    assert [r.task_id for r in records] == [TASK] and done == [TASK]
    with pytest.raises(KeyError, match="NOPE"):
        josh.run(["NOPE"])


# ------------------------------------------------------------------------------ records


def test_records_round_trip_and_a_torn_last_line_is_ignored(tw, tmp_path):
    josh, *_ = search(tw, COLLAPSE_PLAN, max_steps=4)
    records = josh.run([TASK, OTHER])
    path = tmp_path / "trees.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            write_tree(f, r)
        f.write('{"task_id": "MUL9999", "nodes": [')  # a crash mid-write
    back = read_trees(path)
    assert [r.to_dict() for r in back] == [r.to_dict() for r in records]
    d = json.loads(path.read_text().splitlines()[0])
    assert set(d) >= {"task_id", "seed", "config", "tools", "goal_calls", "reward", "success", "goals_met",
                      "golden_path", "nodes", "stats"}
    assert set(d["nodes"][0]) >= {"id", "parent", "step", "messages", "turn_calls", "goals_met", "successful",
                                  "golden", "recorded", "ended", "error", "prompt_tokens", "completion_tokens"}
    assert set(d["stats"]) >= {"agent_turns", "steps", "generations"}
    assert d["goal_calls"][1] == tw.task(TASK).goal_calls[1].to_dict()
    assert d["config"]["beam_size"] == 8 and d["config"]["sampling"]["temperature"] == 1.0
    assert [t["function"]["name"] for t in d["tools"]][:1] == [tw.env(TASK).tools[0]["function"]["name"]]
    assert back[0].context(8) == records[0].context(8)


def test_capped_concurrency_starts_tasks_as_others_finish(tw):
    # TASK's leaves all hang up at step 1; OTHER then starts, its opening in the step's user call.
    plan = {(TASK, 1, 1): "hangup", (TASK, 2, 1): "hangup"}
    agent = TreeAgent(tw, plan)
    backend, user = ScriptedBackend(agent), LineUser()
    josh = JOSHSearch(tw, backend, user, config(max_steps=2), max_concurrent=1)
    done: list[str] = []
    a, b = josh.run([TASK, OTHER], on_done=lambda r: done.append(r.task_id))
    assert done == [TASK, OTHER] and a.stopped == "no_live_leaf" and b.stopped == "max_steps"
    assert backend.batch_sizes == [2, 2, 4]  # TASK step 1; OTHER steps 1 and 2
    assert user.batch_sizes == [1, 2, 1, 2]  # TASK opens; TASK's hang-ups; OTHER opens; OTHER replies
    uncapped, *_ = search(tw, plan, max_steps=2)
    assert [r.to_dict() for r in uncapped.run([TASK, OTHER])] == [a.to_dict(), b.to_dict()]
