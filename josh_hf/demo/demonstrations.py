"""Tool-calling demonstrations for supervised warm-up of a ToolWOZ agent.

Two sources, both written in exactly the context the ``native`` agent format builds at
evaluation time (:class:`~josh_hf.agents.turn.AgentState`: the format's system prompt, then
user / assistant messages, assistant tool calls with ids ``call00001``, ``call00002``, ...,
and ``role: tool`` results whose content is the result as JSON):

* ``multiwoz`` (:func:`multiwoz_demonstration`): a MultiWOZ dialogue with the original user
  and system turns, and the ``search_*`` / ``book_*`` calls inserted where its dialogue state
  shows the system consulted the database or booked. Every call is executed on a fresh
  :class:`~josh_hf.toolwoz.env.ToolWOZEnv` of the dialogue's own task, so each result is the
  environment's real answer, and the conversation is scored like any agent's.
* ``synthetic`` (:func:`synthetic_demonstrations`): conversations between the ``rule-based``
  agent and the ``agenda`` user, simulated by :class:`~josh_hf.simulation.ConversationRunner`;
  ``messages`` is the agent's context (``Transcript.context``), reward from the environment.

How MultiWOZ dialogue states become calls (the heuristics; see :func:`insert_calls`):

1. The dialogue state at system turn *t* (``metadata``) is what the wizard knew when writing
   turn *t*. A domain's **constraints** are its ``semi`` slots whose value is not empty
   (``""``, ``"not mentioned"``, ``"dontcare"``, ... are dropped: the database skips them
   and the scorer ignores them).
2. A **search** ``search_<domain>(constraints)`` is *pending* once the constraints differ from
   those of the last inserted search of that domain. It is inserted before the first system
   turn (from that one on) whose dialogue act consults the database for the domain
   (``<Domain>-Inform|Recommend|Select|NoOffer|OfferBook|OfferBooked``) or books in it, so a
   wizard asking a question does not trigger a search on half the constraints. A search still
   pending after the last system turn is inserted before that turn (the final constraints are
   what the goal's search needs).
3. A **booking** is inserted where ``book.booked`` grows: one ``book_<domain>`` per new record,
   with the state's non-empty book slots (``people``, ``day``, ``time`` / ``stay``) and the
   record's uid (``name`` / ``trainID``). Attempts that failed in MultiWOZ (``Booking-NoBook``
   with no new record) get no call: there is nothing in the state to rebuild them from.
4. Within a system turn, searches come before bookings and domains follow the order of
   :data:`~josh_hf.toolwoz.tools.DOMAINS`; each call is its own assistant message (one call per
   generation, as the rule-based agent does) unless the turn has more than two calls, then they
   share one message, so every turn fits the evaluation's three generations per turn.

The system's words are kept as they are: where the environment's search steers to a different
entity than the wizard named, the text and the result disagree. Use :func:`build_demonstrations`'
``min_reward`` / the ``success`` column to keep only conversations whose calls reach the goal.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..agents.formats import result_text
from ..agents.native import NativeFormat
from ..toolwoz.matching import is_empty
from ..toolwoz.tools import DOMAINS, uid_key

if TYPE_CHECKING:
    from datasets import Dataset

    from ..toolwoz.benchmark import ToolWOZ
    from ..toolwoz.tasks import Task

Message = dict[str, Any]

CONFIG_NAME = "demonstrations"
SPLIT_NAME = "train"
SOURCES = ("multiwoz", "synthetic")
HELD_OUT_SPLITS = ("test", "test_full")
"""Splits whose tasks never become demonstrations (the 450 test tasks are inside test_full)."""

_CONSULT_ACTS = ("Inform", "Recommend", "Select", "NoOffer", "OfferBook", "OfferBooked")
_ACT_DOMAIN = {"hotel": "Hotel", "restaurant": "Restaurant", "attraction": "Attraction", "train": "Train"}


def demonstration_features():
    """Columns: ``messages`` and ``tools`` as ``Json`` (as :mod:`josh_hf.josh.harvest` stores them),
    ``source``, ``task_id``, ``reward``, ``success``, ``num_calls``."""
    from datasets import Features, Json, List, Value

    return Features({
        "messages": List(Json()),
        "tools": List(Json()),
        "source": Value("string"),
        "task_id": Value("string"),
        "reward": Value("float64"),
        "success": Value("bool"),
        "num_calls": Value("int32"),
    })


# -- MultiWOZ → tool calls -------------------------------------------------------------------


def constraints(state: Mapping[str, Any], domain: str, allowed: Iterable[str]) -> dict[str, str]:
    """The non-empty ``semi`` slots of ``domain`` in a MultiWOZ dialogue state (allowed keys only)."""
    semi = ((state.get(domain) or {}).get("semi")) or {}
    keep = set(allowed)
    return {k: v for k, v in semi.items() if k in keep and isinstance(v, str) and v and not is_empty(v)}


def _booked(state: Mapping[str, Any], domain: str) -> list[dict[str, Any]]:
    return list(((state.get(domain) or {}).get("book") or {}).get("booked") or [])


def _consults(dialog_act: Any, domain: str) -> bool:
    """Whether a system turn's dialogue act shows it read the database for ``domain``."""
    if not isinstance(dialog_act, Mapping):
        return False
    name = _ACT_DOMAIN[domain]
    return any(k in dialog_act for k in (f"{name}-{a}" for a in _CONSULT_ACTS))


def insert_calls(task: Task, toolwoz: ToolWOZ) -> list[list[tuple[str, dict[str, str]]]]:
    """The calls to insert before each turn of ``task.dialogue`` (``[]`` for user turns), by the
    heuristics of the module docstring: ``[(tool name, arguments), ...]`` per turn."""
    params = toolwoz.tools.parameters
    dialogue = task.dialogue
    system_turns = [i for i, t in enumerate(dialogue) if t["role"] == "assistant"]
    out: list[list[tuple[str, dict[str, str]]]] = [[] for _ in dialogue]
    searched: dict[str, dict[str, str]] = {d: {} for d in DOMAINS}
    booked_count = {d: 0 for d in DOMAINS}
    for i in system_turns:
        state = dialogue[i].get("metadata") or {}
        act = dialogue[i].get("dialog_act")
        last = i == system_turns[-1]
        searches, books = [], []
        for d in DOMAINS:
            booked = _booked(state, d)
            new_records = booked[booked_count[d]:]
            booked_count[d] = max(booked_count[d], len(booked))
            wanted = constraints(state, d, params.get(f"search_{d}", ()))
            if wanted and wanted != searched[d] and (_consults(act, d) or new_records or last):
                searches.append((f"search_{d}", wanted))
                searched[d] = wanted
            book_state = (state.get(d) or {}).get("book") or {}
            for record in new_records:
                uid = record.get(uid_key(d))
                if not isinstance(uid, str) or not uid:
                    continue
                args = {k: v for k, v in book_state.items()
                        if k in params.get(f"book_{d}", ()) and isinstance(v, str) and v and not is_empty(v)}
                args[uid_key(d)] = uid
                books.append((f"book_{d}", args))
        out[i] = searches + books
    return out


def _call_messages(calls: Sequence[tuple[str, dict[str, str]]], env: Any, counter: int) -> tuple[list[Message], int]:
    """Assistant tool-call message(s) and tool results for one system turn's calls, as
    ``NativeFormat.step_messages`` writes them (ids as the agent loop numbers them)."""
    NativeFormat()
    groups = [list(calls)] if len(calls) > 2 else [[c] for c in calls]
    messages: list[Message] = []
    for group in groups:
        ids = []
        for _ in group:
            counter += 1
            ids.append(f"call{counter:05d}")
        messages.append({
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "id": cid, "function": {"name": name, "arguments": dict(args)}}
                           for cid, (name, args) in zip(ids, group)],
        })
        for cid, (name, args) in zip(ids, group):
            result = env.call(name, dict(args))
            messages.append({"role": "tool", "tool_call_id": cid, "name": name, "content": result_text(result)})
    return messages, counter


def multiwoz_demonstration(toolwoz: ToolWOZ, task: Task | str) -> dict[str, Any]:
    """One MultiWOZ dialogue in tool-calling form, scored on its own task.

    Returns a row: ``messages`` (system prompt, the original turns, inserted calls with the
    environment's real results), ``tools``, ``source="multiwoz"``, ``task_id``, ``reward``,
    ``success``, ``num_calls``.
    """
    task = toolwoz.task(task) if isinstance(task, str) else task
    env = toolwoz.env(task.id)
    fmt = NativeFormat()
    messages: list[Message] = [{"role": "system", "content": fmt.render_system_prompt(env.tools)}]
    counter = 0
    for turn, calls in zip(task.dialogue, insert_calls(task, toolwoz)):
        text = turn.get("text", "").strip()
        if turn["role"] == "user":
            messages.append({"role": "user", "content": text})
            continue
        if calls:
            new, counter = _call_messages(calls, env, counter)
            messages.extend(new)
        messages.append(fmt.speech_message(text))
    if messages[-1]["role"] == "user":
        # A dialogue whose last turn is the user's: the agent's context never ends on a user message.
        messages.pop()
    score = env.score()
    return {
        "messages": messages,
        "tools": env.tools,
        "source": "multiwoz",
        "task_id": task.id,
        "reward": float(score.reward),
        "success": bool(score.success),
        "num_calls": env.num_calls,
    }


# -- rule-based agent x agenda user --------------------------------------------------------------


def synthetic_demonstrations(
    toolwoz: ToolWOZ,
    task_ids: Sequence[str],
    *,
    seed: int = 0,
    trials: int = 1,
    user: Any = None,
) -> list[dict[str, Any]]:
    """Conversations between the ``rule-based`` agent and the ``agenda`` user (native format).

    Each row's ``messages`` is the agent's full context; ``reward`` / ``success`` come from the
    environment of the conversation's task.
    """
    from ..agents.rule_based import RuleBasedAgent
    from ..simulation import ConversationRunner, RunnerConfig
    from ..users import load_user

    runner = ConversationRunner(
        toolwoz, RuleBasedAgent(toolwoz), user if user is not None else load_user("agenda"),
        RunnerConfig(agent_format="native", seed=seed),
    )
    tools = toolwoz.tools.openai_tools()
    rows = []
    for t in runner.run(list(task_ids), trials=trials):
        rows.append({
            "messages": t.context,
            "tools": tools,
            "source": "synthetic",
            "task_id": t.task_id,
            "reward": float(t.reward),
            "success": bool(t.success),
            "num_calls": len(t.tool_calls),
        })
    return rows


# -- the dataset -------------------------------------------------------------------------------


def training_task_ids(toolwoz: ToolWOZ, split: str | None = None) -> list[str]:
    """The tasks demonstrations may come from: ``split`` (default ``train`` when the build has it,
    else ``validation``), minus every task of ``test`` / ``test_full``. Raises for a held-out split."""
    if split is None:
        split = "train" if "train" in toolwoz.splits else "validation"
    if split in HELD_OUT_SPLITS:
        raise ValueError(f"demonstrations must not come from the {split!r} split (it is held out for evaluation)")
    held_out = {i for s in HELD_OUT_SPLITS for i in toolwoz.splits.get(s, [])}
    return [i for i in toolwoz.splits[split] if i not in held_out]


def build_demonstrations(
    toolwoz: ToolWOZ,
    *,
    split: str | None = None,
    sources: Sequence[str] = SOURCES,
    seed: int = 0,
    synthetic_trials: int = 1,
    goal_variants: int = 0,
    limit: int | None = None,
    min_reward: float | None = None,
) -> Dataset:
    """Demonstrations from ``sources`` over the training tasks (see :func:`training_task_ids`).

    ``synthetic_trials`` synthetic conversations per task, each with its own seed (the agenda
    user words and orders its requests differently per seed, which is what a model trained from
    scratch needs more of). ``goal_variants`` adds that many ``variant`` conversations per task:
    the rule-based agent and the agenda user on the task with its values redrawn from the
    database (:mod:`josh_hf.demo.variants`; ``task_id`` is the parent task's). ``limit`` keeps
    the first N tasks; ``min_reward`` drops conversations scoring below it. Rows: MultiWOZ
    conversions first, then synthetic conversations, then variants, each in task order.
    """
    if synthetic_trials < 1:
        raise ValueError(f"synthetic_trials must be >= 1, got {synthetic_trials}")
    if goal_variants < 0:
        raise ValueError(f"goal_variants must be >= 0, got {goal_variants}")
    from datasets import Dataset

    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise ValueError(f"unknown demonstration source(s) {unknown}; choose from {SOURCES}")
    ids = training_task_ids(toolwoz, split)
    if limit is not None:
        ids = ids[:limit]
    rows: list[dict[str, Any]] = []
    if "multiwoz" in sources:
        rows += [multiwoz_demonstration(toolwoz, i) for i in ids]
    if "synthetic" in sources:
        rows += synthetic_demonstrations(toolwoz, ids, seed=seed, trials=synthetic_trials)
    if goal_variants:
        from .variants import parent_id, with_goal_variants

        extended, variant_ids = with_goal_variants(toolwoz, ids, goal_variants, seed=seed)
        for row in synthetic_demonstrations(extended, variant_ids, seed=seed):
            rows.append({**row, "source": "variant", "task_id": parent_id(row["task_id"])})
    if min_reward is not None:
        rows = [r for r in rows if r["reward"] >= min_reward]
    return Dataset.from_list(rows, features=demonstration_features())


def demonstration_stats(ds: Dataset) -> dict[str, dict[str, float]]:
    """Per source: conversations, success rate and average reward of their calls."""
    out: dict[str, dict[str, float]] = {}
    columns = list(zip(ds["source"], ds["success"], ds["reward"], ds["num_calls"]))
    for source in sorted({c[0] for c in columns}):
        rows = [c for c in columns if c[0] == source]
        n = len(rows)
        out[source] = {
            "conversations": n,
            "success_rate": sum(c[1] for c in rows) / n,
            "average_reward": sum(c[2] for c in rows) / n,
            "calls_per_conversation": sum(c[3] for c in rows) / n,
        }
    return out


# -- the dataset folder ------------------------------------------------------------------------


def add_demonstrations_config(folder: str | os.PathLike[str], ds: Dataset) -> list[str]:
    """Write ``ds`` as the ``demonstrations`` config of a built ToolWOZ dataset folder.

    Parquet goes under ``demonstrations/`` (stale shards removed, as ``hub.write_dataset`` does),
    and the card's YAML ``configs:`` gains (or has replaced) the ``demonstrations`` entry with its
    exact file list; the rest of the card is kept byte for byte. Returns the written paths.
    """
    import re

    import yaml

    from ..toolwoz.hub import _write_parquet, read_card_metadata

    out = Path(folder)
    readme = out / "README.md"
    meta = read_card_metadata(out)
    if meta is None or not meta.get("configs"):
        raise FileNotFoundError(f"{out} is not a built ToolWOZ dataset folder (no README.md with configs:)")
    target = out / CONFIG_NAME
    target.mkdir(exist_ok=True)
    for stale in target.glob("*.parquet"):
        stale.unlink()
    paths = _write_parquet(ds, target, SPLIT_NAME)
    configs = [c for c in meta["configs"] if c.get("config_name") != CONFIG_NAME]
    configs.append({"config_name": CONFIG_NAME, "data_files": [{"split": SPLIT_NAME, "path": paths}]})
    meta["configs"] = configs
    text = readme.read_text(encoding="utf-8")
    body = re.match(r"^---\s*\n.*?\n---\s*(?:\n|$)(.*)$", text, re.DOTALL).group(1)  # type: ignore[union-attr]
    yaml_text = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    section = _card_section(ds)
    body = _replace_section(body, section)
    readme.write_text(f"---\n{yaml_text}---\n{body}", encoding="utf-8")
    return paths


_SECTION_START = "<!-- demonstrations:start -->"
_SECTION_END = "<!-- demonstrations:end -->"


def _card_section(ds: Dataset) -> str:
    stats = demonstration_stats(ds)
    lines = [
        _SECTION_START,
        "## The `demonstrations` config",
        "",
        ("Tool-calling conversations for supervised warm-up, in the context the `native` agent format "
        "builds (system prompt, tool calls, `role: tool` results); `messages` and `tools` are JSON "
        "(`datasets.Json`). Only tasks outside `test` / `test_full` are used. Sources:"),
        "",
        ("- `multiwoz`: MultiWOZ dialogues with `search_*` / `book_*` calls inserted where the dialogue "
        "state shows the wizard consulted the database or booked, executed on the task's environment;"),
        "- `synthetic`: the `rule-based` agent talking with the `agenda` user;",
        ("- `variant` (when built with goal variants): the same, on a training task whose values are "
        "redrawn from the database (`task_id` is the task it derives from)."),
        "",
        "| source | conversations | success rate | average reward |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| `{s}` | {v['conversations']} | {v['success_rate']:.3f} | {v['average_reward']:.3f} |"
              for s, v in stats.items()]
    lines += ["", "```python", "from datasets import load_dataset", "",
              f'demos = load_dataset("<user>/toolwoz", "{CONFIG_NAME}", split="{SPLIT_NAME}")', "```", _SECTION_END]
    return "\n".join(lines)


def _replace_section(body: str, section: str) -> str:
    start, end = body.find(_SECTION_START), body.find(_SECTION_END)
    if start >= 0 and end > start:
        return body[:start] + section + body[end + len(_SECTION_END):]
    anchor = body.find("\n## Citation")
    if anchor >= 0:
        return body[:anchor] + "\n" + section + "\n" + body[anchor:]
    return body.rstrip("\n") + "\n\n" + section + "\n"


def load_demonstrations(path: str | os.PathLike[str], revision: str | None = None, **kwargs: Any) -> Dataset:
    """The ``demonstrations`` config of a ToolWOZ dataset (local folder or Hub id), ``train`` split.
    ``kwargs`` go to ``datasets.load_dataset`` (``cache_dir``, ``download_mode``, ...)."""
    import datasets

    if revision:
        kwargs["revision"] = revision
    if Path(path).is_dir() and not kwargs:
        from ..toolwoz.hub import load_local_config

        try:
            return load_local_config(path, CONFIG_NAME)[SPLIT_NAME]
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e}: build it with dataset_scripts/build_demonstrations.py") from None
    return datasets.load_dataset(str(path), CONFIG_NAME, split=SPLIT_NAME, **kwargs)


def demonstration_text(ds: Dataset) -> Iterable[str]:
    """Every message's text and every call's JSON (tokenizer training corpus)."""
    for messages in ds["messages"]:
        for m in messages:
            if m.get("content"):
                yield str(m["content"])
            for tc in m.get("tool_calls") or []:
                fn = tc["function"]
                yield json.dumps({"name": fn["name"], "arguments": fn["arguments"]}, ensure_ascii=False)


__all__ = [
    "CONFIG_NAME",
    "SOURCES",
    "add_demonstrations_config",
    "build_demonstrations",
    "constraints",
    "demonstration_features",
    "demonstration_stats",
    "demonstration_text",
    "insert_calls",
    "load_demonstrations",
    "multiwoz_demonstration",
    "synthetic_demonstrations",
    "training_task_ids",
]
