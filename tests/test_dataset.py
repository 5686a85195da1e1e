"""The ToolWOZ Hugging Face dataset: build, card, offline loading, exact round trip, push."""

from __future__ import annotations

import base64
import gzip
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import datasets
import pytest

from josh_hf.toolwoz import ToolWOZ, default_multiwoz_path
from josh_hf.toolwoz.hub import build_toolwoz_dataset, looks_like_dataset, read_card_metadata

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_GOAL_CALLS = {
    "search_train": 350,
    "search_restaurant": 194,
    "search_attraction": 187,
    "search_hotel": 169,
    "book_train": 174,
    "book_restaurant": 127,
    "book_hotel": 90,
}

pytestmark = pytest.mark.skipif(
    not default_multiwoz_path().exists(), reason="MultiWOZ data folder not available"
)

pytestmark = [pytestmark, pytest.mark.usefixtures("private_datasets_cache")]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The dataset folder built once for the module, and the build summary."""
    out = tmp_path_factory.mktemp("toolwoz_dataset")
    summary = build_toolwoz_dataset(default_multiwoz_path(), out)
    return out, summary


@pytest.fixture(scope="module")
def original() -> ToolWOZ:
    return ToolWOZ.from_multiwoz(default_multiwoz_path())


@pytest.fixture(scope="module")
def roundtrip(built: tuple[Path, dict[str, Any]]) -> ToolWOZ:
    return ToolWOZ.from_dataset(built[0])


@pytest.fixture(scope="module")
def card(built: tuple[Path, dict[str, Any]]) -> str:
    return (built[0] / "README.md").read_text(encoding="utf-8")


def ordered(value: Any) -> Any:
    """``value`` with every dict turned into its list of items, so that == checks key order."""
    if isinstance(value, dict):
        return [(k, ordered(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [ordered(v) for v in value]
    return value


# -- the folder through plain `datasets` ---------------------------------------------------
def test_default_config_is_tasks_without_train(built: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    dd = datasets.load_dataset(str(built[0]), cache_dir=str(tmp_path))
    assert list(dd) == ["validation", "test", "test_full"]
    assert {s: len(d) for s, d in dd.items()} == {"validation": 793, "test": 450, "test_full": 805}
    assert "train" not in dd
    assert list(dd["test"].features) == ["id", "domains", "goal", "user_goal", "goal_calls", "dialogue"]
    row = next(r for r in dd["test"] if r["id"] == "MUL0744")
    assert row["domains"] == ["hotel", "train"]
    book_hotel = next(g for g in row["goal_calls"] if g["name"] == "book_hotel")
    # The reference's positional fallback: the booked hotel "name" is a postcode.
    assert json.loads(book_hotel["booked_uid"]) == "cb13lh"
    assert json.loads(book_hotel["return"]) == {"reference": "XJW0KU7Q", "name": "cb13lh"}
    assert json.loads(book_hotel["arguments"]) == {"stay": "3", "day": "sunday", "people": "4", "name": "cb13lh"}
    search = row["goal_calls"][0]
    assert search["name"] == "search_hotel" and search["booked_uid"] is None and search["return"] is None
    assert not any("<span" in s for s in row["user_goal"])


def test_databases_and_tools_configs(built: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    db = datasets.load_dataset(str(built[0]), "databases", cache_dir=str(tmp_path))
    assert {s: len(d) for s, d in db.items()} == {"restaurant": 110, "hotel": 33, "attraction": 79, "train": 2828}
    assert db["train"][0]["uid"] == json.loads(db["train"][0]["row"])["trainID"]
    tools = datasets.load_dataset(str(built[0]), "tools", split="tools", cache_dir=str(tmp_path))
    schemas = [json.loads(r["schema"]) for r in tools if r["schema"]]
    assert [s["function"]["name"] for s in schemas] == [
        "book_restaurant", "search_restaurant", "book_hotel", "search_hotel",
        "book_attraction", "search_attraction", "book_train", "search_train",
    ]
    # valid_api_defs also lists taxi and hospital APIs, without a schema.
    extra = {r["name"] for r in tools if r["schema"] is None}
    assert extra == {"book_taxi", "search_taxi", "book_hospital", "search_hospital"}


def test_loads_offline_in_a_fresh_process(built: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    code = (
        "import json, sys, datasets\n"
        "from josh_hf.toolwoz import ToolWOZ\n"
        "dd = datasets.load_dataset(sys.argv[1])\n"
        "tw = ToolWOZ.from_dataset(sys.argv[1])\n"
        "print(json.dumps({'splits': {s: len(d) for s, d in dd.items()}, 'tasks': len(tw)}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-c", code, str(built[0])], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"splits": {"validation": 793, "test": 450, "test_full": 805}, "tasks": 1598}


# -- the card ------------------------------------------------------------------------------
def test_card_yaml_names_the_configs(built: tuple[Path, dict[str, Any]]) -> None:
    meta = read_card_metadata(built[0])
    assert meta is not None
    assert meta["license"] == "mit" and meta["language"] == ["en"] and meta["pretty_name"] == "ToolWOZ"
    assert meta["size_categories"] == ["1K<n<10K"] and meta["task_categories"] and meta["tags"]
    configs = {c["config_name"]: c for c in meta["configs"]}
    assert list(configs) == ["tasks", "databases", "tools"]
    assert configs["tasks"].get("default") is True
    assert not any(c.get("default") for name, c in configs.items() if name != "tasks")
    assert [f["split"] for f in configs["tasks"]["data_files"]] == ["validation", "test", "test_full"]
    for c in configs.values():
        for f in c["data_files"]:
            assert all((built[0] / p).is_file() for p in f["path"])
    assert (built[0] / "tasks" / "test-00000-of-00001.parquet").is_file()


def _goal_call_table(card: str) -> dict[str, dict[str, int]]:
    """The card's per-tool table as {split: {tool: count}} (the row ``**total**`` included)."""
    lines = card.split("Goal calls per tool:", 1)[1].strip().splitlines()
    header = [c.strip().strip("`") for c in lines[0].strip("|").split("|")]
    table: dict[str, dict[str, int]] = {s: {} for s in header[1:]}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        for split, cell in zip(header[1:], cells[1:]):
            table[split][cells[0].strip("*")] = int(cell)
    return table


def test_card_goal_call_counts_match_reference(card: str, built: tuple[Path, dict[str, Any]]) -> None:
    table = _goal_call_table(card)
    assert list(table) == ["validation", "test", "test_full"]
    test = dict(table["test"])
    assert test.pop("total") == 1291
    assert test == TEST_GOAL_CALLS
    assert built[1]["splits"]["test"]["goal_calls_per_tool"] == TEST_GOAL_CALLS
    assert "| `test` | 450 | 1291 |" in card and "| `validation` | 793 |" in card and "| `test_full` | 805 |" in card


def test_card_ceiling_quirks_notes_and_citations(card: str, built: tuple[Path, dict[str, Any]]) -> None:
    assert "**422/450 = 0.938**" in card and "average reward **0.980**" in card
    ceiling = built[1]["ceiling"]
    assert (ceiling["success"], ceiling["tasks"]) == (422, 450)
    assert round(ceiling["average_reward"], 3) == 0.980
    assert set(ceiling["missed_goal_calls"]) <= {f"search_{d}" for d in ("train", "restaurant", "hotel", "attraction")}
    for phrase in (
        "king's college", '"ask"', "fail_info", "not-allowed extra", "`book_attraction` never succeeds",
        "MUL0744", "`cb13lh`", "by position", "NaN", "taxi and hospital", "`ERROR: INVALID API CALL!`",
        "`\"08:45\"`", "capitals", "json.loads", "ToolWOZ.from_dataset", "evaluate.load", "load_dataset",
        "budzianowski/multiwoz", "asappresearch/josh-llm-simulation-training", "MIT",
    ):
        assert phrase in card, phrase
    assert "no train split" in card
    assert "arXiv:2409.04617" in card and "Sparse Rewards Can Self-Train Dialogue Agents" in card
    assert "@inproceedings{budzianowski2018multiwoz" in card and "(EMNLP)" in card
    assert str(default_multiwoz_path().resolve()) not in card  # no local absolute path in a public card


# -- exact round trip ----------------------------------------------------------------------
def test_round_trip_tasks_are_identical(original: ToolWOZ, roundtrip: ToolWOZ) -> None:
    assert list(roundtrip.tasks) == list(original.tasks)
    assert roundtrip.tasks == original.tasks
    for tid, task in original.tasks.items():
        other = roundtrip.tasks[tid]
        assert ordered(other.goal) == ordered(task.goal)
        assert ordered(other.dialogue) == ordered(task.dialogue)
        assert [ordered(g.to_dict()) for g in other.goal_calls] == [ordered(g.to_dict()) for g in task.goal_calls]
    assert roundtrip.splits == original.splits
    assert "train" not in roundtrip.splits
    assert roundtrip.summary()["splits"] == original.summary()["splits"]
    assert any("train split" in n for n in roundtrip.notes)


def test_round_trip_database_keeps_ragged_rows(original: ToolWOZ, roundtrip: ToolWOZ) -> None:
    assert ordered(roundtrip.database.raw()) == ordered(original.database.raw())
    rows = roundtrip.database["restaurant"].rows
    # MultiWOZ restaurant rows are ragged: absent keys must stay absent (no nulls filled in).
    lacking = {k: sum(k not in r for r in rows) for k in ("signature", "introduction", "phone")}
    assert lacking == {"signature": 94, "introduction": 14, "phone": 3}
    assert not any(v is None for r in rows for v in r.values())
    ugly = next(r for r in rows if r["name"] == "ugly duckling")
    assert "phone" not in ugly
    assert {d: len(t) for d, t in roundtrip.database.tables.items()} == {
        "restaurant": 110, "hotel": 33, "attraction": 79, "train": 2828,
    }


def test_round_trip_tools_are_identical(original: ToolWOZ, roundtrip: ToolWOZ) -> None:
    assert roundtrip.tools == original.tools
    assert ordered(list(roundtrip.tools.schemas)) == ordered(list(original.tools.schemas))
    assert list(roundtrip.tools.parameters.items()) == list(original.tools.parameters.items())
    assert ordered(roundtrip.tools.to_valid_api_defs()) == ordered(original.tools.to_valid_api_defs())
    env = roundtrip.env("MUL0744")
    assert env.call("search_taxi", {"departure": "cambridge"}) == "ERROR: INVALID API CALL!"


def test_replaying_goal_calls_scores_the_same(original: ToolWOZ, roundtrip: ToolWOZ) -> None:
    successes, rewards = 0, []
    for tid in original.splits["test"]:
        a, b = original.env(tid), roundtrip.env(tid)
        for g in original.task(tid).goal_calls:
            assert b.call(g.name, dict(g.arguments)) == a.call(g.name, dict(g.arguments))
        sa, sb = a.score(), b.score()
        assert (sb.reward, sb.success, sb.missed) == (sa.reward, sa.success, sa.missed)
        successes += sb.success
        rewards.append(sb.reward)
    assert successes == 422
    assert round(sum(rewards) / len(rewards), 3) == 0.980


def test_load_dispatches_to_the_dataset(built: tuple[Path, dict[str, Any]], original: ToolWOZ) -> None:
    assert looks_like_dataset(str(built[0]))
    assert not looks_like_dataset(str(default_multiwoz_path()))
    assert looks_like_dataset("someone/toolwoz")
    assert not looks_like_dataset("https://example.org/MultiWOZ_2.0.zip")
    tw = ToolWOZ.load(built[0])
    assert tw.origin == str(built[0])  # from_multiwoz would record the MultiWOZ source instead
    assert tw.tasks == original.tasks and tw.splits == original.splits


def test_build_script_prints_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    source = os.path.relpath(default_multiwoz_path(), REPO_ROOT)
    proc = subprocess.run(
        [sys.executable, "dataset_scripts/build_toolwoz.py", "--source", source, "--output", str(out)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "test: 450 tasks, 1291 goal calls" in text
    assert "validation: 793 tasks" in text and "test_full: 805 tasks" in text
    assert "    search_train: 350" in text and "    book_hotel: 90" in text
    assert "success 422/450 = 0.938, average reward 0.980" in text
    assert "no train split" in text
    assert (out / "README.md").is_file() and (out / "tasks" / "test-00000-of-00001.parquet").is_file()


# -- push, against a local stand-in of the Hub HTTP API ------------------------------------
class _HubStandIn(BaseHTTPRequestHandler):
    """A local stand-in for the few Hub endpoints ``create_repo`` + ``upload_folder`` use.

    It answers "regular" (non-LFS) upload mode for every file, so file contents arrive inline
    (base64) in the commit payload and can be compared byte for byte.
    """

    requests: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []

    def _reply(self, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        host = f"http://{self.headers['Host']}"
        if self.path == "/api/repos/create":
            d = json.loads(body)
            return self._reply({"url": f"{host}/datasets/{d['organization']}/{d['name']}"})
        if self.path == "/api/validate-yaml":
            return self._reply({"errors": [], "warnings": []})
        if "/preupload/" in self.path:
            files = json.loads(body)["files"]
            return self._reply({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                          for f in files]})
        if "/commit/" in self.path:
            return self._reply({"commitUrl": f"{host}/datasets/someone/toolwoz/commit/{'a' * 40}",
                                "commitOid": "a" * 40})
        self.send_error(404)

    def do_GET(self) -> None:
        self.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, b""))
        self.send_error(404)

    def log_message(self, *args: Any) -> None:
        pass


def test_push_dataset_uploads_the_folder_to_a_hub_stand_in(built: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    _HubStandIn.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HubStandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    token = "hf_standin_not_a_real_token"
    try:
        env = {
            **os.environ,
            "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HOME": str(tmp_path / "hf"),
            "HF_TOKEN": token,
            "HF_HUB_OFFLINE": "0",  # the stand-in is local; the sandbox may set offline mode globally
        }
        code = (
            "import sys\nfrom josh_hf.toolwoz.hub import push_dataset\n"
            "print(push_dataset(sys.argv[1], 'someone/toolwoz', private=True))\n"
        )
        proc = subprocess.run([sys.executable, "-c", code, str(built[0])], capture_output=True, text=True,
                              env=env, cwd=REPO_ROOT, timeout=300, check=False)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("/datasets/someone/toolwoz")
    assert token not in proc.stdout + proc.stderr
    paths = [p for p, _, _ in _HubStandIn.requests]
    create = next(b for p, _, b in _HubStandIn.requests if p == "/api/repos/create")
    assert json.loads(create)["type"] == "dataset" and json.loads(create)["visibility"] == "private"
    assert all(h.get("authorization") == f"Bearer {token}" for _, h, _ in _HubStandIn.requests), paths
    commit = next(b for p, _, b in _HubStandIn.requests if p == "/api/datasets/someone/toolwoz/commit/main")
    uploaded = {}
    for line in commit.decode().splitlines():
        item = json.loads(line)
        if item["key"] == "file":
            uploaded[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
    local = {str(p.relative_to(built[0])): p.read_bytes() for p in built[0].rglob("*") if p.is_file()}
    assert uploaded == local, paths
    assert "README.md" in uploaded and re.search(rb"config_name: tasks\s+default: true", uploaded["README.md"])


def test_card_usage_snippets_run_on_the_folder(card: str, built: tuple[Path, dict[str, Any]]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", card.replace("<user>/toolwoz", str(built[0])), re.DOTALL)
    assert len(blocks) == 3  # datasets, ToolWOZ.from_dataset, evaluate metric
    namespace: dict[str, Any] = {}
    for block in blocks[:2]:
        exec(block, namespace)  # noqa: S102 (our own card's snippets, run to prove they work)
    assert len(namespace["tasks"]) == 450 and len(namespace["tools"]) == 8 and len(namespace["hotels"]) == 33
    assert namespace["goal"] == namespace["tw"].task(namespace["task"]["id"]).goal
    if importlib.util.find_spec("josh_hf.metrics") is None:  # the metric is another module's deliverable
        pytest.skip("josh_hf.metrics is not available")
    exec(blocks[2], namespace)  # noqa: S102
