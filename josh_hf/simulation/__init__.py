"""Simulated conversations between an agent and a user simulator on ToolWOZ."""

from .runner import ConversationRunner, RunnerConfig, trial_seed
from .transcript import ENDED_BY, Transcript

__all__ = ["ENDED_BY", "ConversationRunner", "RunnerConfig", "Transcript", "trial_seed"]
