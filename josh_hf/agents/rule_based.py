"""A rule-based ToolWOZ agent, packaged as a :class:`~josh_hf.backends.base.Backend`.

The ``rule-based`` baseline of ``josh-hf evaluate``: no model, no hidden information. It
reads only the conversation in its context (the customer's messages, its own past messages,
tool calls and results), spots database values and slot words with :mod:`josh_hf.users.slots`,
keeps a belief state per domain, and at each generation either calls a tool or speaks:

1. search ``search_<domain>`` when the customer's constraints changed since the last search
   (for trains, once departure, destination, day and a time are known or were asked for);
2. book ``book_<domain>`` when the customer asked for a booking, the book slots are known and
   this exact booking was not tried yet (it books the entity the last search returned);
3. otherwise speak: the booking outcome with its reference number, the found entity, the
   attributes asked for, or a question about what is missing; goodbye at the end.

Being a backend, the runner and JOSH drive it like any model. It speaks native tool calls
(``GenerationOutput.tool_calls``); when a request comes without ``tools`` (the ReAct
format lists them in the prompt) it writes ``APICALL`` / ``SPEAK`` commands instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..backends.base import Backend, GenerationOutput, GenerationRequest, ToolCallOutput
from ..users.slots import (
    BOOK_SLOTS,
    DONTCARE,
    SEARCH_SLOTS,
    Vocabulary,
    asked_slots,
    attribute_name,
    is_affirmative,
    join_words,
    prepare,
    requested_attributes,
    says_goodbye,
)

if TYPE_CHECKING:
    from ..toolwoz.benchmark import ToolWOZ
    from ..toolwoz.database import Database

_UID = {"train": "trainID", "hotel": "name", "restaurant": "name", "attraction": "name"}
_TRAIN_REQUIRED = ("departure", "destination", "day")
_PREFERENCE_QUESTIONS = {
    "hotel": ("area", "pricerange"),
    "restaurant": ("food", "area", "pricerange"),
    "attraction": ("type", "area"),
}
_QUESTION = {
    "area": "which area of town you prefer",
    "pricerange": "what price range you are looking for",
    "food": "what type of food you would like",
    "type": "what type of place you have in mind",
    "departure": "where you are departing from",
    "destination": "where you are travelling to",
    "day": "what day you want to travel",
    "time": "what time you would like the table",
    "people": "how many people it is for",
    "stay": "how many nights you will stay",
}
_BOOKING_WORDS = re.compile(r"\bbook|\breserv|\btickets?\b|\btable for\b")
_NO_BOOKING = re.compile(r"(?:dont|do not|no) (?:need|want)(?: to)? (?:a |to )?(?:book|reserv)|no booking|not (?:to )?book")
_OFFER_BOOKING = re.compile(r"(?:would you like|shall i|should i|do you want|can i)(?: me)?(?: to)? (?:book|reserve|make a (?:booking|reservation))")
_APICALL = re.compile(r"APICALL\s*:?\s*(\{.*?\})\s*(?:<COMMAND_END>|$)", re.DOTALL)
_SPEAK = re.compile(r"SPEAK\s*:?\s*(.*?)\s*(?:<COMMAND_END>|$)", re.DOTALL)


@dataclass
class _Belief:
    """What the agent has understood from the context so far."""

    active: str | None = None
    slots: dict[str, dict[str, str]] = field(default_factory=dict)
    book: dict[str, dict[str, str]] = field(default_factory=dict)
    want_book: set[str] = field(default_factory=set)
    asked: dict[str, set[str]] = field(default_factory=dict)
    searches: dict[str, list[tuple[dict[str, Any], list[dict[str, Any]]]]] = field(default_factory=dict)
    bookings: dict[str, list[tuple[dict[str, Any], Any]]] = field(default_factory=dict)
    last_user: str = ""
    requested: list[str] = field(default_factory=list)
    goodbye: bool = False
    turn: list[tuple[str, str, dict[str, Any], Any]] = field(default_factory=list)
    """This turn's calls: (action, domain, arguments, result)."""
    offered_booking: bool = False


class RuleBasedAgent(Backend):
    """The rule-based agent: ``RuleBasedAgent(toolwoz)`` or ``RuleBasedAgent(database=db)``."""

    name = "rule-based"

    def __init__(self, toolwoz: ToolWOZ | None = None, *, database: Database | None = None, vocabulary: Vocabulary | None = None):
        if vocabulary is None:
            db = database if database is not None else (toolwoz.database if toolwoz is not None else None)
            if db is None:
                raise ValueError("RuleBasedAgent needs a ToolWOZ, a Database or a Vocabulary")
            vocabulary = Vocabulary.from_database(db)
        self.vocab = vocabulary

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        outputs = []
        for request in requests:
            try:
                outputs.append(self._respond(request))
            except Exception as e:  # noqa: BLE001 - a bug here must fail one conversation, not the batch
                outputs.append(GenerationOutput(text="", error=f"rule-based agent: {type(e).__name__}: {e}"))
        return outputs

    # -- reading the context -----------------------------------------------------------
    def _events(self, messages: list[dict[str, Any]], react: bool) -> list[tuple]:
        """The context as ("user", text) / ("say", text) / ("call", name, args, id) / ("result", id, value)."""
        events: list[tuple] = []
        pending: list[str] = []
        for i, m in enumerate(messages):
            role, content = m.get("role"), m.get("content") or ""
            if role == "system":
                continue
            if role == "user":
                if react and content.startswith("APIRETURN"):
                    events.append(("result", pending.pop(0) if pending else None, _loads(content[len("APIRETURN"):])))
                else:
                    events.append(("user", content))
            elif role == "tool":
                events.append(("result", m.get("tool_call_id"), _loads(content)))
            elif role == "assistant":
                calls = m.get("tool_calls") or []
                for j, tc in enumerate(calls):
                    fn = tc.get("function") or {}
                    cid = tc.get("id") or f"ctx{i}_{j}"
                    events.append(("call", fn.get("name"), _args(fn.get("arguments")), cid))
                if react and "APICALL" in content:
                    for j, body in enumerate(_APICALL.findall(content)):
                        obj = _loads(body)
                        if isinstance(obj, dict):
                            cid = f"react{i}_{j}"
                            pending.append(cid)
                            events.append(("call", obj.get("name"), _args(obj.get("parameters", obj.get("arguments"))), cid))
                elif not calls:
                    speech = _SPEAK.search(content) if react else None
                    events.append(("say", speech.group(1) if speech else content))
        return events

    def _belief(self, events: list[tuple]) -> _Belief:
        b = _Belief()
        calls: dict[Any, tuple[str, str, dict[str, Any]]] = {}
        last_say = ""
        for ev in events:
            kind = ev[0]
            if kind == "user":
                self._read_user(b, ev[1], last_say)
                b.turn = []
            elif kind == "say":
                last_say = ev[1]
                b.offered_booking = bool(_OFFER_BOOKING.search(prepare(ev[1])))
                if b.active:
                    b.asked.setdefault(b.active, set()).update(asked_slots(ev[1], b.active))
            elif kind == "call":
                name = ev[1] if isinstance(ev[1], str) else ""
                action, _, domain = name.partition("_")
                calls[ev[3]] = (action, domain, ev[2])
            elif kind == "result":
                action, domain, args = calls.get(ev[1], ("", "", {}))
                value = ev[2]
                if action == "search" and domain in SEARCH_SLOTS:
                    rows = [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []
                    b.searches.setdefault(domain, []).append((args, rows))
                elif action == "book" and domain in SEARCH_SLOTS:
                    b.bookings.setdefault(domain, []).append((args, value))
                b.turn.append((action, domain, args, value))
        return b

    def _read_user(self, b: _Belief, text: str, last_say: str) -> None:
        mentioned = self.vocab.domains_mentioned(text)
        switch = [d for d in mentioned if d != b.active]
        if switch:
            b.offered_booking = False  # the offer was about the previous domain
        if switch:
            b.active = switch[0]
        elif b.active is None and mentioned:
            b.active = mentioned[0]
        b.last_user = text
        b.requested = []
        b.goodbye = False
        d = b.active
        if d is None:
            b.goodbye = says_goodbye(text)
            return
        expecting = asked_slots(last_say, d) if last_say else []
        values = self.vocab.extract(text, d, expecting)
        slots, book = b.slots.setdefault(d, {}), b.book.setdefault(d, {})
        for k, v in values.items():
            if k in SEARCH_SLOTS[d]:
                slots[k] = v
                if k in ("leaveAt", "arriveBy") and v != DONTCARE:
                    # A customer states one time limit; the latest one replaces the other.
                    slots.pop("arriveBy" if k == "leaveAt" else "leaveAt", None)
            elif k in BOOK_SLOTS[d]:
                book[k] = v
        t = prepare(text)
        if _NO_BOOKING.search(t):
            b.want_book.discard(d)
        elif BOOK_SLOTS[d] and (
            _BOOKING_WORDS.search(t)
            or (b.offered_booking and is_affirmative(text))
            or any(k in values for k in ("people", "stay", "time"))
        ):
            b.want_book.add(d)
        b.requested = requested_attributes(text, d)
        if "reference" in b.requested and d not in b.want_book and not b.bookings.get(d):
            b.requested.remove("reference")
        b.goodbye = says_goodbye(text) and not values and not b.requested

    # -- deciding ----------------------------------------------------------------------
    def _respond(self, request: GenerationRequest) -> GenerationOutput:
        react = not request.tools
        events = self._events(list(request.messages), react)
        b = self._belief(events)
        action = self._decide(b)
        if isinstance(action, ToolCallOutput):
            if react:
                text = f"APICALL {json.dumps({'name': action.name, 'parameters': action.arguments})} <COMMAND_END>"
                return GenerationOutput(text=text, raw=text)
            raw = json.dumps({"name": action.name, "arguments": action.arguments})
            return GenerationOutput(text="", tool_calls=[action], raw=raw)
        text = f"SPEAK {action} <COMMAND_END>" if react else action
        return GenerationOutput(text=text, raw=text)

    def _decide(self, b: _Belief) -> ToolCallOutput | str:
        d = b.active
        if d is None:
            if b.goodbye:
                return "You're welcome. Have a great day. Goodbye!"
            return "Hello! I can help you with hotels, restaurants, attractions and trains in Cambridge. What are you looking for?"
        searched_now = any(a == "search" and dd == d for a, dd, _, _ in b.turn)
        booked_now = [(args, r) for a, dd, args, r in b.turn if a == "book" and dd == d]
        args = {k: v for k, v in b.slots.get(d, {}).items() if v and v != DONTCARE}
        asked = b.asked.get(d, set())

        if not searched_now and not booked_now:
            missing = self._missing_search(d, args, b)
            last = b.searches.get(d, [])
            unasked = [s for s in missing if s not in asked]
            if args and not unasked and (not last or last[-1][0] != args):
                return ToolCallOutput(name=f"search_{d}", arguments=dict(args))
            if not args and not unasked and not last and b.slots.get(d):
                # Every preference was waived: any entity will do.
                return ToolCallOutput(name=f"search_{d}", arguments={})

        row = self._current_row(b, d)
        if d in b.want_book and row is not None and BOOK_SLOTS[d] and not booked_now:
            book = b.book.get(d, {})
            missing_book = [s for s in BOOK_SLOTS[d] if not book.get(s) or book[s] == DONTCARE]
            uid = row.get(_UID[d])
            if not missing_book and uid:
                bargs = {s: book[s] for s in BOOK_SLOTS[d]}
                bargs[_UID[d]] = uid
                tried = [a for a, _ in b.bookings.get(d, [])]
                if bargs not in tried:
                    return ToolCallOutput(name=f"book_{d}", arguments=bargs)
        return self._speak(b, d, args, row, searched_now, booked_now)

    def _missing_search(self, d: str, args: dict[str, str], b: _Belief) -> list[str]:
        known = b.slots.get(d, {})
        if d == "train":
            missing = [s for s in _TRAIN_REQUIRED if s not in known]
            if "leaveAt" not in known and "arriveBy" not in known:
                missing.append("leaveAt")
            return missing
        if "name" in args:
            return []
        if not known:
            return list(_PREFERENCE_QUESTIONS[d])
        return []

    def _current_row(self, b: _Belief, d: str) -> dict[str, Any] | None:
        searches = b.searches.get(d, [])
        if searches and searches[-1][1]:
            return searches[-1][1][0]
        return None

    # -- speaking ----------------------------------------------------------------------
    def _speak(self, b: _Belief, d: str, args: dict[str, str], row: dict[str, Any] | None, searched_now: bool, booked_now: list) -> str:
        parts: list[str] = []
        if booked_now:
            bargs, result = booked_now[-1]
            ok = isinstance(result, dict) and result.get("success")
            if ok:
                ret = result.get("return") or {}
                ref = ret.get("reference") or "(none given)"
                parts.append(f"Your booking {self._booking_words(d, bargs)} is confirmed. The reference number is {ref}.")
                parts += self._attributes(b, d, row, skip={"reference"})
                parts.append("Is there anything else I can help you with?")
            else:
                parts.append(f"I'm sorry, I was unable to book {self._booking_words(d, bargs)}. Would you like to try something else?")
            return " ".join(parts)

        if searched_now:
            search_args, rows = b.searches[d][-1]
            if not rows:
                what = self._constraint_words(d, search_args)
                return f"I'm sorry, there is no {d} {what}. Would you like to try something else?".replace("  ", " ")
            earlier = b.searches[d][-2][1] if len(b.searches[d]) > 1 else []
            if earlier and earlier[0].get(_UID[d]) == rows[0].get(_UID[d]):
                # Same entity as before: say so, rather than repeating the offer word for word.
                parts.append(f"{rows[0].get(_UID[d])} meets that requirement as well.")
            else:
                parts.append(self._describe(d, rows[0]))
            parts += self._attributes(b, d, rows[0])
        elif b.requested and row is not None:
            parts += self._attributes(b, d, row)

        if d in b.want_book and BOOK_SLOTS[d]:
            book = b.book.get(d, {})
            missing_book = [s for s in BOOK_SLOTS[d] if not book.get(s) or book[s] == DONTCARE]
            tried = b.bookings.get(d, [])
            if row is not None and missing_book:
                parts.append("To book it, could you tell me " + join_words([_QUESTION[s] for s in missing_book]) + "?")
                return " ".join(parts)
            if row is not None and tried and not searched_now:
                parts.append("I'm sorry, that booking is not possible. Would you like to try something else?")
                return " ".join(parts)

        if row is None or not searched_now and not parts:
            missing = [s for s in self._missing_search(d, args, b) if s not in b.asked.get(d, set())]
            if missing:
                parts.append(self._ask(d, missing))
                return " ".join(parts)
            if row is None and b.searches.get(d):
                parts.append(f"I'm sorry, there is no {d} {self._constraint_words(d, b.searches[d][-1][0])}. Would you like to try something else?")
                return " ".join(parts)

        if b.goodbye and not searched_now:
            return "You're welcome. Have a great day. Goodbye!"
        if searched_now and BOOK_SLOTS[d] and d not in b.want_book:
            parts.append("Would you like me to book it?")
        else:
            parts.append("Is there anything else I can help you with?")
        return " ".join(parts)

    def _ask(self, d: str, missing: list[str]) -> str:
        if d == "train":
            qs = [_QUESTION[s] for s in missing if s in _QUESTION]
            if "leaveAt" in missing:
                qs.append("what time you want to leave or arrive by")
            return "Sure. Could you tell me " + join_words(qs) + "?"
        return "Sure. Do you have a preference for " + join_words([_slot_noun(s) for s in missing]) + "?"

    def _describe(self, d: str, row: dict[str, Any]) -> str:
        g = row.get
        if d == "train":
            return (f"I found train {g('trainID')}, leaving {g('departure')} at {g('leaveAt')} on {g('day')} and arriving in "
                    f"{g('destination')} at {g('arriveBy')}. The price is {g('price')}.")
        if d == "hotel":
            extras = [x for x, ok in (("free parking", g("parking") == "yes"), ("free wifi", g("internet") == "yes")) if ok]
            return (f"I found {g('name')}, a {g('stars')}-star {g('type')} in the {g('area')}, {g('pricerange')} price range"
                    + (f", with {join_words(extras)}" if extras else "") + ".")
        if d == "restaurant":
            return f"I found {g('name')}, a {g('pricerange')} {g('food')} restaurant in the {g('area')}."
        return f"I found {g('name')}, a {g('type')} in the {g('area')}."

    def _attributes(self, b: _Belief, d: str, row: dict[str, Any] | None, skip: frozenset[str] = frozenset()) -> list[str]:
        if row is None:
            return []
        out = []
        for attr in b.requested:
            if attr in skip:
                continue
            if attr == "reference":
                done = [r for _, r in b.bookings.get(d, []) if isinstance(r, dict) and r.get("success")]
                if done:
                    out.append(f"The reference number is {(done[-1].get('return') or {}).get('reference')}.")
                continue
            value = row.get(attr)
            if attr in ("parking", "internet") and value in ("yes", "no"):
                thing = "free parking" if attr == "parking" else "free wifi"
                out.append(f"It has {thing}." if value == "yes" else f"It does not have {thing}.")
            elif value in (None, "", "?"):
                out.append(f"I'm afraid I don't know the {attribute_name(attr)}.")
            else:
                out.append(f"The {attribute_name(attr)} is {value}.")
        return out

    def _booking_words(self, d: str, bargs: dict[str, Any]) -> str:
        uid = bargs.get(_UID[d], "")
        n = bargs.get("people", "")
        if d == "train":
            return f"for {n} on train {uid}"
        if d == "hotel":
            return f"at {uid} for {n} people for {bargs.get('stay')} nights from {bargs.get('day')}"
        return f"at {uid} for {n} people at {bargs.get('time')} on {bargs.get('day')}"

    def _constraint_words(self, d: str, args: dict[str, Any]) -> str:
        bits = []
        for k, v in args.items():
            if k == "name":
                bits.append(f"called {v}")
            elif k in ("leaveAt", "arriveBy"):
                bits.append(f"{'leaving after' if k == 'leaveAt' else 'arriving by'} {v}")
            elif k in ("departure", "destination"):
                bits.append(f"{'from' if k == 'departure' else 'to'} {v}")
            else:
                bits.append(f"with {_slot_noun(k)} {v}")
        return "matching your request (" + ", ".join(bits) + ")" if bits else "matching your request"


def _slot_noun(slot: str) -> str:
    return {"pricerange": "price range", "stars": "star rating", "leaveAt": "departure time", "arriveBy": "arrival time"}.get(slot, slot)


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return text.strip() if isinstance(text, str) else text


def _args(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, str):
        arguments = _loads(arguments)
    return dict(arguments) if isinstance(arguments, dict) else {}


__all__ = ["RuleBasedAgent"]
