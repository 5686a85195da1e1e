"""User simulators: ``load_user("agenda" | "replay" | "llm-goal" | "llm-guide", backend=None, **kw)``."""

from __future__ import annotations

from typing import Any

from ..backends.base import Backend
from .agenda import AgendaSession, AgendaUser
from .base import END_OF_CONVERSATION, UserSession, UserSimulator, UserTurn
from .llm import LLMGoalUser, LLMGuideUser, LLMUserSession
from .replay import ReplaySession, ReplayUser

USERS = ("agenda", "replay", "llm-goal", "llm-guide")


def load_user(name: str, backend: Backend | None = None, **kwargs: Any) -> UserSimulator:
    """A user simulator by name. The LLM users need ``backend`` (any :class:`Backend`) and take
    ``sampling`` / ``system_prompt``; ``agenda`` takes ``opening_size``, ``reveal_size``,
    ``patience``; ``replay`` takes nothing."""
    if name == "agenda":
        return AgendaUser(**kwargs)
    if name == "replay":
        if kwargs:
            raise TypeError(f"the replay user takes no options, got {sorted(kwargs)}")
        return ReplayUser()
    if name in ("llm-goal", "llm-guide"):
        if backend is None:
            raise ValueError(f"the {name} user needs a backend (the model that plays the customer)")
        cls = LLMGoalUser if name == "llm-goal" else LLMGuideUser
        return cls(backend, **kwargs)
    raise ValueError(f"unknown user simulator {name!r}; choose one of {', '.join(USERS)}")


__all__ = [
    "END_OF_CONVERSATION",
    "USERS",
    "AgendaSession",
    "AgendaUser",
    "LLMGoalUser",
    "LLMGuideUser",
    "LLMUserSession",
    "ReplaySession",
    "ReplayUser",
    "UserSession",
    "UserSimulator",
    "UserTurn",
    "load_user",
]
