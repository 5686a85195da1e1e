"""Training a small ToolWOZ agent from scratch: demonstrations and the scratch recipe."""

from .demonstrations import (
    CONFIG_NAME,
    add_demonstrations_config,
    build_demonstrations,
    load_demonstrations,
    multiwoz_demonstration,
    synthetic_demonstrations,
)
from .scratch import PRESETS, ScratchConfig, train_scratch_agent

__all__ = [
    "CONFIG_NAME",
    "PRESETS",
    "ScratchConfig",
    "add_demonstrations_config",
    "build_demonstrations",
    "load_demonstrations",
    "multiwoz_demonstration",
    "synthetic_demonstrations",
    "train_scratch_agent",
]
