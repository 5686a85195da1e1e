"""``JOSHKTOTrainer``: TRL's ``KTOTrainer`` on JOSH's juxtaposed turns (the reference's method)."""

from __future__ import annotations

from trl import KTOTrainer

from .config import JOSHKTOConfig
from .mixin import JOSHTrainerMixin


class JOSHKTOTrainer(JOSHTrainerMixin, KTOTrainer):
    """Alternate JOSH harvests with the current policy and KTO on what they yield: each golden
    assistant turn desirable, each failed sibling turn from the same prompt undesirable.

    >>> trainer = JOSHKTOTrainer(model, args=JOSHKTOConfig(output_dir="out"), processing_class=tokenizer)
    >>> trainer.train()
    """

    josh_method = "kto"
    config_class = JOSHKTOConfig
    _name = "JOSH-KTO"
    _tag_names = [  # noqa: RUF012 - TRL declares it as a plain class list
        "trl", "josh", "kto", "toolwoz"]


__all__ = ["JOSHKTOConfig", "JOSHKTOTrainer"]
