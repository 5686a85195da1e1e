"""The from-scratch experiment script (examples/toolwoz_from_scratch/run.py) at the ``tiny``
scale: every stage runs and the table, JSON and plot are written."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "toolwoz_from_scratch" / "run.py"


@pytest.mark.slow
def test_experiment_script_runs_at_tiny_scale(tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    spec = importlib.util.spec_from_file_location("toolwoz_from_scratch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "exp"
    rc = module.main(["--output", str(out), "--preset", "tiny", "--train-steps", "2", "--test-tasks", "3", "--synthetic-trials", "1", "--goal-variants", "0",
                      "--eval-trials", "2", "--dev-tasks", "2", "--josh-tasks", "2", "--beam-size", "2",
                      "--max-steps", "2", "--max-new-tokens", "8", "--epochs", "1", "--bootstrap-samples", "100"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    names = [row["agent"] for row in results["rows"]]
    # A tiny random agent earns no reward, so no round trains anything: agents that were not
    # optimised are dropped (they would equal the base) and there is no round 2.
    assert names == ["base"]
    assert results["test_tasks"] == 3 and results["device"]
    for row in results["rows"]:
        assert set(row["figures"]) >= {"average_reward", "success_rate", "pass^1", "pass^2"}
        assert ("vs_base" in row) == (row["agent"] != "base")
    table = (out / "results.md").read_text()
    assert table.startswith("| agent |") and table.count("\n") == len(names) + 2
    assert (out / "success.png").read_bytes()[:4] == b"\x89PNG"
    captured = capsys.readouterr()
    assert "| base |" in captured.out and "is not trained" in captured.err and "no round 2" in captured.err


def test_copy_diagnostic_runs_and_a_two_step_model_copies_nothing(capsys) -> None:
    path = SCRIPT.with_name("copy_diagnostic.py")
    spec = importlib.util.spec_from_file_location("copy_diagnostic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import random

    prompt, call = module.example(random.Random(3))
    arguments = json.loads(call.split("\n")[0])["arguments"]
    assert all(f" {v}" in prompt for v in arguments.values()) and set(arguments) == {"time", "day", "people", "name"}
    module.main(["--steps", "2", "--eval-every", "1", "--prefix-tokens", "20", "--layers", "1", "--hidden-size", "32"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step")]
    assert [line.split()[1] for line in lines] == ["1", "2"]
    assert all("exact calls 0/60" in line for line in lines)
