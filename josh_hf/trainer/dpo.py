"""``JOSHDPOTrainer``: TRL's ``DPOTrainer`` on pairs of JOSH's juxtaposed turns (not in the reference)."""

from __future__ import annotations

from typing import Any

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

    def _josh_prepare(self, dataset: Any) -> Any:
        prepared = self._prepare_dataset(dataset, self.processing_class, self.args, "train")
        if self.precompute_ref_logps:  # the reference is the base model: fixed across rounds
            batch = self.args.precompute_ref_batch_size or self.args.per_device_train_batch_size
            prepared = self._precompute_ref_logps(prepared, "train", batch)
        return prepared


__all__ = ["JOSHDPOConfig", "JOSHDPOTrainer"]
