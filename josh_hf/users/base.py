"""The user-simulator interface.

A simulator is a factory of per-conversation *sessions*. A session holds the simulated
user's private state (its agenda, its seed, ...) and must be copyable, because JOSH branches
a conversation and each branch's user continues on its own. ``respond`` takes a batch of
(session, visible conversation) pairs so that LLM users answer a whole step in one backend
call; rule-based users just loop.

The visible conversation is a list of ``{"role": "user"|"assistant", "content": str}``
messages (no tool traffic, no system prompt), from the user's first message on.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..toolwoz.tasks import Task

END_OF_CONVERSATION = "END_CONVERSATION"


@dataclass
class UserTurn:
    """The user's next message, or the end of the conversation (``end=True``; ``text`` may
    still hold a closing message, which is shown to no agent)."""

    text: str
    end: bool = False


class UserSession:
    """Per-conversation state of a simulated user. Override ``copy`` if shallow copy is wrong."""

    def __init__(self, task: Task, seed: int = 0):
        self.task = task
        self.seed = seed

    def copy(self) -> UserSession:
        return copy.deepcopy(self)


class UserSimulator(abc.ABC):
    """Creates sessions and answers batches of them."""

    name: str = "user"

    @abc.abstractmethod
    def new_session(self, task: Task, seed: int = 0) -> UserSession:
        """A fresh simulated user for ``task``."""

    @abc.abstractmethod
    def respond(self, batch: Sequence[tuple[UserSession, list[dict[str, Any]]]]) -> list[UserTurn]:
        """The next user turn of each (session, visible conversation); opens when the
        conversation is empty. May update the sessions' state."""
