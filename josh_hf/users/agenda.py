"""A rule-based agenda user: MultiWOZ goals played back as templated English, no model.

The goal becomes an agenda per domain (in the order the goal's instructions introduce
them): state the search constraints a few at a time, ask for a booking with the book slots
when the goal has one, ask for the requested attributes (``reqt``), then move on. Backup
goals are used as MultiWOZ users used them: where the goal's instructions name a
``fail_info`` (or ``fail_book``) value, the user first asks with it and switches to ``info``
(``book``) once the agent says nothing matches (the booking failed). Where ``fail_info`` is
not in the instructions, it was no real first choice (the crowd worker never saw it), and
is ignored.

The user reads the agent's messages with :mod:`.slots` word patterns: which slots a question
asks about, whether nothing matched, whether a booking went through (a reference number)
or failed. It ends the conversation when the goal is done, when the agent repeats its last
message, or after ``patience`` turns without progress.

Deterministic: a session's next turn is a pure function of (task, seed, visible
conversation); the conversation is replayed from its start on every call, so copies of a
session (JOSH branches) can never drift from their conversation.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..toolwoz.tasks import Task
from .base import UserSession, UserSimulator, UserTurn
from .slots import (
    BOOK_SLOTS,
    DOMAIN_ORDER,
    DONTCARE,
    SEARCH_SLOTS,
    asked_slots,
    attribute_name,
    book_phrase,
    booking_reference,
    join_words,
    prepare,
    says_booking_failed,
    says_no_match,
    slot_phrase,
)

_BOOK_KEYS = ("people", "day", "time", "stay")
_TRAIN_ORDER = ("departure", "destination", "day", "leaveAt", "arriveBy")
_DOMAIN_PHRASES = {
    "hotel": ("a place to stay", "somewhere to stay", "accommodation"),
    "restaurant": ("a restaurant", "a place to eat", "somewhere to dine"),
    "attraction": ("an attraction", "somewhere to go in town", "something to do in town"),
    "train": ("a train",),
}
_DOMAIN_MENTIONS = {
    "hotel": r"place to stay|\bhotel\b|guesthouse",
    "restaurant": r"restaurant|place to dine|\bdine\b|\bfood\b",
    "attraction": r"attraction|places to go|\bplace to go\b",
    "train": r"\btrain\b",
}


@dataclass
class DomainPlan:
    """What the user wants from one domain."""

    domain: str
    info: dict[str, str]
    book: dict[str, str] = field(default_factory=dict)
    reqt: list[str] = field(default_factory=list)
    first_info: dict[str, str] | None = None
    """The backup-goal first choice (``info`` with ``fail_info`` over it), tried first."""
    first_book: dict[str, str] | None = None


@dataclass
class AgendaState:
    """Where the user stands (rebuilt by replaying the conversation)."""

    index: int = 0
    """The current domain's position in the plan."""
    trying_first_info: bool = False
    trying_first_book: bool = False
    order: list[str] = field(default_factory=list)
    """The current domain's constraint slots, in the order they are revealed."""
    revealed: set[str] = field(default_factory=set)
    book_asked: bool = False
    booked: bool = False
    reqt_asked: bool = False
    no_progress: int = 0
    last_agent: str | None = None
    ended: bool = False
    end_reason: str | None = None
    done: list[str] = field(default_factory=list)
    """Domains finished so far."""


def _strings(d: Any, keys: Sequence[str] | None = None) -> dict[str, str]:
    if not isinstance(d, dict):
        return {}
    return {k: str(v) for k, v in d.items() if (keys is None or k in keys) and isinstance(v, (str, int)) and not isinstance(v, bool)}


def build_plan(task: Task) -> list[DomainPlan]:
    """The task's goal as an agenda: one plan per domain, in the order the goal's
    instructions introduce the domains (the goal dict's own order is fixed by MultiWOZ)."""
    message = prepare(" ".join(task.user_goal))
    plans = []
    for domain in task.domains:
        part = task.goal.get(domain) or {}
        info = _strings(part.get("info"), SEARCH_SLOTS[domain])
        book = _strings(part.get("book"), _BOOK_KEYS)
        plan = DomainPlan(domain, info, book, [r for r in part.get("reqt") or [] if isinstance(r, str)])
        fail_info = _strings(part.get("fail_info"), SEARCH_SLOTS[domain])
        changed = {k: v for k, v in fail_info.items() if info.get(k) != v}
        # A first choice only counts when the instructions name it ("..., if there is no such
        # hotel, how about ..."); otherwise the worker never knew of it.
        if changed and all(prepare(v) in message for v in changed.values()):
            plan.first_info = {**info, **fail_info}
        fail_book = _strings(part.get("fail_book"), _BOOK_KEYS)
        if book and fail_book and any(book.get(k) != v for k, v in fail_book.items()) and all(prepare(v) in message for v in fail_book.values()):
            plan.first_book = {**book, **fail_book}
        plans.append(plan)

    def first_mention(p: DomainPlan) -> tuple[int, int]:
        for i, sentence in enumerate(task.user_goal):
            if re.search(_DOMAIN_MENTIONS[p.domain], sentence.lower()):
                return (i, DOMAIN_ORDER.index(p.domain))
        return (len(task.user_goal), DOMAIN_ORDER.index(p.domain))

    return sorted(plans, key=first_mention)


class AgendaSession(UserSession):
    """One simulated customer: its plan and the state reached in the conversation so far."""

    def __init__(self, task: Task, seed: int = 0, *, opening_size: tuple[int, ...] = (2, 3), reveal_size: int = 3, patience: int = 3):
        super().__init__(task, seed)
        self.plan = build_plan(task)
        self.opening_size = opening_size
        self.reveal_size = reveal_size
        self.patience = patience
        self.state = AgendaState()


class AgendaUser(UserSimulator):
    """The rule-based agenda user (``load_user("agenda")``).

    ``opening_size``: how many constraints the first message of a domain may state (one is
    drawn per domain from the seed); ``reveal_size``: how many more at a time afterwards;
    ``patience``: turns without progress before the user gives up.
    """

    name = "agenda"

    def __init__(self, opening_size: tuple[int, ...] = (2, 3), reveal_size: int = 3, patience: int = 3):
        self.opening_size = tuple(opening_size)
        self.reveal_size = reveal_size
        self.patience = patience

    def new_session(self, task: Task, seed: int = 0) -> AgendaSession:
        return AgendaSession(task, seed, opening_size=self.opening_size, reveal_size=self.reveal_size, patience=self.patience)

    def respond(self, batch: Sequence[tuple[UserSession, list[dict[str, Any]]]]) -> list[UserTurn]:
        out = []
        for session, conversation in batch:
            if not isinstance(session, AgendaSession):
                raise TypeError(f"AgendaUser got a {type(session).__name__}")
            out.append(self._replay(session, conversation))
        return out

    # -- replay ------------------------------------------------------------------------
    def _replay(self, session: AgendaSession, conversation: list[dict[str, Any]]) -> UserTurn:
        state = AgendaState()
        turn = self._open(session, state, _rng(session, 0))
        agent_messages = [m.get("content") or "" for m in conversation if m.get("role") == "assistant"]
        for i, text in enumerate(agent_messages, start=1):
            if state.ended:
                break
            turn = self._step(session, state, text, _rng(session, i))
        session.state = state
        return turn

    # -- one turn ----------------------------------------------------------------------
    def _open(self, session: AgendaSession, state: AgendaState, rng: random.Random) -> UserTurn:
        if not session.plan:
            state.ended, state.end_reason = True, "empty goal"
            return UserTurn("Hello. Actually, I don't need anything today. Goodbye!", end=True)
        greeting = rng.choice(["Hi! ", "Hello, ", "Hi there. ", ""])
        return UserTurn(greeting + self._start_domain(session, state, rng, first=True))

    def _start_domain(self, session: AgendaSession, state: AgendaState, rng: random.Random, first: bool = False) -> str:
        plan = session.plan[state.index]
        state.trying_first_info = plan.first_info is not None
        state.trying_first_book = plan.first_book is not None
        state.book_asked = state.booked = state.reqt_asked = False
        state.revealed = set()
        constraints = self._constraints(plan, state)
        order = [s for s in constraints if constraints[s]]
        if plan.domain == "train":
            order = [s for s in _TRAIN_ORDER if s in order]
        else:
            rng.shuffle(order)
            if "name" in order:  # a named place is what the customer says first
                order.remove("name")
                order.insert(0, "name")
        state.order = order
        what = rng.choice(_DOMAIN_PHRASES[plan.domain])
        lead = rng.choice(["I'm looking for", "I need", "Can you help me find"]) if first else rng.choice(
            ["Thanks! I'm also looking for", "Great. I also need", "Thank you. Can you also help me find"]
        )
        if "name" in order:
            noun = {"hotel": "hotel", "restaurant": "restaurant", "attraction": "attraction", "train": "train"}[plan.domain]
            state.revealed.add("name")
            text = f"{lead} a particular {noun} called {constraints['name']}."
            rest = [s for s in order if s not in state.revealed][: max(0, rng.choice(session.opening_size) - 1)]
        else:
            text = f"{lead} {what}."
            rest = order[: rng.choice(session.opening_size)]
        if not order:
            text += " I don't have any particular requirements."
        if rest:
            text += " " + self._say(plan.domain, rest, constraints, state, rng)
        return text + self._maybe_reqt(plan, state)

    def _constraints(self, plan: DomainPlan, state: AgendaState) -> dict[str, str]:
        return dict(plan.first_info) if state.trying_first_info and plan.first_info else dict(plan.info)

    def _book_values(self, plan: DomainPlan, state: AgendaState) -> dict[str, str]:
        return dict(plan.first_book) if state.trying_first_book and plan.first_book else dict(plan.book)

    def _say(
        self, domain: str, slots: Sequence[str], constraints: dict[str, str], state: AgendaState, rng: random.Random,
        also: bool = False, prefix: str | None = None,
    ) -> str:
        """ "It should X, Y and Z." for the given constraint slots (marking them revealed)."""
        phrases = []
        for s in slots:
            value = constraints.get(s, "")
            if not value or value in (DONTCARE, "dont care", "don't care"):
                continue
            phrases.append(slot_phrase(domain, s, value, rng))
            state.revealed.add(s)
        if not phrases:
            return ""
        if prefix is not None:
            return f"{prefix}{join_words(phrases)} instead."
        subject = "The train" if domain == "train" else "It"
        return f"{subject} should {'also ' if also else ''}{join_words(phrases)}."

    def _unrevealed(self, plan: DomainPlan, state: AgendaState) -> list[str]:
        constraints = self._constraints(plan, state)
        return [s for s in state.order if s not in state.revealed and constraints.get(s)]

    def _book_request(self, plan: DomainPlan, state: AgendaState, rng: random.Random) -> str:
        values = self._book_values(plan, state)
        state.book_asked = True
        what = {"restaurant": "a table ", "train": "", "hotel": "it "}.get(plan.domain, "it ")
        text = rng.choice(["That sounds good. ", "Great. ", "Perfect. "]) + f"Please book {what}{book_phrase(plan.domain, values)}."
        if plan.reqt and not state.reqt_asked:
            state.reqt_asked = True
            text += f" Could you also give me the {join_words([attribute_name(r) for r in plan.reqt])}?"
        return text

    def _finish_domain(self, session: AgendaSession, state: AgendaState, rng: random.Random, prefix: str = "") -> UserTurn:
        state.done.append(session.plan[state.index].domain)
        state.index += 1
        if state.index >= len(session.plan):
            state.ended, state.end_reason = True, "goal done"
            return UserTurn(prefix + rng.choice(["Thank you, that's all I need. Goodbye!", "That's everything, thanks for your help. Bye!"]), end=True)
        return UserTurn(prefix + self._start_domain(session, state, rng))

    def _give_up(self, state: AgendaState, reason: str) -> UserTurn:
        state.ended, state.end_reason = True, reason
        return UserTurn("Never mind, I'll sort it out myself. Goodbye.", end=True)

    def _step(self, session: AgendaSession, state: AgendaState, agent_text: str, rng: random.Random) -> UserTurn:
        norm = " ".join(agent_text.split()).lower()
        if state.last_agent is not None and norm == state.last_agent:
            return self._give_up(state, "agent repeated itself")
        state.last_agent = norm
        before = (state.index, frozenset(state.revealed), state.book_asked, state.booked, state.reqt_asked, state.trying_first_info, state.trying_first_book)
        turn = self._react(session, state, agent_text, rng)
        after = (state.index, frozenset(state.revealed), state.book_asked, state.booked, state.reqt_asked, state.trying_first_info, state.trying_first_book)
        if turn.end:
            return turn
        state.no_progress = state.no_progress + 1 if before == after else 0
        if state.no_progress >= session.patience:
            return self._give_up(state, "no progress")
        return turn

    def _react(self, session: AgendaSession, state: AgendaState, agent_text: str, rng: random.Random) -> UserTurn:
        plan = session.plan[state.index]
        domain = plan.domain
        constraints = self._constraints(plan, state)

        if booking_reference(agent_text) and (state.book_asked or plan.book):
            state.booked = True
            if plan.reqt and not state.reqt_asked:
                state.reqt_asked = True
                return UserTurn(f"Thanks. Could you also give me the {join_words([attribute_name(r) for r in plan.reqt])}?")
            return self._finish_domain(session, state, rng)

        if state.book_asked and says_booking_failed(agent_text):
            if state.trying_first_book and plan.first_book:
                state.trying_first_book = False
                changed = {k: v for k, v in plan.book.items() if plan.first_book.get(k) != v}
                state.book_asked = True
                return UserTurn(f"Oh, okay. How about {book_phrase(domain, changed) or 'another time'} instead? "
                                f"So that's {book_phrase(domain, plan.book)}.")
            if state.trying_first_info and plan.first_info:
                # The first choice cannot be booked: fall back to the backup constraints.
                state.book_asked = False
                return UserTurn("Oh, that's a pity. " + self._switch_info(session, plan, state, rng))
            return self._finish_domain(session, state, rng, "Oh well, never mind the booking then. ")

        if not state.book_asked and says_no_match(agent_text):
            if state.trying_first_info and plan.first_info:
                return UserTurn(rng.choice(["That's a shame. ", "Okay, then let's try something else. "]) + self._switch_info(session, plan, state, rng))
            unrevealed = self._unrevealed(plan, state)
            if unrevealed:
                return UserTurn("Hmm. " + self._say(domain, unrevealed[: session.reveal_size], constraints, state, rng) + self._maybe_reqt(plan, state))
            return self._finish_domain(session, state, rng, "Oh well, never mind. ")

        asked = asked_slots(agent_text, domain)
        if asked:
            return UserTurn(self._answer(session, plan, state, asked, constraints, rng))

        # An offer or an answer.
        unrevealed = self._unrevealed(plan, state)
        if unrevealed:
            said = self._say(domain, unrevealed[: session.reveal_size], constraints, state, rng, also=True)
            return UserTurn(rng.choice(["Hmm, ", "Before I decide: ", ""]) + said + self._maybe_reqt(plan, state))
        if plan.book and not state.booked:
            return UserTurn(self._book_request(plan, state, rng))
        if plan.reqt and not state.reqt_asked:
            state.reqt_asked = True
            return UserTurn(f"Could you give me the {join_words([attribute_name(r) for r in plan.reqt])}?")
        return self._finish_domain(session, state, rng)

    def _switch_info(self, session: AgendaSession, plan: DomainPlan, state: AgendaState, rng: random.Random) -> str:
        """Give up the first choice for the backup constraints: state what changed."""
        state.trying_first_info = False
        new = dict(plan.info)
        changed = [s for s in state.order if plan.first_info and plan.first_info.get(s) != new.get(s) and new.get(s)]
        # fail_info and info share their keys in MultiWOZ; keep any key only info has.
        state.order += [s for s in new if s not in state.order]
        for s in changed:
            state.revealed.discard(s)
        extra = [s for s in self._unrevealed(plan, state) if s not in changed][: max(0, session.reveal_size - len(changed))]
        state.reqt_asked = False  # what was asked about the first choice no longer applies
        return self._say(plan.domain, changed + extra, new, state, rng, prefix="Then I'd like one that would ") + self._maybe_reqt(plan, state)

    def _maybe_reqt(self, plan: DomainPlan, state: AgendaState) -> str:
        """Once every constraint is out and no booking is wanted, ask for the attributes at once
        (a turn saved: the agent answers them with its next offer)."""
        if plan.book or state.reqt_asked or not plan.reqt or self._unrevealed(plan, state):
            return ""
        state.reqt_asked = True
        return f" Please also tell me the {join_words([attribute_name(r) for r in plan.reqt])}."

    def _answer(self, session: AgendaSession, plan: DomainPlan, state: AgendaState, asked: list[str], constraints: dict[str, str], rng: random.Random) -> str:
        domain = plan.domain
        search = [s for s in asked if s in SEARCH_SLOTS[domain]]
        book = [s for s in asked if s in BOOK_SLOTS[domain] and s not in SEARCH_SLOTS[domain]]
        known = [s for s in search if constraints.get(s)]
        # "leave after or arrive by?" asks one question: a customer with either answers it.
        unknown = [s for s in search if not constraints.get(s) and not (s in ("leaveAt", "arriveBy") and ({"leaveAt", "arriveBy"} & set(constraints)))]
        # Asked for booking details, the customer first says every constraint left (else the
        # agent would book something that does not fit); otherwise one more at a time.
        extra = [s for s in self._unrevealed(plan, state) if s not in known][: (session.reveal_size if book and plan.book else 1)]
        parts = []
        said = self._say(domain, known + extra, constraints, state, rng)
        if said:
            parts.append(said)
        if unknown:
            words = join_words([_slot_word(s) for s in unknown])
            parts.append(rng.choice([f"I don't have a preference about the {words}.", f"Any {words} is fine."]))
        if book:
            if plan.book and not state.booked:
                parts.append(self._book_request(plan, state, rng))
            elif not plan.book:
                parts.append("I don't need a booking, just the information.")
        if not parts:
            parts.append("I don't mind.")
        return " ".join(parts) + self._maybe_reqt(plan, state)


def _slot_word(slot: str) -> str:
    return {"pricerange": "price range", "leaveAt": "departure time", "arriveBy": "arrival time", "stars": "star rating",
            "departure": "departure station", "internet": "internet", "parking": "parking"}.get(slot, slot)


def _rng(session: UserSession, turn: int) -> random.Random:
    # String seeds hash with SHA-512 inside ``random``: the same in every process.
    return random.Random(f"agenda:{session.seed}:{session.task.id}:{turn}")


__all__ = ["AgendaSession", "AgendaState", "AgendaUser", "DomainPlan", "build_plan"]
