"""The conversation runner: lock-step batching, budgets, scores, transcripts, failure isolation.

The agent is a ScriptedBackend and the user a scripted replay user (below), so every batch
size, message count and score is known in advance.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from josh_hf.agents import OUT_OF_GENERATIONS_TEXT, stable_seed
from josh_hf.backends.base import GenerationOutput, GenerationRequest, SamplingParams
from josh_hf.backends.scripted import ScriptedBackend, tool_call
from josh_hf.simulation import ConversationRunner, RunnerConfig, Transcript, trial_seed
from josh_hf.toolwoz import ToolWOZ, UnknownTaskError, default_multiwoz_path
from josh_hf.toolwoz.tasks import Task
from josh_hf.users.base import END_OF_CONVERSATION, UserSession, UserSimulator, UserTurn

TASKS = ["MUL0004", "MUL0014", "MUL0021", "MUL0035", "MUL0072"]


class ReplayLinesSession(UserSession):
    def __init__(self, task: Task, seed: int, lines: list[str]):
        super().__init__(task, seed)
        self.lines = lines
        self.next = 0


class ReplayLinesUser(UserSimulator):
    """A scripted test user: says its lines in order (per task, or the same for all), then
    ends the conversation. Tasks in ``fail_on`` make ``respond`` raise."""

    name = "replay-lines"

    def __init__(self, lines: list[str] | dict[str, list[str]], fail_on: Sequence[str] = ()):
        self.lines = lines
        self.fail_on = set(fail_on)
        self.batch_sizes: list[int] = []
        self.seen_seeds: dict[str, int] = {}

    def new_session(self, task: Task, seed: int = 0) -> ReplayLinesSession:
        self.seen_seeds[task.id] = seed
        lines = self.lines[task.id] if isinstance(self.lines, dict) else self.lines
        return ReplayLinesSession(task, seed, list(lines))

    def respond(self, batch: Sequence[tuple[UserSession, list[dict[str, Any]]]]) -> list[UserTurn]:
        self.batch_sizes.append(len(batch))
        turns = []
        for session, _visible in batch:
            assert isinstance(session, ReplayLinesSession)
            if session.task.id in self.fail_on:
                raise RuntimeError(f"user model crashed on {session.task.id}")
            if session.next >= len(session.lines):
                turns.append(UserTurn(f"Thanks, bye! {END_OF_CONVERSATION}", end=True))
            else:
                turns.append(UserTurn(session.lines[session.next]))
                session.next += 1
        return turns


@pytest.fixture(scope="module")
def tw() -> ToolWOZ:
    return ToolWOZ.from_multiwoz(default_multiwoz_path())


def native(**kw) -> RunnerConfig:
    return RunnerConfig(agent_format="native", **kw)


def goal_call_agent(tw: ToolWOZ):
    """A scripted native agent that, in its first turn, makes all of its task's goal calls in
    one generation, then says "All done.". The user's first line must be the task id."""

    def script(req: GenerationRequest):
        task_id = req.messages[1]["content"]
        if req.messages[-1]["role"] == "user" and len(req.messages) == 2:
            return GenerationOutput(text="", tool_calls=[
                tool_call(g.name, dict(g.arguments)) for g in tw.task(task_id).goal_calls
            ])
        return "All done."

    return script


def test_goal_calls_give_reward_one(tw):
    user = ReplayLinesUser({"MUL0035": ["MUL0035"]})
    runner = ConversationRunner(tw, ScriptedBackend(goal_call_agent(tw)), user, native())
    (t,) = runner.run(["MUL0035"])
    assert (t.reward, t.success, t.missed_goal_calls, t.ended_by) == (1.0, True, [], "user")
    assert [c["name"] for c in t.tool_calls] == ["search_hotel", "search_restaurant"]
    assert t.tool_calls[0]["result"][0]["name"] == "aylesbray lodge guest house"
    assert t.messages == [{"role": "user", "content": "MUL0035"}, {"role": "assistant", "content": "All done."}]
    assert t.closing_message == f"Thanks, bye! {END_OF_CONVERSATION}"
    assert [m["role"] for m in t.context] == ["system", "user", "assistant", "tool", "tool", "assistant"]
    assert t.counters == {"agent_turns": 1, "generations": 2, "tool_calls": 2, "prompt_tokens": 0,
                          "completion_tokens": 0}
    assert t.errors == [] and t.agent_format == "native"


def test_partial_reward_lists_missed_goals(tw):
    # MUL0004 has three goals; calling only the hotel search meets one of them.
    def script(req: GenerationRequest):
        if len(req.messages) == 2:
            goal = tw.task("MUL0004").goal_calls[0]
            return GenerationOutput(text="", tool_calls=[tool_call(goal.name, dict(goal.arguments))])
        return "Found a guesthouse."

    (t,) = ConversationRunner(tw, ScriptedBackend(script), ReplayLinesUser(["hi"]), native()).run(["MUL0004"])
    assert t.reward == pytest.approx(1 / 3) and not t.success
    assert [g["name"] for g in t.missed_goal_calls] == ["search_restaurant", "book_restaurant"]


def test_one_batched_call_per_round_for_all_conversations(tw):
    # Every conversation: the user says two lines, then ends. Conversations of even index make
    # a tool call before answering, odd ones answer at once.
    speaks_at_once = {tid for k, tid in enumerate(TASKS) if k % 2 == 1}

    def script(req: GenerationRequest):
        task_line = req.messages[1]["content"]
        if task_line in speaks_at_once or req.messages[-1]["role"] == "tool":
            return "Sure."
        return GenerationOutput(text="", tool_calls=[tool_call("search_train", {"day": "monday"})])

    backend = ScriptedBackend(script)
    user = ReplayLinesUser({tid: [tid, "and another thing"] for tid in TASKS})
    transcripts = ConversationRunner(tw, backend, user, native()).run(TASKS)

    # Per agent turn: one call for all 5, then one for the 3 that called a tool. Two turns.
    assert backend.batch_sizes == [5, 3, 5, 3]
    # The user opens all 5, answers all 5, then ends all 5: one respond call each time.
    assert user.batch_sizes == [5, 5, 5]
    assert [t.task_id for t in transcripts] == TASKS
    assert all(t.ended_by == "user" and len(t.messages) == 4 for t in transcripts)


def test_visible_budget_stops_the_conversation(tw):
    chatty = ReplayLinesUser([f"line {k}" for k in range(30)])
    backend = ScriptedBackend(lambda req: "ok")
    (t,) = ConversationRunner(tw, backend, chatty, native()).run(["MUL0035"])
    # As in the reference loop, the budget is checked before the user speaks: the user's
    # 8th message is the 15th visible one, the agent answers it, then the run stops.
    assert t.ended_by == "max_messages" and len(t.messages) == 16
    assert sum(m["role"] == "user" for m in t.messages) == 8
    assert t.closing_message is None

    (t,) = ConversationRunner(tw, ScriptedBackend(lambda req: "ok"), ReplayLinesUser(["a"] * 9),
                              native(max_visible_messages=4)).run(["MUL0035"])
    assert t.ended_by == "max_messages" and len(t.messages) == 4


def test_out_of_generations_does_not_end_the_conversation(tw):
    never_speaks = ScriptedBackend(lambda req: GenerationOutput(text="", tool_calls=[tool_call("search_hotel", {})]))
    config = native(max_generations_per_turn=2)
    (t,) = ConversationRunner(tw, never_speaks, ReplayLinesUser(["hi", "hello?"]), config).run(["MUL0035"])
    assert t.ended_by == "user"
    assert [m["content"] for m in t.messages] == ["hi", OUT_OF_GENERATIONS_TEXT, "hello?", OUT_OF_GENERATIONS_TEXT]
    assert [e["kind"] for e in t.errors] == ["out_of_generations", "out_of_generations"]
    assert [e["turn"] for e in t.errors] == [0, 1]
    assert t.counters["generations"] == 4 and len(t.tool_calls) == 4


def test_react_conversation_end_to_end(tw):
    def script(req: GenerationRequest):
        if req.messages[-1]["content"].startswith("APIRETURN"):
            return "PLAN found <COMMAND_END> SPEAK Aylesbray Lodge is available. <COMMAND_END>"
        return 'APICALL {"name": "search_hotel", "parameters": {"name": "aylesbray lodge guest house"}} <COMMAND_END>'

    config = RunnerConfig(agent_format="react", system_prompt="Be helpful. APIs: {tools}")
    (t,) = ConversationRunner(tw, ScriptedBackend(script), ReplayLinesUser(["hotel please"]), config).run(["MUL0035"])
    assert t.reward == 0.5 and t.agent_format == "react"
    assert t.context[0]["content"].startswith("Be helpful. APIs: [")
    assert t.context[3]["content"].startswith("APIRETURN [")
    assert t.messages[-1] == {"role": "assistant", "content": "Aylesbray Lodge is available."}


def test_failures_are_isolated_per_conversation(tw):
    # MUL0014's user crashes; MUL0021's backend request fails after a correct call was made.
    def script(req: GenerationRequest):
        if req.messages[1]["content"] == "MUL0021" and len(req.messages) > 2 and req.messages[-1]["role"] == "tool":
            return GenerationOutput(text="", error="context too long")
        return goal_call_agent(tw)(req)

    user = ReplayLinesUser({tid: [tid] for tid in TASKS}, fail_on=["MUL0014"])
    done: list[str] = []
    transcripts = ConversationRunner(tw, ScriptedBackend(script), user, native()).run(
        TASKS, on_done=lambda t: done.append(t.task_id)
    )
    by_id = {t.task_id: t for t in transcripts}
    crashed = by_id["MUL0014"]
    assert crashed.ended_by == "error" and crashed.reward == 0.0 and crashed.messages == []
    assert [e["kind"] for e in crashed.errors] == ["user_error"] and "crashed on MUL0014" in crashed.errors[0]["message"]
    failed = by_id["MUL0021"]
    assert failed.ended_by == "error" and failed.reward == 0.0 and len(failed.tool_calls) == 2
    assert [e["kind"] for e in failed.errors] == ["backend_error"]
    assert len(failed.missed_goal_calls) == 2  # a crash scores 0: every goal counts as missed
    for tid in ("MUL0004", "MUL0035", "MUL0072"):
        assert (by_id[tid].ended_by, by_id[tid].reward, by_id[tid].errors) == ("user", 1.0, [])
    # The crashed ones finished first (the user crash at the opening, the backend one in turn 1).
    assert done[:2] == ["MUL0014", "MUL0021"] and sorted(done) == sorted(TASKS)
    # The failing batched respond call was retried one conversation at a time.
    assert user.batch_sizes[:6] == [5, 1, 1, 1, 1, 1]


def test_on_done_order_and_input_order(tw):
    user = ReplayLinesUser({"MUL0035": ["a", "b", "c"], "MUL0004": ["a"]})
    done: list[tuple[str, int]] = []
    out = ConversationRunner(tw, ScriptedBackend(lambda req: "ok"), user, native()).run(
        ["MUL0035", "MUL0004"], trials=2, on_done=lambda t: done.append((t.task_id, t.trial))
    )
    assert [(t.task_id, t.trial) for t in out] == [("MUL0035", 0), ("MUL0035", 1), ("MUL0004", 0), ("MUL0004", 1)]
    assert done == [("MUL0004", 0), ("MUL0004", 1), ("MUL0035", 0), ("MUL0035", 1)]


def test_trial_seeds_are_stable_and_reach_user_and_sampling(tw):
    # blake2b of the parts: the same in every process and Python version.
    assert trial_seed(0, "MUL0035", 0) == stable_seed(0, "MUL0035", 0) == 1004431807
    assert len({trial_seed(0, "MUL0035", k) for k in range(3)}) == 3
    assert trial_seed(1, "MUL0035", 0) != trial_seed(0, "MUL0035", 0)

    user = ReplayLinesUser(["hi"])
    backend = ScriptedBackend(lambda req: "ok")
    config = native(seed=3, sampling=SamplingParams(temperature=1.0, seed=999))
    (t,) = ConversationRunner(tw, backend, user, config).run(["MUL0035"], trials=1)
    assert t.seed == trial_seed(3, "MUL0035", 0) == user.seen_seeds["MUL0035"]
    assert backend.requests[0].sampling == SamplingParams(temperature=1.0, seed=stable_seed(t.seed, 0))


def test_skip_and_max_concurrent(tw):
    backend = ScriptedBackend(lambda req: "ok")
    user = ReplayLinesUser(["hi"])
    out = ConversationRunner(tw, backend, user, native(max_concurrent=2)).run(
        TASKS, trials=2, skip={("MUL0004", 0), "MUL0014"}
    )
    assert [(t.task_id, t.trial) for t in out] == [
        ("MUL0004", 1), ("MUL0021", 0), ("MUL0021", 1), ("MUL0035", 0), ("MUL0035", 1), ("MUL0072", 0), ("MUL0072", 1),
    ]
    assert max(backend.batch_sizes) == 2 and max(user.batch_sizes) == 2
    assert sum(backend.batch_sizes) == 7


def test_unknown_task_raises_before_running(tw):
    backend = ScriptedBackend(lambda req: "ok")
    with pytest.raises(UnknownTaskError):
        ConversationRunner(tw, backend, ReplayLinesUser(["hi"]), native()).run(["MUL0035", "NOPE0000"])
    assert backend.batch_sizes == []


def test_transcript_round_trips_through_json(tw):
    (t,) = ConversationRunner(tw, ScriptedBackend(goal_call_agent(tw)), ReplayLinesUser({"MUL0035": ["MUL0035"]}),
                              native()).run(["MUL0035"])
    t.errors.append({"turn": 0, "kind": "bad_json", "message": "x"})
    line = json.dumps(t.to_dict())
    back = Transcript.from_dict(json.loads(line))
    assert back == t and back.to_dict() == t.to_dict()
    assert back.error_counts == {"bad_json": 1}


def test_transcript_tool_calls_score_the_same_with_the_metric(tw):
    from josh_hf.toolwoz.metric_core import score_conversation

    def script(req: GenerationRequest):
        if len(req.messages) == 2:
            goal = tw.task("MUL0004").goal_calls[0]
            return GenerationOutput(text="", tool_calls=[tool_call(goal.name, dict(goal.arguments)),
                                                         tool_call("book_taxi", {"x": "y"})])
        return "Done."

    (t,) = ConversationRunner(tw, ScriptedBackend(script), ReplayLinesUser(["hi"]), native()).run(["MUL0004"])
    scored = score_conversation(json.loads(json.dumps(t.tool_calls)), tw.task("MUL0004"))
    assert scored.reward == t.reward == pytest.approx(1 / 3)
    assert scored.num_calls == 2 and scored.num_invalid_calls == 1
