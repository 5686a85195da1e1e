"""Value normalisation and the dict-subset test that every ToolWOZ rule is built on.

These reproduce the reference implementation exactly (see the dataset card's quirks):
empty values are dropped *before* normalising, and values compare with ``==`` after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EMPTY_VALUES = frozenset({"", "dont care", "don't care", "dontcare", "do n't care", "not mentioned"})


def is_empty(value: Any) -> bool:
    """True for the MultiWOZ "no constraint" strings (``""``, ``"dont care"``, ...)."""
    return isinstance(value, str) and value in EMPTY_VALUES


def normalise(value: Any) -> Any:
    """Lower-case a string and delete its apostrophes; other values pass through."""
    if isinstance(value, str):
        return value.lower().replace("'", "")
    return value


def clean(d: Mapping[str, Any]) -> dict[str, Any]:
    """Drop empty values, then normalise the rest (the reference's order)."""
    return {k: normalise(v) for k, v in d.items() if not is_empty(v)}


def is_subset(sub: Any, main: Any) -> bool:
    """ToolWOZ's ``sub ⊆ main``: every cleaned (key, value) of ``sub`` is in cleaned ``main``.

    Non-dict operands (an agent may send anything) are never subsets and contain nothing.
    """
    if not isinstance(sub, Mapping) or not isinstance(main, Mapping):
        return False
    main_c = clean(main)
    for k, v in clean(sub).items():
        if k not in main_c:
            return False
        try:
            if not bool(main_c[k] == v):
                return False
        except Exception:  # exotic values whose == raises are simply unequal
            return False
    return True
