"""``JOSHDPOTrainer``: TRL's ``DPOTrainer`` on pairs of JOSH's juxtaposed turns (not in the reference)."""

from __future__ import annotations

from trl import DPOTrainer

from .config import JOSHDPOConfig
from .mixin import JOSHTrainerMixin


class JOSHDPOTrainer(JOSHTrainerMixin, DPOTrainer):
    """Alternate JOSH harvests with the current policy and DPO on what they yield: one pair per
    golden assistant turn (chosen) and failed sibling turn from the same prompt (rejected).

    >>> trainer = JOSHDPOTrainer(model, args=JOSHDPOConfig(output_dir="out"), processing_class=tokenizer)
    >>> trainer.train()
    """

    josh_method = "dpo"
    config_class = JOSHDPOConfig
    _name = "JOSH-DPO"
    _tag_names = [  # noqa: RUF012 - TRL declares it as a plain class list
        "trl", "josh", "dpo", "toolwoz"]


__all__ = ["JOSHDPOConfig", "JOSHDPOTrainer"]
