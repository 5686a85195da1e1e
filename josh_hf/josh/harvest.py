"""Harvest JOSH search trees into TRL training datasets.

Input: per-task tree records, one JSON object per line of ``trees.jsonl`` (or the equivalent
dicts / objects with ``to_dict()``). A node's ``messages`` are the messages it ADDED to its
parent's context, so a node's full context is the concatenation along its path from the root.

Output, as ``datasets.Dataset`` in TRL's conversational formats (the reference's rules, see
``docs/josh-reference.md`` "What is harvested"):

* **SFT** (:func:`sft_dataset`): ``messages`` + ``tools``. The golden conversation (the context
  of the deepest golden node) of each task whose JOSH reward is 1.0 (under the search's
  ``credit="all"`` variant: whose ``golden_reward`` is 1.0). By default, as in the
  reference, a conversation containing any tool error, format error or failed booking is
  dropped (``drop_errors=False`` keeps it). Train with ``SFTConfig(assistant_only_loss=True)``.
* **KTO** (:func:`kto_dataset`): ``prompt`` (messages), ``completion`` (the one assistant
  message), ``label``, ``tools``. Desirable: every assistant message of the golden conversation
  with everything before it as the prompt. Undesirable: every assistant message of the last
  agent turn of each recorded node that is neither successful nor golden, kept only when its
  prompt is exactly the prompt of a desirable example of the same task.
* **DPO** (:func:`dpo_dataset`): ``prompt``, ``chosen``, ``rejected``, ``tools``: one row per
  (desirable, undesirable) pair that shares a prompt (not in the reference).

Message columns use the ``Json`` feature of ``datasets``: Arrow structs would merge the keys of
every message and every tool call's arguments across rows (``{"area": None, "trainID": ...}``),
and chat templates would then render those ``None``s. ``tools`` holds the OpenAI tool schemas
(kept, unlike the reference's function-calling harvest); it is ``None`` for the ReAct format,
whose system prompt already lists the tools as text.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..agents.react import APIRETURN, COMMAND_END
from ..agents.turn import OUT_OF_GENERATIONS_TEXT

Message = dict[str, Any]
Record = Mapping[str, Any]

# -- reading ------------------------------------------------------------------------------


def as_record(obj: Any) -> dict[str, Any]:
    """A tree record as a plain dict (accepts dicts, objects with ``to_dict()``, dataclasses)."""
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "to_dict"):
        return dict(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"not a tree record: {type(obj).__name__}")


def read_tree_records(path: str | Path) -> list[dict[str, Any]]:
    """The tree records of a ``trees.jsonl`` file, as dicts. Blank lines are skipped, and so is
    an undecodable LAST line (a write torn by a crash); any other bad line raises ``ValueError``."""
    with open(path, encoding="utf-8") as f:
        lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
    records = []
    for i, (n, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{n}: not a JSON tree record ({e})") from None
    return records


def as_records(records: Iterable[Any] | Any) -> list[dict[str, Any]]:
    """Tree records (or a single one) as a list of plain dicts."""
    # One record on its own is accepted too (a dict is iterable, so check it first).
    if isinstance(records, Mapping) or hasattr(records, "to_dict"):
        return [as_record(records)]
    return [as_record(r) for r in records]


# -- tree helpers -------------------------------------------------------------------------


def node_contexts(record: Record) -> dict[Any, list[Message]]:
    """Every node's full context (root's messages + each node's added messages down its path)."""
    nodes = {n["id"]: n for n in record["nodes"]}
    contexts: dict[Any, list[Message]] = {}

    def context(node_id: Any) -> list[Message]:
        # Iterative walk up: trees can be 15+ steps deep and a record could be malformed (cycle).
        chain = []
        current = node_id
        while current is not None and current not in contexts:
            if current in chain:
                raise ValueError(f"task {record.get('task_id')!r}: node {current!r} is its own ancestor")
            chain.append(current)
            current = nodes[current]["parent"]
        ctx = contexts[current] if current is not None else []
        for nid in reversed(chain):
            ctx = ctx + list(nodes[nid]["messages"])
            contexts[nid] = ctx
        return contexts[node_id]

    for nid in nodes:
        context(nid)
    return contexts


def golden_node_id(record: Record) -> Any | None:
    """The deepest golden node: the last id of ``golden_path`` (or, without it, the deepest
    node marked golden); ``None`` if nothing is golden."""
    path = record.get("golden_path")
    if path:
        return path[-1]
    golden = [n for n in record["nodes"] if n.get("golden")]
    if not golden:
        return None
    depth = {}
    parents = {n["id"]: n["parent"] for n in record["nodes"]}
    for n in golden:
        d, p = 0, n["parent"]
        while p is not None:
            d, p = d + 1, parents[p]
        depth[n["id"]] = d
    return max(golden, key=lambda n: depth[n["id"]])["id"]


def golden_conversation(record: Record, contexts: Mapping[Any, list[Message]] | None = None) -> list[Message]:
    """The full golden conversation: the context of the deepest golden node (``[]`` if none)."""
    gid = golden_node_id(record)
    if gid is None:
        return []
    return list((contexts or node_contexts(record))[gid])


def agent_format(record: Record) -> str:
    """``"native"`` or ``"react"``: from the record's config when it says, else from its prompt."""
    config = record.get("config") or {}
    for key in ("agent_format", "format"):
        value = config.get(key)
        if value in ("native", "react"):
            return value
    root = next((n for n in record["nodes"] if n["parent"] is None), None)
    first = (root or {}).get("messages") or [{}]
    # The ReAct system prompt spells out its command protocol; the native one never does.
    return "react" if COMMAND_END in str(first[0].get("content") or "") else "native"


def record_tools(record: Record) -> list[dict[str, Any]] | None:
    """The tool schemas to render with the chat template: the record's ``tools`` for the native
    format, ``None`` for ReAct (its system prompt lists them; rendering them twice would train
    on a prompt the agent never saw)."""
    if agent_format(record) == "react":
        return None
    return list(record.get("tools") or []) or None


def _payload_error(text: str) -> str | None:
    """Why a tool result (as the model read it) counts as an error, or None."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        value = text
    if isinstance(value, str) and value.lstrip().upper().startswith("ERROR"):
        return f"tool error: {value.strip()}"
    if isinstance(value, Mapping) and value.get("success") is False:
        return "failed booking"
    return None


def _is_feedback(message: Message) -> bool:
    """A user-role message written by the agent loop, not the user: a ReAct ``APIRETURN``
    result, or the format-error feedback both formats send (``ERROR: ...``)."""
    if message.get("role") != "user":
        return False
    content = str(message.get("content") or "").lstrip()
    return content.startswith((APIRETURN, "ERROR"))


def message_error(message: Message) -> str | None:
    """Why this message marks its conversation as containing an error, or None.

    Errors: a tool result that is an environment/format error string (``"ERROR..."``) or a
    booking with ``"success": false`` (native ``tool`` messages and ReAct ``APIRETURN``
    messages); format-error feedback to the agent; the out-of-generations filler speech.
    """
    role = message.get("role")
    content = message.get("content")
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    if role == "tool":
        return _payload_error(text)
    if role == "user":
        stripped = text.lstrip()
        if stripped.startswith(APIRETURN):
            return _payload_error(stripped[len(APIRETURN):].strip())
        if stripped.startswith("ERROR"):
            return f"format error: {stripped}"
        return None
    if role == "assistant" and OUT_OF_GENERATIONS_TEXT in text:
        return "out of generations"
    return None


def conversation_errors(messages: Sequence[Message]) -> list[str]:
    """Every error (see :func:`message_error`) in ``messages``, in order."""
    return [e for e in (message_error(m) for m in messages) if e is not None]


def last_agent_turn(context: Sequence[Message]) -> tuple[int, int]:
    """``(start, end)`` of the context's last agent turn: skip a trailing user reply (a node
    that was split ends with the user's answer to its last turn), then walk back over
    assistant, tool and agent-feedback messages until the last user (or system) message."""
    end = len(context)
    while end > 0 and context[end - 1].get("role") == "user" and not _is_feedback(context[end - 1]):
        end -= 1
    start = end
    while start > 0:
        m = context[start - 1]
        if m.get("role") in ("assistant", "tool") or _is_feedback(m):
            start -= 1
        else:
            break
    return start, end


def _key(messages: Sequence[Message]) -> str:
    # Canonical text of a message list: prompts are compared exactly, independent of key order.
    return json.dumps(list(messages), sort_keys=True, ensure_ascii=False, default=str)


def _trim_trailing_non_assistant(messages: list[Message]) -> list[Message]:
    # A user reply after the last agent turn carries no loss; leave it out of SFT examples.
    end = len(messages)
    while end > 0 and messages[end - 1].get("role") != "assistant":
        end -= 1
    return messages[:end]


# -- examples as plain dicts --------------------------------------------------------------


def _sft_reward(record: Record) -> float:
    # Under the search's credit="all" variant a goal can be credited to a dropped branch, so
    # the golden conversation alone may miss it: ``golden_reward`` (the fraction met on the
    # golden path itself) is what makes it an ideal conversation. Under the reference's
    # credit="first" the two are equal, and ``reward`` is used.
    value = record.get("golden_reward")
    if (record.get("config") or {}).get("credit") == "all" and value is not None:
        return float(value)
    return float(record.get("reward") or 0.0)


def sft_examples(records: Iterable[Any], *, drop_errors: bool = True) -> list[dict[str, Any]]:
    """SFT rows ``{"messages", "tools", "task_id"}`` (see :func:`sft_dataset`)."""
    rows = []
    for record in as_records(records):
        if _sft_reward(record) < 1.0:
            continue
        messages = _trim_trailing_non_assistant(golden_conversation(record))
        if not any(m.get("role") == "assistant" for m in messages):
            continue
        if drop_errors and conversation_errors(messages):
            continue
        rows.append({"messages": messages, "tools": record_tools(record), "task_id": str(record.get("task_id"))})
    return rows


def _task_kto(record: Record) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(desirable, undesirable) KTO rows of one task, without the ``tools``/``task_id`` columns."""
    contexts = node_contexts(record)
    golden = golden_conversation(record, contexts)
    desirable = [
        {"prompt": golden[:i], "completion": [m], "label": True}
        for i, m in enumerate(golden)
        if m.get("role") == "assistant"
    ]
    prompts = {_key(d["prompt"]) for d in desirable}
    undesirable = []
    for node in record["nodes"]:
        if not node.get("recorded") or node.get("successful") or node.get("golden"):
            continue
        ctx = contexts[node["id"]]
        start, end = last_agent_turn(ctx)
        for i in range(start, end):
            if ctx[i].get("role") == "assistant" and _key(ctx[:i]) in prompts:
                undesirable.append({"prompt": ctx[:i], "completion": [ctx[i]], "label": False})
    return desirable, undesirable


def kto_examples(records: Iterable[Any], *, drop_conflicts: bool = False) -> list[dict[str, Any]]:
    """KTO rows ``{"prompt", "completion", "label", "tools", "task_id"}`` (see :func:`kto_dataset`)."""
    rows = []
    for record in as_records(records):
        desirable, undesirable = _task_kto(record)
        if drop_conflicts:
            good = {_key(d["prompt"] + d["completion"]) for d in desirable}
            undesirable = [u for u in undesirable if _key(u["prompt"] + u["completion"]) not in good]
        extra = {"tools": record_tools(record), "task_id": str(record.get("task_id"))}
        rows.extend({**row, **extra} for row in desirable + undesirable)
    return rows


def dpo_examples(records: Iterable[Any]) -> list[dict[str, Any]]:
    """DPO rows ``{"prompt", "chosen", "rejected", "tools", "task_id"}`` (see :func:`dpo_dataset`)."""
    rows = []
    for record in as_records(records):
        desirable, undesirable = _task_kto(record)
        extra = {"tools": record_tools(record), "task_id": str(record.get("task_id"))}
        for d in desirable:
            key = _key(d["prompt"])
            for u in undesirable:
                # A failed sibling may have written the very same message (it failed later in
                # its turn): identical chosen/rejected carries no preference, so it is skipped.
                if _key(u["prompt"]) == key and _key(u["completion"]) != _key(d["completion"]):
                    rows.append(
                        {"prompt": d["prompt"], "chosen": d["completion"], "rejected": u["completion"], **extra}
                    )
    return rows


def harvest_counts(records: Iterable[Any], *, drop_errors: bool = True) -> dict[str, int]:
    """``{"sft", "kto_desirable", "kto_undesirable", "dpo"}``: how many rows each dataset gets."""
    records = as_records(records)
    kto = kto_examples(records)
    return {
        "sft": len(sft_examples(records, drop_errors=drop_errors)),
        "kto_desirable": sum(1 for r in kto if r["label"]),
        "kto_undesirable": sum(1 for r in kto if not r["label"]),
        "dpo": len(dpo_examples(records)),
    }


# -- datasets -----------------------------------------------------------------------------


def _features(kind: str):
    from datasets import Features, Json, List, Value

    messages = List(Json())
    columns = {
        "sft": {"messages": messages},
        "kto": {"prompt": messages, "completion": messages, "label": Value("bool")},
        "dpo": {"prompt": messages, "chosen": messages, "rejected": messages},
    }[kind]
    return Features({**columns, "tools": List(Json()), "task_id": Value("string")})


def _dataset(rows: list[dict[str, Any]], kind: str):
    from datasets import Dataset

    features = _features(kind)
    if not rows:  # from_list([]) loses the columns: a harvest with no example is still a typed table
        return Dataset.from_dict({name: [] for name in features}, features=features)
    return Dataset.from_list(rows, features=features)


def sft_dataset(records: Iterable[Any], *, drop_errors: bool = True):
    """The SFT ``datasets.Dataset``: ``messages`` (the golden conversation of each task with
    JOSH reward 1.0), ``tools`` (schemas or ``None``), ``task_id``.

    ``drop_errors`` (default, as in the reference) drops a conversation containing a tool error,
    format error or failed booking anywhere. Use ``SFTConfig(assistant_only_loss=True)`` so only
    the assistant's tokens are trained (the reference trained on every token).
    """
    return _dataset(sft_examples(records, drop_errors=drop_errors), "sft")


def kto_dataset(records: Iterable[Any], *, drop_conflicts: bool = False):
    """The KTO ``datasets.Dataset``: ``prompt``, ``completion``, ``label``, ``tools``, ``task_id``.

    Per task: its desirable rows (golden conversation order), then its undesirable rows (node
    order). ``drop_conflicts`` (not in the reference) also drops an undesirable row identical to
    a desirable one (a failed sibling that wrote the same message and failed later in its turn).
    """
    return _dataset(kto_examples(records, drop_conflicts=drop_conflicts), "kto")


def dpo_dataset(records: Iterable[Any]):
    """The DPO ``datasets.Dataset``: ``prompt``, ``chosen``, ``rejected``, ``tools``, ``task_id``,
    one row per (desirable, undesirable) pair with the same prompt and different completions."""
    return _dataset(dpo_examples(records), "dpo")


def harvest_datasets(records: Iterable[Any], *, drop_errors: bool = True) -> dict[str, Any]:
    """``{"sft", "kto", "dpo"}`` datasets of the same records."""
    records = as_records(records)
    return {
        "sft": sft_dataset(records, drop_errors=drop_errors),
        "kto": kto_dataset(records),
        "dpo": dpo_dataset(records),
    }


# -- Hub ----------------------------------------------------------------------------------

_CONFIG_KEYS = {
    # card field: keys the search's config may use for it (first present wins)
    "model": ("model", "model_name_or_path", "agent_model"),
    "agent_format": ("agent_format", "format"),
    "beam_size": ("beam_size", "beam"),
    "max_steps": ("max_steps", "max_josh_steps"),
    "max_generations": ("max_generations_per_turn", "max_generations"),
    "credit": ("credit",),
    "user_simulator": ("user_simulator", "user", "user_model"),
    "sampling": ("sampling", "agent_sampling"),
    "split": ("split",),
}


def card_info_from_records(records: Iterable[Any], **overrides: Any) -> dict[str, Any]:
    """What a harvest card records, from the records' configs and results (``overrides`` win).

    Keys: model, agent_format, beam_size, max_steps, max_generations, credit, user_simulator,
    sampling, split, tasks, successful_tasks, average_josh_reward, counts. The search's config
    does not name the model or the user simulator: pass them (``model=..., user_simulator=...``).
    """
    records = as_records(records)
    config = dict((records[0].get("config") or {}) if records else {})
    info: dict[str, Any] = {}
    for field, keys in _CONFIG_KEYS.items():
        info[field] = next((config[k] for k in keys if config.get(k) is not None), None)
    if info["agent_format"] is None and records:
        info["agent_format"] = agent_format(records[0])
    rewards = [float(r.get("reward") or 0.0) for r in records]
    info["tasks"] = len(records)
    info["successful_tasks"] = sum(1 for r in records if r.get("success"))
    info["average_josh_reward"] = sum(rewards) / len(rewards) if rewards else 0.0
    info["counts"] = harvest_counts(records)
    info.update(overrides)
    return info


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_harvest_card(card_info: Mapping[str, Any], *, repo_id: str | None = None,
                        metadata: Mapping[str, Any] | None = None):
    """The ``huggingface_hub.DatasetCard`` of a JOSH harvest: how it was made and what it holds.

    ``metadata`` (e.g. the ``configs``/``dataset_info`` that ``push_to_hub`` wrote) is kept in
    the card's YAML header, with JOSH tags added.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    counts = dict(card_info.get("counts") or {})
    data = dict(metadata or {})
    tags = list(data.get("tags") or [])
    for tag in ("josh", "toolwoz", "tool-calling", "trl", "sft", "kto", "dpo", "synthetic"):
        if tag not in tags:
            tags.append(tag)
    data["tags"] = tags
    data.setdefault("license", "mit")
    card_data = DatasetCardData(**data)
    rows = [
        ("agent model", card_info.get("model")),
        ("agent format", card_info.get("agent_format")),
        ("agent sampling", card_info.get("sampling")),
        ("beam size", card_info.get("beam_size")),
        ("max JOSH steps", card_info.get("max_steps")),
        ("generations per agent turn", card_info.get("max_generations")),
        ("goal credit", card_info.get("credit")),
        ("user simulator", card_info.get("user_simulator")),
        ("ToolWOZ split", card_info.get("split")),
        ("tasks searched", card_info.get("tasks")),
        ("tasks with JOSH reward 1.0", card_info.get("successful_tasks")),
        ("average JOSH reward", card_info.get("average_josh_reward")),
    ]
    settings = "\n".join(f"| {name} | {_cell(value)} |" for name, value in rows)
    load = repo_id or "<this repo>"
    kto_rows = f"{_cell(counts.get('kto_desirable'))} desirable + {_cell(counts.get('kto_undesirable'))} undesirable"
    text = f"""
# JOSH harvest{f": {repo_id}" if repo_id else ""}

Training data harvested with JOSH (Juxtaposed Outcomes for Simulation Harvesting,
[arXiv 2409.04617](https://arxiv.org/abs/2409.04617)) from simulated ToolWOZ conversations by
[josh-hf](https://github.com/asappresearch/josh-llm-simulation-training): the agent's own
turns that led to a goal call, juxtaposed with turns it sampled from the same context that did not.

## How it was harvested

| setting | value |
|---|---|
{settings}

## Configurations

| config | rows | TRL trainer | columns |
|---|---|---|---|
| `sft` | {_cell(counts.get("sft"))} | `SFTTrainer` (`assistant_only_loss=True`) | `messages`, `tools`, `task_id` |
| `kto` | {kto_rows} | `KTOTrainer` | `prompt`, `completion`, `label`, `tools`, `task_id` |
| `dpo` | {_cell(counts.get("dpo"))} | `DPOTrainer` | `prompt`, `chosen`, `rejected`, `tools`, `task_id` |

- **sft**: the golden conversation (every golden turn, with its tool calls and results) of each
  task whose JOSH reward is 1.0; conversations with a tool error, format error or failed booking
  are dropped, as in the reference.
- **kto**: desirable = each assistant message of a golden conversation, with everything before it
  as the prompt; undesirable = each assistant message of the last agent turn of a recorded branch
  that reached no goal, kept only when its prompt is exactly a desirable prompt.
- **dpo**: one pair per desirable and undesirable message with the same prompt.

Messages use the chat format of `transformers` chat templates (assistant `tool_calls` with
arguments as objects, `tool` messages for results; ReAct conversations keep their text commands).
`tools` holds the OpenAI tool schemas (`null` for the ReAct format, whose system prompt lists them).

```python
from datasets import load_dataset

kto = load_dataset("{load}", "kto", split="train")
```

## Citation

```bibtex
@article{{lattimer2024sparse,
  title={{Sparse Rewards Can Self-Train Dialogue Agents}},
  author={{Lattimer, Barrett Martin and Gangal, Varun and McDonald, Ryan and Yang, Yi}},
  journal={{arXiv preprint arXiv:2409.04617}},
  year={{2024}}
}}
```
"""
    return DatasetCard(f"---\n{card_data.to_yaml()}\n---\n{text}")


def push_harvest_to_hub(datasets_dict: Mapping[str, Any], repo_id: str, *, card_info: Mapping[str, Any],
                        private: bool | None = None, token: str | None = None) -> list[str]:
    """Push each non-empty dataset as a config (``sft``, ``kto``, ``dpo``; split ``train``) of
    the dataset repo ``repo_id``, then its card. Returns the configs pushed."""
    from datasets import DatasetDict
    from huggingface_hub import DatasetCard, HfApi

    HfApi(token=token).create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    pushed = []
    for name, dataset in datasets_dict.items():
        if len(dataset) == 0:
            continue  # an empty parquet config only confuses the viewer and loaders
        DatasetDict({"train": dataset}).push_to_hub(repo_id, config_name=name, private=private, token=token)
        pushed.append(name)
    # push_to_hub wrote the README's YAML (configs -> data files); keep it under our text.
    try:
        metadata = DatasetCard.load(repo_id, repo_type="dataset", token=token).data.to_dict()
    except Exception:  # noqa: BLE001 - no card yet (nothing was pushed): write ours alone
        metadata = {}
    render_harvest_card(card_info, repo_id=repo_id, metadata=metadata).push_to_hub(
        repo_id, repo_type="dataset", token=token
    )
    return pushed


__all__ = [
    "agent_format",
    "as_record",
    "as_records",
    "card_info_from_records",
    "conversation_errors",
    "dpo_dataset",
    "dpo_examples",
    "golden_conversation",
    "golden_node_id",
    "harvest_counts",
    "harvest_datasets",
    "kto_dataset",
    "kto_examples",
    "last_agent_turn",
    "message_error",
    "node_contexts",
    "push_harvest_to_hub",
    "read_tree_records",
    "record_tools",
    "render_harvest_card",
    "sft_dataset",
    "sft_examples",
]
