"""The whole JOSH pipeline at a small scale, offline: ``josh-hf demo``.

Stages (each writes under ``output`` and is skipped when its result is already there, so an
interrupted demo resumes where it stopped):

1. ``toolwoz/``: ToolWOZ built from MultiWOZ (``source``), plus its ``demonstrations`` config;
2. ``base/``: a small agent trained from scratch on the demonstrations (:mod:`.scratch`);
3. ``eval_base/``: the base agent on the first ``eval_tasks`` test tasks with the agenda user;
4. ``josh/``: one JOSH round with :class:`~josh_hf.trainer.JOSHSFTTrainer` (harvest on
   training tasks with the base agent, then train on the golden conversations);
5. ``eval_josh/``: the JOSH agent on the same test tasks, same user and seeds;
6. ``summary.json``: the before/after table with bootstrap intervals and a paired test.

Demonstrations and JOSH tasks come from the training tasks (``train`` when the source has them,
else ``validation``), never from test.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Settings of ``josh-hf demo`` (defaults: under 20 minutes on an idle 2-core CPU, most of it training)."""

    source: str | None = field(default=None, metadata={"help": "MultiWOZ source (folder, data.json folder, zip or URL) or a built ToolWOZ dataset; default $JOSH_HF_MULTIWOZ or ../shared/data/multiwoz."})
    output: str = field(default="outputs/demo", metadata={"help": "Folder for every stage's files."})
    preset: str = field(default="demo", metadata={"help": "Scratch agent preset: tiny | demo | gpu (see josh_hf.demo.scratch)."})
    train_steps: int | None = field(default=None, metadata={"help": "Optimizer steps of the scratch agent (default: the preset's)."})
    synthetic_trials: int = field(default=2, metadata={"help": "Synthetic demonstrations per training task (one seed each)."})
    goal_variants: int = field(default=0, metadata={"help": "Also N demonstrations per training task on its goal with values redrawn from the database (josh_hf.demo.variants)."})
    eval_tasks: int = field(default=100, metadata={"help": "First N ToolWOZ test tasks evaluated before and after (450 = all)."})
    eval_trials: int = field(default=1, metadata={"help": "Conversations per test task."})
    eval_temperature: float = field(default=0.0, metadata={"help": "Agent temperature during evaluation (0 = greedy)."})
    josh_tasks: int = field(default=48, metadata={"help": "Training tasks searched by the JOSH round."})
    josh_beam_size: int = field(default=8, metadata={"help": "JOSH beam (reference: 8)."})
    josh_max_steps: int = field(default=6, metadata={"help": "JOSH steps per task (reference: 15)."})
    josh_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the JOSH branches."})
    josh_learning_rate: float = field(default=5e-4, metadata={"help": "Learning rate of the JOSH-SFT step (full fine-tuning of the small agent)."})
    josh_epochs: float = field(default=2.0, metadata={"help": "Epochs over the harvested golden conversations."})
    max_new_tokens: int = field(default=128, metadata={"help": "New tokens per agent generation."})
    seed: int = 0
    overwrite: bool = field(default=False, metadata={"help": "Redo every stage instead of resuming."})

    def __post_init__(self) -> None:
        for name in ("synthetic_trials", "eval_tasks", "eval_trials", "josh_tasks", "josh_beam_size", "josh_max_steps", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.goal_variants < 0:
            raise ValueError(f"goal_variants must be >= 0, got {self.goal_variants}")
        if self.josh_temperature <= 0:
            raise ValueError("josh_temperature must be > 0: JOSH's sibling branches must differ")


def training_split(toolwoz: Any) -> str:
    """``train`` when the source has it, else ``validation`` (the bundled data has no train split)."""
    return "train" if "train" in toolwoz.splits else "validation"


def build_stage(source: str | None, folder: Path, seed: int = 0, synthetic_trials: int = 1, goal_variants: int = 0):
    """ToolWOZ + synthetic demonstrations (``synthetic_trials`` per training task, plus
    ``goal_variants`` on redrawn goals) in ``folder`` (skipped when present); returns the benchmark."""
    from ..toolwoz import ToolWOZ
    from ..toolwoz.hub import build_toolwoz_dataset
    from .demonstrations import add_demonstrations_config, build_demonstrations

    settings = {"seed": seed, "synthetic_trials": synthetic_trials, "goal_variants": goal_variants}
    marker = folder / "demonstrations_build.json"
    if not (folder / "demonstrations").exists():
        build_toolwoz_dataset(source, folder)
        toolwoz = ToolWOZ.from_dataset(folder)
        demos = build_demonstrations(toolwoz, split=training_split(toolwoz), sources=["synthetic"], seed=seed,
                                     synthetic_trials=synthetic_trials, goal_variants=goal_variants)
        add_demonstrations_config(folder, demos)
        marker.write_text(json.dumps(settings) + "\n", encoding="utf-8")
    elif marker.exists() and {"goal_variants": 0, **json.loads(marker.read_text(encoding="utf-8"))} != settings:
        # (folders built before goal variants existed have none)
        # Resuming must not silently train on demonstrations built with other settings.
        raise ValueError(f"{folder} holds demonstrations built with {marker.read_text(encoding='utf-8').strip()}, "
                         f"not {json.dumps(settings)}: use another output folder or overwrite")
    return ToolWOZ.from_dataset(folder)


def train_stage(toolwoz_dir: Path, folder: Path, preset: str = "demo", *, exclude_tasks: Iterable[str] = (),
                **overrides: Any) -> Path:
    """The scratch agent in ``folder`` (skipped when a trained one is there). Demonstrations of
    ``exclude_tasks`` (a dev set) are left out; ``overrides`` are
    :class:`~josh_hf.demo.scratch.ScratchConfig` fields."""
    from .demonstrations import load_demonstrations
    from .scratch import train_scratch_agent

    if (folder / "scratch_config.json").exists():
        return folder
    demos = load_demonstrations(toolwoz_dir)
    excluded = set(exclude_tasks)
    if excluded:
        demos = demos.filter(lambda task_id: task_id not in excluded, input_columns="task_id")
    return train_scratch_agent(demos, folder, preset, **overrides)


EVAL_BATCH_TOKENS = 65536
"""Generation batch budget of the demo's evaluations and searches: a small agent's prompts are
mostly served from the per-row KV store, so on a CPU wide batches (~40 rows) are the fast ones
(``benchmarks/rollout_throughput.py``)."""


def evaluate_agent(toolwoz: Any, model: Path, folder: Path, task_ids: list[str], *, trials: int = 1,
                   temperature: float = 0.0, seed: int = 0, max_new_tokens: int = 128,
                   max_batch_tokens: int = EVAL_BATCH_TOKENS) -> list[dict[str, Any]]:
    """Evaluate ``model`` on ``task_ids`` with the agenda user (resumes a partial run); returns
    the transcripts."""
    from ..commands.evaluate import EvaluateConfig, read_transcripts, run_evaluation

    run_evaluation(EvaluateConfig(
        model=str(model), task_ids=list(task_ids), trials=trials, seed=seed, temperature=temperature,
        max_new_tokens=max_new_tokens, max_batch_tokens=max_batch_tokens, output=str(folder), resume=True,
    ), toolwoz=toolwoz)
    # Only this run's (task, trial) pairs: a folder resumed with fewer trials may hold more.
    wanted = set(task_ids)
    return [t for t in read_transcripts(folder / "transcripts.jsonl") if t["task_id"] in wanted and int(t["trial"]) < trials]


JOSH_LEARNING_RATES = {"sft": 5e-4, "kto": 1e-4, "dpo": 1e-4}
"""Full fine-tuning of a small scratch agent wants far larger steps than the reference's LoRA
rates on an 8B model (SFT 2e-5, KTO 5e-7)."""


def josh_round(toolwoz: Any, model: Path, folder: Path, task_ids: list[str], *, method: str = "sft",
               harvest_files: list[str] | None = None, beam_size: int = 8, max_steps: int = 8,
               temperature: float = 1.0, learning_rate: float | None = None, epochs: float = 2.0,
               max_new_tokens: int = 128, max_batch_tokens: int = EVAL_BATCH_TOKENS, seed: int = 0) -> Path:
    """One JOSH round from ``model`` into ``folder`` with the JOSH trainer of ``method``: search
    ``task_ids`` with the model and train on the harvest, or with ``harvest_files`` train on
    earlier trees. Skipped when ``folder`` holds a finished round."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..trainer import CONFIG_CLASSES, TRAINER_CLASSES

    if (folder / "josh_done.json").exists():
        return folder
    args = CONFIG_CLASSES[method](
        output_dir=str(folder), use_cpu=not _has_cuda(), report_to="none", seed=seed, bf16=False,
        josh_rounds=1, josh_tasks_per_round=len(task_ids), josh_task_ids=list(task_ids), harvest_files=harvest_files,
        josh_beam_size=beam_size, josh_max_steps=max_steps, josh_agent_format="native",
        josh_temperature=temperature, josh_max_new_tokens=max_new_tokens, josh_max_batch_tokens=max_batch_tokens,
        use_peft=False, learning_rate=learning_rate or JOSH_LEARNING_RATES[method], num_train_epochs=epochs,
        lr_scheduler_type="constant", warmup_steps=0, per_device_train_batch_size=4,
        gradient_checkpointing=False, save_strategy="no", logging_steps=5, disable_tqdm=True,
        max_length=None, dataloader_num_workers=0,
    )
    policy = AutoModelForCausalLM.from_pretrained(model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    trainer = TRAINER_CLASSES[method](policy, args=args, processing_class=tokenizer, toolwoz=toolwoz)
    trainer.train()
    trainer.save_model(str(folder))
    tokenizer.save_pretrained(folder)
    (folder / "josh_done.json").write_text(json.dumps(trainer.josh_card_info(), indent=2, default=str) + "\n")
    return folder


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def summarize(before: list[dict[str, Any]], after: list[dict[str, Any]], *, seed: int = 0) -> dict[str, Any]:
    """Figures of both agents with 95% bootstrap intervals, and the paired test of after vs before."""
    from ..stats import bootstrap_figures, paired_bootstrap, per_task_rewards

    base, josh = per_task_rewards(before), per_task_rewards(after)
    figures = {name: {k: v.as_dict() for k, v in bootstrap_figures(s, seed=seed).items()}
               for name, s in (("base", base), ("josh_sft", josh))}
    paired = {k: v.as_dict() for k, v in paired_bootstrap(base, josh, seed=seed).items()}
    return {"figures": figures, "josh_sft_vs_base": paired, "tasks": len(set(base) & set(josh))}


def format_summary(summary: dict[str, Any]) -> str:
    """The before/after table as text."""
    lines = [f"{'figure':<16}{'base':>24}{'JOSH-SFT':>24}{'difference':>12}{'p':>8}"]
    for name in ("average_reward", "success_rate", "pass^1"):
        if name not in summary["josh_sft_vs_base"]:
            continue
        cells = []
        for agent in ("base", "josh_sft"):
            f = summary["figures"][agent][name]
            cells.append(f"{f['estimate']:.3f} [{f['low']:.3f}, {f['high']:.3f}]")
        pair = summary["josh_sft_vs_base"][name]
        lines.append(f"{name:<16}{cells[0]:>24}{cells[1]:>24}{pair['difference']['estimate']:>+12.3f}{pair['p_value']:>8.3f}")
    return "\n".join(lines)


def run_demo(config: DemoConfig, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) every stage; returns the summary (also written to ``summary.json``)."""
    import shutil

    out = Path(config.output)
    if config.overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        log(f"[demo] {name} ...")
        started = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - started, 1)
        log(f"[demo] {name} done in {timings[name]:.0f} s")
        return result

    toolwoz = stage("build ToolWOZ + demonstrations", lambda: build_stage(config.source, out / "toolwoz", config.seed,
                                                                            config.synthetic_trials, config.goal_variants))
    overrides: dict[str, Any] = {"seed": config.seed}
    if config.train_steps is not None:
        overrides["max_steps"] = config.train_steps
    base = stage("train the scratch agent", lambda: train_stage(out / "toolwoz", out / "base", config.preset, **overrides))
    test_ids = [t.id for t in toolwoz.split("test")][: config.eval_tasks]
    pool = [t.id for t in toolwoz.split(training_split(toolwoz))][: config.josh_tasks]

    def evaluate(model: Path, folder: str) -> list[dict[str, Any]]:
        return evaluate_agent(toolwoz, model, out / folder, test_ids, trials=config.eval_trials,
                              temperature=config.eval_temperature, seed=config.seed,
                              max_new_tokens=config.max_new_tokens)

    before = stage("evaluate the base agent", lambda: evaluate(base, "eval_base"))
    josh = stage("JOSH round (harvest + SFT)", lambda: josh_round(
        toolwoz, base, out / "josh", pool, method="sft", beam_size=config.josh_beam_size,
        max_steps=config.josh_max_steps, temperature=config.josh_temperature, learning_rate=config.josh_learning_rate,
        epochs=config.josh_epochs, max_new_tokens=config.max_new_tokens, seed=config.seed))
    after = stage("evaluate the JOSH agent", lambda: evaluate(josh, "eval_josh"))
    summary = summarize(before, after, seed=config.seed)
    harvest = json.loads((josh / "josh_done.json").read_text())
    summary.update({"settings": asdict(config), "seconds": timings, "josh": harvest})
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


__all__ = [
    "DemoConfig",
    "build_stage",
    "evaluate_agent",
    "format_summary",
    "josh_round",
    "run_demo",
    "summarize",
    "train_stage",
    "training_split",
]
