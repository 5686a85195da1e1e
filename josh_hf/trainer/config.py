"""Configs of the JOSH trainers: TRL's ``SFTConfig`` / ``KTOConfig`` / ``DPOConfig`` plus the JOSH settings.

:class:`JOSHArguments` holds what every JOSH trainer shares: rounds, the task pool and how each
round draws from it, the search (beam, steps, format, sampling), the user simulator, harvest
filters and where harvests go, and the evaluation between rounds, plus the LoRA / quantization
of the policy. Each ``JOSH*Config`` is that mixin on top of the matching TRL config, so every TRL
option still works (``--learning_rate``, ``--report_to``, ...). Every check runs in
``__post_init__``: a bad setting fails before any model is loaded, naming the field.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from trl import DPOConfig, KTOConfig, SFTConfig

AGENT_FORMATS = ("react", "native")
USER_SIMULATORS = ("agenda", "replay", "llm-goal", "llm-guide")
QUANTIZATIONS = ("4bit", "8bit")
TEST_SPLITS = ("test", "test_full")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
"""The reference's LoRA targets: every attention and MLP projection of a Llama-style model."""


@dataclass
class JOSHArguments:
    """The JOSH settings shared by :class:`JOSHSFTConfig`, :class:`JOSHKTOConfig`, :class:`JOSHDPOConfig`.

    Search defaults are the reference's (arXiv 2409.04617): beam 8, 15 steps, 3 generations per
    turn, ReAct format, the first successful leaf's goals credited.
    """

    # -- rounds and tasks ----------------------------------------------------------------
    josh_rounds: int = field(default=2, metadata={"help": "Harvest-then-train rounds; each harvests with the current policy."})
    josh_tasks_per_round: int = field(default=64, metadata={"help": "ToolWOZ tasks searched per round (split over the processes)."})
    josh_task_split: str = field(default="train", metadata={"help": "ToolWOZ split the tasks are drawn from. Falls back to 'validation' (with a warning) when the build has no train split; never a test split."})
    josh_task_ids: list[str] | None = field(default=None, metadata={"help": "Draw from these task ids instead of --josh_task_split."})
    josh_task_seed: int | None = field(default=None, metadata={"help": "Seed of the task order (default: --seed). The pool is shuffled once and rounds take consecutive slices, so no task repeats until the pool is used up."})
    # -- the search -----------------------------------------------------------------------
    josh_beam_size: int = field(default=8, metadata={"help": "Cap on live leaves per task (reference: 8)."})
    josh_max_steps: int = field(default=15, metadata={"help": "JOSH steps per conversation (reference: 15). Not the optimizer's --max_steps."})
    josh_max_generations_per_turn: int = field(default=3, metadata={"help": "Model generations per agent turn (reference: 3)."})
    josh_agent_format: str = field(default="react", metadata={"help": "'react' (PLAN/APICALL/SPEAK, reference) or 'native' (chat-template tool calls)."})
    josh_credit: str = field(default="first", metadata={"help": "'first' (reference) or 'all': which successful leaves' goals a collapse credits."})
    josh_temperature: float = field(default=1.0, metadata={"help": "Agent sampling temperature during harvest; must be > 0."})
    josh_top_p: float = 1.0
    josh_top_k: int = 0
    josh_max_new_tokens: int = field(default=256, metadata={"help": "New tokens per agent generation (reference: 256)."})
    josh_system_prompt: str | None = field(default=None, metadata={"help": "Replace the agent's system prompt ('{tools}' becomes the tool schemas)."})
    josh_max_concurrent: int | None = field(default=None, metadata={"help": "Tasks searched at once per process (default: all of its share)."})
    josh_max_batch_tokens: int = field(default=16384, metadata={"help": "Token budget of one generation batch during harvest and evaluation."})
    # -- the user simulator -------------------------------------------------------------------
    user_simulator: str = field(default="agenda", metadata={"help": "agenda | replay | llm-goal | llm-guide."})
    user_model: str | None = field(default=None, metadata={"help": "Model of an LLM user: Hub id / path, or 'openai:<model>'."})
    user_base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible server of the LLM user."})
    user_api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "Environment variable holding the LLM user's API key (the key itself is never read from a config)."})
    user_temperature: float = field(default=0.0, metadata={"help": "LLM user temperature (reference: 0)."})
    toolwoz_source: str | None = field(default=None, metadata={"help": "Built ToolWOZ dataset (folder / Hub id) or MultiWOZ source; default $JOSH_HF_MULTIWOZ or ../shared/data/multiwoz."})
    # -- harvest --------------------------------------------------------------------------------
    harvest_drop_errors: bool = field(default=True, metadata={"help": "SFT: drop golden conversations with a tool error or failed booking (reference)."})
    harvest_drop_conflicts: bool = field(default=False, metadata={"help": "KTO: drop undesirable rows identical to a desirable one (not in the reference)."})
    harvest_min_examples: int = field(default=1, metadata={"help": "A round that harvests fewer examples than this skips its optimisation (and says so)."})
    harvest_dir: str | None = field(default=None, metadata={"help": "Where each round's trees go (round-N/trees.jsonl); default --output_dir, beside the checkpoints."})
    harvest_files: list[str] | None = field(default=None, metadata={"help": "Offline: train once on these trees.jsonl files (made by `josh-hf harvest`) instead of harvesting."})
    # -- evaluation between rounds -------------------------------------------------------------
    josh_eval_split: str = field(default="validation", metadata={"help": "ToolWOZ split evaluated after each round."})
    josh_eval_tasks: int = field(default=0, metadata={"help": "Tasks evaluated after each round (first N of --josh_eval_split); 0 = no evaluation."})
    josh_eval_before: bool = field(default=False, metadata={"help": "Also evaluate the policy before round 1 (the card's 'before' figures)."})
    josh_eval_temperature: float = field(default=0.0, metadata={"help": "Agent temperature during evaluation (0 = greedy)."})
    josh_eval_max_visible_messages: int = field(default=15, metadata={"help": "Stop an evaluation conversation at this many user+agent messages (reference: 15)."})
    # -- policy: LoRA / QLoRA -------------------------------------------------------------------
    use_peft: bool = field(default=True, metadata={"help": "Train a LoRA adapter (the reference did)."})
    lora_r: int = field(default=64, metadata={"help": "LoRA rank (reference: 64)."})
    lora_alpha: int = field(default=64, metadata={"help": "LoRA alpha (reference: 64)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout (reference: 0.05)."})
    lora_target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS), metadata={"help": "Modules that get an adapter (reference: every projection)."})
    quantization: str | None = field(default=None, metadata={"help": "'4bit' (QLoRA: NF4, double quantisation, bf16 compute, as the reference) or '8bit'."})

    def __post_init__(self) -> None:
        self.validate_josh()
        parent = super()
        if hasattr(parent, "__post_init__"):
            parent.__post_init__()  # the TRL config's own checks

    # -- checks ---------------------------------------------------------------------------
    def validate_josh(self) -> None:
        """Raise ``ValueError`` naming the first bad JOSH field (nothing is loaded yet)."""
        positive = ("josh_tasks_per_round", "josh_beam_size", "josh_max_steps", "josh_max_generations_per_turn",
                    "josh_max_new_tokens", "josh_max_batch_tokens", "josh_eval_max_visible_messages", "lora_r", "lora_alpha")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("josh_rounds", "josh_eval_tasks", "harvest_min_examples"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.josh_max_concurrent is not None and self.josh_max_concurrent < 1:
            raise ValueError(f"josh_max_concurrent must be >= 1, got {self.josh_max_concurrent}")
        if self.josh_agent_format not in AGENT_FORMATS:
            raise ValueError(f"josh_agent_format must be one of {', '.join(AGENT_FORMATS)}, got {self.josh_agent_format!r}")
        if self.josh_credit not in ("first", "all"):
            raise ValueError(f"josh_credit must be 'first' or 'all', got {self.josh_credit!r}")
        if not self.josh_temperature > 0:
            raise ValueError(f"josh_temperature must be > 0 (got {self.josh_temperature}): with greedy decoding JOSH's "
                             "sibling branches are identical")
        if not 0 < self.josh_top_p <= 1:
            raise ValueError(f"josh_top_p must be in (0, 1], got {self.josh_top_p}")
        if self.josh_top_k < 0:
            raise ValueError(f"josh_top_k must be >= 0, got {self.josh_top_k}")
        if self.josh_eval_temperature < 0:
            raise ValueError(f"josh_eval_temperature must be >= 0, got {self.josh_eval_temperature}")
        if self.josh_task_split in TEST_SPLITS and not self.josh_task_ids:
            raise ValueError(f"josh_task_split must not be a test split (got {self.josh_task_split!r}): "
                             "harvesting on the benchmark trains on it")
        if self.josh_task_ids is not None and not self.josh_task_ids:
            raise ValueError("josh_task_ids is empty: leave it unset to draw from josh_task_split")
        if self.user_simulator not in USER_SIMULATORS:
            raise ValueError(f"user_simulator must be one of {', '.join(USER_SIMULATORS)}, got {self.user_simulator!r}")
        if self.user_simulator.startswith("llm") and not self.user_model:
            raise ValueError(f"user_model is required with user_simulator={self.user_simulator!r} "
                             "(the policy being trained must not play the customer)")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.use_peft and not self.lora_target_modules:
            raise ValueError("lora_target_modules is empty: name the modules that get an adapter")
        if self.quantization not in (None, *QUANTIZATIONS):
            raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)} (or unset), got {self.quantization!r}")
        if self.quantization and not self.use_peft:
            raise ValueError(f"quantization={self.quantization!r} needs use_peft=True: quantized weights are not trained, only an adapter")
        if self.harvest_files is not None and not self.harvest_files:
            raise ValueError("harvest_files is empty: leave it unset to harvest online")
        # Tokens come from HF_TOKEN or the saved login only, so they never reach a config file,
        # a checkpoint's training_args.bin or a model card.
        if getattr(self, "hub_token", None):
            raise ValueError("hub_token must not be set in a JOSH config: use the HF_TOKEN environment variable "
                             "or `hf auth login`, so the token is never written into configs or checkpoints")

    # -- derived objects ---------------------------------------------------------------------
    @property
    def offline(self) -> bool:
        """Training on earlier harvest files instead of harvesting."""
        return bool(self.harvest_files)

    def josh_search_config(self):
        """The :class:`josh_hf.josh.JOSHConfig` of the harvest searches."""
        from ..josh import JOSHConfig

        return JOSHConfig.from_fields(self, prefix="josh_")

    def lora_config(self):
        """The ``peft.LoraConfig`` of these settings, or ``None`` without ``use_peft``."""
        if not self.use_peft:
            return None
        from peft import LoraConfig

        return LoraConfig(r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                          target_modules=list(self.lora_target_modules), bias="none", task_type="CAUSAL_LM")

    def josh_settings(self) -> dict[str, Any]:
        """The JOSH settings as plain JSON (for logs, checkpoints and the model card). Holds no
        secret: API keys are named by environment variable only."""
        names = [f for f in JOSHArguments.__dataclass_fields__]
        out = {name: getattr(self, name) for name in names}
        out["seed"] = getattr(self, "seed", None)
        return out

    @property
    def task_seed(self) -> int:
        return self.josh_task_seed if self.josh_task_seed is not None else int(getattr(self, "seed", 0))


def round_schedule(pool: list[str], rounds: int, per_round: int, seed: int) -> list[list[str]]:
    """The task ids of each round: the pool shuffled with ``seed``, cut into consecutive slices.

    No task repeats until the whole pool has been used; then the next pass is a fresh shuffle
    (``seed``, pass number) and a round never holds the same task twice. A pure function of its
    arguments, so a resumed run draws exactly what an uninterrupted one would.
    """
    pool = list(dict.fromkeys(pool))
    if not pool:
        raise ValueError("the JOSH task pool is empty")
    per_round = min(per_round, len(pool))
    order: list[str] = []
    passes = 0
    schedule = []
    for _ in range(rounds):
        current: list[str] = []
        while len(current) < per_round:
            if not order:
                order = list(pool)
                random.Random(f"{seed}:{passes}").shuffle(order)
                passes += 1
                # A new pass must not bring back a task already in this round.
                order = [t for t in order if t not in current] + [t for t in order if t in current]
            current.append(order.pop(0))
        schedule.append(current)
    return schedule


@dataclass
class JOSHSFTConfig(JOSHArguments, SFTConfig):
    """``SFTConfig`` + JOSH. Defaults: the reference's SFT (learning rate 2e-5, linear schedule,
    5 warm-up steps, weight decay 0.01, 3 epochs per round) and loss on the assistant's tokens
    only (the reference trained on every token: one of its faults)."""

    learning_rate: float = field(default=2e-5, metadata={"help": "Reference SFT: 2e-5."})
    warmup_steps: float = field(default=5, metadata={"help": "Reference SFT: 5 warm-up steps."})
    weight_decay: float = field(default=0.01, metadata={"help": "Reference SFT: 0.01."})
    assistant_only_loss: bool = field(default=True, metadata={"help": "Loss on the assistant's tokens only."})
    max_length: int | None = field(default=8192, metadata={"help": "Longest tokenized conversation; ToolWOZ conversations with tool schemas run to several thousand tokens."})


@dataclass
class JOSHKTOConfig(JOSHArguments, KTOConfig):
    """``KTOConfig`` + JOSH. Defaults: the reference's KTO (beta 0.1, desirable weight 1.0,
    undesirable weight 2.71, learning rate 5e-7, cosine schedule with 10% warm-up, 1 epoch
    per round; LoRA r 64 / alpha 64 / dropout 0.05 on every projection)."""

    beta: float = field(default=0.1, metadata={"help": "Reference KTO: 0.1."})
    desirable_weight: float = field(default=1.0, metadata={"help": "Reference KTO: 1.0."})
    undesirable_weight: float = field(default=2.71, metadata={"help": "Reference KTO: 2.71."})
    learning_rate: float = field(default=5e-7, metadata={"help": "Reference KTO: 5e-7."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Reference KTO: cosine."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Reference KTO: warm-up ratio 0.1."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Reference KTO: 1 epoch (per round here)."})
    max_length: int | None = field(default=8192, metadata={"help": "TRL's 1024 would drop most ToolWOZ prompts (tool schemas + dialogue)."})


@dataclass
class JOSHDPOConfig(JOSHArguments, DPOConfig):
    """``DPOConfig`` + JOSH (DPO pairs are not in the reference; the KTO settings are reused:
    beta 0.1, learning rate 5e-7, cosine, 10% warm-up, 1 epoch per round)."""

    beta: float = field(default=0.1, metadata={"help": "As the reference's KTO: 0.1."})
    learning_rate: float = field(default=5e-7, metadata={"help": "As the reference's KTO: 5e-7."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "As the reference's KTO: cosine."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warm-up ratio 0.1."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "1 epoch per round."})
    max_length: int | None = field(default=8192, metadata={"help": "TRL's 1024 would drop most ToolWOZ prompts (tool schemas + dialogue)."})


CONFIG_CLASSES = {"sft": JOSHSFTConfig, "kto": JOSHKTOConfig, "dpo": JOSHDPOConfig}

__all__ = [
    "CONFIG_CLASSES",
    "LORA_TARGETS",
    "JOSHArguments",
    "JOSHDPOConfig",
    "JOSHKTOConfig",
    "JOSHSFTConfig",
    "round_schedule",
]
