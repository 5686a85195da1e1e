"""JOSH trainers: TRL's SFT / KTO / DPO trainers that harvest their own data with JOSH each round.

>>> from josh_hf.trainer import JOSHKTOConfig, JOSHKTOTrainer
>>> args = JOSHKTOConfig(output_dir="out", josh_rounds=2, josh_tasks_per_round=64)
>>> JOSHKTOTrainer(model, args=args, processing_class=tokenizer).train()
"""

from .config import CONFIG_CLASSES, JOSHArguments, JOSHDPOConfig, JOSHKTOConfig, JOSHSFTConfig, round_schedule
from .dpo import JOSHDPOTrainer
from .kto import JOSHKTOTrainer
from .mixin import JOSHTrainerMixin
from .sft import JOSHSFTTrainer

TRAINER_CLASSES = {"sft": JOSHSFTTrainer, "kto": JOSHKTOTrainer, "dpo": JOSHDPOTrainer}

__all__ = [
    "CONFIG_CLASSES",
    "TRAINER_CLASSES",
    "JOSHArguments",
    "JOSHDPOConfig",
    "JOSHDPOTrainer",
    "JOSHKTOConfig",
    "JOSHKTOTrainer",
    "JOSHSFTConfig",
    "JOSHSFTTrainer",
    "JOSHTrainerMixin",
    "round_schedule",
]
