"""The computation behind the ``toolwoz`` ``evaluate`` metric, importable without ``evaluate``.

Predictions are conversations' tool calls as the agent saw them; references are the tasks'
goal calls. Every call is turned into the :class:`~josh_hf.toolwoz.scoring.RecordedCall` the
environment would have recorded and scored with :func:`~josh_hf.toolwoz.scoring.score_calls`
(no second scoring implementation lives here): the metric equals ``ToolWOZEnv.score()`` on
the same calls.

Inputs are tolerant of JSON: a prediction, a call, a call's ``arguments`` or ``result``, a
reference, its ``goal_calls`` and each goal call's ``arguments`` / ``return`` may each be a
JSON string or the decoded object (the ``evaluate`` module stores everything as JSON strings,
and the Hub dataset stores nested fields as JSON strings).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .scoring import RecordedCall, recorded_value, score_calls
from .tasks import GoalCall, Task
from .tools import split_tool_name, uid_key

__all__ = [
    "ConversationScore",
    "ToolWOZInputError",
    "aggregate",
    "check_conversation",
    "compute_toolwoz_metric",
    "encode_input",
    "parse_prediction",
    "parse_reference",
    "pass_hat_k",
    "score_conversation",
    "slim_reference",
    "toolwoz_inputs",
]


class ToolWOZInputError(ValueError):
    """A prediction or reference the metric cannot read (a ``ValueError``, as evaluate raises)."""


@dataclass(frozen=True)
class ConversationScore:
    """One conversation scored: its task, reward, success and which goal calls were met."""

    task_id: str
    reward: float
    success: bool
    goals: list[GoalCall]
    met: list[bool]
    num_calls: int
    num_invalid_calls: int


# -- JSON helpers --------------------------------------------------------------------------
def _jsonable(obj: Any) -> Any:
    """``json.dumps`` fallback for this package's records (tasks, goal calls, recorded calls)."""
    if isinstance(obj, Task):
        return {"id": obj.id, "goal_calls": [g.to_dict() for g in obj.goal_calls]}
    if isinstance(obj, (GoalCall, RecordedCall)):
        return obj.to_dict()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return obj.tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def encode_input(obj: Any) -> str:
    """One prediction or reference as the JSON string the ``evaluate`` module stores.

    Strings pass through unchanged (they are taken to be JSON already), so encoding twice is
    harmless.
    """
    if isinstance(obj, str):
        return obj
    # allow_nan: a booking's fallback return record can hold NaN (see tasks.py); it only
    # needs to survive the round trip, not to be standard JSON.
    return json.dumps(obj, default=_jsonable, ensure_ascii=False, allow_nan=True)


def _maybe_json(value: Any) -> Any:
    """Decode ``value`` if it is a JSON string; anything else (and non-JSON text) as is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _where(conv: int, task_id: str | None) -> str:
    return f"conversation {conv}" + (f" (task {task_id!r})" if task_id is not None else "")


def _decode_required(value: Any, what: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as e:
        raise ToolWOZInputError(f"{what} is a string that is not valid JSON ({e}): {value[:200]!r}") from None


# -- references ----------------------------------------------------------------------------
def _goal_call(d: Any, where: str) -> GoalCall:
    if isinstance(d, GoalCall):
        return d
    d = _decode_required(d, where)
    if not isinstance(d, Mapping):
        raise ToolWOZInputError(f"{where} must be a dict with 'name' and 'arguments', got {type(d).__name__}")
    name = d.get("name")
    if not isinstance(name, str) or not name:
        raise ToolWOZInputError(f"{where} has no tool 'name'")
    args = _maybe_json(d.get("arguments"))
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise ToolWOZInputError(f"{where} ({name}): 'arguments' must be a dict or a JSON object string")
    ret = _maybe_json(d["return"] if "return" in d else d.get("returns"))
    if ret is not None and not isinstance(ret, Mapping):
        ret = None  # "" or other placeholders of a dataset column mean "no return record"
    booked = _uid(d.get("booked_uid"))
    action, _, domain = name.partition("_")
    if action == "book" and booked is None:
        # A row that left booked_uid out still names the booked entity in its uid argument.
        booked = args.get(uid_key(domain)) or None
    return GoalCall(name=name, arguments=dict(args), booked_uid=booked, returns=dict(ret) if ret is not None else None)


def _uid(value: Any) -> Any:
    # The dataset stores booked_uid as a JSON value ('"TR1234"'); a raw uid is plain text.
    # Only a quoted JSON string is decoded, so a raw name that happens to parse as JSON
    # (a number, say) is kept as it is.
    if isinstance(value, str) and value.startswith('"'):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, str) else value
    return value or None


def _columns_to_rows(cols: Mapping[str, Any]) -> list[dict[str, Any]]:
    # A ``datasets`` Sequence of structs reads back as a dict of equal-length lists.
    n = len(cols["name"])
    return [{k: (v[i] if isinstance(v, (list, tuple)) and len(v) == n else None) for k, v in cols.items()}
            for i in range(n)]


def parse_reference(reference: Any, conv: int) -> tuple[str | None, list[GoalCall]]:
    """``(task id or None, goal calls)`` of one reference.

    A reference is a task row (a mapping with ``goal_calls`` and usually ``id``), a
    :class:`Task`, or just the list of goal calls; each may be JSON-encoded at any level.
    """
    if isinstance(reference, Task):
        return reference.id, list(reference.goal_calls)
    ref = _decode_required(reference, f"reference of conversation {conv}")
    task_id: str | None = None
    if isinstance(ref, Mapping):
        if "goal_calls" not in ref:
            raise ToolWOZInputError(
                f"reference of conversation {conv} is a dict without 'goal_calls'; pass the task row "
                "(with 'id' and 'goal_calls') or the task's list of goal calls"
            )
        task_id = None if ref.get("id") is None else str(ref["id"])
        goal_calls = _decode_required(ref["goal_calls"], f"'goal_calls' of the reference of {_where(conv, task_id)}")
    else:
        goal_calls = ref
    if isinstance(goal_calls, Mapping) and "name" in goal_calls and isinstance(goal_calls["name"], (list, tuple)):
        goal_calls = _columns_to_rows(goal_calls)
    if not isinstance(goal_calls, (list, tuple)):
        raise ToolWOZInputError(
            f"goal calls of the reference of {_where(conv, task_id)} must be a list, got {type(goal_calls).__name__}"
        )
    goals = [_goal_call(g, f"goal call {j} of the reference of {_where(conv, task_id)}") for j, g in enumerate(goal_calls)]
    return task_id, goals


def slim_reference(reference: Any) -> Any:
    """A task row reduced to ``id`` and ``goal_calls`` (all the metric reads); else as is."""
    if isinstance(reference, Mapping) and "goal_calls" in reference:
        return {k: reference[k] for k in ("id", "goal_calls") if k in reference}
    return reference


# -- predictions ---------------------------------------------------------------------------
_MISSING = object()


def _call_fields(call: Any, where: str) -> tuple[Any, Any, Any]:
    """``(name, arguments, result)`` of one predicted call, as the agent sent and saw them."""
    if isinstance(call, RecordedCall):
        return call.name, call.arguments, call.returned
    call = _decode_required(call, where)
    if not isinstance(call, Mapping):
        raise ToolWOZInputError(f"{where} must be a dict with 'name', 'arguments' and 'result', got {type(call).__name__}")
    fn = call.get("function")
    if "name" not in call and isinstance(fn, Mapping):  # an OpenAI tool call plus its result
        name, arguments = fn.get("name"), fn.get("arguments")
    else:
        name, arguments = call.get("name", _MISSING), call.get("arguments")
    if name is _MISSING or name is None:
        raise ToolWOZInputError(f"{where} has no 'name'")
    # "returned" is what RecordedCall.to_dict() writes; recorded_value() is idempotent on it.
    result = call["result"] if "result" in call else call.get("returned", _MISSING)
    if result is _MISSING:
        raise ToolWOZInputError(f"{where} ({name!r}) has no 'result' (what the environment returned)")
    return name, arguments, result


def parse_prediction(prediction: Any, conv: int, task_id: str | None = None) -> tuple[list[RecordedCall], int]:
    """The recorded calls of one conversation and how many of them were invalid.

    A call is invalid when its result is an ``ERROR`` string, its tool name is not one of the
    eight ToolWOZ tools, or its arguments are not a dict (after decoding a JSON string; text
    that is not JSON is kept raw, as the environment would have received it).
    """
    where = _where(conv, task_id)
    calls = _decode_required(prediction, f"prediction of {where}")
    if not isinstance(calls, (list, tuple)):
        raise ToolWOZInputError(
            f"prediction of {where} must be a list of tool calls ({{'name', 'arguments', 'result'}}), "
            f"got {type(calls).__name__}"
        )
    recorded: list[RecordedCall] = []
    invalid = 0
    for j, call in enumerate(calls):
        name, arguments, result = _call_fields(call, f"call {j} of the prediction of {where}")
        if arguments is None:
            arguments = {}  # the environment treats missing arguments as {}
        arguments = _maybe_json(arguments)
        # Tool messages in a chat transcript carry results as JSON text; env results are
        # lists, dicts or ERROR strings, so only list/dict JSON is decoded.
        decoded = _maybe_json(result)
        if isinstance(decoded, (list, dict)):
            result = decoded
        bad = (
            (isinstance(result, str) and result.startswith("ERROR"))
            or not isinstance(name, str)
            or split_tool_name(name) is None
            or not isinstance(arguments, dict)
        )
        invalid += bool(bad)
        recorded.append(RecordedCall(name, arguments, recorded_value(name, result)))
    return recorded, invalid


def check_conversation(prediction: Any, reference: Any, conv: int) -> None:
    """Raise the ``ValueError`` that scoring this conversation would raise, without scoring."""
    task_id, _ = parse_reference(reference, conv)
    parse_prediction(prediction, conv, task_id)


# -- scoring -------------------------------------------------------------------------------
def score_conversation(prediction: Any, reference: Any, conv: int = 0) -> ConversationScore:
    """Score one conversation against its reference (the environment's own rules)."""
    task_id, goals = parse_reference(reference, conv)
    calls, invalid = parse_prediction(prediction, conv, task_id)
    score = score_calls(goals, calls)
    met_ids = {id(g) for g in score.met}
    return ConversationScore(
        task_id=task_id if task_id is not None else f"#{conv}",
        reward=score.reward,
        success=score.success,
        goals=goals,
        met=[id(g) in met_ids for g in goals],
        num_calls=len(calls),
        num_invalid_calls=invalid,
    )


def pass_hat_k(trials: Mapping[str, Sequence[bool]]) -> dict[int, float]:
    """τ-bench's pass^k for k = 1 .. fewest trials of any task.

    A task with n trials and c successes has pass^k = C(c, k) / C(n, k) (the chance that k
    trials drawn without replacement all succeed); the result averages that over tasks.
    """
    if not trials:
        return {}
    k_max = min(len(v) for v in trials.values())
    out: dict[int, float] = {}
    for k in range(1, k_max + 1):
        per_task = [math.comb(sum(map(bool, v)), k) / math.comb(len(v), k) for v in trials.values()]
        out[k] = math.fsum(per_task) / len(per_task)
    return out


def _ratio(num: Mapping[str, int], den: Mapping[str, int]) -> dict[str, float]:
    return {k: num.get(k, 0) / den[k] for k in sorted(den)}


def compute_toolwoz_metric(predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, Any]:
    """All metric values for aligned lists of predictions and references.

    Keys: ``average_reward``, ``success_rate``, ``num_conversations``, ``num_tasks``,
    ``num_goal_calls``, ``num_calls``, ``invalid_call_rate``, ``tool_accuracy`` and
    ``domain_accuracy`` (goal tool / domain → fraction of its goal calls met), and flat
    ``pass^1`` .. ``pass^K`` for K = the fewest trials of any task id.
    """
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ToolWOZInputError(
            f"got {len(predictions)} predictions but {len(references)} references; "
            "pass one reference (the task) per prediction (one conversation's calls)"
        )
    if not predictions:
        raise ToolWOZInputError("no conversations to score: predictions and references are empty")
    scores = [score_conversation(p, r, i) for i, (p, r) in enumerate(zip(predictions, references))]
    return aggregate(scores)


def aggregate(scores: Iterable[ConversationScore]) -> dict[str, Any]:
    """Fold per-conversation scores into the metric's output dict."""
    scores = list(scores)
    n = len(scores)
    tool_met: dict[str, int] = defaultdict(int)
    tool_all: dict[str, int] = defaultdict(int)
    dom_met: dict[str, int] = defaultdict(int)
    dom_all: dict[str, int] = defaultdict(int)
    trials: dict[str, list[bool]] = defaultdict(list)
    for s in scores:
        trials[s.task_id].append(s.success)
        for g, ok in zip(s.goals, s.met):
            tool_all[g.name] += 1
            dom_all[g.domain] += 1
            tool_met[g.name] += ok
            dom_met[g.domain] += ok
    num_calls = sum(s.num_calls for s in scores)
    out: dict[str, Any] = {
        # fsum: exact and independent of the order in which batches arrived.
        "average_reward": math.fsum(s.reward for s in scores) / n,
        "success_rate": sum(s.success for s in scores) / n,
        "num_conversations": n,
        "num_tasks": len(trials),
        "num_goal_calls": sum(tool_all.values()),
        "num_calls": num_calls,
        "invalid_call_rate": sum(s.num_invalid_calls for s in scores) / num_calls if num_calls else 0.0,
        "tool_accuracy": _ratio(tool_met, tool_all),
        "domain_accuracy": _ratio(dom_met, dom_all),
    }
    for k, v in pass_hat_k(trials).items():
        out[f"pass^{k}"] = v
    return out


def toolwoz_inputs(calls: Sequence[Any], task: Any) -> tuple[str, str]:
    """``(prediction, reference)`` JSON strings for one conversation, as the metric stores them.

    Optional: the metric takes Python objects directly. Use this to build string columns
    (e.g. a ``datasets.Dataset`` of results) that the metric reads back unchanged. ``task``
    is a :class:`Task`, a dataset task row, or the goal calls; ``calls`` are
    ``{"name", "arguments", "result"}`` dicts or :class:`RecordedCall` (``env.calls``).
    Both are validated here, so a malformed input fails early.
    """
    task_id, goals = parse_reference(task, 0)
    parse_prediction(calls, 0, task_id)
    reference: dict[str, Any] = {"goal_calls": [g.to_dict() for g in goals]}
    if task_id is not None:
        reference = {"id": task_id, **reference}
    return encode_input(list(calls)), encode_input(reference)
