"""Goal variants: training tasks with their values redrawn from the database."""

from __future__ import annotations

import pytest

from josh_hf.demo.demonstrations import build_demonstrations, training_task_ids
from josh_hf.demo.variants import parent_id, variant_id, with_goal_variants
from josh_hf.toolwoz import ToolWOZ, default_multiwoz_path
from josh_hf.toolwoz.matching import is_empty, normalise

pytestmark = pytest.mark.skipif(not default_multiwoz_path().exists(), reason="MultiWOZ data folder not available")


@pytest.fixture(scope="module")
def tw() -> ToolWOZ:
    return ToolWOZ.from_multiwoz(default_multiwoz_path())


def _filled(args: dict) -> dict:
    return {k: v for k, v in args.items() if not is_empty(v)}


def test_variant_ids_name_their_parent() -> None:
    assert variant_id("MUL0003", 2) == "MUL0003~v2"
    assert parent_id("MUL0003~v2") == "MUL0003"
    assert parent_id("MUL0003") == "MUL0003"


def test_variants_keep_the_structure_and_redraw_the_values(tw: ToolWOZ) -> None:
    ids = training_task_ids(tw)[:60]
    extended, vids = with_goal_variants(tw, ids, 2, seed=0)
    assert len(vids) == 120 and set(extended.tasks) == set(tw.tasks) | set(vids)
    changed = total = 0
    for vid in vids:
        variant, parent = extended.task(vid), tw.task(parent_id(vid))
        assert not set(vid) & set(tw.tasks)  # a new task, the parent untouched
        # Same calls in the same order, constraining the same slots ...
        assert [g.name for g in variant.goal_calls] == [g.name for g in parent.goal_calls]
        for g, p in zip(variant.goal_calls, parent.goal_calls):
            assert set(_filled(g.arguments)) == set(_filled(p.arguments)), (vid, g.name)
            total += len(_filled(p.arguments))
            changed += sum(g.arguments[k] != v for k, v in _filled(p.arguments).items())
            if g.action == "search":
                # ... with values that find database rows the way the environment searches.
                table = tw.database[g.domain]
                assert table.select({k: normalise(v) for k, v in g.arguments.items()}), (vid, g.arguments)
        # Its goal calls are reachable: replaying them scores 1.0, as for a real task.
        env = extended.env(vid)
        for g in variant.goal_calls:
            env.call(g.name, g.arguments)
        assert env.score().success, vid
    # Values are redrawn (a draw can hit the parent's own value, e.g. the same area).
    assert changed / total > 0.6, (changed, total)


def test_variants_are_deterministic_per_seed_and_never_from_held_out_tasks(tw: ToolWOZ) -> None:
    ids = training_task_ids(tw)[:10]
    goals = lambda seed: [g.to_dict() for v in with_goal_variants(tw, ids, 1, seed=seed)[1]  # noqa: E731
                          for g in with_goal_variants(tw, ids, 1, seed=seed)[0].task(v).goal_calls]
    assert goals(0) == goals(0)
    assert goals(0) != goals(1)
    with pytest.raises(ValueError, match="held-out"):
        with_goal_variants(tw, [tw.splits["test"][0]], 1)


def test_variant_demonstrations_copy_the_new_values(tw: ToolWOZ) -> None:
    ds = build_demonstrations(tw, split="validation", sources=["synthetic"], goal_variants=1, limit=6)
    ids = training_task_ids(tw)[:6]
    assert list(ds["source"]) == ["synthetic"] * 6 + ["variant"] * 6
    assert list(ds["task_id"]) == ids + ids  # a variant is filed under the task it derives from
    extended, _ = with_goal_variants(tw, ids, 1, seed=0)
    for row in ds.select(range(6, 12)):
        assert row["reward"] == 1.0
        goal = extended.task(variant_id(row["task_id"], 1))
        user_text = " ".join(m["content"] for m in row["messages"] if m["role"] == "user").lower()
        calls = [tc["function"] for m in row["messages"] for tc in (m.get("tool_calls") or [])]
        for g in goal.goal_calls:
            if g.action != "search":
                continue
            # The customer states the variant's values and the agent's search carries them.
            for k, v in _filled(g.arguments).items():
                # (yes/no slots and times are worded: "free parking", "after 13:15")
                if v not in ("dontcare", "yes", "no") and k not in ("leaveAt", "arriveBy"):
                    assert v in user_text, (row["task_id"], k, v)
            assert any(c["name"] == g.name and _filled(g.arguments).items() <= c["arguments"].items() for c in calls)
    with pytest.raises(ValueError, match="goal_variants"):
        build_demonstrations(tw, split="validation", sources=["synthetic"], goal_variants=-1)


def test_scratch_training_rows_take_each_source_up_to_its_cap() -> None:
    import datasets

    from josh_hf.demo.scratch import get_config, select_training_rows

    sources = ["multiwoz", "synthetic", "variant", "variant", "synthetic", "variant", "multiwoz"]
    rewards = [1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0]
    ds = datasets.Dataset.from_dict({"source": sources, "reward": rewards, "task_id": [f"T{i}" for i in range(7)],
                                     "messages": [[]] * 7, "tools": [[]] * 7})
    # Rows that reach the goal, synthetic first, then MultiWOZ, then variants, each in order.
    assert select_training_rows(ds, get_config("cpu", multiwoz=None))["task_id"] == ["T1", "T4", "T0", "T6", "T2", "T5"]
    assert select_training_rows(ds, get_config("cpu", multiwoz=1, variant=1))["task_id"] == ["T1", "T4", "T0", "T2"]
    assert select_training_rows(ds, get_config("cpu", multiwoz=0, variant=0))["task_id"] == ["T1", "T4"]


def test_saved_scratch_tokenizer_is_checked_against_the_trained_one(tmp_path) -> None:
    import json

    import datasets

    from josh_hf.demo.scratch import check_saved_tokenizer, get_config, build_model, train_tokenizer

    messages = [[{"role": "user", "content": "a table for 7 at 17:00 on sunday"},
                 {"role": "assistant", "content": "Booked for 7 people at 17:00."}]] * 4
    rows = datasets.Dataset.from_dict({"messages": messages, "tools": [[]] * 4})
    tokenizer = train_tokenizer(rows, 400)
    model = build_model(tokenizer, get_config("tiny"))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    # The scratch agent is a Llama model: AutoTokenizer reads its tokenizer.json as trained.
    assert model.config.model_type == "llama"
    check_saved_tokenizer(tmp_path, tokenizer, rows)
    # A saved tokenizer that splits differently (here: every character apart) is caught.
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "."}, "behavior": "Isolated", "invert": False}, spec["pre_tokenizer"]]}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(RuntimeError, match="differently"):
        check_saved_tokenizer(tmp_path, tokenizer, rows)
