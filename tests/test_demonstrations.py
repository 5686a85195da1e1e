"""Demonstrations (MultiWOZ conversions, rule-based x agenda conversations), their dataset
config, and the scratch agent's tiny training preset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pytest
import yaml

from josh_hf.agents.formats import AgentStep, ParsedCall
from josh_hf.agents.native import NativeFormat
from josh_hf.agents.turn import AgentState
from josh_hf.demo.demonstrations import (
    add_demonstrations_config,
    build_demonstrations,
    insert_calls,
    load_demonstrations,
    multiwoz_demonstration,
    synthetic_demonstrations,
    training_task_ids,
)
from josh_hf.toolwoz import ToolWOZ, default_multiwoz_path
from josh_hf.toolwoz.hub import read_card_metadata, write_dataset

pytestmark = pytest.mark.skipif(not default_multiwoz_path().exists(), reason="MultiWOZ data folder not available")

# Measured over the 793 validation dialogues: 654 conversions (0.8247) reach reward 1.0 on their
# own task, average reward 0.9280 (the misses are dialogue states lacking a slot the goal has,
# mostly a train's departure/destination/time). The floors sit just under.
CONVERSION_SUCCESS_FLOOR = 0.82
CONVERSION_REWARD_FLOOR = 0.92

# MUL0013 (validation), read by hand: the wizard reports "multiple hotels" with parking and wifi
# (Hotel-Inform), then a guesthouse, then Indian cheap restaurants, then one in the north, then
# books royal spice for 1 at 12:15 on Monday (reference CSP29AM3). Turn 5 ("moderately priced")
# and the goodbye consult nothing new.
MUL0013_CALLS = {
    1: [("search_hotel", {"parking": "yes", "internet": "yes"})],
    3: [("search_hotel", {"parking": "yes", "internet": "yes", "type": "guesthouse"})],
    7: [("search_restaurant", {"food": "indian", "pricerange": "cheap"})],
    9: [("search_restaurant", {"food": "indian", "pricerange": "cheap", "area": "north"})],
    11: [("book_restaurant", {"people": "1", "day": "monday", "time": "12:15", "name": "royal spice"})],
}

pytestmark = [pytestmark, pytest.mark.usefixtures("private_datasets_cache")]


@pytest.fixture(scope="module")
def tw() -> ToolWOZ:
    return ToolWOZ.from_multiwoz(default_multiwoz_path())


@pytest.fixture(scope="module")
def small_demos(tw: ToolWOZ) -> datasets.Dataset:
    """Both sources over the first 6 validation tasks."""
    return build_demonstrations(tw, split="validation", limit=6)


def _calls(messages: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(tc["function"]["name"], tc["function"]["arguments"]) for m in messages for tc in m.get("tool_calls") or []]


# -- MultiWOZ conversion -------------------------------------------------------------------------


def test_hand_checked_dialogue_gets_its_calls(tw: ToolWOZ) -> None:
    task = tw.task("MUL0013")
    calls = insert_calls(task, tw)
    assert {i: c for i, c in enumerate(calls) if c} == MUL0013_CALLS
    row = multiwoz_demonstration(tw, task)
    assert (row["reward"], row["success"], row["num_calls"], row["source"]) == (1.0, True, 5, "multiwoz")
    msgs = row["messages"]
    # The original turns, in order, with the calls in front of the system turns that needed them.
    spoken = [m["content"] for m in msgs if m["role"] in ("user", "assistant") and not m.get("tool_calls")]
    assert spoken == [t["text"].strip() for t in task.dialogue]
    assert [m["role"] for m in msgs[:5]] == ["system", "user", "assistant", "tool", "assistant"]
    booking = msgs[msgs.index(next(m for m in msgs if m.get("name") == "book_restaurant"))]
    assert booking["tool_call_id"] == "call00005"
    assert json.loads(booking["content"]) == {"success": True, "return": {"name": "royal spice", "reference": "CSP29AM3"}}
    # A search result is the environment's real answer: the north's cheap Indian is royal spice.
    last_search = [m for m in msgs if m.get("name") == "search_restaurant"][-1]
    assert json.loads(last_search["content"])[0]["name"] == "royal spice"


def test_messages_are_what_the_native_agent_sees(tw: ToolWOZ) -> None:
    row = multiwoz_demonstration(tw, "MUL0013")
    env = tw.env("MUL0013")
    fmt = NativeFormat()
    # Same system prompt as a native agent's fresh context, same tools.
    assert row["messages"][0] == AgentState.start(env, fmt).context[0]
    assert row["tools"] == env.tools
    # Every call + result pair is exactly what NativeFormat.step_messages writes for that step.
    msgs = row["messages"]
    for i, m in enumerate(msgs):
        if not m.get("tool_calls"):
            continue
        tc = m["tool_calls"][0]["function"]
        call = ParsedCall(name=tc["name"], arguments=tc["arguments"], id=m["tool_calls"][0]["id"])
        result = env.call(tc["name"], tc["arguments"])
        assert fmt.step_messages(AgentStep(calls=[call], content=""), [result]) == msgs[i:i + 2]


def test_converted_validation_dialogues_reach_the_goal(tw: ToolWOZ) -> None:
    rows = [multiwoz_demonstration(tw, i) for i in training_task_ids(tw, "validation")]
    assert len(rows) == 793
    success = sum(r["success"] for r in rows) / len(rows)
    reward = sum(r["reward"] for r in rows) / len(rows)
    assert success >= CONVERSION_SUCCESS_FLOOR and reward >= CONVERSION_REWARD_FLOOR, (success, reward)
    # The reward column is the env's score of the calls in the messages, replayed from scratch.
    for row in rows[:50]:
        env = tw.env(row["task_id"])
        for name, args in _calls(row["messages"]):
            env.call(name, args)
        assert env.score().reward == row["reward"]


def test_test_tasks_never_become_demonstrations(tw: ToolWOZ) -> None:
    ids = set(training_task_ids(tw))
    assert len(ids) == 793 and not ids & set(tw.splits["test_full"])
    for split in ("test", "test_full"):
        with pytest.raises(ValueError, match="held out"):
            training_task_ids(tw, split)


# -- synthetic conversations ----------------------------------------------------------------------


def test_synthetic_conversations_are_scored_by_the_env(tw: ToolWOZ) -> None:
    ids = training_task_ids(tw)[:4]
    rows = synthetic_demonstrations(tw, ids)
    assert [r["task_id"] for r in rows] == ids
    assert all(r["source"] == "synthetic" for r in rows)
    for row in rows:
        assert row["messages"][0] == {"role": "system", "content": NativeFormat().render_system_prompt(row["tools"])}
        env = tw.env(row["task_id"])
        for name, args in _calls(row["messages"]):
            env.call(name, args)
        score = env.score()
        assert (score.reward, score.success) == (row["reward"], row["success"])
        assert row["num_calls"] == len(_calls(row["messages"]))
    # The rule-based agent solves these four (its validation success rate is 0.948).
    assert [r["reward"] for r in rows] == [1.0, 1.0, 1.0, 1.0]


def test_synthetic_trials_vary_the_wording_not_the_goal(tw: ToolWOZ) -> None:
    ds = build_demonstrations(tw, split="validation", sources=["synthetic"], synthetic_trials=3, limit=4)
    ids = training_task_ids(tw)[:4]
    assert list(ds["task_id"]) == [i for i in ids for _ in range(3)]
    for k, task_id in enumerate(ids):
        trials = ds.select(range(3 * k, 3 * k + 3))
        openings = {r["messages"][1]["content"] for r in trials}
        # Each trial has its own seed, so the user's first request is worded differently ...
        assert len(openings) > 1, openings
        # ... while the goal stays the task's: the rule-based agent reaches it every time.
        assert list(trials["reward"]) == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="synthetic_trials"):
        build_demonstrations(tw, split="validation", sources=["synthetic"], synthetic_trials=0)


# -- the dataset config ---------------------------------------------------------------------------


def test_demonstrations_config_is_added_to_a_built_folder(tw: ToolWOZ, small_demos: datasets.Dataset,
                                                          tmp_path: Path) -> None:
    folder = tmp_path / "toolwoz"
    write_dataset(tw, folder, source_description="test")
    before = read_card_metadata(folder)
    assert list(small_demos["source"]) == ["multiwoz"] * 6 + ["synthetic"] * 6
    paths = add_demonstrations_config(folder, small_demos)
    assert paths == ["demonstrations/train-00000-of-00001.parquet"]
    meta = read_card_metadata(folder)
    assert [c["config_name"] for c in meta["configs"]] == ["tasks", "databases", "tools", "demonstrations"]
    assert meta["configs"][:3] == before["configs"]
    assert meta["configs"][3]["data_files"] == [{"split": "train", "path": paths}]
    # Adding it again replaces the config and the card section instead of duplicating them.
    add_demonstrations_config(folder, small_demos.select(range(3)))
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert card.count("## The `demonstrations` config") == 1
    assert yaml.safe_load(card.split("---")[1])["configs"][3]["config_name"] == "demonstrations"
    loaded = load_demonstrations(folder)
    assert len(loaded) == 3
    assert loaded[0]["messages"] == small_demos[0]["messages"] and loaded[0]["tools"] == small_demos[0]["tools"]
    # The other configs still load, and so does ToolWOZ itself.
    assert ToolWOZ.from_dataset(folder).splits == tw.splits


def test_build_script_writes_the_config(tw: ToolWOZ, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    folder = tmp_path / "toolwoz"
    write_dataset(tw, folder, source_description="test")
    path = Path(__file__).resolve().parents[1] / "dataset_scripts" / "build_demonstrations.py"
    spec = importlib.util.spec_from_file_location("build_demonstrations", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    assert module.main(["--dataset", str(folder), "--limit", "2", "--sources", "multiwoz"]) == 0
    assert "wrote 2 demonstrations" in capsys.readouterr().out
    # Its own cache: datasets keys a local file's cache by its mtime, and the previous test wrote
    # a file of the same name within the same second.
    ds = datasets.load_dataset(str(folder), "demonstrations", split="train", cache_dir=str(tmp_path / "cache"))
    assert list(ds["task_id"]) == training_task_ids(tw)[:2] and list(ds["source"]) == ["multiwoz", "multiwoz"]


# -- the scratch agent --------------------------------------------------------------------------


def test_tool_values_become_whole_tokens_that_survive_a_reload(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from josh_hf.demo.scratch import tool_values, train_tokenizer

    tools = [{"type": "function", "function": {"name": "search_restaurant", "parameters": {"type": "object",
              "properties": {"food": {"type": "string"}, "name": {"type": "string"}}}}}]
    messages = [
        {"role": "user", "content": "Some cheap international food, please."},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
            "name": "search_restaurant", "arguments": json.dumps({"food": "international"})}}]},
        # "name" is a parameter, so it counts; "address" and "phone" are not.
        {"role": "tool", "content": json.dumps([{"name": "the missing sock", "address": "finders corner",
                                                  "phone": "01223812660", "food": "international"}])},
        {"role": "tool", "content": "ERROR: not JSON"},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
            "name": "search_restaurant", "arguments": '{"food": "broken'}}]},  # malformed: skipped
        {"role": "assistant", "content": "I found the missing sock."},
    ]
    rows = datasets.Dataset.from_dict({"messages": [messages] * 3, "tools": [tools] * 3})
    assert tool_values(rows) == ["international", "the missing sock"]

    tokenizer = train_tokenizer(rows, 400, value_tokens=True)
    plain = train_tokenizer(rows, 400)
    text = 'I found the missing sock. {"name": "the missing sock"}'
    assert tokenizer.tokenize(text).count("the missing sock") == 2
    assert "the missing sock" not in plain.tokenize(text)
    # Whole words only: a value inside a longer word is left to BPE.
    assert "international" not in tokenizer.tokenize("internationally")
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_scratch_model_weights_start_at_the_configured_scale() -> None:
    from josh_hf.demo.scratch import build_model, get_config
    from josh_hf.testing.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(["a tiny corpus for a tiny tokenizer"], vocab_size=300)
    for std in (0.02, 0.1):
        config = get_config("tiny", hidden_size=256, initializer_range=std)
        model = build_model(tokenizer, config)
        assert model.config.initializer_range == std
        # Tens of thousands of draws: the sample std lies within 3% of the configured one.
        for weight in (model.get_input_embeddings().weight, model.model.layers[0].self_attn.q_proj.weight):
            assert abs(weight.detach().std().item() - std) < 0.03 * std


def test_bare_template_renders_the_conversation_without_the_system_turn(small_demos: datasets.Dataset) -> None:
    from josh_hf.demo.scratch import BARE_SCRATCH_CHAT_TEMPLATE, SCRATCH_CHAT_TEMPLATE, bare_template, train_tokenizer

    rows = small_demos.select(range(4)).select_columns(["messages", "tools"])
    bare = train_tokenizer(rows, 600, chat_template=BARE_SCRATCH_CHAT_TEMPLATE)
    full = train_tokenizer(rows, 600)
    messages, tools = rows[0]["messages"], rows[0]["tools"]
    assert messages[0]["role"] == "system"
    with_system = full.apply_chat_template(messages, tools=tools, tokenize=False)
    without = bare.apply_chat_template(messages, tools=tools, tokenize=False)
    # Exactly the system turn is gone: the rest is the same text.
    system_turn = with_system[: with_system.index("<|im_start|>user")]
    assert messages[0]["content"] in system_turn and "search_hotel(" in system_turn
    assert without == with_system[len(system_turn):] and without.startswith("<|im_start|>user\n" + messages[1]["content"])
    prompt = bare.apply_chat_template(messages[:2], tools=tools, tokenize=False, add_generation_prompt=True)
    assert prompt == f"<|im_start|>user\n{messages[1]['content']}<|im_end|>\n<|im_start|>assistant\n"
    enc = bare.apply_chat_template(messages, tools=tools, return_dict=True, return_assistant_tokens_mask=True)
    assert 0 < sum(enc["assistant_masks"]) < len(enc["input_ids"])
    assert bare.chat_template == BARE_SCRATCH_CHAT_TEMPLATE and full.chat_template == SCRATCH_CHAT_TEMPLATE
    with pytest.raises(ValueError, match="no system-turn block"):
        bare_template("{%- for message in messages %}{{ message.content }}{%- endfor %}")


@pytest.mark.slow
def test_tiny_scratch_training_gives_a_loadable_agent(small_demos: datasets.Dataset, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from josh_hf.backends.base import GenerationRequest, SamplingParams
    from josh_hf.backends.transformers_backend import TransformersBackend
    from josh_hf.demo.scratch import SCRATCH_CHAT_TEMPLATE, train_scratch_agent

    out = train_scratch_agent(small_demos, tmp_path / "agent", "tiny")
    info = json.loads((out / "scratch_config.json").read_text())
    solved = [(s, r) for s, r in zip(small_demos["source"], small_demos["reward"]) if r >= 1.0]
    expected = min(8, sum(s == "synthetic" for s, _ in solved)) + min(4, sum(s == "multiwoz" for s, _ in solved))
    assert info["steps"] == 3 and info["conversations"] == expected == 9
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "llama" and tok.chat_template == SCRATCH_CHAT_TEMPLATE
    row = small_demos[6]
    text = tok.apply_chat_template(row["messages"], tools=row["tools"], tokenize=False)
    assert "search_hotel(name, area, parking, pricerange, stars, internet, type)" in text
    first_call = row["messages"][2]["tool_calls"][0]["function"]
    assert f'<tool_call>\n{{"name": "{first_call["name"]}", "arguments": {json.dumps(first_call["arguments"])}}}' in text
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text  # byte-level: round-trips
    # The assistant-only mask covers the assistant turns (the template's {% generation %} markers).
    enc = tok.apply_chat_template(row["messages"], tools=row["tools"], return_dict=True,
                                  return_assistant_tokens_mask=True)
    assert 0 < sum(enc["assistant_masks"]) < len(enc["input_ids"])
    backend = TransformersBackend(out)
    [output] = backend.generate([GenerationRequest(messages=row["messages"][:2], tools=row["tools"],
                                                   sampling=SamplingParams(max_new_tokens=8))])
    assert output.error is None and output.completion_tokens > 0
    # Same seed, same data: the same weights, also when ``extra`` overrides a default setting
    # (here: checkpoints every 2 steps, which must not change the training).
    again = train_scratch_agent(small_demos, tmp_path / "again", "tiny", extra={"save_strategy": "steps", "save_steps": 2})
    assert (again / "trainer" / "checkpoint-2").is_dir()
    import torch

    other = AutoModelForCausalLM.from_pretrained(again)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


@pytest.mark.slow
def test_train_stage_leaves_out_the_dev_tasks(tw: ToolWOZ, small_demos: datasets.Dataset, tmp_path: Path) -> None:
    from josh_hf.demo.pipeline import train_stage

    folder = tmp_path / "toolwoz"
    write_dataset(tw, folder, source_description="test")
    add_demonstrations_config(folder, small_demos)
    ids = list(dict.fromkeys(small_demos["task_id"]))
    out = train_stage(folder, tmp_path / "base", "tiny", exclude_tasks=ids[:2], max_steps=1)
    info = json.loads((out / "scratch_config.json").read_text())
    # tiny takes up to 8 synthetic + 4 MultiWOZ conversations that reach the goal: here, every
    # such row of the 4 tasks left.
    kept = [(t, s) for t, s, r in zip(small_demos["task_id"], small_demos["source"], small_demos["reward"])
            if r >= 1.0 and t not in ids[:2]]
    assert len(kept) < 12 and len({t for t, _ in kept}) >= 2
    assert info["task_ids"] == sorted({t for t, _ in kept}) and info["conversations"] == len(kept)
