"""``josh-hf harvest``: run JOSH's tree search on ToolWOZ tasks and save every task's tree.

Each task's tree is appended to ``OUTPUT/trees.jsonl`` as soon as its search ends (one JSON
object per line, flushed and fsynced, so a crash loses nothing finished); ``--resume`` skips
the tasks already there. ``OUTPUT/summary.json`` holds the JOSH reward, success rate and
agent turns over all the trees of the selected tasks (the same for a resumed run as for an
uninterrupted one), this run's wall time and throughput, and the number of SFT / KTO / DPO
examples the trees yield. Options come from the command line or a YAML file (``--config``).

The data on this machine has no ToolWOZ ``train`` split, so the default is ``validation``;
with the full MultiWOZ (train dialogues included) harvest on ``--split train``. Harvesting
on ``test`` trains on the benchmark: it is never the default.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .arguments import AgentModelArguments, SamplingArguments, SourceArguments, UserArguments, check_user
from .evaluate import RULE_BASED, build_agent_backend, build_user, select_tasks

TEST_SPLITS = ("test", "test_full")


@dataclass
class HarvestConfig(SamplingArguments, SourceArguments, UserArguments, AgentModelArguments):
    """Settings of one JOSH harvest run."""

    model: str = field(kw_only=True, metadata={"help": "Agent model: Hub id or local path (transformers), or 'openai:<model>[@<base_url>]' for a served model."})
    agent_format: str = field(default="react", metadata={"help": "'react' (PLAN/APICALL/SPEAK, the reference's default) or 'native' (the model's chat template tool calls)."})
    split: str = field(default="validation", metadata={"help": "ToolWOZ split to harvest. Default validation because the bundled data has no train split; with the full MultiWOZ use 'train'. Never harvest on test (it trains on the benchmark)."})
    task_ids: list[str] | None = field(default=None, metadata={"help": "Harvest only these task ids (overrides --split)."})
    limit: int | None = field(default=None, metadata={"help": "Harvest only the first N tasks of the split."})
    beam_size: int = field(default=8, metadata={"help": "Cap on live leaves per task: leaves split in two while 2 x leaves <= beam (reference: 8)."})
    max_steps: int = field(default=15, metadata={"help": "JOSH steps (agent turn + user turn) per task (reference: 15)."})
    max_generations_per_turn: int = field(default=3, metadata={"help": "Model generations per agent turn (reference: 3); a turn that never speaks ends its branch."})
    credit: str = field(default="first", metadata={"help": "'first' (reference: a collapse removes the golden leaf's goals) or 'all' (every successful leaf's goals)."})
    seed: int = field(default=0, metadata={"help": "Base seed; every node samples with a seed derived from (seed, task, node)."})
    temperature: float = field(default=1.0, metadata={"help": "Agent sampling temperature; must be > 0 (siblings must differ)."})
    max_concurrent: int | None = field(default=None, metadata={"help": "Tasks searched at once (default: all); a finished task's place goes to the next. Lower it to bound memory or to get trees on disk sooner."})
    output: str = field(default="outputs/harvest", metadata={"help": "Folder for trees.jsonl and summary.json."})
    resume: bool = field(default=False, metadata={"help": "Skip tasks already in OUTPUT/trees.jsonl."})
    overwrite: bool = field(default=False, metadata={"help": "Start over even if OUTPUT already holds trees."})

    def __post_init__(self) -> None:
        if self.model == RULE_BASED:
            raise ValueError("the rule-based agent is deterministic: JOSH needs a sampling model (--model)")
        if self.temperature <= 0:
            raise ValueError(f"JOSH needs temperature > 0 (got {self.temperature}): sibling branches must differ")
        if self.resume and self.overwrite:
            raise ValueError("choose one of resume and overwrite")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {self.max_concurrent}")
        check_user(self)
        self.josh_config()  # validates the search settings (beam, steps, format, credit)

    def josh_config(self):
        """The :class:`josh_hf.josh.JOSHConfig` of these settings."""
        from ..josh import JOSHConfig

        return JOSHConfig.from_fields(self)


def settings_of(config: HarvestConfig) -> dict[str, Any]:
    """The settings recorded in summary.json (what defines the run, not where it was written)."""
    out = asdict(config)
    for key in ("output", "resume", "overwrite", "max_concurrent"):  # run logistics, not search settings
        out.pop(key)
    return out


def example_counts(records: list[dict[str, Any]]) -> dict[str, int] | None:
    """SFT / KTO / DPO example counts of the trees, when the harvest module is available."""
    try:
        from ..josh.harvest import harvest_counts
    except ImportError:
        return None
    try:
        return dict(harvest_counts(records))
    except Exception as e:  # noqa: BLE001 - the counts are a bonus; the trees are saved anyway
        print(f"josh-hf harvest: warning: could not count examples: {type(e).__name__}: {e}", file=sys.stderr)
        return None


def summarize(records: list[dict[str, Any]], task_ids: Sequence[str], config: HarvestConfig) -> dict[str, Any]:
    """Figures over the trees of ``task_ids`` (a pure function of the trees and settings)."""
    wanted = set(task_ids)
    rows = [r for r in records if r["task_id"] in wanted]
    n = len(rows)
    stopped: dict[str, int] = {}
    for r in rows:
        stopped[r.get("stopped", "?")] = stopped.get(r.get("stopped", "?"), 0) + 1
    return {
        "tasks": n,
        "josh_reward": sum(r["reward"] for r in rows) / n if n else 0.0,
        "success_rate": sum(bool(r["success"]) for r in rows) / n if n else 0.0,
        "agent_turns": sum(r["stats"]["agent_turns"] for r in rows),
        "generations": sum(r["stats"]["generations"] for r in rows),
        "nodes": sum(len(r["nodes"]) for r in rows),
        "stopped": dict(sorted(stopped.items())),
        "examples": example_counts(rows),
        "settings": settings_of(config),
    }


def format_summary(summary: dict[str, Any]) -> str:
    s, run = summary["settings"], summary.get("run", {})
    where = "tasks" if s["task_ids"] else s["split"]
    lines = [
        f"JOSH harvest | ToolWOZ {where} | agent {s['model']} ({s['agent_format']}) | user {s['user']} | beam {s['beam_size']}",
        f"  tasks              {summary['tasks']:>8}",
        f"  JOSH reward        {summary['josh_reward']:>8.4f}",
        f"  success rate       {summary['success_rate']:>8.4f}",
        f"  agent turns        {summary['agent_turns']:>8}",
    ]
    if run:
        lines.append(f"  wall time (s)      {run['wall_seconds']:>8.1f}   this run: {run['tasks']} tasks, "
                     f"{run['agent_turns']} turns, {run['turns_per_second']:.2f} turns/s")
    if summary.get("examples"):
        lines.append("  examples           " + ", ".join(f"{k} {v}" for k, v in summary["examples"].items()))
    return "\n".join(lines)


def run_harvest(config: HarvestConfig, *, toolwoz=None, agent_backend=None, user=None, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a harvest; write trees.jsonl and summary.json; return the summary."""
    from tqdm.auto import tqdm

    from ..josh import JOSHSearch, TreeRecord, iter_tree_dicts, write_tree
    from ..toolwoz import ToolWOZ

    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "trees.jsonl"
    existing = list(iter_tree_dicts(path))
    if existing and not (config.resume or config.overwrite):
        raise FileExistsError(f"{path} already holds {len(existing)} trees: pass --resume to continue or --overwrite to start over")
    if config.overwrite and path.exists():
        path.unlink()
        existing = []
    josh_config = config.josh_config()
    if existing:
        had = {k: v for k, v in existing[0]["config"].items() if k != "user"}
        if had != josh_config.to_dict():
            raise ValueError(f"{path} was harvested with other search settings ({had}); use --overwrite or another --output")
    toolwoz = toolwoz or ToolWOZ.load(config.source)
    task_ids = select_tasks(config, toolwoz)
    if not task_ids:
        raise ValueError(f"no tasks selected (split {config.split!r}, task_ids {config.task_ids}, limit {config.limit})")
    if not config.task_ids and config.split in TEST_SPLITS:
        print(f"josh-hf harvest: warning: harvesting the {config.split} split trains on the benchmark", file=sys.stderr)
    agent_backend = agent_backend or build_agent_backend(config, toolwoz)
    user = user or build_user(config, agent_backend)
    done = {r["task_id"] for r in existing}
    if existing:  # rewrite without a torn tail so appends start on a clean line
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in existing)
    todo = [t for t in task_ids if t not in done]
    search = JOSHSearch(toolwoz, agent_backend, user, josh_config, max_concurrent=config.max_concurrent)
    started = time.perf_counter()
    bar = tqdm(total=len(todo), desc="JOSH", unit="task", disable=not progress or not todo)
    finished: list[TreeRecord] = []
    with open(path, "a", encoding="utf-8") as f:
        def on_done(record: TreeRecord) -> None:
            write_tree(f, record)
            finished.append(record)
            bar.update(1)
            bar.set_postfix(josh_reward=f"{sum(r.reward for r in finished) / len(finished):.3f}",
                            turns=sum(r.stats["agent_turns"] for r in finished))

        search.run(todo, on_done=on_done)
    bar.close()
    wall = time.perf_counter() - started
    summary = summarize(list(iter_tree_dicts(path)), task_ids, config)
    turns = sum(r.stats["agent_turns"] for r in finished)
    summary["run"] = {
        "tasks": len(finished),
        "resumed_from": len(done & set(task_ids)),
        "agent_turns": turns,
        "wall_seconds": round(wall, 3),
        "turns_per_second": round(turns / wall, 3) if wall > 0 else 0.0,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def main(argv: Sequence[str]) -> int:
    from trl import TrlParser

    parser = TrlParser((HarvestConfig,), prog="josh-hf harvest", description=__doc__.splitlines()[0])
    (config,) = parser.parse_args_and_config(list(argv))
    summary = run_harvest(config)
    print(format_summary(summary))
    print(f"wrote {Path(config.output) / 'trees.jsonl'} and summary.json", file=sys.stderr)
    return 0
