"""``josh-hf harvest`` end to end on a tiny random model: valid trees, summary, a real kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from josh_hf.cli import main as cli_main
from josh_hf.josh import node_seed, read_trees
from josh_hf.josh.tree import iter_tree_dicts
from josh_hf.toolwoz import ToolWOZ, default_multiwoz_path

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from josh_hf.cli import main; sys.exit(main())", *args]


def _tiny_args(model: Path, *extra: str) -> list[str]:
    # Native format: the random model's text is speech, so branches live on; 16 new tokens
    # keep every turn cheap.
    return ["harvest", "--model", str(model), "--agent_format", "native", "--max_new_tokens", "16", *extra]


def test_harvest_writes_valid_trees_and_a_summary(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = _tiny_args(tiny_model_dir, "--limit", "3", "--beam_size", "4", "--max_steps", "3", "--seed", "3")
    assert cli_main([*args, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "JOSH reward" in printed and "agent turns" in printed

    tw = ToolWOZ.from_multiwoz(default_multiwoz_path())
    expected_ids = [t.id for t in tw.split("validation")[:3]]
    records = read_trees(out / "trees.jsonl")
    assert sorted(r.task_id for r in records) == sorted(expected_ids)
    for rec in records:
        assert rec.config["beam_size"] == 4 and rec.config["max_steps"] == 3 and rec.seed == 3
        assert rec.goal_calls == [g.to_dict() for g in tw.task(rec.task_id).goal_calls]
        assert len(rec.tools) == 8
        assert [n.id for n in rec.nodes] == list(range(len(rec.nodes)))
        assert [n.seed for n in rec.nodes] == [node_seed(3, rec.task_id, n.id) for n in rec.nodes]
        root = rec.nodes[0]
        assert [m["role"] for m in root.messages] == ["system", "user"] and root.parent is None
        assert all(n.parent is not None and n.parent < n.id for n in rec.nodes[1:])
        # Never more than beam-size leaves, and every leaf's turns are within the step budget.
        assert sum(not n.children for n in rec.nodes) <= 4
        assert all(1 <= t["step"] <= 3 for n in rec.nodes for t in n.turns)
        assert rec.stats["agent_turns"] == sum(len(n.turns) for n in rec.nodes) and rec.stats["steps"] <= 3
        assert rec.stopped in ("all_goals_met", "no_live_leaf", "max_steps")
        assert rec.reward == len(rec.goals_met) / len(rec.goal_calls)
        for n in rec.nodes:
            context = rec.context(n.id)
            assert context[: len(root.messages)] == root.messages
            assert context[len(context) - len(n.messages) :] == n.messages

    summary = json.loads((out / "summary.json").read_text())
    assert summary["tasks"] == 3
    assert summary["josh_reward"] == pytest.approx(sum(r.reward for r in records) / 3)
    assert summary["agent_turns"] == sum(r.stats["agent_turns"] for r in records) == summary["run"]["agent_turns"]
    assert summary["settings"]["split"] == "validation" and summary["settings"]["temperature"] == 1.0
    assert set(summary["examples"]) == {"sft", "kto_desirable", "kto_undesirable", "dpo"}
    assert summary["run"]["turns_per_second"] > 0

    # A finished run is not clobbered without --resume / --overwrite.
    assert cli_main([*args, "--output", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    # Resuming a complete run searches nothing more.
    assert cli_main([*args, "--output", str(out), "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["run"] == {
        "tasks": 0, "resumed_from": 3, "agent_turns": 0, "wall_seconds": pytest.approx(0, abs=5), "turns_per_second": 0.0}


def test_bad_settings_are_refused_with_one_line(tiny_model_dir, tmp_path, capsys):
    out = str(tmp_path / "x")
    assert cli_main(_tiny_args(tiny_model_dir, "--temperature", "0", "--output", out)) == 2
    assert "temperature > 0" in capsys.readouterr().err
    assert cli_main(["harvest", "--model", "rule-based", "--output", out]) == 2
    assert "deterministic" in capsys.readouterr().err
    assert cli_main(_tiny_args(tiny_model_dir, "--credit", "most", "--output", out)) == 2
    assert "credit" in capsys.readouterr().err
    assert not Path(out).exists()


@pytest.mark.slow
def test_killed_harvest_resumes_to_the_same_trees(tiny_model_dir, tmp_path, capsys, wait_for_records):
    # One task at a time, so trees reach the disk one by one and the kill lands between them;
    # node seeds depend only on (seed, task, node), so a resumed run redoes a task exactly.
    args = _tiny_args(tiny_model_dir, "--limit", "4", "--beam_size", "2", "--max_steps", "4", "--seed", "11",
                      "--max_concurrent", "1")
    full = tmp_path / "full"
    assert cli_main([*args, "--output", str(full)]) == 0  # uninterrupted, in this process

    part = tmp_path / "part"
    proc = subprocess.Popen(_cli(*args, "--output", str(part)), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_records(lambda: len(list(iter_tree_dicts(part / "trees.jsonl"))), 1, proc, "trees")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(iter_tree_dicts(part / "trees.jsonl")))
    assert 1 <= done_before < 4
    subprocess.run(_cli(*args, "--output", str(part), "--resume"), check=True, env=ENV, capture_output=True)

    a = sorted(iter_tree_dicts(part / "trees.jsonl"), key=lambda r: r["task_id"])
    b = sorted(iter_tree_dicts(full / "trees.jsonl"), key=lambda r: r["task_id"])
    assert [r["task_id"] for r in a] == [r["task_id"] for r in b] and len(a) == 4
    assert [(r["reward"], len(r["nodes"]), r["stats"]) for r in a] == [(r["reward"], len(r["nodes"]), r["stats"]) for r in b]
    assert a == b  # every message of every node
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (part, full))
    assert sa["run"]["resumed_from"] == done_before and sa["run"]["tasks"] == 4 - done_before
    assert {k: v for k, v in sa.items() if k != "run"} == {k: v for k, v in sb.items() if k != "run"}
