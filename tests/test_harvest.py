"""Harvest rules on hand-built JOSH trees (exact SFT / KTO / DPO rows), then one real TRL step each.

Three tasks, every node written out below:

* T1 (native, reward 1.0, two collapses). Step 1: the root splits into ``a`` (searches, offers,
  the user says yes) and ``b`` (asks a question, the user answers). Step 2: ``a`` -> ``a1``
  (books: collapse 1, golden) and ``a2`` (apologises: failed, same prompt as a1's booking call);
  ``b`` -> ``b1`` (tool error) and ``b2`` (failed booking), both failed from another prompt.
  Step 3: ``a1`` -> ``c`` (same search as ``d``, then offers: failed) and ``d`` (searches and
  books the train: collapse 2, golden, all goals met).
* T2 (native, reward 1.0, one collapse): the golden turn ``x`` makes a refused call before
  booking; its sibling ``y`` also booked (successful, not golden).
* T3 (ReAct, reward 0.5): ``p`` is golden (APICALL, APICALL, SPEAK); its sibling ``q`` wrote a
  bare PLAN, got the format-error feedback, then spoke; ``p1``/``p2`` came after the last
  collapse and were never recorded.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from josh_hf.agents.react import PLAN_ONLY_MESSAGE, ReactFormat
from josh_hf.josh.harvest import (
    agent_format,
    card_info_from_records,
    conversation_errors,
    dpo_dataset,
    dpo_examples,
    golden_conversation,
    harvest_counts,
    kto_dataset,
    kto_examples,
    last_agent_turn,
    node_contexts,
    read_tree_records,
    record_tools,
    render_harvest_card,
    sft_dataset,
    sft_examples,
)
from josh_hf.toolwoz.tools import ERROR_NOT_ALLOWED

# -- message builders -----------------------------------------------------------------------


def call(cid: str, tool: str, /, **arguments: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": "",
            "tool_calls": [{"type": "function", "id": cid, "function": {"name": tool, "arguments": arguments}}]}


def result(cid: str, name: str, value: Any) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": cid, "name": name, "content": json.dumps(value)}


def say(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def node(nid: str, parent: str | None, step: int, messages: list, *, successful: bool = False, golden: bool = False,
         recorded: bool = True, ended: str | None = None, turn_calls: tuple = (), goals_met: tuple = ()) -> dict:
    return {"id": nid, "parent": parent, "step": step, "messages": messages, "turn_calls": list(turn_calls),
            "goals_met": list(goals_met), "successful": successful, "golden": golden, "recorded": recorded,
            "ended": ended, "error": None, "prompt_tokens": 0, "completion_tokens": 0}


def schema(name: str, *params: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": f"{name} API",
            "parameters": {"type": "object", "properties": {p: {"type": "string"} for p in params}}}}


TOOLS = [
    schema("search_restaurant", "food", "pricerange", "area"),
    schema("book_restaurant", "name", "people", "day", "time"),
    schema("search_train", "destination", "day"),
    schema("book_train", "trainID", "people"),
]

# -- T1 -------------------------------------------------------------------------------------
S1 = {"role": "system", "content": "You are a travel agent."}
U1 = user("I want a cheap italian restaurant in the centre.")
A_SEARCH = call("call00001", "search_restaurant", food="italian", pricerange="cheap", area="centre")
T_SEARCH = result("call00001", "search_restaurant", [{"name": "pizza hut city centre", "food": "italian"}])
A_OFFER = say("Pizza Hut City Centre is a cheap italian place. Shall I book it?")
U_YES = user("Yes, for 2 people on friday at 18:30.")
B_ASK = say("Which area would you like?")
U_AREA = user("The centre, please.")
A_BOOK = call("call00002", "book_restaurant", name="pizza hut city centre", people="2", day="friday", time="18:30")
T_BOOK = result("call00002", "book_restaurant", {"success": True, "return": {"ref": "R1"}})
A_BOOKED = say("Booked! Your reference is R1.")
U_TRAIN = user("Thanks. I also need a train to london kings cross on friday.")
A_SORRY = say("Sorry, I cannot book that.")
B1_BAD = call("call00002", "book_restaurant", restaurant="pizza hut")
B1_ERR = result("call00002", "book_restaurant", ERROR_NOT_ALLOWED)
B1_SAY = say("Sorry, something went wrong.")
B2_BOOK = call("call00002", "book_restaurant", name="pizza hut", people="3")
B2_FAIL = result("call00002", "book_restaurant", {"success": False, "return": {}})
B2_SAY = say("That booking failed.")
A_STRAIN = call("call00003", "search_train", destination="london kings cross", day="friday")
T_STRAIN = result("call00003", "search_train", [{"trainID": "TR1234", "leaveAt": "09:30"}])
A_BTRAIN = call("call00004", "book_train", trainID="TR1234", people="2")
T_BTRAIN = result("call00004", "book_train", {"success": True, "return": {"ref": "T9"}})
A_TBOOKED = say("Your train TR1234 is booked, reference T9.")
C_OFFER = say("TR1234 leaves at 09:30. Shall I book it?")

G1 = [S1, U1, A_SEARCH, T_SEARCH, A_OFFER, U_YES, A_BOOK, T_BOOK, A_BOOKED, U_TRAIN,
      A_STRAIN, T_STRAIN, A_BTRAIN, T_BTRAIN, A_TBOOKED]
"""T1's golden conversation, message by message."""


def tree_t1() -> dict[str, Any]:
    return {
        "task_id": "T1", "seed": 0, "config": {"beam_size": 4, "max_steps": 15, "max_generations_per_turn": 3},
        "tools": TOOLS,
        "goal_calls": [{"name": "book_restaurant", "arguments": {"name": "pizza hut city centre"}},
                       {"name": "book_train", "arguments": {"trainID": "TR1234"}}],
        "reward": 1.0, "success": True, "goals_met": ["book_restaurant", "book_train"],
        "golden_path": ["r", "a", "a1", "d"],
        "nodes": [
            node("r", None, 0, [S1, U1], successful=True, golden=True),
            node("a", "r", 1, [A_SEARCH, T_SEARCH, A_OFFER, U_YES], successful=True, golden=True,
                 turn_calls=[{"name": "search_restaurant",
                              "arguments": {"food": "italian", "pricerange": "cheap", "area": "centre"},
                              "result": [{"name": "pizza hut city centre", "food": "italian"}]}]),
            node("b", "r", 1, [B_ASK, U_AREA]),
            node("a1", "a", 2, [A_BOOK, T_BOOK, A_BOOKED, U_TRAIN], successful=True, golden=True,
                 goals_met=["book_restaurant"],
                 turn_calls=[{"name": "book_restaurant", "arguments": {"name": "pizza hut city centre"},
                              "result": {"success": True, "return": {"ref": "R1"}}}]),
            node("a2", "a", 2, [A_SORRY]),
            node("b1", "b", 2, [B1_BAD, B1_ERR, B1_SAY],
                 turn_calls=[{"name": "book_restaurant", "arguments": {"restaurant": "pizza hut"},
                              "result": ERROR_NOT_ALLOWED}]),
            node("b2", "b", 2, [B2_BOOK, B2_FAIL, B2_SAY]),
            node("c", "a1", 3, [A_STRAIN, T_STRAIN, C_OFFER]),
            node("d", "a1", 3, [A_STRAIN, T_STRAIN, A_BTRAIN, T_BTRAIN, A_TBOOKED], successful=True, golden=True,
                 goals_met=["book_train"]),
        ],
        "stats": {},
    }


# -- T2 -------------------------------------------------------------------------------------
U2 = user("Book me a table for 2 at the golden wok on friday at 18:30.")
X_BAD = call("call00001", "book_restaurant", restaurant="golden wok")
X_ERR = result("call00001", "book_restaurant", ERROR_NOT_ALLOWED)
X_BOOK = call("call00002", "book_restaurant", name="golden wok", people="2", day="friday", time="18:30")
X_OK = result("call00002", "book_restaurant", {"success": True, "return": {"ref": "G7"}})
X_DONE = say("Booked, reference G7.")
Y_BOOK = call("call00001", "book_restaurant", name="golden wok", people="2", day="friday", time="18:30")
Y_OK = result("call00001", "book_restaurant", {"success": True, "return": {"ref": "G7"}})
Y_DONE = say("All booked: G7.")
G2 = [S1, U2, X_BAD, X_ERR, X_BOOK, X_OK, X_DONE]


def tree_t2() -> dict[str, Any]:
    return {
        "task_id": "T2", "seed": 0, "config": {"beam_size": 4, "agent_format": "native"}, "tools": TOOLS[:2],
        "goal_calls": [{"name": "book_restaurant", "arguments": {"name": "golden wok"}}],
        "reward": 1.0, "success": True, "goals_met": ["book_restaurant"], "golden_path": ["r", "x"],
        "nodes": [
            node("r", None, 0, [S1, U2], successful=True, golden=True),
            node("x", "r", 1, [X_BAD, X_ERR, X_BOOK, X_OK, X_DONE], successful=True, golden=True),
            node("y", "r", 1, [Y_BOOK, Y_OK, Y_DONE], successful=True),
        ],
        "stats": {},
    }


# -- T3 (ReAct) -----------------------------------------------------------------------------
S3 = {"role": "system", "content": ReactFormat().system_prompt(TOOLS[2:])}
U3 = user("I need a train to london kings cross on friday, and a hotel.")
P_CALL1 = say('PLAN Search for the train. <COMMAND_END> APICALL {"name": "search_train", "parameters": '
              '{"destination": "london kings cross", "day": "friday"}} <COMMAND_END>')
P_RET1 = user('APIRETURN [{"trainID": "TR1234"}]')
P_CALL2 = say('APICALL {"name": "book_train", "parameters": {"trainID": "TR1234", "people": "1"}} <COMMAND_END>')
P_RET2 = user('APIRETURN {"success": true, "return": {"ref": "T5"}}')
P_SPEAK = say("SPEAK Booked TR1234, reference T5. <COMMAND_END>")
P_USER = user("Great. Now a cheap hotel in the north.")
Q_PLAN = say("PLAN I should ask for the day. <COMMAND_END>")
Q_ERR = user(PLAN_ONLY_MESSAGE)
Q_SPEAK = say("SPEAK Which day do you travel? <COMMAND_END>")


def tree_t3() -> dict[str, Any]:
    return {
        "task_id": "T3", "seed": 0, "config": {"beam_size": 4, "max_steps": 2, "agent_format": "react"},
        "tools": TOOLS[2:],
        "goal_calls": [{"name": "book_train", "arguments": {"trainID": "TR1234"}},
                       {"name": "book_hotel", "arguments": {"name": "acorn guest house"}}],
        "reward": 0.5, "success": False, "goals_met": ["book_train"], "golden_path": ["r", "p"],
        "nodes": [
            node("r", None, 0, [S3, U3], successful=True, golden=True),
            node("p", "r", 1, [P_CALL1, P_RET1, P_CALL2, P_RET2, P_SPEAK, P_USER], successful=True, golden=True),
            node("q", "r", 1, [Q_PLAN, Q_ERR, Q_SPEAK]),
            node("p1", "p", 2, [say("SPEAK We have no hotels. <COMMAND_END>")], recorded=False, ended="user"),
            node("p2", "p", 2, [say('APICALL {"name": "search_hotel", "parameters": {"area": "north"}} <COMMAND_END>'),
                                user("APIRETURN []"), say("SPEAK Nothing found. <COMMAND_END>")],
                 recorded=False, ended="max_steps"),
        ],
        "stats": {},
    }


def records() -> list[dict[str, Any]]:
    return [tree_t1(), tree_t2(), tree_t3()]


def kto_row(prompt, completion, label, task, tools) -> dict[str, Any]:
    return {"prompt": prompt, "completion": [completion], "label": label, "tools": tools, "task_id": task}


# -- tree helpers ---------------------------------------------------------------------------


def test_contexts_golden_conversation_and_formats():
    t1 = tree_t1()
    ctx = node_contexts(t1)
    assert ctx["d"] == G1
    assert ctx["b2"] == [S1, U1, B_ASK, U_AREA, B2_BOOK, B2_FAIL, B2_SAY]
    assert golden_conversation(t1) == G1
    assert golden_conversation(tree_t2()) == G2
    assert golden_conversation(tree_t3()) == [S3, U3, P_CALL1, P_RET1, P_CALL2, P_RET2, P_SPEAK, P_USER]
    # T1 has no agent_format in its config: native from its prompt; T3 says react, and its
    # prompt says so too.
    t3 = tree_t3()
    assert [agent_format(t1), agent_format(t3)] == ["native", "react"]
    del t3["config"]["agent_format"]
    assert agent_format(t3) == "react"
    assert record_tools(t1) == TOOLS and record_tools(t3) is None


def test_last_agent_turn_walks_back_over_tool_and_feedback_messages():
    ctx = node_contexts(tree_t1())
    assert last_agent_turn(ctx["c"]) == (10, 13)  # after U_TRAIN: search, result, offer
    assert last_agent_turn(ctx["b"]) == (2, 3)  # the user's reply is skipped: b's question
    ctx3 = node_contexts(tree_t3())
    assert last_agent_turn(ctx3["q"]) == (2, 5)  # PLAN, format-error feedback, SPEAK
    assert last_agent_turn(ctx3["p"]) == (2, 7)  # the reply is skipped: APICALLs, APIRETURNs, SPEAK
    assert last_agent_turn([S3, U3, P_CALL1, P_RET1, P_CALL2, P_RET2, P_SPEAK]) == (2, 7)  # APIRETURNs


def test_conversation_errors():
    ctx = node_contexts(tree_t1())
    assert conversation_errors(ctx["d"]) == []
    assert conversation_errors(ctx["b1"]) == [f"tool error: {ERROR_NOT_ALLOWED}"]
    assert conversation_errors(ctx["b2"]) == ["failed booking"]
    assert conversation_errors(G2) == [f"tool error: {ERROR_NOT_ALLOWED}"]
    ctx3 = node_contexts(tree_t3())
    assert conversation_errors(ctx3["p"]) == []
    assert conversation_errors(ctx3["q"]) == [f"format error: {PLAN_ONLY_MESSAGE}"]
    react = [user('APIRETURN "ERROR: INVALID API CALL!"'), user('APIRETURN {"success": false, "return": {}}'),
             say("SPEAK Error: the agent ran out of generations for this turn. <COMMAND_END>")]
    assert conversation_errors(react) == ["tool error: ERROR: INVALID API CALL!", "failed booking",
                                          "out of generations"]


# -- SFT ------------------------------------------------------------------------------------


def test_sft_golden_conversations_of_reward_one_tasks_with_error_filter():
    # T2's golden conversation has a refused call: dropped by default, kept without the filter.
    # T3 (reward 0.5) gives nothing either way.
    assert sft_examples(records()) == [{"messages": G1, "tools": TOOLS, "task_id": "T1"}]
    assert sft_examples(records(), drop_errors=False) == [
        {"messages": G1, "tools": TOOLS, "task_id": "T1"},
        {"messages": G2, "tools": TOOLS[:2], "task_id": "T2"},
    ]
    ds = sft_dataset(records(), drop_errors=False)
    assert ds.column_names == ["messages", "tools", "task_id"]
    # The Json feature keeps every message and argument dict exactly (no merged null keys).
    assert ds.to_list() == sft_examples(records(), drop_errors=False)


def test_sft_failed_booking_drops_and_react_conversation():
    t1 = tree_t1()
    t1["nodes"][3]["messages"][1] = result("call00002", "book_restaurant", {"success": False, "return": {}})
    assert sft_examples([t1]) == []
    assert len(sft_examples([t1], drop_errors=False)) == 1
    # A ReAct task at reward 1.0: the conversation up to its last assistant message, no tools.
    t3 = tree_t3()
    t3["reward"] = 1.0
    assert sft_examples([t3]) == [
        {"messages": [S3, U3, P_CALL1, P_RET1, P_CALL2, P_RET2, P_SPEAK], "tools": None, "task_id": "T3"}]
    # credit="all" records: the golden path's own reward decides.
    t3["golden_reward"] = 0.5
    assert len(sft_examples([t3])) == 1
    t3["config"]["credit"] = "all"
    assert sft_examples([t3]) == []


# -- KTO ------------------------------------------------------------------------------------


def expected_kto() -> list[dict[str, Any]]:
    g3 = [S3, U3, P_CALL1, P_RET1, P_CALL2, P_RET2, P_SPEAK]
    return [
        # T1 desirable: every assistant message of G1.
        *(kto_row(G1[:i], G1[i], True, "T1", TOOLS) for i in (2, 4, 6, 8, 10, 12, 14)),
        # T1 undesirable: b's question (b was split, so its context ends with the user's reply;
        # its last agent turn is still sampled from the golden turn's prompt); a2's apology
        # (same prompt as the booking call); c's search (same prompt and the same message as
        # d's: a conflict, kept as the reference does); c's offer (same prompt as d's booking
        # call). b1 and b2 (other prompts) give nothing.
        kto_row(G1[:2], B_ASK, False, "T1", TOOLS),
        kto_row(G1[:6], A_SORRY, False, "T1", TOOLS),
        kto_row(G1[:10], A_STRAIN, False, "T1", TOOLS),
        kto_row(G1[:12], C_OFFER, False, "T1", TOOLS),
        # T2: y booked too (successful, not golden): no undesirable.
        *(kto_row(G2[:i], G2[i], True, "T2", TOOLS[:2]) for i in (2, 4, 6)),
        # T3 (ReAct): the PLAN is undesirable; q's SPEAK follows the feedback, another prompt.
        *(kto_row(g3[:i], g3[i], True, "T3", None) for i in (2, 4, 6)),
        kto_row([S3, U3], Q_PLAN, False, "T3", None),
    ]


def test_kto_rows_exact():
    assert kto_examples(records()) == expected_kto()
    ds = kto_dataset(records())
    assert ds.column_names == ["prompt", "completion", "label", "tools", "task_id"]
    assert ds.to_list() == expected_kto()


def test_kto_same_prompt_rule_and_recorded_flag():
    # A failed node is harvested only from a desirable prompt: move a2 under b (prompt
    # S1,U1,B_ASK,U_AREA) and its apology goes.
    t1 = tree_t1()
    t1["nodes"][4]["parent"] = "b"
    rows = kto_examples([t1])
    assert [r["completion"][0] for r in rows if not r["label"]] == [B_ASK, A_STRAIN, C_OFFER]
    # Only recorded nodes count.
    t1 = tree_t1()
    t1["nodes"][7]["recorded"] = False
    assert [r["completion"][0] for r in kto_examples([t1]) if not r["label"]] == [B_ASK, A_SORRY]
    # A successful node never is undesirable, even from a golden prompt.
    t1 = tree_t1()
    t1["nodes"][4]["successful"] = True
    assert [r["completion"][0] for r in kto_examples([t1]) if not r["label"]] == [B_ASK, A_STRAIN, C_OFFER]
    # drop_conflicts (a variant) removes c's search, identical to d's desirable one.
    assert [r["completion"][0] for r in kto_examples(records(), drop_conflicts=True) if not r["label"]] == [
        B_ASK, A_SORRY, C_OFFER, Q_PLAN]


def test_dpo_pairs_and_counts():
    expected = [
        {"prompt": G1[:2], "chosen": [G1[2]], "rejected": [B_ASK], "tools": TOOLS, "task_id": "T1"},
        {"prompt": G1[:6], "chosen": [A_BOOK], "rejected": [A_SORRY], "tools": TOOLS, "task_id": "T1"},
        # (A_STRAIN vs the same A_STRAIN) is no preference: skipped.
        {"prompt": G1[:12], "chosen": [A_BTRAIN], "rejected": [C_OFFER], "tools": TOOLS, "task_id": "T1"},
        {"prompt": [S3, U3], "chosen": [P_CALL1], "rejected": [Q_PLAN], "tools": None, "task_id": "T3"},
    ]
    assert dpo_examples(records()) == expected
    assert dpo_dataset(records()).to_list() == expected
    assert harvest_counts(records()) == {"sft": 1, "kto_desirable": 13, "kto_undesirable": 5, "dpo": 4}
    assert harvest_counts(records(), drop_errors=False)["sft"] == 2


def test_tree_record_objects_and_jsonl(tmp_path):
    from josh_hf.josh.tree import TreeRecord

    objects = [TreeRecord.from_dict(r) for r in records()]
    assert kto_examples(objects) == expected_kto()
    assert harvest_counts(objects) == harvest_counts(records())
    path = tmp_path / "trees.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records()) + "\n")
    assert read_tree_records(path) == records()
    assert harvest_counts(read_tree_records(path)) == harvest_counts(records())


def test_card_rendering():
    info = card_info_from_records(records(), model="Qwen/Qwen2.5-0.5B-Instruct", user_simulator="gpt-4o (goal-based)",
                                  split="train")
    assert info["tasks"] == 3 and info["successful_tasks"] == 2
    assert info["average_josh_reward"] == pytest.approx(2.5 / 3)
    assert (info["beam_size"], info["max_steps"], info["max_generations"]) == (4, 15, 3)
    assert info["counts"] == {"sft": 1, "kto_desirable": 13, "kto_undesirable": 5, "dpo": 4}
    card = render_harvest_card(info, repo_id="me/josh-harvest",
                               metadata={"configs": [{"config_name": "kto", "data_files": "kto/*.parquet"}]})
    text = str(card)
    for line in ("| agent model | Qwen/Qwen2.5-0.5B-Instruct |", "| beam size | 4 |", "| max JOSH steps | 15 |",
                 "| user simulator | gpt-4o (goal-based) |", "| tasks searched | 3 |",
                 "| average JOSH reward | 0.8333 |", "| `sft` | 1 |", "| `kto` | 13 desirable + 5 undesirable |",
                 "| `dpo` | 4 |", 'load_dataset("me/josh-harvest", "kto", split="train")'):
        assert line in text, line
    assert card.data.configs == [{"config_name": "kto", "data_files": "kto/*.parquet"}]
    assert "josh" in card.data.tags and card.data.license == "mit"


# -- real TRL trainers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    from josh_hf.testing.templates import TRAINING_CHAT_TEMPLATE

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    # The tiny template has no {% generation %} markers (TRL cannot patch it): the training
    # variant renders identically and marks the assistant turns.
    tok.chat_template = TRAINING_CHAT_TEMPLATE
    return tok


def _model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def _common(tmp_path) -> dict[str, Any]:
    return {"output_dir": str(tmp_path), "max_steps": 1, "per_device_train_batch_size": 2, "report_to": "none",
            "use_cpu": True, "save_strategy": "no", "logging_steps": 1, "learning_rate": 1e-4,
            "max_length": None}


def _runs(labels: list[int]) -> list[list[int]]:
    runs, current = [], []
    for t in labels:
        if t != -100:
            current.append(t)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


@pytest.mark.slow
def test_sft_trainer_assistant_only_loss(tmp_path, tiny_model_dir, tokenizer):
    from trl import SFTConfig, SFTTrainer

    ds = sft_dataset(records(), drop_errors=False)
    trainer = SFTTrainer(model=_model(tiny_model_dir), args=SFTConfig(**_common(tmp_path), assistant_only_loss=True),
                         train_dataset=ds, processing_class=tokenizer)
    row = trainer.train_dataset[0]
    # TRL folds the assistant mask into the labels column (-100 elsewhere) when it prepares the data.
    batch = trainer.data_collator([{"input_ids": row["input_ids"], "labels": row["labels"]}])
    labels = batch["labels"][0].tolist()
    # The row is T1's golden conversation rendered with its tools...
    text = tokenizer.apply_chat_template(G1, tools=TOOLS, tokenize=False)
    assert tokenizer.decode(batch["input_ids"][0]) == text
    assert "search_restaurant API" in text  # the tool schemas reached the prompt
    # ...and exactly its 7 assistant messages (content, tool calls, end of turn) carry loss.
    calls = [
        ("search_restaurant", '{"food": "italian", "pricerange": "cheap", "area": "centre"}'),
        ("book_restaurant", '{"name": "pizza hut city centre", "people": "2", "day": "friday", "time": "18:30"}'),
        ("search_train", '{"destination": "london kings cross", "day": "friday"}'),
        ("book_train", '{"trainID": "TR1234", "people": "2"}'),
    ]
    call_text = [f'\n<tool_call>\n{{"name": "{n}", "arguments": {a}}}\n</tool_call><|im_end|>\n' for n, a in calls]
    assert [tokenizer.decode(r) for r in _runs(labels)] == [
        call_text[0],
        "\nPizza Hut City Centre is a cheap italian place. Shall I book it?<|im_end|>\n",
        call_text[1],
        "\nBooked! Your reference is R1.<|im_end|>\n",
        call_text[2],
        call_text[3],
        "\nYour train TR1234 is booked, reference T9.<|im_end|>\n",
    ]
    out = trainer.train()
    assert trainer.state.global_step == 1 and out.training_loss > 0


@pytest.mark.slow
def test_kto_trainer_step(tmp_path, tiny_model_dir, tokenizer):
    from trl import KTOConfig, KTOTrainer

    trainer = KTOTrainer(model=_model(tiny_model_dir), args=KTOConfig(**_common(tmp_path)),
                         train_dataset=kto_dataset(records()), processing_class=tokenizer)
    ds = trainer.train_dataset
    assert len(ds) == 18 and sum(ds["label"]) == 13
    # Row 8 (a2's apology, undesirable): the completion is exactly its assistant turn.
    assert tokenizer.decode(ds[8]["completion_ids"]) == "Sorry, I cannot book that.<|im_end|>\n"
    assert tokenizer.decode(ds[8]["prompt_ids"]).endswith("<|im_start|>assistant\n")
    assert "search_restaurant API" in tokenizer.decode(ds[8]["prompt_ids"])
    trainer.train()
    assert trainer.state.global_step == 1


@pytest.mark.slow
def test_dpo_trainer_step(tmp_path, tiny_model_dir, tokenizer):
    from trl import DPOConfig, DPOTrainer

    trainer = DPOTrainer(model=_model(tiny_model_dir), args=DPOConfig(**_common(tmp_path)),
                         train_dataset=dpo_dataset(records()), processing_class=tokenizer)
    ds = trainer.train_dataset
    assert len(ds) == 4
    # Row 3 (ReAct, no tools column): the golden APICALL against the bare PLAN.
    assert tokenizer.decode(ds[3]["chosen_ids"]) == P_CALL1["content"] + "<|im_end|>\n"
    assert tokenizer.decode(ds[3]["rejected_ids"]) == Q_PLAN["content"] + "<|im_end|>\n"
    assert "<tools>" not in tokenizer.decode(ds[3]["prompt_ids"])
    assert "search_restaurant API" in tokenizer.decode(ds[0]["prompt_ids"])
    trainer.train()
    assert trainer.state.global_step == 1


def test_records_are_not_mutated():
    rs = records()
    before = copy.deepcopy(rs)
    sft_examples(rs, drop_errors=False), kto_examples(rs), dpo_examples(rs)
    assert rs == before


# -- a real search's tree -------------------------------------------------------------------


def test_harvest_of_a_real_react_search_tree(tmp_path):
    """JOSHSearch on a real ToolWOZ task with a scripted ReAct agent (odd seeds chat, even seeds
    make the next goal call): the harvest obeys its rules on whatever tree comes out."""
    from josh_hf.backends.base import GenerationRequest, SamplingParams
    from josh_hf.backends.scripted import ScriptedBackend
    from josh_hf.josh import JOSHConfig, JOSHSearch, read_trees, write_tree
    from josh_hf.josh.show_tree import render_svg
    from josh_hf.toolwoz import ToolWOZ, default_multiwoz_path
    from josh_hf.users.base import UserSession, UserSimulator, UserTurn

    tw = ToolWOZ.from_multiwoz(default_multiwoz_path())
    goals = [(g.name, dict(g.arguments)) for g in tw.task("MUL0051").goal_calls]

    class User(UserSimulator):
        name = "count-user"

        def new_session(self, task, seed=0):
            return UserSession(task, seed)

        def respond(self, batch):
            return [UserTurn(f"Please help, message {len(visible)}.") for _, visible in batch]

    def agent(request: GenerationRequest) -> str:
        if request.messages[-1]["content"].startswith("APIRETURN"):
            return "SPEAK Done. <COMMAND_END>"
        if request.sampling.seed % 2:
            return "SPEAK How can I help? <COMMAND_END>"
        made = sum("APICALL" in m["content"] for m in request.messages if m["role"] == "assistant")
        name, args = goals[min(made, len(goals) - 1)]
        return f"APICALL {json.dumps({'name': name, 'parameters': args})} <COMMAND_END>"

    config = JOSHConfig(agent_format="react", beam_size=4, max_steps=6, seed=3, sampling=SamplingParams(temperature=1.0))
    (rec,) = JOSHSearch(tw, ScriptedBackend(agent), User(), config).run(["MUL0051"])
    with open(tmp_path / "trees.jsonl", "w", encoding="utf-8") as f:
        write_tree(f, rec)
    (loaded,) = read_tree_records(tmp_path / "trees.jsonl")
    assert read_trees(tmp_path / "trees.jsonl")[0].to_dict() == loaded

    golden = rec.golden_conversation()
    kto = kto_examples([loaded])
    desirable = [r for r in kto if r["label"]]
    undesirable = [r for r in kto if not r["label"]]
    assert [r["completion"][0] for r in desirable] == [m for m in golden if m["role"] == "assistant"]
    assert all(r["prompt"] == golden[: len(r["prompt"])] for r in desirable)
    # Each undesirable row is an assistant message of the last agent turn of a recorded node that
    # is neither successful nor golden, from a desirable prompt; and each such message is harvested.
    prompts = [json.dumps(r["prompt"]) for r in desirable]
    expected = []
    for n in rec.nodes:
        if n.recorded and not n.successful and not n.golden:
            ctx = rec.context(n.id)
            start, end = last_agent_turn(ctx)
            for i in range(start, end):
                if ctx[i]["role"] == "assistant" and json.dumps(ctx[:i]) in prompts:
                    expected.append((ctx[:i], ctx[i]))
    assert [(r["prompt"], r["completion"][0]) for r in undesirable] == expected
    assert len(desirable) > 0 and len(undesirable) > 0
    assert all(r["tools"] is None for r in kto)  # ReAct: the tools are in the system prompt
    assert harvest_counts([loaded]) == {
        "sft": 1 if rec.reward == 1.0 else 0, "kto_desirable": len(desirable), "kto_undesirable": len(undesirable),
        "dpo": sum(1 for d in desirable for u in undesirable
                   if u["prompt"] == d["prompt"] and u["completion"] != d["completion"])}
    # The picture: one node per tree node, the golden path exactly.
    svg = render_svg(rec)
    assert svg.count('<g class="node ') == len(rec.nodes)
    assert sorted(int(i) for i in re.findall(r'<g class="node golden" data-id="(\d+)"', svg)) == rec.golden_path


def test_empty_harvest_gives_typed_empty_datasets() -> None:
    """A round where no task succeeded: empty tables with the right columns, not an error."""
    from josh_hf.josh.harvest import dpo_dataset, kto_dataset, sft_dataset

    for build, columns in ((sft_dataset, {"messages"}), (kto_dataset, {"prompt", "completion", "label"}),
                           (dpo_dataset, {"prompt", "chosen", "rejected"})):
        ds = build([])
        assert len(ds) == 0 and set(ds.column_names) == columns | {"tools", "task_id"}
