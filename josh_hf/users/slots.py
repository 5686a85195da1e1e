"""Slot vocabulary and recognition for MultiWOZ-style dialogue, without any model.

Shared by the agenda user (which renders its goal as English and reads the agent's
questions) and the rule-based agent (which reads values out of the customer's messages).
Everything here is word patterns over lower-cased text:

* :class:`Vocabulary` — database values (names, foods, stations, ...) and their surface forms;
  ``extract(text, domain)`` reads search/book slot values out of a customer message;
* :func:`asked_slots` — which slots a question asks about;
* :func:`requested_attributes` — which entity attributes (phone, postcode, ...) a message asks for;
* agent acts: :func:`booking_reference`, :func:`says_booking_failed`, :func:`says_no_match`;
* :func:`slot_phrase`, :func:`book_phrase`, :func:`attribute_name` — English for the user side.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..toolwoz.database import Database

DONTCARE = "dontcare"

SEARCH_SLOTS: dict[str, tuple[str, ...]] = {
    "hotel": ("name", "area", "parking", "pricerange", "stars", "internet", "type"),
    "restaurant": ("food", "pricerange", "name", "area"),
    "attraction": ("type", "name", "area"),
    "train": ("leaveAt", "destination", "day", "arriveBy", "departure"),
}
BOOK_SLOTS: dict[str, tuple[str, ...]] = {
    "hotel": ("stay", "day", "people"),
    "restaurant": ("time", "day", "people"),
    "train": ("people",),
    "attraction": (),
}
DOMAIN_ORDER = ("hotel", "attraction", "train", "restaurant")

AREAS = ("centre", "north", "south", "east", "west")
PRICERANGES = ("cheap", "moderate", "expensive")
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
NUMBER_WORDS = {
    "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "zero": "0", "a single": "1",
}
_NUM = r"(\d{1,2}|" + "|".join(sorted(NUMBER_WORDS, key=len, reverse=True)) + r")"

# Cuisines MultiWOZ goals name that the restaurant table lacks (users ask for them and are
# told there is none), so the agent must still recognise them as food.
EXTRA_FOODS = (
    "afghan", "australasian", "australian", "austrian", "barbeque", "basque", "belgian", "brazilian",
    "canapes", "cantonese", "caribbean", "catalan", "christmas", "corsica", "creative", "crossover",
    "cuban", "danish", "eastern european", "english", "eritrean", "fusion", "german", "greek",
    "halal", "hungarian", "indonesian", "irish", "jamaican", "kosher", "light bites", "malaysian",
    "mexican", "middle eastern", "moroccan", "modern american", "modern eclectic", "modern global",
    "molecular gastronomy", "northern european", "panasian", "persian", "polish", "polynesian",
    "romanian", "russian", "scandinavian", "scottish", "singaporean", "south african", "south indian",
    "steakhouse", "swedish", "swiss", "traditional", "tuscan", "unusual", "vegetarian", "venetian",
    "welsh", "world", "bistro", "chinese", "seafood", "sri lankan", "japanese",
)
# Surface forms of attraction types (value → phrases; the value itself is always accepted).
ATTRACTION_TYPES: dict[str, tuple[str, ...]] = {
    "architecture": ("architecture", "architectural"),
    "boat": ("boat", "boats", "boating", "punting"),
    "cinema": ("cinema", "movie theater", "movies"),
    "college": ("college", "colleges"),
    "concerthall": ("concerthall", "concert hall", "concert"),
    "entertainment": ("entertainment",),
    "museum": ("museum", "museums"),
    "mutliple sports": ("mutliple sports", "multiple sports", "sports"),
    "nightclub": ("nightclub", "night club", "nightclubs", "club"),
    "park": ("park", "parks"),
    "swimmingpool": ("swimmingpool", "swimming pool", "pool"),
    "theatre": ("theatre", "theater", "theatres"),
}
STATION_ALIASES: dict[str, tuple[str, ...]] = {
    "london kings cross": ("kings cross",),
    "london liverpool street": ("liverpool street",),
    "stansted airport": ("stansted",),
    "birmingham new street": ("birmingham",),
    "bishops stortford": ("bishop stortford",),
}
DOMAIN_WORDS: dict[str, str] = {
    "hotel": r"\bhotels?\b|guest ?houses?|place to stay|somewhere to stay|where to stay|accommodations?|lodging|\bb ?(?:&|and) ?b\b",
    "restaurant": r"restaurants?|place to (?:eat|dine)|somewhere to (?:eat|dine)|\bdine\b|\bdining\b|\bcuisine\b|\bfood\b|\btable\b|\bdinner\b|\blunch\b",
    "attraction": r"attractions?|places? to go|somewhere to go|something to do|things to do|\bsights?\b|sightseeing|\bvisit\b|"
    + "|".join(rf"\b{re.escape(p)}\b" for forms in ATTRACTION_TYPES.values() for p in forms if p not in ("club", "pool", "concert", "sports", "movies")),
    "train": r"\btrains?\b|\brail\b",
}

# Words that ask about (or, with a "no preference" cue, waive) a slot.
SLOT_WORDS: dict[str, str] = {
    "area": r"\barea\b|part of (?:town|the city)|side of (?:town|the city)|where in (?:town|the city)|\blocation\b|\blocated\b|\bneighbou?rhood\b",
    "pricerange": r"price ?range|\bprices?\b|\bpriced?\b|budget|how expensive|\bcost\b",
    "food": r"\bfood\b|cuisine",
    "stars": r"\bstars?\b|star rating|\brating\b",
    "parking": r"parking",
    "internet": r"internet|wi-?fi",
    "name": r"\bname\b|particular (?:one|place|hotel|restaurant|attraction)|specific (?:one|place|hotel|restaurant|attraction)",
    "day": r"\b(?:what|which) day|\bday\b|\bdate\b",
    "time": r"what time|\btime\b",
    "people": r"how many (?:people|persons|guests|tickets|seats|of you|will be|in your (?:party|group))|for how many|number of (?:people|guests|tickets|seats)|party size|size of (?:your|the) (?:party|group)",
    "stay": r"how many (?:nights|days)|how long|number of nights|for how many nights|length of (?:your |the )?stay|\bnights?\b",
    "departure": r"depart(?:ing|ure)? (?:from|station|city|point)|leaving from|travell?ing from|coming from|\bfrom where\b|where .{0,40}\bfrom\b|\borigin\b|starting (?:point|station)",
    "destination": r"destination|where .{0,40}\b(?:to|going|heading|headed|travell?ing)\b|\bto where\b|arriv(?:e|ing) (?:in|at)\b|going to",
    "leaveAt": r"(?:what time|when).{0,40}\b(?:leave|depart|departure|travel|go)|leave after|depart after|departure time|leaving time|\bleave\b.{0,25}\btime",
    "arriveBy": r"(?:what time|when).{0,40}\barriv|arriv(?:e|al) (?:by|time)|arrival|\barrive\b.{0,25}\btime",
}
TYPE_WORDS: dict[str, str] = {
    "hotel": r"\btype\b|\bkind\b|\bsort\b|guest ?house|hotel or|or (?:a )?hotel",
    "attraction": r"\btype\b|\bkind\b|\bsort\b|what .{0,20}(?:interested|like to (?:see|do|visit))",
}

# Entity attributes a customer may ask for (attribute → words), as MultiWOZ ``reqt`` names them.
ATTRIBUTE_WORDS: dict[str, str] = {
    "phone": r"phone|telephone|contact number",
    "address": r"address|where is it|where.{0,10} located",
    "postcode": r"post ?code|zip",
    "entrance fee": r"entrance|admission|fee|how much .{0,20}(?:cost|to get in)",
    "duration": r"travel time|duration|how long .{0,20}(?:trip|ride|journey|take)|journey time",
    "price": r"\bprice\b(?! ?range)|ticket price|fare|how much .{0,20}(?:ticket|cost)|\bcost\b",
    "leaveAt": r"departure time|when does it (?:leave|depart)|what time does it (?:leave|depart)|depart(?:s|ure)? at|leaving time",
    "arriveBy": r"arrival time|when does it arrive|what time does it arrive|arrives? at",
    "trainID": r"train id|train number|\bid\b",
    "area": r"\barea\b|part of town",
    "type": r"\btype\b|what kind",
    "pricerange": r"price ?range|how expensive",
    "food": r"food|cuisine",
    "stars": r"\bstars?\b|star rating",
    "internet": r"internet|wi-?fi",
    "parking": r"parking",
    "reference": r"reference",
}
_ATTRIBUTES_OF: dict[str, tuple[str, ...]] = {
    "hotel": ("phone", "address", "postcode", "area", "type", "pricerange", "stars", "internet", "parking", "reference"),
    "restaurant": ("phone", "address", "postcode", "area", "pricerange", "food", "reference"),
    "attraction": ("phone", "address", "postcode", "entrance fee", "area", "type", "pricerange"),
    "train": ("duration", "price", "leaveAt", "arriveBy", "trainID", "reference"),
}
ATTRIBUTE_NAMES: dict[str, str] = {
    "phone": "phone number", "address": "address", "postcode": "postcode", "entrance fee": "entrance fee",
    "duration": "travel time", "price": "price", "leaveAt": "departure time", "arriveBy": "arrival time",
    "trainID": "train ID", "area": "area", "type": "type", "pricerange": "price range", "food": "type of food",
    "stars": "star rating", "internet": "internet situation", "parking": "parking situation", "reference": "reference number",
}
SLOT_NAMES: dict[str, str] = {
    "area": "area", "pricerange": "price range", "food": "food", "type": "type", "stars": "star rating",
    "parking": "parking", "internet": "internet", "name": "name", "day": "day", "time": "time",
    "people": "number of people", "stay": "length of stay", "departure": "departure station",
    "destination": "destination", "leaveAt": "departure time", "arriveBy": "arrival time",
}

_DONTCARE_CUE = re.compile(
    r"(?:do not|dont|doesnt|does not) (?:mind|care|matter)|no preference|not (?:important|fussy|picky)"
    r"|(?:doesnt|does not) matter|any (?:\w+ )?(?:is|will be|would be) fine|(?:anything|anywhere|any) (?:is )?(?:fine|ok|okay)"
    r"|no particular|either is fine|whatever"
)
_NEG = r"(?:no|not|without|dont|do not|doesnt|does not|dont need|does not need|doesnt need|need not)"
_REFERENCE = re.compile(r"\b(?:reference|confirmation|booking)(?: number| code| no\.?| id)?(?: is|:)?\s*[:#]?\s*([A-Za-z0-9]{6,10})\b", re.IGNORECASE)
_TIME = re.compile(r"\b(\d{1,2})[:.](\d{2})\b")
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
_REQUEST_CUE = re.compile(
    r"\b(?:tell me|give me|let me know|provide|send me|(?:can|could|may) i (?:get|have)|(?:i|id) (?:need|want|would like|d like|like) (?:the|their|its|to know)|"
    r"what(?:s| is| are)|whats|how (?:much|long)|do you (?:have|know))\b"
)


def prepare(text: str) -> str:
    """Lower-case, MultiWOZ's detached clitics re-attached (``do n't`` → ``don't``), then every
    apostrophe dropped, the way ToolWOZ normalises values (``king's`` → ``kings``)."""
    t = text.lower().replace("\u2019", "'").replace("`", "'")
    t = re.sub(r"\s+n't\b", "n't", t)
    t = re.sub(r"\s+'(s|m|re|ll|d|ve)\b", r"'\1", t)
    t = t.replace("'", "")
    return re.sub(r"\s+", " ", t)


def _blank(text: str, start: int, end: int) -> str:
    # Spans already read are overwritten with spaces so that, e.g., "north" inside
    # "city centre north b and b" is not also read as an area.
    return text[:start] + " " * (end - start) + text[end:]


def _number(token: str) -> str:
    return NUMBER_WORDS.get(token, token)


def _pad_time(h: str, m: str) -> str:
    return f"{int(h):02d}:{m}"


@dataclass
class Vocabulary:
    """Database values per slot, with the phrases that name them."""

    names: dict[str, dict[str, str]] = field(default_factory=dict)
    """domain → normalised name → database name."""
    foods: tuple[str, ...] = ()
    stations: tuple[str, ...] = ()
    _patterns: dict[str, list[tuple[re.Pattern[str], str]]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_database(cls, database: Database) -> Vocabulary:
        """Names, foods and stations read from the ToolWOZ tables."""
        names: dict[str, dict[str, str]] = {}
        for domain in ("hotel", "restaurant", "attraction"):
            if domain in database:
                names[domain] = {prepare(r["name"]): r["name"] for r in database[domain].rows if isinstance(r.get("name"), str)}
        foods: set[str] = set(EXTRA_FOODS)
        if "restaurant" in database:
            foods.update(r["food"] for r in database["restaurant"].rows if isinstance(r.get("food"), str))
        stations: set[str] = set()
        if "train" in database:
            for r in database["train"].rows:
                stations.update(v for v in (r.get("departure"), r.get("destination")) if isinstance(v, str))
        return cls(names=names, foods=tuple(sorted(foods)), stations=tuple(sorted(stations)))

    def __post_init__(self) -> None:
        def alternation(forms: Iterable[tuple[str, str]]) -> list[tuple[re.Pattern[str], str]]:
            # Longest phrase first, so "modern european" wins over "european".
            ordered = sorted(forms, key=lambda f: -len(f[0]))
            return [(re.compile(rf"\b{re.escape(p)}\b"), v) for p, v in ordered]

        self._patterns["food"] = alternation((f, f) for f in self.foods)
        self._patterns["station"] = alternation(
            [(prepare(s), s) for s in self.stations] + [(a, s) for s, al in STATION_ALIASES.items() for a in al if s in self.stations]
        )
        self._patterns["attraction_type"] = alternation((p, v) for v, forms in ATTRACTION_TYPES.items() for p in (v, *forms))
        for domain, table in self.names.items():
            self._patterns[f"name:{domain}"] = alternation(table.items())

    # -- reading a customer's message ---------------------------------------------------
    def find_names(self, text: str, domain: str) -> list[tuple[int, int, str]]:
        """(start, end, database name) of every entity of ``domain`` named in prepared ``text``."""
        found: list[tuple[int, int, str]] = []
        work = text
        for pat, value in self._patterns.get(f"name:{domain}", []):
            for m in pat.finditer(work):
                found.append((m.start(), m.end(), value))
                work = _blank(work, m.start(), m.end())
        return sorted(found)

    def domains_mentioned(self, text: str) -> list[str]:
        """Domains a message talks about, in order of first mention (keywords, then names)."""
        t = prepare(text)
        hits: dict[str, int] = {}
        for domain, words in DOMAIN_WORDS.items():
            m = re.search(words, t)
            if m:
                hits[domain] = m.start()
        # "park" in "free parking" is no attraction; "parking" is excluded by \b already.
        for domain in self.names:
            names = self.find_names(t, domain)
            if names and domain not in hits:
                hits[domain] = names[0][0]
        if "train" not in hits and re.search(r"\b(?:from|to) (?:\w+ ){0,2}(?:" + "|".join(re.escape(prepare(s)) for s in self.stations) + r")\b", t) and re.search(r"\b(?:leave|leaving|depart|arrive|travel)", t):
            hits["train"] = len(t)
        return sorted(hits, key=lambda d: hits[d])

    def extract(self, text: str, domain: str, expecting: Iterable[str] = ()) -> dict[str, str]:
        """Search and book slot values of ``domain`` stated in a customer message.

        ``expecting`` are the slots just asked about: a bare answer ("sunday", "6") fills
        them, and a "no preference" answer marks them :data:`DONTCARE`.
        """
        expecting = [s for s in expecting if s in SEARCH_SLOTS.get(domain, ()) + BOOK_SLOTS.get(domain, ())]
        t = prepare(text)
        out: dict[str, str] = {}
        if domain in self.names:
            names = self.find_names(t, domain)
            if names:
                out["name"] = names[-1][2]
                for s, e, _ in names:
                    t = _blank(t, s, e)
            else:
                m = re.search(r"\b(?:called|named)\s+([a-z0-9&][a-z0-9& -]*?)(?=\s*(?:[,.!?;]|$|\band\b|\bfor\b|\bplease\b|\bin\b))", t)
                if m:
                    out["name"] = m.group(1).strip()
                    t = _blank(t, m.start(1), m.end(1))
        if domain == "train":
            out.update(self._train(t, expecting))
        elif domain == "restaurant":
            out.update(self._restaurant(t))
        elif domain == "hotel":
            # "Does it have free parking?" / "tell me the star rating" ask about the entity;
            # only statements set yes/no and star constraints.
            stated = "".join(" " * len(s) if s.strip().endswith("?") or _REQUEST_CUE.search(s) else s for s in _SENTENCE.findall(t))
            out.update(self._hotel(t, stated))
        elif domain == "attraction":
            out.update(self._attraction(t))
        out.update(self._book(t, domain, expecting))
        self._dontcare(t, domain, expecting, out)
        return out

    def _area_price(self, t: str, out: dict[str, str]) -> None:
        m = re.search(r"\b(centre|center|central|middle of town|downtown)\b", t)
        if m:
            out["area"] = "centre"
        else:
            m = re.search(r"\b(north|south|east|west)(?:ern)?\b(?! american| indian| african| european)", t)
            if m:
                out["area"] = m.group(1)
        if re.search(r"\b(cheap|inexpensive|budget|low[- ]cost|cheaply)\b", t):
            out["pricerange"] = "cheap"
        elif re.search(r"\b(moderate|moderately|mid[- ]range|reasonabl[ey]|medium)\b", t):
            out["pricerange"] = "moderate"
        elif re.search(r"(?<!not )(?<!not too )\b(expensive|upscale|high[- ]end|pricey|luxury|fancy)\b", t):
            out["pricerange"] = "expensive"

    def _restaurant(self, t: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for pat, value in self._patterns["food"]:
            m = pat.search(t)
            if m:
                out["food"] = value
                t = _blank(t, m.start(), m.end())
                break
        else:
            m = re.search(r"\b(?:serves?|serving|some)\s+([a-z]+(?: [a-z]+)?)\s+(?:food|cuisine)\b", t) or re.search(
                r"\b([a-z]+)\s+(?:food|cuisine)\b", t
            )
            if m and m.group(1) not in _NOT_FOOD:
                out["food"] = m.group(1)
                t = _blank(t, m.start(1), m.end(1))
        self._area_price(t, out)
        return out

    def _hotel(self, t: str, stated: str) -> dict[str, str]:
        out: dict[str, str] = {}
        self._area_price(t, out)
        if re.search(r"guest ?houses?", t) and not re.search(r"not (?:a )?guest ?house|rather than (?:a )?guest ?house|instead of (?:a )?guest ?house", t):
            out["type"] = "guesthouse"
        elif re.search(
            r"(?:be|is|type of|type|actual|proper|real) (?:a |an )?hotel\b(?! or)|hotel rather than|not (?:a )?guest ?house|instead of (?:a )?guest ?house|hotel type",
            t,
        ):
            out["type"] = "hotel"
        t = stated
        m = re.search(_NUM + r"[- ]?stars?\b", t) or re.search(r"stars? (?:rating )?of " + _NUM, t) or re.search(r"rated " + _NUM, t)
        if m:
            out["stars"] = _number(m.group(1))
        for slot, words in (("parking", r"(?:free )?parking|park(?: my| the)? car"), ("internet", r"(?:free )?(?:internet|wi-?fi)")):
            m = re.search(words, t)
            if m:
                before = t[max(0, m.start() - 40) : m.start()]
                out[slot] = "no" if re.search(rf"\b{_NEG}\b(?:\s+\w+){{0,2}}\s*$", before) and not re.search(r"(?:should|must|has to) (?:have|include)", before[-20:]) else "yes"
        return out

    def _attraction(self, t: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for pat, value in self._patterns["attraction_type"]:
            m = pat.search(t)
            if m:
                out["type"] = value
                t = _blank(t, m.start(), m.end())
                break
        self._area_price(t, out)
        out.pop("pricerange", None)
        return out

    def _train(self, t: str, expecting: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        found: list[tuple[int, int, str]] = []
        work = t
        for pat, value in self._patterns["station"]:
            for m in pat.finditer(work):
                found.append((m.start(), m.end(), value))
                work = _blank(work, m.start(), m.end())
        found.sort()
        for s, e, value in found:
            before = t[max(0, s - 30) : s]
            after = t[e : e + 16]
            if re.search(r"(?:\b(?:arriv\w*|get|go|going|travel\w*|headed|heading|reach\w*)\s+(?:in|into|at|to)|\b(?:to|into|towards|destination(?: is)?))\s+(?:the\s+)?$", before):
                out.setdefault("destination", value)
            elif re.search(r"\b(?:from|leav\w*|depart\w*|out of)\s+(?:the\s+)?$", before) or re.match(r"\s+(?:to|and going to|going to)\b", after):
                out.setdefault("departure", value)
            elif "departure" in expecting and "departure" not in out:
                out["departure"] = value
            elif "destination" in expecting and "destination" not in out:
                out["destination"] = value
            elif "departure" not in out:
                out["departure"] = value
            else:
                out.setdefault("destination", value)
        for t_found in _TIME.finditer(t):
            value = _pad_time(t_found.group(1), t_found.group(2))
            before = t[max(0, t_found.start() - 40) : t_found.start()]
            last_cue = _last_cue(before, {"leaveAt": r"\b(?:after|leav\w*|depart\w*|from|go|travel|later than|no earlier than)\b",
                                          "arriveBy": r"\b(?:by|before|arriv\w*|get (?:there|in)|reach|no later than|earlier than)\b"})
            slot = last_cue or next((s for s in ("leaveAt", "arriveBy") if s in expecting), "leaveAt")
            out.setdefault(slot, value)
        m = re.search(r"\b(" + "|".join(DAYS) + r")\b", t)
        if m:
            out["day"] = m.group(1)
        return out

    def _book(self, t: str, domain: str, expecting: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        slots = BOOK_SLOTS.get(domain, ())
        if not slots:
            return out
        if "people" in slots:
            m = (
                re.search(_NUM + r"\s+(?:people|persons|person|guests|adults|of us|tickets?|seats?|passengers|travell?ers)\b", t)
                or re.search(r"(?:party|group|table) (?:of|for) " + _NUM + r"\b", t)
                or re.search(r"\bfor " + _NUM + r"\b(?!\s*(?:nights?|days?|:|\.\d|stars?|pm|am))", t)
            )
            if m:
                out["people"] = _number(m.group(1))
            elif re.search(r"\b(?:just (?:me|myself|for me|one)|only me|for myself|by myself|alone|one person)\b", t):
                out["people"] = "1"
        if "stay" in slots:
            m = re.search(_NUM + r"\s+(?:nights?|days?)\b", t)
            if m:
                out["stay"] = _number(m.group(1))
        if "day" in slots:
            m = re.search(r"\b(" + "|".join(DAYS) + r")\b", t)
            if m:
                out["day"] = m.group(1)
        if "time" in slots:
            m = _TIME.search(t)
            if m:
                # Restaurant times are kept as said: goals hold both "9:45" and "19:45".
                out["time"] = f"{int(m.group(1))}:{m.group(2)}" if len(m.group(1)) == 1 else f"{m.group(1)}:{m.group(2)}"
        # A bare number answers "how many people / nights?"
        for slot in ("people", "stay"):
            if slot in expecting and slot not in out:
                m = re.fullmatch(r"\s*(?:\w+\s+){0,3}?" + _NUM + r"\W*(?:\w+\W*){0,3}", t)
                if m:
                    out[slot] = _number(m.group(1))
        return out

    def _dontcare(self, t: str, domain: str, expecting: list[str], out: dict[str, str]) -> None:
        slots = SEARCH_SLOTS.get(domain, ())
        for clause in re.split(r"[.;!?]|,(?! and)| but ", t):
            if not _DONTCARE_CUE.search(clause):
                continue
            named = [s for s in slots if s in asked_slots_in(clause, domain)]
            for s in named or [s for s in expecting if s in slots]:
                if s not in out:
                    out[s] = DONTCARE


_NOT_FOOD = frozenset(
    {"the", "a", "any", "some", "good", "nice", "great", "of", "type", "kind", "what", "which", "serve", "serves", "their",
     "that", "for", "cheap", "expensive", "moderate", "fast", "local", "best", "same", "your", "no", "particular", "and", "or"}
    | set(AREAS)
)


def _last_cue(before: str, cues: Mapping[str, str]) -> str | None:
    best, pos = None, -1
    for slot, pat in cues.items():
        for m in re.finditer(pat, before):
            if m.start() > pos:
                best, pos = slot, m.start()
    return best


def _questions(text: str) -> list[str]:
    # Questions are the sentences ending in "?"; a statement like "It is in the north." asks nothing.
    return [s for s in _SENTENCE.findall(text.replace("\n", " ")) if s.strip().endswith("?")]


def asked_slots_in(text: str, domain: str) -> list[str]:
    """The slots of ``domain`` whose words occur in prepared ``text`` (no question test)."""
    slots = SEARCH_SLOTS.get(domain, ()) + BOOK_SLOTS.get(domain, ())
    found = []
    for slot in slots:
        if slot == "type":
            words = TYPE_WORDS.get(domain)
        elif slot == "day" and domain != "train":
            words = SLOT_WORDS["day"] + r"|\bwhen\b"
        elif slot == "time":
            words = SLOT_WORDS["time"] + r"|\bwhen\b"
        else:
            words = SLOT_WORDS.get(slot)
        if words and re.search(words, text) and slot not in found:
            found.append(slot)
    if domain == "train":
        # "What time do you want to leave?" is about leaveAt, not the day; "when" alone means a time.
        if "leaveAt" not in found and "arriveBy" not in found and re.search(r"\bwhen\b|what time", text):
            found.append("leaveAt")
        if ("leaveAt" in found or "arriveBy" in found) and "day" in found and not re.search(r"\b(?:what|which) day|\bday\b|\bdate\b", text):
            found.remove("day")
    return found


def asked_slots(text: str, domain: str) -> list[str]:
    """The search/book slots of ``domain`` that the agent's questions in ``text`` ask about."""
    found: list[str] = []
    for q in _questions(prepare(text)):
        for s in asked_slots_in(q, domain):
            if s not in found:
                found.append(s)
    return found


def requested_attributes(text: str, domain: str) -> list[str]:
    """Attributes of an entity of ``domain`` that a customer message asks for (phone, ...)."""
    # Only questions and requests ask for something: "it should have free parking" states a
    # constraint, "does it have free parking?" asks for an attribute.
    sentences = [s for s in _SENTENCE.findall(prepare(text)) if s.strip().endswith("?") or _REQUEST_CUE.search(s)]
    # "a train that leaves after 10:00" states a constraint; it does not ask for leaveAt.
    t = _TIME.sub(" ", " ".join(sentences))
    found = []
    for attr in _ATTRIBUTES_OF.get(domain, ()):
        if re.search(ATTRIBUTE_WORDS[attr], t):
            found.append(attr)
    if domain == "train" and "price" in found and re.search(r"price ?range", t):
        found.remove("price")
    return found


def booking_reference(text: str) -> str | None:
    """The booking reference an agent message gives (``None`` if it gives none)."""
    m = _REFERENCE.search(text)
    # References are codes ("JXVKZ7KV", "00000083"): upper case or with digits, never a word.
    if m and (re.search(r"\d", m.group(1)) or m.group(1).isupper()):
        return m.group(1)
    return None


_BOOK_FAIL = re.compile(
    r"(?:unable|not able|could ?n[o']?t|couldnt|can ?n[o']?t|cant|was ?n[o']?t able|wasnt able|failed|fail) to (?:book|reserve|make (?:the|a|that|your) (?:booking|reservation)|complete)"
    r"|booking (?:was )?(?:unsuccessful|failed|did not go through|didnt go through|is not possible|not possible)"
    r"|(?:is|was|are) (?:fully )?(?:booked|unavailable|not available)|no availability|not available"
)
_NO_MATCH = re.compile(
    r"\bno (?:matches|match|results?|such|options?|\w+ (?:matching|that match|meeting|fitting))"
    r"|\bthere (?:are|is) no\b|\bthere (?:arent|are not|isnt|is not) any\b|(?:could|can|did|do)(?:nt| ?not) (?:find|locate|see|have)|cannot find"
    r"|(?:dont|do not|doesnt|does not) (?:have|show|see) any|nothing (?:matches|matching|available|that)|no (?:\w+ )?(?:available|found)"
    r"|unable to find|not find any|none (?:match|that|available)"
)


def says_booking_failed(text: str) -> bool:
    """The agent says a booking did not go through."""
    t = prepare(text)
    return booking_reference(text) is None and bool(_BOOK_FAIL.search(t))


def says_no_match(text: str) -> bool:
    """The agent says nothing matches the request."""
    return bool(_NO_MATCH.search(prepare(text)))


def says_goodbye(text: str) -> bool:
    """A closing message (thanks / bye with no request)."""
    t = prepare(text)
    return bool(re.search(r"\b(?:bye|goodbye|thats all|that is all|all set|nothing else|no more)\b", t))


def is_affirmative(text: str) -> bool:
    """A yes (to "shall I book it?")."""
    return bool(re.match(r"\s*(?:yes|yeah|yep|sure|ok|okay|please|that would be great|sounds good|great|perfect)\b", prepare(text)))


# -- the customer's English (agenda user) -----------------------------------------------
def slot_phrase(domain: str, slot: str, value: str, rng: random.Random) -> str:
    """A verb phrase stating ``slot = value`` ("be in the north", "serve italian food"); it
    completes "It should ...". The agent's :meth:`Vocabulary.extract` reads it back."""
    v = value
    if slot == "name":
        return rng.choice([f"be the one called {v}", f"be {v}"]) if domain != "train" else f"be {v}"
    if slot == "area":
        if v == "centre":
            return rng.choice(["be in the centre", "be in the centre of town", "be in the city centre"])
        return rng.choice([f"be in the {v}", f"be in the {v} of town", f"be on the {v} side"])
    if slot == "pricerange":
        if v == "moderate":
            return rng.choice(["be moderately priced", "be in the moderate price range"])
        return rng.choice([f"be {v}", f"be in the {v} price range"])
    if slot == "food":
        return rng.choice([f"serve {v} food", f"serve {v} cuisine"])
    if slot == "type":
        if domain == "hotel":
            return "be a guesthouse" if v == "guesthouse" else rng.choice(["be a proper hotel, not a guesthouse", "be a hotel rather than a guesthouse"])
        forms = {"mutliple sports": "a place for multiple sports", "swimmingpool": "a swimming pool", "concerthall": "a concert hall",
                 "architecture": "somewhere known for its architecture", "entertainment": "an entertainment venue",
                 "boat": "a boat attraction", "park": "a park"}
        return f"be {forms.get(v, 'a ' + v)}"
    if slot == "stars":
        return rng.choice([f"have {v} stars", f"have a star rating of {v}"])
    if slot in ("parking", "internet"):
        thing = "free parking" if slot == "parking" else rng.choice(["free wifi", "free internet"])
        return f"have {thing}" if v == "yes" else f"be fine without {thing}"
    if slot == "departure":
        return rng.choice([f"depart from {v}", f"leave from {v}"])
    if slot == "destination":
        return rng.choice([f"go to {v}", f"arrive in {v}"])
    if slot == "day":
        return rng.choice([f"leave on {v}", f"be on {v}"]) if domain == "train" else f"be on {v}"
    if slot == "leaveAt":
        return rng.choice([f"leave after {v}", f"depart after {v}"])
    if slot == "arriveBy":
        return rng.choice([f"arrive by {v}", f"get there by {v}"])
    return f"have {SLOT_NAMES.get(slot, slot)} {v}"


def book_phrase(domain: str, book: Mapping[str, Any]) -> str:
    """The booking details as a phrase ("for 6 people for 4 nights starting on sunday")."""
    parts = []
    if book.get("people"):
        n = str(book["people"])
        parts.append(f"{n} {'ticket' if n == '1' else 'tickets'}" if domain == "train" else f"{n} {'person' if n == '1' else 'people'}")
        parts[-1] = ("for " if domain != "train" else "") + parts[-1]
    if domain == "hotel":
        if book.get("stay"):
            parts.append(f"for {book['stay']} {'night' if str(book['stay']) == '1' else 'nights'}")
        if book.get("day"):
            parts.append(f"starting on {book['day']}")
    elif domain == "restaurant":
        if book.get("time"):
            parts.append(f"at {book['time']}")
        if book.get("day"):
            parts.append(f"on {book['day']}")
    return " ".join(parts)


def attribute_name(attr: str) -> str:
    """English name of a requested attribute ("postcode", "travel time", ...)."""
    return ATTRIBUTE_NAMES.get(attr, attr)


def join_words(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


__all__ = [
    "BOOK_SLOTS",
    "DONTCARE",
    "SEARCH_SLOTS",
    "Vocabulary",
    "asked_slots",
    "attribute_name",
    "book_phrase",
    "booking_reference",
    "is_affirmative",
    "join_words",
    "prepare",
    "requested_attributes",
    "says_booking_failed",
    "says_goodbye",
    "says_no_match",
    "slot_phrase",
]
