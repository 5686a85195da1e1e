"""The replay user: the original MultiWOZ customer turns, word for word, in order.

It ignores what the agent says (the agent's answers may differ from the original
clerk's), so it measures how an agent copes with a real customer's wording, not with an
interactive one. It ends the conversation after its last original turn has been answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..toolwoz.tasks import Task
from .base import UserSession, UserSimulator, UserTurn


class ReplaySession(UserSession):
    """The customer turns of one MultiWOZ dialogue."""

    def __init__(self, task: Task, seed: int = 0):
        super().__init__(task, seed)
        self.turns: list[str] = [t.get("text", "") for t in task.dialogue if t.get("role") == "user"]


class ReplayUser(UserSimulator):
    """``load_user("replay")``: the i-th user message is the dialogue's i-th customer turn."""

    name = "replay"

    def new_session(self, task: Task, seed: int = 0) -> ReplaySession:
        return ReplaySession(task, seed)

    def respond(self, batch: Sequence[tuple[UserSession, list[dict[str, Any]]]]) -> list[UserTurn]:
        out = []
        for session, conversation in batch:
            if not isinstance(session, ReplaySession):
                raise TypeError(f"ReplayUser got a {type(session).__name__}")
            # The position comes from the conversation, not from a counter, so a copied
            # session (a JOSH branch) can never get out of step with its conversation.
            said = sum(1 for m in conversation if m.get("role") == "user")
            if said < len(session.turns):
                out.append(UserTurn(session.turns[said]))
            else:
                out.append(UserTurn("", end=True))
        return out


__all__ = ["ReplaySession", "ReplayUser"]
