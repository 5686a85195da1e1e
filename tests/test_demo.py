"""``josh-hf demo`` end to end at the ``tiny`` scale: every stage runs, writes its files, and a
second run resumes instead of redoing the work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from josh_hf.cli import main
from josh_hf.demo.pipeline import DemoConfig

ARGS = ["--preset", "tiny", "--eval_tasks", "2", "--josh_tasks", "2", "--josh_beam_size", "2",
        "--josh_max_steps", "2", "--max_new_tokens", "12", "--josh_epochs", "1", "--synthetic_trials", "1"]


@pytest.mark.slow
def test_demo_runs_every_stage_and_resumes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", *ARGS, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "success_rate" in printed and "JOSH-SFT" in printed and str(out / "summary.json") in printed

    summary = json.loads((out / "summary.json").read_text())
    assert summary["tasks"] == 2
    for agent in ("base", "josh_sft"):
        sr = summary["figures"][agent]["success_rate"]
        assert sr["low"] <= sr["estimate"] <= sr["high"]
    assert set(summary["josh_sft_vs_base"]) >= {"average_reward", "success_rate", "pass^1"}
    # Test tasks only in the evaluations; the JOSH round searched training (validation) tasks.
    evaluated = {json.loads(line)["task_id"] for line in (out / "eval_base" / "transcripts.jsonl").read_text().splitlines()}
    assert len(evaluated) == 2
    trees = [json.loads(line) for p in sorted((out / "josh").rglob("trees.jsonl")) for line in p.read_text().splitlines()]
    assert len(trees) == 2 and not evaluated & {t["task_id"] for t in trees}
    for folder in ("base", "josh"):
        assert (out / folder / "config.json").exists() and (out / folder / "tokenizer_config.json").exists()

    # A second run finds every stage done: nothing is retrained or re-evaluated.
    stamps = {p: p.stat().st_mtime_ns for p in (out / "base" / "model.safetensors", out / "josh" / "model.safetensors")}
    transcripts = (out / "eval_josh" / "transcripts.jsonl").read_text()
    assert main(["demo", *ARGS, "--output", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert (out / "eval_josh" / "transcripts.jsonl").read_text() == transcripts
    assert json.loads((out / "summary.json").read_text())["figures"] == summary["figures"]

    # Resuming with demonstrations of other settings is refused, not silently mixed.
    capsys.readouterr()
    assert main(["demo", *ARGS, "--output", str(out), "--synthetic_trials", "2"]) == 2
    assert '"synthetic_trials": 2' in capsys.readouterr().err


def test_demo_config_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="josh_temperature"):
        DemoConfig(josh_temperature=0.0)
    with pytest.raises(ValueError, match="eval_tasks"):
        DemoConfig(eval_tasks=0)
    with pytest.raises(ValueError, match="synthetic_trials"):
        DemoConfig(synthetic_trials=0)
    with pytest.raises(ValueError, match="goal_variants"):
        DemoConfig(goal_variants=-1)
