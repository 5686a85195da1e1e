"""LLM user simulators: a chat model plays the customer.

* ``llm-goal``: the model sees the MultiWOZ goal's instruction sentences (``Task.user_goal``)
  and plays a customer with that goal, in the manner of ToolWOZ's goal-based simulator: it
  opens the conversation, relays its constraints a few at a time, insists that every goal
  is met before agreeing to a booking, uses the goal's backup options when something fails,
  and ends by saying ``END_CONVERSATION``.
* ``llm-guide``: the same, plus the original MultiWOZ dialogue (customer and clerk turns) as
  a guide to follow, which makes runs vary less.

Roles are flipped for the simulator's model: the agent's messages are its ``user`` turns and
its own earlier messages are ``assistant`` turns. A whole batch of sessions is answered with
ONE ``backend.generate`` call. Greedy decoding (temperature 0) by default, as the reference.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

from ..backends.base import Backend, GenerationOutput, GenerationRequest, SamplingParams
from ..toolwoz.tasks import Task
from .base import END_OF_CONVERSATION, UserSession, UserSimulator, UserTurn

GOAL_SYSTEM_PROMPT = """\
You are role-playing a customer who is contacting a travel and booking service in Cambridge, UK. \
You are the customer, never the assistant. Your goal:

{goal}

How to play the customer:
- You start the conversation. Do not reveal your whole goal at once: give a few details at a time, \
as a real customer would, and answer the agent's questions using your goal.
- Only ask for what your goal says. If the agent asks about something your goal does not mention, \
say you have no preference. Never make up details that are not in your goal.
- Before you agree to a booking, check that what the agent offers meets every requirement in your \
goal; if it does not, insist until it does.
- If the agent finds nothing that matches, or a booking fails, and your goal gives an alternative \
(for example "if there is no such hotel, how about ..." or "if the booking fails, how about ..."), \
switch to that alternative.
- Make sure you get every piece of information your goal asks for (such as a reference number, \
phone number or address).
- Keep every message short (one or two sentences), in plain conversational English, without lists \
or formatting.
- When everything in your goal has been taken care of, or the agent clearly cannot help you any \
further, thank the agent and end your message with {end}."""

GUIDE_SECTION = """

Below is a real conversation in which a customer with this same goal was helped by an agent. Use it \
as a guide to what to say and in what order, but always respond to what the agent actually says \
to you, which may differ from the guide.

{dialogue}"""

OPENING_MESSAGE = "(You are now connected to the agent. Write your first message as the customer.)"
"""The simulator's first ``user`` turn: chat templates need one before the model speaks."""

_SPEAKER = re.compile(r"^\s*(?:customer|user|you)\s*:\s*", re.IGNORECASE)


def goal_text(task: Task) -> str:
    """The goal's instruction sentences as a bulleted list."""
    return "\n".join(f"- {s.strip()}" for s in task.user_goal if s.strip())


def guide_text(task: Task) -> str:
    """The original MultiWOZ dialogue as ``Customer: ...`` / ``Agent: ...`` lines."""
    lines = []
    for turn in task.dialogue:
        who = "Customer" if turn.get("role") == "user" else "Agent"
        lines.append(f"{who}: {' '.join(str(turn.get('text', '')).split())}")
    return "\n".join(lines)


def _seed(seed: int, task_id: str, turn: int) -> int:
    digest = hashlib.blake2b(repr(("llm-user", seed, task_id, turn)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (2**31)


class LLMUserSession(UserSession):
    """One simulated customer; its whole state is its system prompt (the conversation is given)."""

    def __init__(self, task: Task, seed: int, system_prompt: str):
        super().__init__(task, seed)
        self.system_prompt = system_prompt


class LLMGoalUser(UserSimulator):
    """``load_user("llm-goal", backend)``: a chat model plays a customer with the task's goal."""

    name = "llm-goal"
    guide = False

    def __init__(self, backend: Backend, sampling: SamplingParams | None = None, system_prompt: str | None = None):
        self.backend = backend
        self.sampling = sampling or SamplingParams(temperature=0.0, max_new_tokens=256)
        self.template = system_prompt or (GOAL_SYSTEM_PROMPT + (GUIDE_SECTION if self.guide else ""))

    def new_session(self, task: Task, seed: int = 0) -> LLMUserSession:
        return LLMUserSession(task, seed, self.system_prompt(task))

    def system_prompt(self, task: Task) -> str:
        """The simulator's instructions for ``task`` (str.replace: goals may hold braces)."""
        text = self.template.replace("{goal}", goal_text(task)).replace("{end}", END_OF_CONVERSATION)
        return text.replace("{dialogue}", guide_text(task))

    def messages(self, session: LLMUserSession, conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The simulator's context: roles flipped, the agent's words as ``user`` turns."""
        out = [{"role": "system", "content": session.system_prompt}, {"role": "user", "content": OPENING_MESSAGE}]
        for m in conversation:
            role = "assistant" if m.get("role") == "user" else "user"
            out.append({"role": role, "content": m.get("content") or ""})
        return out

    def respond(self, batch: Sequence[tuple[UserSession, list[dict[str, Any]]]]) -> list[UserTurn]:
        if not batch:
            return []
        requests = []
        for session, conversation in batch:
            if not isinstance(session, LLMUserSession):
                raise TypeError(f"{type(self).__name__} got a {type(session).__name__}")
            turn = sum(1 for m in conversation if m.get("role") == "user")
            sampling = self.sampling if self.sampling.greedy else self.sampling.with_seed(_seed(session.seed, session.task.id, turn))
            requests.append(GenerationRequest(messages=self.messages(session, conversation), tools=None, sampling=sampling))
        outputs = list(self.backend.generate(requests))
        if len(outputs) != len(requests):
            raise RuntimeError(f"user backend returned {len(outputs)} outputs for {len(requests)} requests")
        return [parse_user_output(o) for o in outputs]


class LLMGuideUser(LLMGoalUser):
    """``load_user("llm-guide", backend)``: ``llm-goal`` that also sees the original dialogue."""

    name = "llm-guide"
    guide = True


def parse_user_output(output: GenerationOutput) -> UserTurn:
    """The simulator's message as a turn: ``END_CONVERSATION`` anywhere ends it (the marker is
    removed from the text); a speaker label the model added is dropped."""
    if output.error is not None:
        raise RuntimeError(f"user backend failed: {output.error}")
    text = _SPEAKER.sub("", (output.text or "").strip())
    if END_OF_CONVERSATION in text:
        return UserTurn(" ".join(text.replace(END_OF_CONVERSATION, " ").split()), end=True)
    if not text:
        # Nothing to say is the end of the conversation, not an empty message to the agent.
        return UserTurn("", end=True)
    return UserTurn(text)


__all__ = [
    "GOAL_SYSTEM_PROMPT",
    "GUIDE_SECTION",
    "OPENING_MESSAGE",
    "LLMGoalUser",
    "LLMGuideUser",
    "LLMUserSession",
    "goal_text",
    "guide_text",
    "parse_user_output",
]
