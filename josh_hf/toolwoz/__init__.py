"""ToolWOZ: MultiWOZ 2.0 as a multi-turn tool-calling benchmark with sparse rewards."""

from .benchmark import ToolWOZ, UnknownTaskError
from .database import Database, Table
from .env import ToolWOZEnv
from .matching import EMPTY_VALUES, is_empty, is_subset, normalise
from .scoring import EpisodeScore, RecordedCall, goals_met, recorded_value, score_calls
from .sources import MultiWOZData, MultiWOZSourceError, default_multiwoz_path, load_multiwoz
from .tasks import GoalCall, Task
from .tools import DOMAINS, ToolSet, uid_key

__all__ = [
    "DOMAINS",
    "EMPTY_VALUES",
    "Database",
    "EpisodeScore",
    "GoalCall",
    "MultiWOZData",
    "MultiWOZSourceError",
    "RecordedCall",
    "Table",
    "Task",
    "ToolSet",
    "ToolWOZ",
    "ToolWOZEnv",
    "UnknownTaskError",
    "default_multiwoz_path",
    "goals_met",
    "is_empty",
    "is_subset",
    "load_multiwoz",
    "normalise",
    "recorded_value",
    "score_calls",
    "uid_key",
]
