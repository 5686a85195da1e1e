"""The harvesting half of the JOSH trainers, shared by the SFT, KTO and DPO ones.

One round (``train()`` runs ``josh_rounds`` of them):

1. **harvest**: JOSH searches this round's tasks with the model being trained (adapter active,
   eval mode, no gradients: :class:`TransformersBackend` on ``self.model``). With several
   processes each one searches its own share (``tasks[rank::world]``) and the trees are
   gathered in the round's task order, so every process builds the same dataset;
2. **dataset**: the trees become this trainer's dataset (SFT / KTO / DPO rows), prepared by the
   TRL trainer's own ``_prepare_dataset``;
3. **train**: the TRL trainer's ``train()`` on it, with a fresh optimizer and schedule;
4. **evaluate** (optional) on a few ToolWOZ tasks, split over the processes as well;
5. **log** the round's figures through ``self.log`` (so ``report_to`` sees them) and **save** a
   checkpoint whose ``josh_state.json`` says the round is complete.

Each round's checkpoints and its ``trees.jsonl`` live in ``output_dir/round-N/``. Resuming from a
completed round's checkpoint loads its weights and starts the next round; from a checkpoint in
the middle of a round, the round's saved trees are rebuilt into the same dataset and TRL resumes
the optimisation. Task order is a pure function of the pool and the seed
(:func:`round_schedule`), and every round reseeds the global RNG, so a resumed run repeats an
uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from .config import JOSHArguments, round_schedule

logger = logging.getLogger(__name__)

JOSH_STATE = "josh_state.json"
ROUND_INFO = "round.json"
TREES = "trees.jsonl"

PAPER = {
    "title": "Sparse Rewards Can Self-Train Dialogue Agents",
    "id": "2409.04617",
    "citation": """\
@article{lattimer2024sparse,
  title={Sparse Rewards Can Self-Train Dialogue Agents},
  author={Lattimer, Barrett Martin and Gangal, Varun and McDonald, Ryan and Yang, Yi},
  journal={arXiv preprint arXiv:2409.04617},
  year={2024}
}""",
}


def placeholder_dataset(method: str):
    """A one-row dataset in the method's harvest format: TRL trainers need a dataset at
    construction, and the real one only exists after round 1's harvest."""
    from ..josh.harvest import _dataset

    user = [{"role": "user", "content": "Hello."}]
    reply = [{"role": "assistant", "content": "Hello! How can I help?"}]
    row: dict[str, Any] = {"sft": {"messages": user + reply},
                           "kto": {"prompt": user, "completion": reply, "label": True},
                           "dpo": {"prompt": user, "chosen": reply, "rejected": [{"role": "assistant", "content": "No."}]}}[method]
    return _dataset([{**row, "tools": None, "task_id": "placeholder"}], method)


def harvest_dataset(method: str, records: list[dict[str, Any]], args: JOSHArguments):
    """The method's ``datasets.Dataset`` of tree records, with the config's harvest filters."""
    from ..josh import harvest

    if method == "sft":
        return harvest.sft_dataset(records, drop_errors=args.harvest_drop_errors)
    if method == "kto":
        return harvest.kto_dataset(records, drop_conflicts=args.harvest_drop_conflicts)
    return harvest.dpo_dataset(records)


def read_harvest_files(paths: list[str]) -> list[dict[str, Any]]:
    """Tree records of ``josh-hf harvest`` files (a ``trees.jsonl`` or a folder holding one)."""
    from ..josh.harvest import read_tree_records

    records = []
    for path in paths:
        p = Path(path)
        p = p / TREES if p.is_dir() else p
        if not p.is_file():
            raise FileNotFoundError(f"harvest_files: no trees file at {p}")
        records.extend(read_tree_records(p))
    return records


class JOSHTrainerMixin:
    """Rounds of JOSH harvesting around a TRL trainer's ``train()``. Put it first in the bases:
    ``class JOSHKTOTrainer(JOSHTrainerMixin, KTOTrainer)``; subclasses set ``josh_method``."""

    josh_method: str = ""
    _paper = PAPER

    def __init__(self, model: Any, args: JOSHArguments | None = None, *, train_dataset: Any = None,
                 toolwoz: Any = None, user: Any = None, **kwargs: Any):
        if args is None:
            raise ValueError(f"{type(self).__name__} needs `args` (a {self.josh_method.upper()} JOSH config)")
        if not isinstance(args, JOSHArguments):
            raise TypeError(f"`args` must be a JOSH config (JOSHArguments), got {type(args).__name__}")
        if train_dataset is not None and not args.offline:
            raise ValueError("pass `harvest_files` (offline) or nothing: the JOSH trainer builds its own datasets")
        self._josh_records: list[dict[str, Any]] = read_harvest_files(args.harvest_files) if args.offline else []
        if args.offline:
            train_dataset = harvest_dataset(self.josh_method, self._josh_records, args)
            if len(train_dataset) == 0:
                raise ValueError(f"harvest_files hold no {self.josh_method.upper()} examples "
                                 f"({len(self._josh_records)} trees)")
        else:
            train_dataset = placeholder_dataset(self.josh_method)
        if args.use_peft and kwargs.get("peft_config") is None and not _is_peft(model):
            kwargs["peft_config"] = args.lora_config()
        super().__init__(model=model, args=args, train_dataset=train_dataset, **kwargs)
        self._toolwoz = toolwoz
        self._josh_user = user
        self._josh_round = 0
        self._josh_history: list[dict[str, Any]] = []
        self._josh_eval_before: dict[str, Any] | None = None
        self._josh_schedule: list[list[str]] | None = None
        self._josh_pool_split: str | None = None
        self.josh_log_history: list[dict[str, Any]] = []
        """Every log entry of every round (``state.log_history`` restarts with each round's
        ``train()``), tagged with its ``josh_round``."""

    # -- pieces a subclass (or a test) may replace -------------------------------------------
    @property
    def toolwoz(self):
        """The ToolWOZ benchmark (loaded on first use from ``toolwoz_source``)."""
        if self._toolwoz is None:
            from ..toolwoz import ToolWOZ

            self._toolwoz = ToolWOZ.load(self.args.toolwoz_source)
        return self._toolwoz

    @property
    def josh_user(self):
        """The user simulator (``user_simulator``); an LLM user gets its own model, never the policy."""
        if self._josh_user is None:
            from ..commands.evaluate import build_user

            self._josh_user = build_user(self._evaluate_config(task_ids=["-"], output="-"), None)
        return self._josh_user

    @property
    def josh_tokenizer(self):
        pc = self.processing_class
        return getattr(pc, "tokenizer", pc)

    def josh_backend(self):
        """The agent backend of harvests and evaluations: the policy being trained, as it is now."""
        from ..backends.transformers_backend import TransformersBackend

        return TransformersBackend(self.model, self.josh_tokenizer, max_batch_tokens=self.args.josh_max_batch_tokens)

    def _josh_prepare(self, dataset):
        """The TRL trainer's preparation of a round's dataset (tokenising etc.), and for KTO/DPO
        the reference log-probabilities when the config precomputes them."""
        prepared = self._prepare_dataset(dataset, self.processing_class, self.args, "train")
        if getattr(self, "precompute_ref_logps", False):  # the reference is the base model: fixed across rounds
            batch = self.args.precompute_ref_batch_size or self.args.per_device_train_batch_size
            prepared = self._precompute_ref_logps(prepared, "train", batch)
        return prepared

    # -- tasks -----------------------------------------------------------------------------
    def josh_task_pool(self) -> list[str]:
        """The ids rounds draw from: ``josh_task_ids``, or the split (train, else validation)."""
        args = self.args
        if args.josh_task_ids:
            return [self.toolwoz.task(t).id for t in args.josh_task_ids]
        split = args.josh_task_split
        if split not in self.toolwoz.splits and split == "train":
            logger.warning("this ToolWOZ build has no train split: JOSH draws its tasks from validation instead")
            split = "validation"
        self._josh_pool_split = split
        return [t.id for t in self.toolwoz.split(split)]

    def josh_schedule(self) -> list[list[str]]:
        """The task ids of every round (see :func:`round_schedule`)."""
        if self._josh_schedule is None:
            args = self.args
            self._josh_schedule = round_schedule(self.josh_task_pool(), args.josh_rounds, args.josh_tasks_per_round,
                                                 args.task_seed)
        return self._josh_schedule

    def josh_round_dir(self, round_index: int) -> Path:
        return Path(self.args.harvest_dir or self.args.output_dir) / f"round-{round_index}"

    # -- distributed helpers ------------------------------------------------------------------
    @property
    def _rank_world(self) -> tuple[int, int]:
        return self.accelerator.process_index, self.accelerator.num_processes

    def _all_gather(self, obj: Any) -> list[Any]:
        """``obj`` of every process, in rank order (a one-element list without distribution)."""
        _, world = self._rank_world
        if world == 1 or not torch.distributed.is_initialized():
            return [obj]
        out: list[Any] = [None] * world
        torch.distributed.all_gather_object(out, obj)
        return out

    # -- one round's pieces ---------------------------------------------------------------------
    def josh_harvest(self, round_index: int, task_ids: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Search this process's share of ``task_ids`` with the current policy; gather every
        process's trees in task order. Returns (records, figures)."""
        from ..josh import JOSHSearch

        rank, world = self._rank_world
        share = task_ids[rank::world]
        search = JOSHSearch(self.toolwoz, self.josh_backend(), self.josh_user, self.args.josh_search_config(),
                            max_concurrent=self.args.josh_max_concurrent)
        started = time.perf_counter()
        with torch.no_grad():  # TransformersBackend also uses inference mode; nothing here needs autograd
            local = [r.to_dict() for r in search.run(share)] if share else []
        wall = time.perf_counter() - started
        parts = self._all_gather({"rank": rank, "tasks": share, "records": local, "wall": wall})
        by_task = {r["task_id"]: r for p in parts for r in p["records"]}
        records = [by_task[t] for t in task_ids if t in by_task]
        turns = sum(r["stats"]["agent_turns"] for r in records)
        slowest = max(p["wall"] for p in parts)  # processes run in parallel: the round takes the slowest
        n = len(records)
        figures = {
            "round": round_index,
            "tasks": n,
            "reward": sum(float(r["reward"]) for r in records) / n if n else 0.0,
            "success": sum(bool(r["success"]) for r in records) / n if n else 0.0,
            "agent_turns": turns,
            "turns_per_second": turns / slowest if slowest > 0 else 0.0,
            "harvest_seconds": slowest,
        }
        self._josh_write_round(round_index, task_ids, [p["tasks"] for p in parts], records, figures)
        return records, figures

    def _josh_write_round(self, round_index: int, task_ids: list[str], shares: list[list[str]],
                          records: list[dict[str, Any]], figures: dict[str, Any]) -> None:
        if not self.args.should_save:
            return
        folder = self.josh_round_dir(round_index)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (TREES + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        os.replace(tmp, folder / TREES)  # a crash never leaves a half-written harvest behind
        info = {"round": round_index, "tasks": task_ids, "shares": shares, "figures": figures}
        (folder / ROUND_INFO).write_text(json.dumps(info, indent=2) + "\n")

    def josh_evaluate(self, tag: str) -> dict[str, float] | None:
        """Average reward and success of the current policy on the first ``josh_eval_tasks``
        tasks of ``josh_eval_split`` (each process runs its share; ``None`` when disabled)."""
        from ..commands.evaluate import compute_results, read_transcripts, run_evaluation

        args = self.args
        if args.josh_eval_tasks <= 0:
            return None
        ids = [t.id for t in self.toolwoz.split(args.josh_eval_split)][: args.josh_eval_tasks]
        if self._josh_pool_split == args.josh_eval_split and not args.josh_task_ids:
            logger.warning("evaluating on %s, the split JOSH harvests from: the figures are not held out",
                           args.josh_eval_split)
        rank, _ = self._rank_world
        _, world = self._rank_world
        share = ids[rank::world]
        folder = Path(args.harvest_dir or args.output_dir) / "eval" / tag / f"rank-{rank}"
        transcripts: list[dict[str, Any]] = []
        if share:
            config = self._evaluate_config(task_ids=share, output=str(folder))
            run_evaluation(config, toolwoz=self.toolwoz, agent_backend=self.josh_backend(), user=self.josh_user,
                           progress=False)
            transcripts = read_transcripts(folder / "transcripts.jsonl")
        gathered = [t for part in self._all_gather(transcripts) for t in part]
        results = compute_results(self._evaluate_config(task_ids=ids, output=str(folder)), self.toolwoz, gathered, ids)
        metrics = results["metrics"]
        return {"reward": float(metrics["average_reward"]), "success": float(metrics["success_rate"]), "tasks": len(ids)}

    def _evaluate_config(self, *, task_ids: list[str], output: str):
        from ..commands.evaluate import EvaluateConfig

        a = self.args
        return EvaluateConfig(
            model="policy-being-trained", agent_format=a.josh_agent_format, user=a.user_simulator,
            user_model=a.user_model, user_base_url=a.user_base_url, user_temperature=a.user_temperature,
            api_key_env=a.user_api_key_env, source=a.toolwoz_source, task_ids=list(task_ids), seed=a.seed,
            temperature=a.josh_eval_temperature, top_p=1.0, max_new_tokens=a.josh_max_new_tokens,
            max_visible_messages=a.josh_eval_max_visible_messages,
            max_generations_per_turn=a.josh_max_generations_per_turn, system_prompt=a.josh_system_prompt,
            max_batch_tokens=a.josh_max_batch_tokens, trust_remote_code=a.trust_remote_code, output=output,
            overwrite=True,
        )

    def josh_dataset(self, records: list[dict[str, Any]]):
        """This trainer's (unprepared) dataset of ``records``."""
        return harvest_dataset(self.josh_method, records, self.args)

    # -- the loop ---------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, trial: Any = None,
              ignore_keys_for_eval: list[str] | None = None, **kwargs: Any):
        """Run every JOSH round (or, offline, train once on ``harvest_files``)."""
        from transformers.trainer_utils import TrainOutput, set_seed

        args = self.args
        if args.offline:
            output = super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial,
                                   ignore_keys_for_eval=ignore_keys_for_eval, **kwargs)
            self._josh_history = [{"round": 1, "tasks": len(self._josh_records), "examples": len(self.train_dataset),
                                   "reward": _mean(r.get("reward") for r in self._josh_records),
                                   "success": _mean(bool(r.get("success")) for r in self._josh_records)}]
            return output
        schedule = self.josh_schedule()
        start, mid_checkpoint = self._josh_resume_point(resume_from_checkpoint, schedule)
        if start == 1 and mid_checkpoint is None and args.josh_eval_before:
            self._josh_eval_before = self.josh_evaluate("before")
        output = TrainOutput(self.state.global_step, 0.0, {})
        for r in range(start, args.josh_rounds + 1):
            self._josh_round = r
            tasks = schedule[r - 1]
            if mid_checkpoint is not None and r == start:
                records, figures = self._josh_load_round(r)
                resume = mid_checkpoint
            else:
                records, figures = self.josh_harvest(r, tasks)
                resume = None
            dataset = self.josh_dataset(records)
            figures["examples"] = len(dataset)
            # Fresh optimizer and schedule each round (a new dataset, a new warm-up); also keeps
            # accelerate from wrapping last round's optimizer twice.
            self.optimizer, self.lr_scheduler = None, None
            if len(dataset) < max(1, args.harvest_min_examples):
                logger.warning("JOSH round %d harvested %d examples (< %d): no optimisation this round",
                               r, len(dataset), max(1, args.harvest_min_examples))
                figures["trained"] = False
            else:
                self.train_dataset = self._josh_prepare(dataset)
                if len(self.train_dataset) == 0:
                    raise ValueError(f"JOSH round {r}: TRL dropped all {len(dataset)} harvested examples while "
                                     f"preparing them (longer than max_length={self.args.max_length}?)")
                # The same RNG stream in an uninterrupted and a resumed run (dropout, shuffling).
                set_seed(args.seed + r)
                output = super().train(resume_from_checkpoint=resume, trial=trial,
                                       ignore_keys_for_eval=ignore_keys_for_eval, **kwargs)
                figures["trained"] = True
                figures["train_loss"] = float(output.training_loss)
            evaluation = self.josh_evaluate(f"round-{r}")
            if evaluation is not None:
                figures["eval_reward"], figures["eval_success"] = evaluation["reward"], evaluation["success"]
            self._josh_history.append(figures)
            self.log({f"josh/{k}": float(v) for k, v in figures.items() if isinstance(v, (int, float))})
            self._josh_end_round(trial)
        return output

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        super().log(logs, start_time)
        if self.state.log_history:
            self.josh_log_history.append({**self.state.log_history[-1], "josh_round": self._josh_round})

    def _josh_load_round(self, round_index: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        from ..josh.harvest import read_tree_records

        folder = self.josh_round_dir(round_index)
        info = json.loads((folder / ROUND_INFO).read_text())
        return read_tree_records(folder / TREES), dict(info["figures"])

    # -- checkpoints -------------------------------------------------------------------------
    def _get_output_dir(self, trial: Any) -> str:
        # Checkpoints of round N go to output_dir/round-N (steps restart each round, so the
        # rounds' checkpoint-K folders must not collide), beside that round's harvest.
        base = super()._get_output_dir(trial)
        if self.args.offline or self._josh_round == 0:
            return base
        return str(Path(base) / f"round-{self._josh_round}")

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        self._josh_write_state(complete=False, trial=trial)

    def _josh_checkpoint_dir(self, trial: Any) -> Path:
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        return Path(self._get_output_dir(trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"

    def _josh_write_state(self, *, complete: bool, trial: Any) -> None:
        if self.args.offline or self._josh_round == 0 or not self.args.should_save:
            return
        folder = self._josh_checkpoint_dir(trial)
        if not folder.is_dir():
            return
        state = {
            "round": self._josh_round,
            "complete": complete,
            "tasks": self.josh_schedule()[self._josh_round - 1],
            "task_seed": self.args.task_seed,
            "history": self._josh_history if complete else self._josh_history[: self._josh_round - 1],
            "eval_before": self._josh_eval_before,
        }
        (folder / JOSH_STATE).write_text(json.dumps(state, indent=2) + "\n")

    def _josh_end_round(self, trial: Any) -> None:
        """A checkpoint that marks the round complete (unless ``save_strategy='no'``)."""
        if self.args.save_strategy == "no":
            return
        folder = self._josh_checkpoint_dir(trial)
        if not folder.is_dir():
            if self.optimizer is not None:
                super()._save_checkpoint(self.model_wrapped if self.model_wrapped is not None else self.model, trial)
            else:  # a round without optimisation: only the weights (and the JOSH state) to resume from
                self.save_model(str(folder), _internal_call=True)
        self._josh_write_state(complete=True, trial=trial)

    def josh_checkpoints(self) -> list[Path]:
        """Every JOSH checkpoint under the output dir, oldest first (round, then step)."""
        found = []
        for path in Path(self.args.output_dir).glob("round-*/checkpoint-*"):
            if (path / JOSH_STATE).is_file():
                try:
                    found.append((int(path.parent.name.split("-")[1]), int(path.name.split("-")[1]), path))
                except ValueError:
                    continue
        return [p for *_, p in sorted(found)]

    def _josh_resume_point(self, resume: str | bool | None, schedule: list[list[str]]) -> tuple[int, str | None]:
        """(first round to run, checkpoint to resume mid-round from or None); loads a completed
        round's weights."""
        if not resume:
            return 1, None
        if resume is True:
            found = self.josh_checkpoints()
            if not found:
                raise ValueError(f"no JOSH checkpoint under {self.args.output_dir} (round-N/checkpoint-K with {JOSH_STATE})")
            path = found[-1]
        else:
            path = Path(resume)
        state_file = path / JOSH_STATE
        if not state_file.is_file():
            raise ValueError(f"{path} is not a JOSH checkpoint (no {JOSH_STATE})")
        state = json.loads(state_file.read_text())
        r = int(state["round"])
        if r > len(schedule) or schedule[r - 1] != state["tasks"]:
            raise ValueError(f"{path}: round {r} of that run drew other tasks than this config does "
                             "(josh_task_* / seed changed); resume with the same settings")
        self._josh_history = list(state.get("history") or [])
        self._josh_eval_before = state.get("eval_before")
        if state["complete"]:
            self._load_from_checkpoint(str(path))
            logger.info("resuming after JOSH round %d (%s)", r, path)
            return r + 1, None
        logger.info("resuming inside JOSH round %d (%s)", r, path)
        return r, str(path)

    # -- model card / Hub ------------------------------------------------------------------------
    def josh_card_info(self) -> dict[str, Any]:
        """What the model card records: the dict ``josh_hf.trainer.card.render_model_card`` takes
        (``base_model``, ``method``, ``trainer_class``, ``config``, ``training``, ``rounds``,
        ``harvest``, ``eval_before``, ``eval_after``, ``user_simulator``, ``dataset``)."""
        a = self.args
        history = list(self._josh_history)
        rounds = [{**h, "josh_reward": h.get("reward"), "josh_success": h.get("success")} for h in history]
        evals = [h for h in history if "eval_reward" in h]
        user = a.user_simulator if not a.user_model else f"{a.user_simulator} ({a.user_model})"
        eval_after = self._eval_card(evals[-1]["eval_reward"], evals[-1]["eval_success"]) if evals else None
        before = self._josh_eval_before
        eval_before = self._eval_card(before["reward"], before["success"]) if before else None
        split = self._josh_pool_split or a.josh_task_split
        examples = sum(int(h.get("examples", 0)) for h in history)
        return {
            "base_model": _base_model_id(self.model),
            "method": self.josh_method,
            "trainer_class": type(self).__name__,
            "config": {
                **a.josh_settings(),
                "rounds": a.josh_rounds, "tasks_per_round": a.josh_tasks_per_round, "beam_size": a.josh_beam_size,
                "max_steps": a.josh_max_steps, "agent_format": a.josh_agent_format, "user_simulator": user,
                "sampling": {"temperature": a.josh_temperature, "top_p": a.josh_top_p, "top_k": a.josh_top_k,
                             "max_new_tokens": a.josh_max_new_tokens},
            },
            "training": {
                "learning_rate": a.learning_rate, "beta": getattr(a, "beta", None),
                "num_train_epochs": a.num_train_epochs, "max_steps": a.max_steps,
                "lora_r": a.lora_r if a.use_peft else None, "lora_alpha": a.lora_alpha if a.use_peft else None,
                "lora_dropout": a.lora_dropout if a.use_peft else None, "quantization": a.quantization,
            },
            "rounds": rounds,
            "harvest": {"tasks": sum(int(h.get("tasks", 0)) for h in history), "examples": {self.josh_method: examples}},
            "eval_before": eval_before,
            "eval_after": eval_after,
            "user_simulator": user,
            "dataset": "harvest files" if a.offline else f"ToolWOZ {split} (JOSH harvest)",
        }

    def _eval_card(self, reward: float, success: float) -> dict[str, Any]:
        a = self.args
        return {"average_reward": reward, "success_rate": success, "split": a.josh_eval_split,
                "num_tasks": a.josh_eval_tasks, "user_simulator": a.user_simulator}

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None,
                          tags: str | list[str] | None = None) -> None:
        """The JOSH model card (``josh_hf.trainer.card.render_model_card``) when that module is
        installed, else TRL's card."""
        try:
            from .card import render_model_card
        except ImportError:
            return super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if not self.is_world_process_zero():
            return None
        Path(self.args.output_dir).mkdir(parents=True, exist_ok=True)
        text = render_model_card(self.josh_card_info())
        (Path(self.args.output_dir) / "README.md").write_text(str(text), encoding="utf-8")
        return None


    def push_to_hub(self, commit_message: str | None = "End of JOSH training", blocking: bool = True,
                    token: str | None = None, revision: str | None = None, **kwargs: Any) -> Any:
        """Upload the trained adapter (or, with ``merged=True``, the merged model) and the JOSH
        model card with :func:`josh_hf.trainer.hub.push_josh_model`. The repo is ``repo_id=``,
        else ``hub_model_id``, else the output folder's name; the token comes from ``token=``,
        the environment or the saved login (never from the config)."""
        from .hub import push_josh_model

        repo_id = kwargs.pop("repo_id", None) or self.args.hub_model_id or Path(self.args.output_dir).name
        merged = bool(kwargs.pop("merged", False))
        if not self.is_world_process_zero():
            return None
        return push_josh_model(
            self.model, self.processing_class, repo_id, card_info=self.josh_card_info(), merged=merged,
            private=bool(getattr(self.args, "hub_private_repo", False)), token=token,
            commit_message=commit_message or "End of JOSH training", revision=revision,
        )


def _is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def _base_model_id(model: Any) -> str | None:
    config = getattr(model, "config", None)
    base = getattr(getattr(model, "peft_config", {}).get("default", None), "base_model_name_or_path", None)
    return base or getattr(config, "_name_or_path", None) or getattr(config, "name_or_path", None)


def _mean(values: Any) -> float:
    values = [float(v or 0.0) for v in values]
    return sum(values) / len(values) if values else 0.0


__all__ = ["JOSHTrainerMixin", "harvest_dataset", "placeholder_dataset", "read_harvest_files", "round_schedule"]
