"""The MultiWOZ databases, indexed once so that a search costs microseconds.

Each table keeps its rows in file order; a set of rows is a Python ``int`` used as a bit
mask (bit ``i`` = row ``i``), so a search is a few dict lookups and ANDs, and "first row"
and "last row" are bit tricks instead of scans.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from typing import Any

from .matching import clean, is_empty, is_subset, normalise

_MISSING = object()

# Time columns compared as strings with a strict inequality, as the reference does.
GREATER_THAN = "leaveAt"  # keep rows with row.leaveAt > value
LESS_THAN = "arriveBy"  # keep rows with row.arriveBy < value


def first_index(mask: int) -> int:
    """Index of the lowest set bit (the first row of the set); ``mask`` must be > 0."""
    return (mask & -mask).bit_length() - 1


def last_index(mask: int) -> int:
    """Index of the highest set bit (the last row of the set); ``mask`` must be > 0."""
    return mask.bit_length() - 1


class _OrderedColumn:
    """Sorted distinct string values of one column with cumulative row masks."""

    def __init__(self, values: list[tuple[str, int]]):
        by_value: dict[str, int] = {}
        for value, row in values:
            by_value[value] = by_value.get(value, 0) | (1 << row)
        self.keys = sorted(by_value)
        masks = [by_value[k] for k in self.keys]
        self.prefix = [0]  # prefix[i] = rows whose value is among keys[:i]
        for m in masks:
            self.prefix.append(self.prefix[-1] | m)
        self.total = self.prefix[-1]

    def greater_than(self, value: str) -> int:
        return self.total & ~self.prefix[bisect_right(self.keys, value)]

    def less_than(self, value: str) -> int:
        return self.prefix[bisect_left(self.keys, value)]


class Table:
    """One domain's rows with an equality index on every column and range indexes on times."""

    def __init__(self, domain: str, rows: Iterable[Mapping[str, Any]]):
        self.domain = domain
        self.rows: tuple[dict[str, Any], ...] = tuple(dict(r) for r in rows)
        self.all = (1 << len(self.rows)) - 1
        self._norm: dict[str, dict[Any, int]] = {}
        self.columns: tuple[str, ...] = tuple(dict.fromkeys(c for r in self.rows for c in r))
        self._eq: dict[str, dict[Any, int]] = {}
        ordered: dict[str, list[tuple[str, int]]] = {}
        for i, row in enumerate(self.rows):
            bit = 1 << i
            for col, value in row.items():
                try:
                    index = self._eq.setdefault(col, {})
                    index[value] = index.get(value, 0) | bit
                except TypeError:  # unhashable cells (locations, prices) are never filtered on
                    pass
                if isinstance(value, str):
                    ordered.setdefault(col, []).append((value, i))
        self._ordered = {col: _OrderedColumn(v) for col, v in ordered.items() if col in (GREATER_THAN, LESS_THAN)}

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, constraints: Mapping[str, Any]) -> int:
        """Rows matching ``constraints`` under the reference's search rules, as a mask.

        Values that are empty, falsy or not strings are skipped. The reference escaped
        apostrophes for SQL (``'`` → ``''``) and then compared in pandas, so a value with an
        apostrophe never matches; that is reproduced here.
        """
        mask = self.all
        for key, value in constraints.items():
            if is_empty(value) or not value or not isinstance(value, str):
                continue
            value = value.replace("'", "''")
            if key == GREATER_THAN or key == LESS_THAN:
                col = self._ordered.get(key)
                if col is None:
                    return 0
                mask &= col.greater_than(value) if key == GREATER_THAN else col.less_than(value)
            else:
                mask &= self._eq.get(key, {}).get(value, 0)
            if not mask:
                return 0
        return mask

    def rows_of(self, mask: int) -> list[dict[str, Any]]:
        """The rows of a mask, in file order."""
        out = []
        while mask:
            low = mask & -mask
            out.append(self.rows[low.bit_length() - 1])
            mask ^= low
        return out

    def uid_mask(self, key: str, value: Any) -> int:
        """Rows whose ``key`` column equals ``value`` exactly."""
        try:
            return self._eq.get(key, {}).get(value, 0)
        except TypeError:
            return 0

    def subset_mask(self, goal: Mapping[str, Any]) -> int:
        """Rows ``r`` with ``goal ⊆ r``, from an index of normalised cell values."""
        mask = self.all
        for key, value in clean(goal).items():
            try:
                mask &= self._normalised_index(key).get(value, 0)
            except TypeError:  # an unhashable goal value: fall back to the definition
                return self.subset_mask_scan(goal)
        return mask

    def subset_mask_scan(self, goal: Mapping[str, Any]) -> int:
        """``subset_mask`` by testing every row (the definition; slow)."""
        mask = 0
        for i, row in enumerate(self.rows):
            if is_subset(goal, row):
                mask |= 1 << i
        return mask

    def _normalised_index(self, col: str) -> dict[Any, int]:
        index = self._norm.get(col)
        if index is None:
            index = {}
            for i, row in enumerate(self.rows):
                value = row.get(col, _MISSING)
                if value is _MISSING or is_empty(value):  # ⊆ drops empty cells before comparing
                    continue
                try:
                    key = normalise(value)
                    index[key] = index.get(key, 0) | (1 << i)
                except TypeError:
                    pass
            self._norm[col] = index
        return index


class Database:
    """The searchable MultiWOZ tables, keyed by domain."""

    def __init__(self, tables: Mapping[str, Iterable[Mapping[str, Any]]]):
        self.tables: dict[str, Table] = {d: Table(d, rows) for d, rows in tables.items()}

    def __getitem__(self, domain: str) -> Table:
        return self.tables[domain]

    def __contains__(self, domain: str) -> bool:
        return domain in self.tables

    def raw(self) -> dict[str, list[dict[str, Any]]]:
        """The tables as plain row lists (what the dataset's ``databases`` config stores)."""
        return {d: [dict(r) for r in t.rows] for d, t in self.tables.items()}
