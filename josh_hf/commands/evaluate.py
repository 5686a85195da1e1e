"""``josh-hf evaluate``: run an agent against simulated users on ToolWOZ and score it.

Transcripts are appended to ``OUTPUT/transcripts.jsonl`` as each conversation ends (flushed
and fsynced, so a crash loses nothing finished); ``--resume`` skips the (task, trial) pairs
already there. ``OUTPUT/results.json`` holds the metric's figures and the run's settings and
is a pure function of the transcripts, so a resumed run writes the same file as an
uninterrupted one. Options come from the command line or a YAML file (``--config``, TRL's
``TrlParser`` convention).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .arguments import AgentModelArguments, SamplingArguments, SourceArguments, UserArguments, check_user

RULE_BASED = "rule-based"


@dataclass
class EvaluateConfig(SamplingArguments, SourceArguments, UserArguments, AgentModelArguments):
    """Settings of one ToolWOZ evaluation run."""

    model: str = field(default=RULE_BASED, metadata={"help": "Hub id or local path (transformers), 'openai:<model>[@<base_url>]' for a served model, or 'rule-based' (the built-in baseline)."})
    agent_format: str = field(default="native", metadata={"help": "'native' (the model's chat template tool calls) or 'react' (PLAN/APICALL/SPEAK, as in the reference)."})
    split: str = field(default="test", metadata={"help": "ToolWOZ split: test | test_full | validation | train."})
    task_ids: list[str] | None = field(default=None, metadata={"help": "Evaluate only these task ids (overrides --split)."})
    limit: int | None = field(default=None, metadata={"help": "Evaluate only the first N tasks of the split."})
    trials: int = field(default=1, metadata={"help": "Conversations per task (pass^k needs k trials)."})
    seed: int = field(default=0, metadata={"help": "Base seed; each (task, trial) derives its own."})
    temperature: float = field(default=0.0, metadata={"help": "Agent sampling temperature (0 = greedy)."})
    max_visible_messages: int = field(default=15, metadata={"help": "Stop a conversation at this many user+agent messages (reference: 15)."})
    max_generations_per_turn: int = field(default=3, metadata={"help": "Model generations per agent turn (reference: 3)."})
    output: str = field(default="outputs/evaluate", metadata={"help": "Folder for transcripts.jsonl and results.json."})
    resume: bool = field(default=False, metadata={"help": "Skip conversations already in OUTPUT/transcripts.jsonl."})
    overwrite: bool = field(default=False, metadata={"help": "Start over even if OUTPUT already holds transcripts."})

    def __post_init__(self) -> None:
        if self.agent_format not in ("native", "react"):
            raise ValueError(f"agent_format must be 'native' or 'react', got {self.agent_format!r}")
        check_user(self)
        for name in ("trials", "max_visible_messages", "max_generations_per_turn", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.resume and self.overwrite:
            raise ValueError("choose one of resume and overwrite")


def settings_of(config: EvaluateConfig) -> dict[str, Any]:
    """The settings recorded in results.json (what defines the run, not where it was written)."""
    out = asdict(config)
    for key in ("output", "resume", "overwrite"):
        out.pop(key)
    return out


def _sampling(config: EvaluateConfig):
    from ..backends import SamplingParams

    return SamplingParams(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
                          max_new_tokens=config.max_new_tokens, seed=config.seed)


def build_agent_backend(config: EvaluateConfig, toolwoz):
    """The agent's backend: the rule-based baseline, a served model, or a local model."""
    from ..backends import load_backend

    if config.model == RULE_BASED:
        from ..agents.rule_based import RuleBasedAgent

        return RuleBasedAgent(toolwoz)
    if config.base_url or config.model.startswith("openai:"):
        served = {"api_key_env": config.api_key_env}
        if config.base_url:  # else taken from "openai:<model>@<url>" or the client's default
            served["base_url"] = config.base_url
        return load_backend(config.model, **served)
    return load_backend(config.model, adapter=config.adapter, dtype=config.dtype, load_in_4bit=config.load_in_4bit,
                        load_in_8bit=config.load_in_8bit, max_batch_tokens=config.max_batch_tokens,
                        trust_remote_code=config.trust_remote_code)


def build_user(config: EvaluateConfig, agent_backend):
    from ..backends import SamplingParams, load_backend
    from ..users import load_user

    if config.user in ("agenda", "replay"):
        return load_user(config.user)
    if config.user_model is None and config.model == RULE_BASED:
        raise ValueError(f"--user {config.user} needs --user_model (the rule-based agent is not a language model)")
    if config.user_model is None:
        backend = agent_backend
    elif config.user_base_url:
        backend = load_backend(config.user_model, base_url=config.user_base_url, api_key_env=config.api_key_env)
    else:
        backend = load_backend(config.user_model, dtype=config.dtype, trust_remote_code=config.trust_remote_code)
    return load_user(config.user, backend=backend,
                     sampling=SamplingParams(temperature=config.user_temperature, max_new_tokens=config.max_new_tokens))


def select_tasks(config: EvaluateConfig, toolwoz) -> list[str]:
    if config.task_ids:
        ids = [toolwoz.task(t).id for t in config.task_ids]
    else:
        ids = [t.id for t in toolwoz.split(config.split)]
    return ids[: config.limit] if config.limit else ids


def read_transcripts(path: Path) -> list[dict[str, Any]]:
    """Finished transcripts in a JSONL file; a torn last line (a crash mid-write) is ignored."""
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def compute_results(config: EvaluateConfig, toolwoz, transcripts: list[dict[str, Any]], task_ids: Sequence[str]) -> dict[str, Any]:
    """Metric figures over the transcripts (ordered by task, trial) plus the run's settings."""
    from ..toolwoz.metric_core import compute_toolwoz_metric

    order = {tid: i for i, tid in enumerate(task_ids)}
    rows = sorted((t for t in transcripts if t["task_id"] in order), key=lambda t: (order[t["task_id"]], t["trial"]))
    metrics = compute_toolwoz_metric([t["tool_calls"] for t in rows], [toolwoz.task(t["task_id"]) for t in rows])
    ended: dict[str, int] = {}
    for t in rows:
        ended[t["ended_by"]] = ended.get(t["ended_by"], 0) + 1
    return {
        "metrics": metrics,
        "ended_by": dict(sorted(ended.items())),
        "num_agent_errors": sum(len(t.get("errors", [])) for t in rows),
        "settings": settings_of(config),
    }


def format_results(results: dict[str, Any]) -> str:
    m = results["metrics"]
    s = results["settings"]
    lines = [
        f"ToolWOZ {s['split'] if not s['task_ids'] else 'tasks'} | agent {s['model']} ({s['agent_format']}) | user {s['user']}",
        f"  conversations      {m['num_conversations']:>8}   tasks {m['num_tasks']}",
        f"  average reward     {m['average_reward']:>8.4f}",
        f"  success rate       {m['success_rate']:>8.4f}",
    ]
    k = 1
    while f"pass^{k}" in m:
        lines.append(f"  pass^{k:<13} {m[f'pass^{k}']:>8.4f}")
        k += 1
    lines.append(f"  invalid call rate  {m['invalid_call_rate']:>8.4f}")
    for tool, acc in m["tool_accuracy"].items():
        lines.append(f"    {tool:<17}{acc:>8.4f}")
    return "\n".join(lines)


def run_evaluation(config: EvaluateConfig, *, toolwoz=None, agent_backend=None, user=None, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) an evaluation and write transcripts.jsonl + results.json; returns the results."""
    from tqdm.auto import tqdm

    from ..simulation import ConversationRunner, RunnerConfig
    from ..toolwoz import ToolWOZ

    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "transcripts.jsonl"
    existing = read_transcripts(path)
    if existing and not (config.resume or config.overwrite):
        raise FileExistsError(f"{path} already holds {len(existing)} transcripts: pass --resume to continue or --overwrite to start over")
    if config.overwrite and path.exists():
        path.unlink()
        existing = []
    toolwoz = toolwoz or ToolWOZ.load(config.source)
    task_ids = select_tasks(config, toolwoz)
    if not task_ids:
        raise ValueError(f"no tasks selected (split {config.split!r}, task_ids {config.task_ids}, limit {config.limit})")
    agent_backend = agent_backend or build_agent_backend(config, toolwoz)
    user = user or build_user(config, agent_backend)
    done = {(t["task_id"], int(t["trial"])) for t in existing}
    if existing:  # rewrite without a torn tail so appends start on a clean line
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(t) + "\n" for t in existing)
    todo = len(task_ids) * config.trials - len(done & {(t, k) for t in task_ids for k in range(config.trials)})
    runner = ConversationRunner(toolwoz, agent_backend, user, RunnerConfig(
        max_visible_messages=config.max_visible_messages,
        max_generations_per_turn=config.max_generations_per_turn,
        agent_format=config.agent_format,
        sampling=_sampling(config),
        seed=config.seed,
        system_prompt=config.system_prompt,
    ))
    started = time.perf_counter()
    bar = tqdm(total=todo, desc="conversations", unit="conv", disable=not progress or todo == 0)
    rewards: list[float] = []
    with open(path, "a", encoding="utf-8") as f:
        def on_done(transcript) -> None:
            f.write(json.dumps(transcript.to_dict()) + "\n")
            f.flush()
            os.fsync(f.fileno())
            rewards.append(transcript.reward)
            bar.update(1)
            bar.set_postfix(reward=f"{sum(rewards) / len(rewards):.3f}")

        runner.run(task_ids, trials=config.trials, on_done=on_done, skip=frozenset(done))
    bar.close()
    results = compute_results(config, toolwoz, read_transcripts(path), task_ids)
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    (out / "run_info.json").write_text(json.dumps({
        "conversations_this_run": len(rewards), "resumed_from": len(done),
        "wall_seconds": round(time.perf_counter() - started, 3),
    }, indent=2) + "\n")
    return results


def main(argv: Sequence[str]) -> int:
    from trl import TrlParser

    parser = TrlParser((EvaluateConfig,), prog="josh-hf evaluate", description=__doc__.splitlines()[0])
    (config,) = parser.parse_args_and_config(list(argv))
    results = run_evaluation(config)
    print(format_results(results))
    print(f"wrote {Path(config.output) / 'transcripts.jsonl'} and results.json", file=sys.stderr)
    return 0
