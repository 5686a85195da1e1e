"""``josh-hf evaluate`` end to end: results, YAML configs, a real crash and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from josh_hf.cli import main as cli_main
from josh_hf.commands.evaluate import read_transcripts

FIRST_TWO_TEST_TASKS = ["MUL0003", "MUL0004"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from josh_hf.cli import main; sys.exit(main())", *args]


def test_rule_based_agent_with_agenda_user(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["evaluate", "--limit", "12", "--trials", "2", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    m = results["metrics"]
    assert m["num_conversations"] == 24 and m["num_tasks"] == 12
    assert "pass^1" in m and "pass^2" in m and m["pass^2"] <= m["pass^1"]
    assert results["settings"]["model"] == "rule-based" and results["settings"]["user"] == "agenda"
    transcripts = read_transcripts(out / "transcripts.jsonl")
    assert len(transcripts) == 24
    assert m["average_reward"] == pytest.approx(sum(t["reward"] for t in transcripts) / 24)
    assert "success rate" in printed and "average reward" in printed
    # Refuses to clobber a finished run unless told.
    assert cli_main(["evaluate", "--limit", "12", "--output", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_yaml_config_and_clear_errors(tmp_path, capsys):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"model: rule-based\nuser: replay\nsplit: validation\nlimit: 3\noutput: {tmp_path / 'yaml'}\n")
    assert cli_main(["evaluate", "--config", str(cfg)]) == 0
    results = json.loads((tmp_path / "yaml" / "results.json").read_text())
    assert results["settings"]["user"] == "replay" and results["settings"]["split"] == "validation"
    assert results["metrics"]["num_conversations"] == 3
    capsys.readouterr()
    assert cli_main(["evaluate", "--user", "nobody", "--output", str(tmp_path / "x")]) == 2
    assert "user must be one of" in capsys.readouterr().err
    assert cli_main(["evaluate", "--split", "nope", "--output", str(tmp_path / "y")]) == 2
    assert "split 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_results(tmp_path, wait_for_records):
    args = ["evaluate", "--limit", "40", "--trials", "2", "--seed", "7"]
    full = tmp_path / "full"
    subprocess.run(_cli(*args, "--output", str(full)), check=True, env=ENV, capture_output=True)

    part = tmp_path / "part"
    proc = subprocess.Popen(_cli(*args, "--output", str(part)), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_records(lambda: len(read_transcripts(part / "transcripts.jsonl")), 10, proc, "transcripts")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(read_transcripts(part / "transcripts.jsonl"))
    assert 10 <= done_before < 80
    subprocess.run(_cli(*args, "--output", str(part), "--resume"), check=True, env=ENV, capture_output=True)

    assert (part / "results.json").read_text() == (full / "results.json").read_text()
    info = json.loads((part / "run_info.json").read_text())
    assert info["resumed_from"] == done_before and info["conversations_this_run"] == 80 - done_before
    key = lambda t: (t["task_id"], t["trial"])
    a = sorted(read_transcripts(part / "transcripts.jsonl"), key=key)
    b = sorted(read_transcripts(full / "transcripts.jsonl"), key=key)
    assert [key(t) for t in a] == [key(t) for t in b]
    assert [t["messages"] for t in a] == [t["messages"] for t in b]


@pytest.mark.parametrize("fmt", ["native", "react"])
def test_local_transformers_model_end_to_end(tiny_model_dir, tmp_path, fmt):
    out = tmp_path / fmt
    code = cli_main(["evaluate", "--model", str(tiny_model_dir), "--agent_format", fmt, "--limit", "2",
                     "--max_new_tokens", "16", "--max_visible_messages", "4", "--output", str(out)])
    assert code == 0
    transcripts = read_transcripts(out / "transcripts.jsonl")
    assert sorted(t["task_id"] for t in transcripts) == FIRST_TWO_TEST_TASKS
    for t in transcripts:
        assert t["agent_format"] == fmt
        assert t["context"][0]["role"] == "system" and t["counters"]["generations"] >= 1
        assert t["counters"]["completion_tokens"] > 0
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["num_conversations"] == 2
