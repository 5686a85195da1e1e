"""ToolWOZ as a Hugging Face dataset: build it, write a Hub-ready folder, load it back, push it.

The dataset has three configs:

* ``tasks`` (default): a row per task, splits ``train`` (when MultiWOZ train was in the
  source), ``validation``, ``test`` (the 450-task benchmark) and ``test_full``;
* ``databases``: a row per database entry, one split per domain, rows in file order;
* ``tools``: a row per API, with the OpenAI function schema and the allowed parameters.

MultiWOZ goals, dialogue states, database rows and call arguments are heterogeneous JSON
(ragged keys, mixed types, nested lists). Arrow would merge their keys into one struct
schema and fill the gaps with nulls, so they are stored as JSON strings (``json.dumps``,
key order kept) and read back with ``json.loads`` — the same convention as OpenAI tool
calls, whose arguments are JSON strings. ``datasets.Json`` was not used: it encodes with
pandas' ujson, which rounds floats to 10 decimals and writes NaN as null, and it stores a
Python string that parses as JSON as that JSON (``"3"`` comes back as ``3``), so its round
trip is not exact; older ``datasets`` releases cannot read it either.
"""

from __future__ import annotations

import json
import os
import re
import string
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import yaml
from datasets import Dataset, DatasetDict, Features, List, Value

from .database import Database
from .tasks import GoalCall, Task
from .tools import ToolSet, uid_key

if TYPE_CHECKING:
    from .benchmark import ToolWOZ

CONFIGS = ("tasks", "databases", "tools")
DEFAULT_CONFIG = "tasks"
TOOLS_SPLIT = "tools"
DATABASE_SPLITS = ("restaurant", "hotel", "attraction", "train")
TRAIN_MISSING_NOTE = (
    "This build has no train split: the MultiWOZ train dialogues were not in the source. "
    "Build from the full MultiWOZ 2.0 release to get it."
)
# Hub guidance: keep Parquet shards well under ~500 MB.
MAX_SHARD_BYTES = 256 * 1024 * 1024

TASK_FEATURES = Features(
    {
        "id": Value("string"),
        "domains": List(Value("string")),
        "goal": Value("string"),  # JSON
        "user_goal": List(Value("string")),
        "goal_calls": List(
            {
                "name": Value("string"),
                "arguments": Value("string"),  # JSON object
                "booked_uid": Value("string"),  # JSON value; null for searches
                "return": Value("string"),  # JSON object; null for searches
            }
        ),
        "dialogue": List(
            {
                "role": Value("string"),
                "text": Value("string"),
                "metadata": Value("string"),  # JSON object
                "dialog_act": Value("string"),  # JSON; null when the source turn has none
            }
        ),
    }
)
DATABASE_FEATURES = Features({"index": Value("int32"), "uid": Value("string"), "row": Value("string")})
TOOL_FEATURES = Features(
    {
        "name": Value("string"),
        "domain": Value("string"),
        "schema_index": Value("int32"),  # position among the tool schemas; null: no schema
        "schema": Value("string"),  # JSON, OpenAI function format; null: no schema
        "in_valid_api_defs": Value("bool"),
        "parameters": List(Value("string")),
        "returns": List(Value("string")),
    }
)


def _dumps(value: Any) -> str:
    # ensure_ascii=False keeps the text readable in the Hub viewer; allow_nan keeps the
    # reference's pandas NaN (should a fallback ever produce one) instead of failing.
    return json.dumps(value, ensure_ascii=False)


def _loads_or_none(value: str | None) -> Any:
    return None if value is None else json.loads(value)


# -- rows ----------------------------------------------------------------------------------
def task_to_row(task: Task) -> dict[str, Any]:
    """One ``tasks`` row (JSON-valued fields as strings)."""
    return {
        "id": task.id,
        "domains": task.domains,
        "goal": _dumps(task.goal),
        "user_goal": task.user_goal,
        "goal_calls": [
            {
                "name": g.name,
                "arguments": _dumps(g.arguments),
                "booked_uid": None if g.booked_uid is None else _dumps(g.booked_uid),
                "return": None if g.returns is None else _dumps(g.returns),
            }
            for g in task.goal_calls
        ],
        "dialogue": [
            {
                "role": t["role"],
                "text": t["text"],
                "metadata": _dumps(t["metadata"]),
                "dialog_act": _dumps(t["dialog_act"]) if "dialog_act" in t else None,
            }
            for t in task.dialogue
        ],
    }


def task_from_row(row: dict[str, Any]) -> Task:
    """Inverse of :func:`task_to_row`."""
    dialogue = []
    for t in row["dialogue"]:
        turn = {"role": t["role"], "text": t["text"], "metadata": json.loads(t["metadata"])}
        if t["dialog_act"] is not None:
            turn["dialog_act"] = json.loads(t["dialog_act"])
        dialogue.append(turn)
    goal_calls = [
        GoalCall(
            name=g["name"],
            arguments=json.loads(g["arguments"]),
            booked_uid=_loads_or_none(g["booked_uid"]),
            returns=_loads_or_none(g["return"]),
        )
        for g in row["goal_calls"]
    ]
    return Task(id=row["id"], goal=json.loads(row["goal"]), goal_calls=goal_calls, dialogue=dialogue)


def _database_rows(domain: str, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    key = uid_key(domain)
    return [
        {"index": i, "uid": r.get(key) if isinstance(r.get(key), str) else None, "row": _dumps(r)}
        for i, r in enumerate(rows)
    ]


def _tool_rows(tools: ToolSet) -> list[dict[str, Any]]:
    schema_pos = {s["function"]["name"]: i for i, s in enumerate(tools.schemas)}
    rows = []
    for domain, apis in tools.to_valid_api_defs().items():
        for api, spec in apis.items():
            i = schema_pos.get(api)
            rows.append(
                {
                    "name": api,
                    "domain": domain,
                    "schema_index": i,
                    "schema": None if i is None else _dumps(tools.schemas[i]),
                    "in_valid_api_defs": True,
                    "parameters": spec["parameters"],
                    "returns": spec["returns"],
                }
            )
    listed = {r["name"] for r in rows}
    for name, i in schema_pos.items():  # a schema without an API definition (none in ToolWOZ)
        if name not in listed:
            rows.append(
                {
                    "name": name,
                    "domain": name.partition("_")[2],
                    "schema_index": i,
                    "schema": _dumps(tools.schemas[i]),
                    "in_valid_api_defs": False,
                    "parameters": [],
                    "returns": [],
                }
            )
    return rows


def _toolset_from_rows(rows: list[dict[str, Any]]) -> ToolSet:
    with_schema = sorted((r for r in rows if r["schema"] is not None), key=lambda r: r["schema_index"])
    schemas = [json.loads(r["schema"]) for r in with_schema]
    defs: dict[str, Any] = {}
    for r in rows:
        if r["in_valid_api_defs"]:
            defs.setdefault(r["domain"], {})[r["name"]] = {"parameters": r["parameters"], "returns": r["returns"]}
    return ToolSet.from_files(schemas, defs)


def build_dataset_dicts(toolwoz: ToolWOZ) -> dict[str, DatasetDict]:
    """The three configs (``tasks``, ``databases``, ``tools``) as ``DatasetDict`` objects."""
    from .benchmark import SPLIT_ORDER

    tasks = DatasetDict(
        {
            split: Dataset.from_list([task_to_row(t) for t in toolwoz.split(split)], features=TASK_FEATURES)
            for split in SPLIT_ORDER
            if split in toolwoz.splits
        }
    )
    raw = toolwoz.database.raw()
    databases = DatasetDict(
        {d: Dataset.from_list(_database_rows(d, raw[d]), features=DATABASE_FEATURES) for d in DATABASE_SPLITS if d in raw}
    )
    tools = DatasetDict({TOOLS_SPLIT: Dataset.from_list(_tool_rows(toolwoz.tools), features=TOOL_FEATURES)})
    return {"tasks": tasks, "databases": databases, "tools": tools}


# -- statistics for the card ---------------------------------------------------------------
def goal_call_ceiling(toolwoz: ToolWOZ, split: str = "test") -> dict[str, Any]:
    """Replay every task's goal calls as they are; the best score any agent can reach."""
    rewards, successes, unreachable, missed = [], 0, [], Counter()
    for task in toolwoz.split(split):
        env = toolwoz.env(task.id)
        for g in task.goal_calls:
            env.call(g.name, dict(g.arguments))
        score = env.score()
        rewards.append(score.reward)
        successes += score.success
        if not score.success:
            unreachable.append(task.id)
            missed.update(g.name for g in score.missed)
    n = len(rewards)
    return {
        "split": split,
        "tasks": n,
        "success": successes,
        "success_rate": successes / n if n else 0.0,
        "average_reward": sum(rewards) / n if n else 0.0,
        "unreachable_tasks": unreachable,
        "missed_goal_calls": dict(sorted(missed.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def build_notes(toolwoz: ToolWOZ) -> list[str]:
    """The build's notes (the source's, plus one when the train split is missing)."""
    notes = list(toolwoz.notes)
    if "train" not in toolwoz.splits and not any("train split" in n for n in notes):
        notes.insert(0, TRAIN_MISSING_NOTE)
    return notes


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return label
    return "100K<n<1M"


# -- the card ------------------------------------------------------------------------------
CARD_TEMPLATE = string.Template(
    """\
# ToolWOZ

ToolWOZ turns [MultiWOZ 2.0](https://github.com/budzianowski/multiwoz) into a multi-turn
**tool-calling benchmark with sparse rewards**. Each task is one MultiWOZ dialogue's goal: an
agent talks to a simulated customer and calls `search_*` / `book_*` tools backed by the MultiWOZ
databases; the reward is the fraction of the task's *goal calls* the agent made correctly.
ToolWOZ was introduced with JOSH in
[Sparse Rewards Can Self-Train Dialogue Agents](https://arxiv.org/abs/2409.04617)
(Lattimer et al., 2024). This dataset holds the tasks, the databases and the tools, with
exactly the semantics of the published ToolWOZ, so that scores stay comparable.

## Provenance

- Dialogues, goals and databases: MultiWOZ 2.0 ([budzianowski/multiwoz](https://github.com/budzianowski/multiwoz)).
- Tool schemas (`tools.json`), allowed parameters (`valid_api_defs.json`) and split lists: ToolWOZ
  ([asappresearch/josh-llm-simulation-training](https://github.com/asappresearch/josh-llm-simulation-training)).
- Built by `josh-hf build-dataset` / `dataset_scripts/build_toolwoz.py` (josh-hf $version)
  from $source.

## Licence

MIT, like MultiWOZ and the ToolWOZ files it is built from.

## Configurations

| config | splits | one row per |
|---|---|---|
$config_table

**JSON-valued fields are JSON strings**: `goal`, `goal_calls[].arguments`,
`goal_calls[].booked_uid`, `goal_calls[].return`, `dialogue[].metadata`,
`dialogue[].dialog_act`, `databases` `row` and `tools` `schema`. Read them with
`json.loads` (OpenAI tool calls carry their arguments as JSON strings too). They are stored
this way because they are heterogeneous (ragged keys, mixed types): an Arrow struct would merge
their keys and fill the gaps with nulls, and the benchmark needs them exactly, key order
included. `booked_uid` and `return` are null for search goal calls; `dialog_act` is null when the
source turn has none.

- `tasks` columns: `id`, `domains` (list), `goal` (the MultiWOZ goal), `user_goal` (the goal's
  sentences with their HTML removed), `goal_calls` (list of `name`, `arguments`, `booked_uid`,
  `return`: the sparse rewards), `dialogue` (the original MultiWOZ turns: `role`, `text`,
  `metadata`, `dialog_act`). `test` is the 450-task benchmark, `test_full` every test task.
- `databases` columns: `index` (row position in the MultiWOZ `*_db.json` file), `uid` (`name`, or
  `trainID` for trains; for browsing), `row`. The split `train` is the train *timetable*, not a
  data split.
- `tools` columns: `name`, `domain`, `schema_index` and `schema` (OpenAI function format; the 8
  tools shown to the agent), `in_valid_api_defs`, `parameters` and `returns` (from
  `valid_api_defs.json`).

## Sizes and goal calls

$sizes_table

Goal calls per tool:

$goal_call_table
$notes
## Usage

```python
import json
from datasets import load_dataset

tasks = load_dataset("$repo_id", split="test")          # default config: tasks
task = tasks[0]
goal = json.loads(task["goal"])
goal_calls = [{**g, "arguments": json.loads(g["arguments"])} for g in task["goal_calls"]]
tools = [json.loads(r["schema"]) for r in load_dataset("$repo_id", "tools", split="tools") if r["schema"]]
hotels = [json.loads(r["row"]) for r in load_dataset("$repo_id", "databases", split="hotel")]
```

With the `josh_hf` package, the whole benchmark (tasks, databases, tools and the environment that
executes and scores calls) loads in one line:

```python
from josh_hf.toolwoz import ToolWOZ

tw = ToolWOZ.from_dataset("$repo_id")
env = tw.env(tasks[0]["id"])
print(env.call("search_hotel", {"area": "north"}))
print(env.score().reward)
```

Finished conversations are scored with the ToolWOZ `evaluate` metric shipped with josh-hf; its
references are rows of the `tasks` config:

```python
import evaluate
from josh_hf.metrics import metric_path

toolwoz_metric = evaluate.load(metric_path())
# one prediction per conversation: the agent's calls, each {"name", "arguments", "result"}
calls = [{"name": "search_hotel", "arguments": {"area": "north"}, "result": env.call("search_hotel", {"area": "north"})}]
print(toolwoz_metric.compute(predictions=[calls], references=[tasks[0]]))
```

## Scoring in brief

- Empty values (`""`, `dont care`, `not mentioned`, ...) are ignored; strings are lower-cased and
  lose their apostrophes; other values are compared exactly (`"3"` is not `3`).
- `search_d` goal call: its arguments hold every search parameter of the domain (the goal's
  value or `""`). A recorded search counts when it returned a row and either the goal's
  arguments are contained in the call's (and, when the task books in that domain, the row is the
  booked entity), or the call's arguments are contained in the goal's and the row is the booked
  entity (or, without a booking, the row satisfies the goal).
- `book_d` goal call: some recorded call of that name whose arguments contain the goal's
  (the book parameters plus the booked `name` / `trainID`).
- A search returns a single row, steered by the hidden goal; a booking succeeds only with the
  goal's arguments.
- **Reward** = correct goal calls / goal calls; **success** = reward 1.0. The benchmark reports
  average reward and success rate over the 450 `test` tasks; the reference runs conversations of
  at most 15 visible messages with a goal-based user simulator at temperature 0.

## Ceiling on the test split

Replaying each `$ceiling_split` task's goal calls exactly as they are reaches success
**$ceiling_success/$ceiling_tasks = $ceiling_rate** and average reward **$ceiling_reward**
(computed when this dataset was built). The other $ceiling_missed tasks cannot reach reward 1.0
under the reference's rules (goal calls that fail even when replayed: $ceiling_failures; see the
quirks below), so no agent can score higher on this split.

## Quirks of the reference, kept on purpose

ToolWOZ reproduces the published implementation, quirks included, so that published numbers stay
comparable:

- Database values keep their apostrophes while arguments lose theirs, so a name such as
  "king's college" can never be matched by a search.
- Arguments are lower-cased but database values are not, so a database name with capitals cannot
  be matched.
- `leaveAt` keeps rows with `row.leaveAt > value` and `arriveBy` rows with `row.arriveBy < value`:
  plain, strict string comparisons, so `"8:45"` is not `"08:45"` and a train leaving exactly at the
  goal's `leaveAt` is excluded; some booked trains break their own goal's time limits.
- Some booked names are not database names (`"ask"` for "ask restaurant"), and some booked
  entities do not match their goal's price range or area; those search goals cannot be satisfied.
- `fail_info` / `fail_book` change nothing (the reference's intended database filtering has no
  effect); they stay in `goal` as information. `reqt` (requested attributes) is not scored.
- A booking refused for carrying a not-allowed extra parameter is still recorded, and counts as
  correct when its arguments contain the goal's.
- No task books an attraction, so `book_attraction` never succeeds.
- When the final dialogue state lacks a booked uid, the reference's booking-return fallback pairs
  the book API's return-key names with a pandas row's values **by position**; in MUL0744 the booked
  hotel's `name` is therefore the postcode `cb13lh`.
- Database rows are stored as they are in the MultiWOZ files: restaurant rows without a
  `signature`, `introduction` or `phone` simply lack that key (the reference's pandas table had
  NaN there).
- `valid_api_defs` also lists taxi and hospital APIs; calls to them pass validation and answer
  `ERROR: INVALID API CALL!`.

## Citation

```bibtex
@article{lattimer2024sparse,
  title   = {Sparse Rewards Can Self-Train Dialogue Agents},
  author  = {Lattimer, Barrett Martin and Gangal, Varun and McDonald, Ryan and Yang, Yi},
  journal = {arXiv preprint arXiv:2409.04617},
  year    = {2024},
  url     = {https://arxiv.org/abs/2409.04617}
}

@inproceedings{budzianowski2018multiwoz,
  title     = {{MultiWOZ} - A Large-Scale Multi-Domain {Wizard-of-Oz} Dataset for Task-Oriented Dialogue Modelling},
  author    = {Budzianowski, Pawe{\\l} and Wen, Tsung-Hsien and Tseng, Bo-Hsiang and Casanueva, I{\\~n}igo and
               Ultes, Stefan and Ramadan, Osman and Ga{\\v{s}}i{\\'c}, Milica},
  booktitle = {Proceedings of the 2018 Conference on Empirical Methods in Natural Language Processing (EMNLP)},
  pages     = {5016--5026},
  year      = {2018}
}
```
"""
)


def _front_matter(files: dict[str, dict[str, list[str]]], num_tasks: int) -> dict[str, Any]:
    configs = []
    for config in CONFIGS:
        entry: dict[str, Any] = {"config_name": config}
        if config == DEFAULT_CONFIG:
            entry["default"] = True
        # Exact file lists rather than globs: a stale shard left in a pushed repo is never read.
        entry["data_files"] = [{"split": s, "path": paths} for s, paths in files[config].items()]
        configs.append(entry)
    return {
        "license": "mit",
        "language": ["en"],
        "pretty_name": "ToolWOZ",
        "task_categories": ["text-generation"],
        "tags": [
            "tool-calling",
            "function-calling",
            "agents",
            "dialogue",
            "task-oriented-dialogue",
            "multiwoz",
            "benchmark",
            "sparse-rewards",
            "josh",
        ],
        "size_categories": [_size_category(num_tasks)],
        "configs": configs,
    }


def render_card(
    toolwoz: ToolWOZ,
    files: dict[str, dict[str, list[str]]],
    *,
    source_description: str,
    ceiling: dict[str, Any],
    repo_id: str | None = None,
) -> str:
    """The dataset card (``README.md``): YAML front matter and a body with computed statistics."""
    from .. import __version__ as version

    summary = toolwoz.summary()
    splits = summary["splits"]
    sizes = ["| split | tasks | goal calls |", "|---|---:|---:|"]
    sizes += [f"| `{s}` | {v['tasks']} | {v['goal_calls']} |" for s, v in splits.items()]
    tools = sorted({t for v in splits.values() for t in v["goal_calls_per_tool"]},
                   key=lambda t: (-sum(v["goal_calls_per_tool"].get(t, 0) for v in splits.values()), t))
    calls = ["| tool | " + " | ".join(f"`{s}`" for s in splits) + " |", "|---|" + "---:|" * len(splits)]
    calls += [f"| {t} | " + " | ".join(str(v["goal_calls_per_tool"].get(t, 0)) for v in splits.values()) + " |"
              for t in tools]
    calls.append("| **total** | " + " | ".join(str(v["goal_calls"]) for v in splits.values()) + " |")
    config_rows = [
        f"| `tasks` (default) | {', '.join(f'`{s}`' for s in files['tasks'])} | task |",
        f"| `databases` | {', '.join(f'`{s}`' for s in files['databases'])} | database entry |",
        f"| `tools` | `{TOOLS_SPLIT}` | API |",
    ]
    notes_md = "".join(f"\n> **Note.** {n}\n" for n in build_notes(toolwoz))
    body = CARD_TEMPLATE.substitute(
        version=version,
        source=source_description,
        config_table="\n".join(config_rows),
        sizes_table="\n".join(sizes),
        goal_call_table="\n".join(calls),
        notes=notes_md,
        repo_id=repo_id or "<user>/toolwoz",
        ceiling_split=ceiling["split"],
        ceiling_success=ceiling["success"],
        ceiling_tasks=ceiling["tasks"],
        ceiling_rate=f"{ceiling['success_rate']:.3f}",
        ceiling_reward=f"{ceiling['average_reward']:.3f}",
        ceiling_missed=ceiling["tasks"] - ceiling["success"],
        ceiling_failures=", ".join(f"{t} {n}" for t, n in ceiling["missed_goal_calls"].items()) or "none",
    )
    yaml_text = yaml.safe_dump(_front_matter(files, summary["num_tasks"]), sort_keys=False, allow_unicode=True)
    return f"---\n{yaml_text}---\n\n{body}"


def read_card_metadata(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The YAML front matter of ``folder/README.md``, or None when there is none."""
    readme = Path(folder) / "README.md"
    if not readme.is_file():
        return None
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", readme.read_text(encoding="utf-8"), re.DOTALL)
    if not match:
        return None
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return None
    return meta if isinstance(meta, dict) else None


# -- writing, loading, pushing -------------------------------------------------------------
def _write_parquet(ds: Dataset, folder: Path, split: str) -> list[str]:
    num_shards = max(1, -(-ds.data.nbytes // MAX_SHARD_BYTES))
    paths = []
    for i in range(num_shards):
        rel = f"{folder.name}/{split}-{i:05d}-of-{num_shards:05d}.parquet"
        ds.shard(num_shards, i, contiguous=True).to_parquet(str(folder.parent / rel))
        paths.append(rel)
    return paths


def write_dataset(
    toolwoz: ToolWOZ,
    output_dir: str | os.PathLike[str],
    *,
    source_description: str,
    repo_id: str | None = None,
) -> dict[str, Any]:
    """Write the Hub-ready folder (Parquet per config/split + ``README.md``); returns a summary.

    Parquet files left in the config folders by an earlier build are removed first, so the
    folder always matches its card.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, list[str]]] = {}
    bars_were_off = datasets.is_progress_bar_enabled() is False
    datasets.disable_progress_bars()  # a dozen one-step "Creating parquet" bars say nothing
    try:
        for config, dd in build_dataset_dicts(toolwoz).items():
            folder = out / config
            folder.mkdir(exist_ok=True)
            for stale in folder.glob("*.parquet"):
                stale.unlink()
            files[config] = {split: _write_parquet(ds, folder, split) for split, ds in dd.items()}
    finally:
        if not bars_were_off:
            datasets.enable_progress_bars()
    ceiling = goal_call_ceiling(toolwoz, "test")
    card = render_card(toolwoz, files, source_description=source_description, ceiling=ceiling, repo_id=repo_id)
    (out / "README.md").write_text(card, encoding="utf-8")
    summary = toolwoz.summary()
    summary.update(
        notes=build_notes(toolwoz),
        output_dir=str(out),
        files=files,
        ceiling={k: v for k, v in ceiling.items() if k != "unreachable_tasks"},
        unreachable_test_tasks=ceiling["unreachable_tasks"],
        databases={d: len(t) for d, t in toolwoz.database.tables.items()},
        tools=len(toolwoz.tools.schemas),
    )
    return summary


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def format_build_summary(summary: dict[str, Any]) -> str:
    """A build summary as plain text: split sizes, goal calls per tool, ceiling and notes."""
    lines = [f"ToolWOZ dataset written to {summary['output_dir']} ({summary['num_tasks']} tasks)"]
    for split, info in summary["splits"].items():
        lines.append(f"  {split}: {info['tasks']} tasks, {info['goal_calls']} goal calls")
        lines += [f"    {tool}: {n}" for tool, n in info["goal_calls_per_tool"].items()]
    lines.append("  databases: " + ", ".join(f"{d} {n} rows" for d, n in summary["databases"].items()))
    lines.append(f"  tools: {summary['tools']} schemas")
    c = summary["ceiling"]
    lines.append(
        f"  ceiling on {c['split']} (replaying goal calls): success {c['success']}/{c['tasks']} = "
        f"{c['success_rate']:.3f}, average reward {c['average_reward']:.3f}"
    )
    lines += [f"  note: {n}" for n in summary["notes"]]
    if summary.get("pushed_to"):
        lines.append(f"  pushed to {summary['pushed_to']}")
    return "\n".join(lines)


def looks_like_dataset(source: str) -> bool:
    """Whether ``source`` is a built ToolWOZ dataset: a folder whose README.md declares
    ``configs:`` beside Parquet files, or a Hub id (``user/name``) that is not a local path."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            return False
        meta = read_card_metadata(path)
        return bool(meta and meta.get("configs")) and any(path.rglob("*.parquet"))
    if source.startswith(("http://", "https://")) or source.endswith((".zip", ".json")):
        return False
    return bool(_REPO_ID.match(source))


def load_local_config(folder: str | os.PathLike[str], config: str) -> DatasetDict:
    """One config of a dataset folder, read straight from the parquet files its card lists.

    Not through ``datasets.load_dataset``: its cache keys a local folder by name and file names,
    so a folder rebuilt in place (or another folder of the same name) could load stale rows.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    entry = next((c for c in (read_card_metadata(folder) or {}).get("configs", []) if c.get("config_name") == config), None)
    if entry is None:
        raise FileNotFoundError(f"{folder} has no {config!r} config in its README.md card")
    splits = {}
    for data_files in entry["data_files"]:
        paths = data_files["path"] if isinstance(data_files["path"], list) else [data_files["path"]]
        splits[data_files["split"]] = Dataset(pa.concat_tables([pq.read_table(folder / p) for p in paths]))
    return DatasetDict(splits)


def _load_config(path: str, config: str, revision: str | None) -> DatasetDict:
    if revision is None and Path(path).is_dir():
        return load_local_config(path, config)
    kwargs: dict[str, Any] = {}
    if revision is not None:
        kwargs["revision"] = revision
    return datasets.load_dataset(path, config, **kwargs)


def load_toolwoz_dataset(cls: type[ToolWOZ], path: str, revision: str | None = None) -> ToolWOZ:
    """A ``cls`` (ToolWOZ) instance from the dataset at ``path`` (local folder or Hub id).

    A local folder is read from its parquet files (:func:`load_local_config`), a repo id with
    ``datasets.load_dataset`` from the Hub.
    """
    from .benchmark import SPLIT_ORDER

    task_dd = _load_config(path, "tasks", revision)
    tasks: dict[str, Task] = {}
    splits: dict[str, list[str]] = {}
    for split in SPLIT_ORDER:
        if split not in task_dd:
            continue
        ids = []
        for row in task_dd[split]:
            if row["id"] not in tasks:  # test rows repeat in test_full
                tasks[row["id"]] = task_from_row(row)
            ids.append(row["id"])
        splits[split] = ids
    tasks = {i: tasks[i] for i in sorted(tasks)}  # from_multiwoz keys tasks in sorted order
    db_dd = _load_config(path, "databases", revision)
    database = Database({d: [json.loads(r) for r in db_dd[d]["row"]] for d in DATABASE_SPLITS if d in db_dd})
    tools = _toolset_from_rows(_load_config(path, "tools", revision)[TOOLS_SPLIT].to_list())
    notes = [] if "train" in splits else [TRAIN_MISSING_NOTE]
    origin = f"{path}@{revision}" if revision else path
    return cls(tasks, database, tools, splits, origin=origin, notes=notes)


def push_dataset(
    output_dir: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
) -> str:
    """Upload a written dataset folder to the Hub as a dataset repo; returns the repo URL.

    The token comes from ``token``, else ``$HF_TOKEN`` / the saved ``hf auth login``; it is
    never printed.
    """
    from huggingface_hub import HfApi, get_token

    if token is None and get_token() is None:
        raise RuntimeError("no Hugging Face token: run `hf auth login` or set HF_TOKEN to push the dataset")
    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(output_dir),
        commit_message="Upload ToolWOZ (built with josh-hf)",
    )
    return str(url)


def describe_source(source: str | os.PathLike[str] | None, toolwoz: ToolWOZ) -> str:
    """A card-friendly description of the MultiWOZ source (no local absolute paths)."""
    text = str(source) if source is not None else ""
    if text.startswith(("http://", "https://")):
        where = f"`{text}`"
    else:
        name = Path(text).name if text else "multiwoz"
        where = f"a local copy of the MultiWOZ 2.0 / ToolWOZ files (`{name}`)"
    present = [s for s in ("train", "validation", "test") if s in toolwoz.splits]
    listed = ", ".join(present[:-1]) + (" and " if len(present) > 1 else "") + present[-1]
    return f"{where}, holding the MultiWOZ {listed} dialogues"


def build_toolwoz_dataset(
    source: str | os.PathLike[str] | None,
    output_dir: str | os.PathLike[str],
    push_to_hub: str | None = None,
    *,
    private: bool = False,
    token: str | None = None,
) -> dict[str, Any]:
    """Build ToolWOZ from a MultiWOZ source, write the dataset folder, optionally push it."""
    from .benchmark import ToolWOZ

    toolwoz = ToolWOZ.from_multiwoz(source)
    summary = write_dataset(
        toolwoz, output_dir, source_description=describe_source(source, toolwoz), repo_id=push_to_hub
    )
    if push_to_hub:
        summary["pushed_to"] = push_dataset(output_dir, push_to_hub, private=private, token=token)
    return summary

