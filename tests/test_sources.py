"""ToolWOZ builds identically from every MultiWOZ layout a user may have."""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest

from josh_hf.cli import main as cli_main
from josh_hf.toolwoz import MultiWOZSourceError, ToolWOZ, default_multiwoz_path, load_multiwoz


@pytest.fixture(scope="module")
def reference() -> ToolWOZ:
    return ToolWOZ.from_multiwoz(default_multiwoz_path())


@pytest.fixture(scope="module")
def official_dir(tmp_path_factory):
    """The official release's layout (data.json keyed "<ID>.json", list files, *_db.json),
    assembled in a temporary folder from the per-split files."""
    src = default_multiwoz_path()
    data = load_multiwoz(src)
    root = tmp_path_factory.mktemp("official") / "MULTIWOZ2 2"
    root.mkdir()
    (root / "data.json").write_text(json.dumps({f"{k}.json": v for k, v in data.dialogues.items()}))
    for name in ("testListFile.json", "valListFile.json"):
        shutil.copy(src / "toolwoz" / name, root / name)
    for db in (src / "db").glob("*_db.json"):
        shutil.copy(db, root / db.name)
    return root


def _same(a: ToolWOZ, b: ToolWOZ) -> None:
    assert a.splits == b.splits
    assert list(a.tasks) == list(b.tasks)
    for tid, task in a.tasks.items():
        assert task.goal_calls == b.tasks[tid].goal_calls, tid
        assert task.goal == b.tasks[tid].goal


def test_official_folder_builds_the_same_tasks(reference, official_dir):
    # Tool files are not part of MultiWOZ; they come from the default ToolWOZ data folder.
    built = ToolWOZ.from_multiwoz(official_dir)
    _same(reference, built)
    assert built.notes == []  # data.json holds every dialogue it has: no "train missing" note


def test_official_zip_builds_the_same_tasks(reference, official_dir, tmp_path):
    archive = tmp_path / "MultiWOZ_2.0.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for f in official_dir.iterdir():
            z.write(f, f"{official_dir.name}/{f.name}")
    _same(reference, ToolWOZ.from_multiwoz(archive))


def test_per_split_source_without_train_says_so(reference):
    assert "train" not in reference.splits
    assert any("train split is not in this source" in n for n in reference.notes)


def test_missing_or_broken_sources_fail_clearly(tmp_path):
    with pytest.raises(MultiWOZSourceError, match="does not exist"):
        load_multiwoz(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MultiWOZSourceError, match="neither data.json nor per-split"):
        load_multiwoz(tmp_path / "empty")
    (tmp_path / "notazip.zip").write_text("hello")
    with pytest.raises(MultiWOZSourceError, match="neither a folder nor a zip"):
        load_multiwoz(tmp_path / "notazip.zip")


def test_env_variable_selects_the_source(monkeypatch, tmp_path):
    monkeypatch.setenv("JOSH_HF_MULTIWOZ", str(tmp_path / "elsewhere"))
    assert default_multiwoz_path() == tmp_path / "elsewhere"


def test_cli_info_prints_counts_and_errors_cleanly(capsys, tmp_path):
    assert cli_main(["info"]) == 0
    out = capsys.readouterr().out
    assert "1598 tasks" in out and "1291" in out and "search_train" in out and "train split" in out
    assert cli_main(["info", "--source", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
