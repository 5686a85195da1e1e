"""The ToolWOZ tool set: schemas the agent sees and the parameters each API allows."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

DOMAINS: tuple[str, ...] = ("hotel", "attraction", "train", "restaurant")
"""Searchable domains, in the order the reference builds goal calls."""

UID_KEYS: dict[str, str] = {"train": "trainID", "restaurant": "name", "hotel": "name", "attraction": "name"}

ERROR_NOT_A_DICT = "ERROR: INVALID API CALL! PARAMETERS MUST BE A DICTIONARY!"
ERROR_NOT_ALLOWED = (
    "ERROR: INVALID API CALL! YOUR REQUEST CONTAINED PARAMETERS THAT ARE NOT ALLOWED FOR THIS API "
    "or AN IMPROPER API NAME!"
)
ERROR_LIST_OR_DICT = "ERROR: INVALID API CALL! LISTS AND DICTS ARE NOT ALLOWED AS VALUES!"
ERROR_INVALID = "ERROR: INVALID API CALL!"
ERROR_STRINGS: tuple[str, ...] = (ERROR_NOT_A_DICT, ERROR_NOT_ALLOWED, ERROR_LIST_OR_DICT, ERROR_INVALID)


def uid_key(domain: str) -> str:
    """The column that identifies an entity of ``domain`` (``trainID`` or ``name``)."""
    return UID_KEYS.get(domain, "name")


def split_tool_name(name: str) -> tuple[str, str] | None:
    """``"search_hotel"`` → ``("search", "hotel")`` for the 8 executable tools, else None."""
    action, _, domain = name.partition("_")
    if action in ("search", "book") and domain in DOMAINS:
        return action, domain
    return None


@dataclass(frozen=True)
class ToolSet:
    """Tool schemas (OpenAI function format) and the allowed parameters of every API.

    ``allowed`` comes from ToolWOZ's ``valid_api_defs.json``, which also lists taxi and
    hospital APIs: those pass validation and then answer ``ERROR: INVALID API CALL!``, as in
    the reference. ``returns`` lists each API's return keys (used when building tasks).
    """

    schemas: tuple[dict[str, Any], ...]
    parameters: dict[str, tuple[str, ...]]
    returns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    allowed: dict[str, frozenset[str]] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", {api: frozenset(p) for api, p in self.parameters.items()})

    @classmethod
    def from_files(cls, tools: list[dict[str, Any]], valid_api_defs: dict[str, Any]) -> ToolSet:
        parameters: dict[str, tuple[str, ...]] = {}
        returns: dict[str, tuple[str, ...]] = {}
        for apis in valid_api_defs.values():
            for api, spec in apis.items():
                parameters[api] = tuple(spec.get("parameters", []))
                returns[api] = tuple(spec.get("returns", []))
        return cls(schemas=tuple(tools), parameters=parameters, returns=returns)

    def to_valid_api_defs(self) -> dict[str, Any]:
        """Back to the ``valid_api_defs.json`` layout (domain → api → parameters/returns)."""
        out: dict[str, Any] = {}
        for api, params in self.parameters.items():
            domain = api.partition("_")[2]
            out.setdefault(domain, {})[api] = {"parameters": list(params), "returns": list(self.returns.get(api, ()))}
        return out

    @property
    def names(self) -> list[str]:
        """Names of the tools offered to the agent (the schemas), in schema order."""
        return [s["function"]["name"] for s in self.schemas]

    def openai_tools(self) -> list[dict[str, Any]]:
        """A fresh copy of the schemas, ready for ``tools=`` of a chat template or API."""
        return copy.deepcopy(list(self.schemas))
