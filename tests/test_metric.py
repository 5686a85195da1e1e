"""The ``toolwoz`` evaluate metric equals the environment's own score on the same calls.

Everything goes through ``evaluate.load(metric_path())`` (a real evaluate module, loaded
offline from the package folder); hand-worked examples pin pass^k and the invalid-call rate.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import datasets
import evaluate
import pytest
from datasets import Value

from josh_hf.metrics import load_toolwoz_metric, metric_path, toolwoz_inputs
from josh_hf.toolwoz import GoalCall, Task, ToolWOZ, default_multiwoz_path
from josh_hf.toolwoz.metric_core import compute_toolwoz_metric, pass_hat_k
from josh_hf.toolwoz.tools import ERROR_NOT_A_DICT, ERROR_NOT_ALLOWED


@pytest.fixture(scope="module")
def tw() -> ToolWOZ:
    return ToolWOZ.from_multiwoz(default_multiwoz_path())


@pytest.fixture(scope="module")
def metric() -> evaluate.EvaluationModule:
    return evaluate.load(metric_path(), keep_in_memory=True)


def replay(tw: ToolWOZ, task_id: str, calls: list[tuple[Any, Any]]) -> tuple[list[dict[str, Any]], Any]:
    """Run ``calls`` through a fresh episode: the transcript (name, arguments, result) and the env's score."""
    env = tw.env(task_id)
    out = [{"name": n, "arguments": a, "result": env.call(n, a)} for n, a in calls]
    return out, env.score()


def goal_replay(tw: ToolWOZ, task: Task) -> list[tuple[str, dict[str, Any]]]:
    return [(g.name, dict(g.arguments)) for g in task.goal_calls]


def hub_style_row(task: Task) -> dict[str, Any]:
    """The ``tasks`` config's layout (josh_hf.toolwoz.hub): per-call JSON strings, booked_uid a JSON value."""
    return {
        "id": task.id,
        "domains": task.domains,
        "goal": json.dumps(task.goal),
        "goal_calls": [
            {
                "name": g.name,
                "arguments": json.dumps(g.arguments),
                "booked_uid": None if g.booked_uid is None else json.dumps(g.booked_uid),
                "return": None if g.returns is None else json.dumps(g.returns),
            }
            for g in task.goal_calls
        ],
    }


def row(task: Task) -> dict[str, Any]:
    """A dataset-style task row: nested fields JSON-encoded."""
    return {"id": task.id, "goal_calls": json.dumps([g.to_dict() for g in task.goal_calls])}


@pytest.fixture(scope="module")
def test_replays(tw: ToolWOZ) -> list[tuple[Task, list[dict[str, Any]], Any]]:
    out = []
    for task in tw.split("test"):
        transcript, score = replay(tw, task.id, goal_replay(tw, task))
        out.append((task, transcript, score))
    return out


# -- equality with the environment -----------------------------------------------------------
def test_metric_path_loads_offline(metric: evaluate.EvaluationModule) -> None:
    assert metric_path().endswith("toolwoz")
    assert metric.name == "toolwoz"
    assert load_toolwoz_metric(keep_in_memory=True).name == "toolwoz"


def test_goal_replay_of_test_split_equals_env(metric, test_replays) -> None:
    assert len(test_replays) == 450
    rewards = [s.reward for _, _, s in test_replays]
    successes = [s.success for _, _, s in test_replays]
    res = metric.compute(predictions=[t for _, t, _ in test_replays], references=[row(task) for task, _, _ in test_replays])
    assert res["num_conversations"] == 450 and res["num_tasks"] == 450
    assert res["average_reward"] == math.fsum(rewards) / 450
    assert res["average_reward"] == pytest.approx(sum(rewards) / 450, abs=1e-12)
    assert round(res["average_reward"], 3) == 0.980
    assert res["success_rate"] == sum(successes) / 450 == 422 / 450
    assert res["pass^1"] == 422 / 450
    assert "pass^2" not in res
    assert res["num_goal_calls"] == 1291
    assert res["num_calls"] == 1291
    # Goal calls are always well-formed calls, so none is invalid.
    assert res["invalid_call_rate"] == 0.0
    # The reference page: every one of the 28 failures is a search goal.
    for name in ("book_train", "book_restaurant", "book_hotel"):
        assert res["tool_accuracy"][name] == 1.0
    assert set(res["tool_accuracy"]) == {f"{a}_{d}" for a in ("search", "book") for d in ("train", "restaurant", "hotel")} | {
        "search_attraction"
    }
    assert set(res["domain_accuracy"]) == {"train", "restaurant", "hotel", "attraction"}
    missed = sum(len(s.missed) for _, _, s in test_replays)
    met_total = sum(acc * n for acc, n in _tool_counts(res, test_replays))
    assert met_total == pytest.approx(1291 - missed)


def _tool_counts(res: dict[str, Any], replays) -> list[tuple[float, int]]:
    counts: dict[str, int] = {}
    for task, _, _ in replays:
        for g in task.goal_calls:
            counts[g.name] = counts.get(g.name, 0) + 1
    return [(res["tool_accuracy"][name], n) for name, n in counts.items()]


def test_add_batch_and_reference_forms_agree(metric, test_replays) -> None:
    """Batches, Task objects, goal-call lists, per-field JSON and add() all give the same scores."""
    preds = [t for _, t, _ in test_replays]
    expected = metric.compute(predictions=preds, references=[row(task) for task, _, _ in test_replays])
    forms = [
        lambda task: task,  # a Task object
        lambda task: [g.to_dict() for g in task.goal_calls],  # just the goal calls
        lambda task: json.dumps([g.to_dict() for g in task.goal_calls]),  # goal calls as one JSON string
        hub_style_row,  # the dataset's layout: every nested field a JSON string
    ]
    for form in forms:
        refs = [form(task) for task, _, _ in test_replays]
        for i in range(0, 450, 100):
            metric.add_batch(predictions=preds[i : i + 100], references=refs[i : i + 100])
        got = metric.compute()
        # Without ids, references are told apart by position, which changes nothing here.
        assert got == expected
    for (task, transcript, _) in test_replays[:30]:
        metric.add(prediction=transcript, reference=row(task))
    small = metric.compute()
    assert small == metric.compute(predictions=preds[:30], references=[row(t) for t, _, _ in test_replays[:30]])


def test_dataset_rows(metric, test_replays) -> None:
    """Rows read back from a real ``datasets.Dataset``, list-of-struct and Sequence (columnar) layouts."""
    preds = [t for _, t, _ in test_replays]
    expected = metric.compute(predictions=preds, references=[row(task) for task, _, _ in test_replays])
    call = {"name": Value("string"), "arguments": Value("string"), "booked_uid": Value("string"), "return": Value("string")}
    rows = [hub_style_row(task) for task, _, _ in test_replays]
    features = datasets.Features({"id": Value("string"), "goal_calls": datasets.List(call)})
    ds = datasets.Dataset.from_list([{"id": r["id"], "goal_calls": r["goal_calls"]} for r in rows], features=features)
    assert metric.compute(predictions=preds, references=list(ds)) == expected
    # A Sequence of structs is columnar: one dict of equal-length lists per row.
    columnar = [{"id": r["id"], "goal_calls": {k: [g[k] for g in r["goal_calls"]] for k in call}} for r in rows]
    features = datasets.Features({"id": Value("string"), "goal_calls": datasets.Sequence(call)})
    ds = datasets.Dataset.from_list(columnar, features=features)
    assert isinstance(ds[0]["goal_calls"], dict)
    assert metric.compute(predictions=preds, references=list(ds)) == expected
    try:
        from josh_hf.toolwoz.hub import TASK_FEATURES, task_to_row
    except ImportError:  # the Hub dataset module is optional for this test
        return
    ds = datasets.Dataset.from_list([task_to_row(task) for task, _, _ in test_replays], features=TASK_FEATURES)
    assert metric.compute(predictions=preds, references=list(ds)) == expected


def test_metric_on_disk_cache_with_add_batch(tmp_path, test_replays) -> None:
    m = evaluate.load(metric_path(), cache_dir=str(tmp_path), experiment_id="metric-test")
    preds = [t for _, t, _ in test_replays[:50]]
    refs = [row(task) for task, _, _ in test_replays[:50]]
    m.add_batch(predictions=preds[:25], references=refs[:25])
    m.add_batch(predictions=preds[25:], references=refs[25:])
    res = m.compute()
    rewards = [s.reward for _, _, s in test_replays[:50]]
    assert res["average_reward"] == math.fsum(rewards) / 50
    assert res["num_conversations"] == 50


def _perturb(rng: random.Random, task: Task) -> list[tuple[Any, Any]]:
    calls: list[tuple[Any, Any]] = []
    for g in task.goal_calls:
        r = rng.random()
        if r < 0.25:
            continue  # drop the call
        args = dict(g.arguments)
        if r < 0.55:
            filled = [k for k, v in args.items() if v]
            key = rng.choice(filled or list(args) or ["name"])
            args[key] = rng.choice(["cheap", "north", "2", "monday", "10:15", "cambridge", ""])
        elif r < 0.65:
            args = {k: v for k, v in args.items() if not v or rng.random() < 0.5}  # an underspecified call
        calls.append((g.name, args))
        if rng.random() < 0.15:
            calls.append((rng.choice(["search_taxi", "book_police", g.name]), {"bogus": "1"}))
    rng.shuffle(calls)
    return calls


def test_per_task_equality_under_perturbations(tw, metric) -> None:
    rng = random.Random(1234)
    tasks = rng.sample(tw.split("test_full"), 150)
    preds, refs, env_scores = [], [], []
    for task in tasks:
        transcript, score = replay(tw, task.id, _perturb(rng, task))
        preds.append(transcript)
        refs.append(row(task))
        env_scores.append(score)
    # Rewards must vary, or this would only re-test the all-correct case.
    assert len({round(s.reward, 6) for s in env_scores}) >= 5
    assert 0 < sum(s.success for s in env_scores) < len(tasks)
    for p, r, s in zip(preds, refs, env_scores):
        res = compute_toolwoz_metric([p], [r])
        assert res["average_reward"] == s.reward
        assert res["success_rate"] == float(s.success)
    for p, r, s in list(zip(preds, refs, env_scores))[:20]:  # the same through evaluate
        res = metric.compute(predictions=[p], references=[r])
        assert res["average_reward"] == s.reward
    res = metric.compute(predictions=preds, references=refs)
    assert res["average_reward"] == math.fsum(s.reward for s in env_scores) / len(tasks)
    assert res["success_rate"] == sum(s.success for s in env_scores) / len(tasks)


def test_json_string_arguments_and_results_score_the_same(metric, test_replays, tw) -> None:
    rng = random.Random(7)
    tasks = rng.sample(tw.split("test"), 60)
    preds, as_json, refs = [], [], []
    for task in tasks:
        transcript, _ = replay(tw, task.id, _perturb(rng, task))
        preds.append(transcript)
        # OpenAI tool calls carry arguments as JSON text; tool messages carry results as text.
        as_json.append(
            [{"name": c["name"], "arguments": json.dumps(c["arguments"]),
              "result": c["result"] if isinstance(c["result"], str) else json.dumps(c["result"])} for c in transcript]
        )
        refs.append(row(task))
    assert metric.compute(predictions=as_json, references=refs) == metric.compute(predictions=preds, references=refs)
    # Whole conversations as JSON strings, as toolwoz_inputs makes them.
    pairs = [toolwoz_inputs(p, r) for p, r in zip(preds, refs)]
    assert all(isinstance(a, str) and isinstance(b, str) for a, b in pairs)
    assert metric.compute(predictions=[a for a, _ in pairs], references=[b for _, b in pairs]) == metric.compute(
        predictions=preds, references=refs
    )


def test_recorded_calls_are_accepted(tw, metric) -> None:
    task = tw.split("test")[0]
    env = tw.env(task.id)
    for g in task.goal_calls:
        env.call(g.name, g.arguments)
    res = metric.compute(predictions=[env.calls], references=[task])
    assert res["average_reward"] == env.score().reward


# -- pass^k ----------------------------------------------------------------------------------
GOAL_A = [{"name": "book_train", "arguments": {"people": "2", "trainID": "TR0001"}, "booked_uid": "TR0001"}]
GOAL_B = [{"name": "book_hotel", "arguments": {"name": "alpha", "day": "monday", "people": "1", "stay": "2"}}]
OK = {"success": True, "return": {}}


def _conv(goal: list[dict[str, Any]], success: bool) -> list[dict[str, Any]]:
    args = dict(goal[0]["arguments"]) if success else {**goal[0]["arguments"], "people": "9"}
    return [{"name": goal[0]["name"], "arguments": args, "result": OK if success else {"success": False, "return": {}}}]


def test_pass_hat_k_hand_worked(metric) -> None:
    # Task A: 3 trials, 2 successes; task B: 3 trials, 3 successes (interleaved on purpose).
    convs = [("A", True), ("B", True), ("A", False), ("B", True), ("A", True), ("B", True)]
    preds = [_conv(GOAL_A if t == "A" else GOAL_B, ok) for t, ok in convs]
    refs = [{"id": t, "goal_calls": GOAL_A if t == "A" else GOAL_B} for t, _ in convs]
    res = metric.compute(predictions=preds, references=refs)
    assert res["num_conversations"] == 6 and res["num_tasks"] == 2
    assert res["pass^1"] == pytest.approx((2 / 3 + 1) / 2)
    assert res["pass^2"] == pytest.approx((1 / 3 + 1) / 2)
    assert res["pass^3"] == pytest.approx((0 + 1) / 2)
    assert "pass^4" not in res
    assert res["success_rate"] == pytest.approx(5 / 6)
    # k stops at the fewest trials of any task.
    res2 = metric.compute(predictions=preds[:5], references=refs[:5])  # B has 2 trials
    assert sorted(k for k in res2 if k.startswith("pass^")) == ["pass^1", "pass^2"]
    assert res2["pass^2"] == pytest.approx((1 / 3 + 1) / 2)
    assert pass_hat_k({"A": [True, False, True], "B": [True] * 3}) == pytest.approx({1: 5 / 6, 2: 2 / 3, 3: 0.5})


def test_references_without_id_are_separate_tasks(metric) -> None:
    res = metric.compute(predictions=[_conv(GOAL_A, True), _conv(GOAL_A, False)], references=[GOAL_A, GOAL_A])
    assert res["num_tasks"] == 2 and res["pass^1"] == 0.5 and "pass^2" not in res


def test_booked_uid_falls_back_to_uid_argument() -> None:
    # A row that dropped booked_uid still steers the search goal by the booked train.
    goals = [
        {"name": "search_train", "arguments": {"departure": "cambridge", "destination": "ely", "day": "", "leaveAt": "",
                                               "arriveBy": ""}},
        {"name": "book_train", "arguments": {"people": "1", "trainID": "TR2"}},
    ]
    wrong_row = [{"trainID": "TR1", "departure": "cambridge", "destination": "ely"}]
    pred = [{"name": "search_train", "arguments": {"departure": "cambridge", "destination": "ely"}, "result": wrong_row}]
    assert compute_toolwoz_metric([pred], [goals])["average_reward"] == 0.0
    right = [{**pred[0], "result": [{**wrong_row[0], "trainID": "TR2"}]}]
    assert compute_toolwoz_metric([right], [goals])["tool_accuracy"]["search_train"] == 1.0


# -- invalid calls ---------------------------------------------------------------------------
def test_invalid_call_rate_hand_made(tw, metric) -> None:
    task = next(t for t in tw.split("test") if t.goal_call("book_train"))
    g = task.goal_call("book_train")
    raw_calls: list[tuple[Any, Any]] = [
        (g.name, dict(g.arguments)),  # valid
        ("search_train", {"colour": "red"}),  # refused: ERROR string
        (g.name, "{not json"),  # arguments text that is not JSON: kept raw, refused
        ("get_weather", {}),  # unknown tool
        ("search_train", {"departure": "cambridge"}),  # valid
    ]
    transcript, score = replay(tw, task.id, raw_calls)
    assert transcript[1]["result"] == ERROR_NOT_ALLOWED and transcript[2]["result"] == ERROR_NOT_A_DICT
    # Unknown tool with a non-error result (another environment's answer) still counts.
    transcript[3]["result"] = "sunny"
    res = metric.compute(predictions=[transcript], references=[row(task)])
    assert res["num_calls"] == 5
    assert res["invalid_call_rate"] == 3 / 5
    assert res["average_reward"] == score.reward
    # As OpenAI carries it: JSON text; the non-JSON text stays what it was.
    as_text = [{**c, "arguments": c["arguments"] if isinstance(c["arguments"], str) else json.dumps(c["arguments"])}
               for c in transcript]
    assert metric.compute(predictions=[as_text], references=[row(task)]) == res
    # A JSON string that decodes to a non-dict is invalid too.
    res = metric.compute(predictions=[[{"name": g.name, "arguments": "[1, 2]", "result": ERROR_NOT_A_DICT}]],
                         references=[row(task)])
    assert res["invalid_call_rate"] == 1.0 and res["average_reward"] == 0.0


def test_no_calls_has_zero_invalid_rate(metric) -> None:
    res = metric.compute(predictions=[[]], references=[GOAL_A])
    assert res["num_calls"] == 0 and res["invalid_call_rate"] == 0.0 and res["average_reward"] == 0.0


# -- malformed inputs ------------------------------------------------------------------------
GOOD = _conv(GOAL_A, True)


@pytest.mark.parametrize(
    ("preds", "refs", "needles"),
    [
        ([GOOD, {"name": "book_train"}], [GOAL_A, {"id": "T9", "goal_calls": GOAL_A}],
         ["conversation 1", "'T9'", "list of tool calls"]),
        ([GOOD, [GOOD[0], {"arguments": {}, "result": []}]], [GOAL_A, {"id": "T7", "goal_calls": GOAL_A}],
         ["call 1", "conversation 1", "'T7'", "no 'name'"]),
        ([[{"name": "search_train", "arguments": {}}]], [GOAL_A], ["call 0", "conversation 0", "no 'result'"]),
        (["[{not json"], [GOAL_A], ["conversation 0", "not valid JSON"]),
        ([[42]], [GOAL_A], ["call 0", "conversation 0"]),
        ([GOOD, GOOD], [GOAL_A, {"id": "T3"}], ["conversation 1", "goal_calls"]),
        ([GOOD], [[{"arguments": {}}]], ["goal call 0", "conversation 0", "no tool 'name'"]),
        ([GOOD], ["{broken"], ["conversation 0", "not valid JSON"]),
    ],
)
def test_malformed_inputs_name_the_conversation(preds, refs, needles) -> None:
    m = evaluate.load(metric_path(), keep_in_memory=True)
    with pytest.raises(ValueError) as exc:
        m.compute(predictions=preds, references=refs)
    for needle in needles:
        assert needle in str(exc.value)
    with pytest.raises(ValueError):
        compute_toolwoz_metric(preds, refs)
    # The failed batch left the module usable.
    assert m.compute(predictions=[GOOD], references=[GOAL_A])["average_reward"] == 1.0


def test_malformed_conversation_index_counts_across_batches() -> None:
    m = evaluate.load(metric_path(), keep_in_memory=True)
    m.add_batch(predictions=[GOOD, GOOD], references=[GOAL_A, GOAL_A])
    with pytest.raises(ValueError, match="conversation 2"):
        m.add_batch(predictions=[{"not": "a list"}], references=[GOAL_A])


def test_mismatched_lengths() -> None:
    m = evaluate.load(metric_path(), keep_in_memory=True)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        m.compute(predictions=[GOOD, GOOD], references=[GOAL_A])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        compute_toolwoz_metric([GOOD, GOOD], [GOAL_A])
    with pytest.raises(ValueError, match="no conversations"):
        compute_toolwoz_metric([], [])


def test_goal_call_round_trip_matches_from_dict(tw) -> None:
    # The metric's tolerant parser reads GoalCall.to_dict() back to an equal GoalCall.
    from josh_hf.toolwoz.metric_core import parse_reference

    for task in tw.split("test")[:100]:
        _, goals = parse_reference(row(task), 0)
        assert goals == [GoalCall.from_dict(g.to_dict()) for g in task.goal_calls]
