"""Tool-calling agents: formats (native chat templates, ReAct text) and batched agent turns."""

from .formats import (
    AGENT_FORMATS,
    AgentFormat,
    AgentStep,
    ParsedCall,
    StepError,
    get_format,
)
from .native import NativeFormat
from .react import ReactFormat
from .turn import (
    OUT_OF_GENERATIONS_TEXT,
    AgentCounters,
    AgentState,
    TurnResult,
    generation_sampling,
    run_agent_turns,
    stable_seed,
)

__all__ = [
    "AGENT_FORMATS",
    "OUT_OF_GENERATIONS_TEXT",
    "AgentCounters",
    "AgentFormat",
    "AgentState",
    "AgentStep",
    "NativeFormat",
    "ParsedCall",
    "ReactFormat",
    "StepError",
    "TurnResult",
    "generation_sampling",
    "get_format",
    "run_agent_turns",
    "stable_seed",
]
