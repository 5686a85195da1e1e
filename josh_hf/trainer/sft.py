"""``JOSHSFTTrainer``: TRL's ``SFTTrainer`` on the golden conversations JOSH harvests each round."""

from __future__ import annotations

from typing import Any

from trl import SFTTrainer

from .config import JOSHSFTConfig
from .mixin import JOSHTrainerMixin


class JOSHSFTTrainer(JOSHTrainerMixin, SFTTrainer):
    """Alternate JOSH harvests with the current policy and SFT on the golden conversations of the
    tasks it solved (loss on the assistant's tokens only, by default).

    >>> trainer = JOSHSFTTrainer(model, args=JOSHSFTConfig(output_dir="out"), processing_class=tokenizer)
    >>> trainer.train()
    """

    josh_method = "sft"
    config_class = JOSHSFTConfig
    _name = "JOSH-SFT"
    _tag_names = [  # noqa: RUF012 - TRL declares it as a plain class list
        "trl", "josh", "sft", "toolwoz"]

    def _josh_prepare(self, dataset: Any) -> Any:
        # Harvests are conversational (``messages``): no packing decision or formatting function
        # beyond what the config says.
        return self._prepare_dataset(dataset, self.processing_class, self.args, self.args.packing, None, "train")


__all__ = ["JOSHSFTConfig", "JOSHSFTTrainer"]
