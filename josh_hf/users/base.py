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
    """Per-conversation state of a simulated user (its ``task`` plus whatever a subclass keeps)."""

    def __init__(self, task: Task, seed: int = 0):
        self.task = task
        self.seed = seed

    def copy(self) -> UserSession:
        """An independent copy. The task (with its whole MultiWOZ dialogue) is shared read-only
        by every session, so it is not copied: JOSH copies sessions at every branch."""
        return copy.deepcopy(self, {id(self.task): self.task})

    def restore(self, snapshot: UserSession) -> None:
        """Roll this session back, in place, to ``snapshot`` (a ``copy()`` taken earlier)."""
        self.__dict__.update(snapshot.__dict__)


class UserSimulator(abc.ABC):
    """Creates sessions and answers batches of them."""

    name: str = "user"

    @abc.abstractmethod
    def new_session(self, task: Task, seed: int = 0) -> UserSession:
        """A fresh simulated user for ``task``."""

    def respond_isolated(self, batch: Sequence[tuple[UserSession, list[dict[str, Any]]]]) -> list[UserTurn | Exception]:
        """``respond`` for the whole batch in one call; if that call fails, the sessions are
        rolled back and each item is answered alone, so an exception (returned in its slot,
        not raised) stays with the conversation that caused it."""
        snapshots = [session.copy() for session, _ in batch] if len(batch) > 1 else []
        try:
            turns = list(self.respond(batch))
            if len(turns) != len(batch):
                raise RuntimeError(f"user simulator returned {len(turns)} turns for {len(batch)} conversations")
            bad = [t for t in turns if not isinstance(t, UserTurn)]
            if bad:
                raise TypeError(f"user simulator returned {type(bad[0]).__name__}, expected UserTurn")
            return turns
        except Exception as e:  # noqa: BLE001 - isolated below
            if len(batch) <= 1:
                return [e] * len(batch)
        # The failed call may have advanced some sessions before it raised.
        for (session, _), snapshot in zip(batch, snapshots):
            session.restore(snapshot)
        return [self.respond_isolated([item])[0] for item in batch]

    @abc.abstractmethod
    def respond(self, batch: Sequence[tuple[UserSession, list[dict[str, Any]]]]) -> list[UserTurn]:
        """The next user turn of each (session, visible conversation); opens when the
        conversation is empty. May update the sessions' state."""
