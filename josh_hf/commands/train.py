"""``josh-hf train``: JOSH rounds (harvest with the current policy, then train on it) with TRL.

``--method sft|kto|dpo`` picks the trainer; every option of its config (TRL's and JOSH's) is a
flag or a key of the YAML file given with ``--config`` (TRL's ``TrlParser``). Runs on one or
many GPUs: ``accelerate launch -m josh_hf.cli train --config examples/train_kto.yaml``. With
``--harvest_files`` it trains once on earlier ``josh-hf harvest`` output instead. Hub pushes use
the token of ``HF_TOKEN`` or the saved login (``hf auth login``); it is never read from a config.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METHODS = ("sft", "kto", "dpo")


@dataclass
class TrainScriptArguments:
    """What the script needs beyond the trainer's config: the method and the base model."""

    method: str = field(default="kto", metadata={"help": "sft | kto (the reference's) | dpo."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "Base model: Hub id or local path."})
    dtype: str = field(default="auto", metadata={"help": "Weights dtype: auto | bfloat16 | float16 | float32."})

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not self.model_name_or_path:
            raise ValueError("model_name_or_path is required (the base model to train)")


def peek_method(argv: Sequence[str]) -> str:
    """The ``--method`` of the command line, else of the YAML ``--config``, else ``kto``: the
    config class (and so the parser) depends on it."""
    args = list(argv)
    for i, a in enumerate(args):
        if a == "--method" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--method="):
            return a.split("=", 1)[1]
    for i, a in enumerate(args):
        path = args[i + 1] if a == "--config" and i + 1 < len(args) else a.split("=", 1)[1] if a.startswith("--config=") else None
        if path:
            import yaml

            data = yaml.safe_load(Path(path).read_text()) or {}
            return str(data.get("method", "kto"))
    return "kto"


def load_model(script: TrainScriptArguments, config: Any):
    """(model, tokenizer) of the base model, 4-/8-bit when the config says; the adapter itself is
    added by the trainer from the config's LoRA settings."""
    try:
        from ..trainer.models import load_policy
    except ImportError:
        load_policy = None
    if load_policy is not None:
        return load_policy(script.model_name_or_path, quantization=config.quantization, lora=None, dtype=script.dtype,
                           trust_remote_code=config.trust_remote_code)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": script.dtype, "trust_remote_code": config.trust_remote_code}
    if config.quantization:
        import torch
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
            if config.quantization == "4bit" else BitsAndBytesConfig(load_in_8bit=True))
    model = AutoModelForCausalLM.from_pretrained(script.model_name_or_path, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(script.model_name_or_path, trust_remote_code=config.trust_remote_code)
    return model, tokenizer


def build_trainer(script: TrainScriptArguments, config: Any, **kwargs: Any):
    """The JOSH trainer of ``script.method`` on the loaded base model."""
    from ..trainer import TRAINER_CLASSES

    model, tokenizer = load_model(script, config)
    template = getattr(config, "chat_template_path", None)
    if template and Path(template).is_file():  # SFTConfig's option: a Jinja file replaces the tokenizer's template
        tokenizer.chat_template = Path(template).read_text()
    return TRAINER_CLASSES[script.method](model, args=config, processing_class=tokenizer, **kwargs)


def main(argv: Sequence[str]) -> int:
    from trl import TrlParser

    from ..trainer import CONFIG_CLASSES

    method = peek_method(argv)
    if method not in CONFIG_CLASSES:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    parser = TrlParser((TrainScriptArguments, CONFIG_CLASSES[method]), prog="josh-hf train",
                       description=__doc__.splitlines()[0])
    script, config = parser.parse_args_and_config(list(argv))
    trainer = build_trainer(script, config)
    resume: str | bool | None = config.resume_from_checkpoint or None
    if isinstance(resume, str) and resume.lower() in ("true", "last"):
        resume = True  # the latest JOSH checkpoint under output_dir
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(config.output_dir)
    if config.push_to_hub:
        # Token: HF_TOKEN or the saved login (hub_token is refused by the config).
        trainer.push_to_hub(dataset_name="ToolWOZ")
    if trainer.is_world_process_zero():
        for figures in trainer.josh_card_info()["rounds"]:
            print("round " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()))
        print(f"wrote {config.output_dir}", file=sys.stderr)
    return 0
