"""Agent formats (native, react) and batched agent turns on a real ToolWOZ environment.

The model is a ScriptedBackend: every generation is written out, so each expected context,
error and recorded call follows from the scripts and the ToolWOZ rules.
"""

from __future__ import annotations

import json

import pytest

from josh_hf.agents import (
    OUT_OF_GENERATIONS_TEXT,
    AgentState,
    NativeFormat,
    ReactFormat,
    generation_sampling,
    get_format,
    run_agent_turns,
    stable_seed,
)
from josh_hf.agents.formats import BAD_CALL, BAD_JSON, INVALID_CALL, NO_COMMAND, OUT_OF_GENERATIONS
from josh_hf.agents.native import BAD_JSON_MESSAGE as NATIVE_BAD_JSON
from josh_hf.agents.native import NATIVE_SYSTEM_PROMPT
from josh_hf.agents.react import BAD_JSON_MESSAGE as REACT_BAD_JSON
from josh_hf.agents.react import NO_COMMAND_MESSAGE, PLAN_ONLY_MESSAGE, split_commands
from josh_hf.backends.base import GenerationOutput, GenerationRequest, SamplingParams
from josh_hf.backends.scripted import ScriptedBackend, tool_call
from josh_hf.toolwoz import ToolWOZ, default_multiwoz_path
from josh_hf.toolwoz.tools import ERROR_LIST_OR_DICT, ERROR_NOT_A_DICT, ERROR_NOT_ALLOWED

TASK = "MUL0035"  # goals: search_hotel {name: aylesbray lodge guest house}, search_restaurant {name: michaelhouse cafe}
HOTEL = {"name": "aylesbray lodge guest house"}
RESTAURANT = {"name": "michaelhouse cafe"}


@pytest.fixture(scope="module")
def tw() -> ToolWOZ:
    return ToolWOZ.from_multiwoz(default_multiwoz_path())


def new_state(tw: ToolWOZ, fmt, user_text: str = "I need a hotel.", task: str = TASK, **kw) -> AgentState:
    state = AgentState.start(tw.env(task), fmt, **kw)
    state.add_user_message(user_text)
    return state


def calls_out(*calls) -> GenerationOutput:
    return GenerationOutput(text="", tool_calls=list(calls))


def react(text: str) -> GenerationOutput:
    return GenerationOutput(text=text, raw=text)


# -- native ----------------------------------------------------------------------------------
def test_native_two_tool_calls_then_speech(tw):
    fmt = NativeFormat()
    state = new_state(tw, fmt)
    backend = ScriptedBackend([
        calls_out(tool_call("search_hotel", HOTEL), tool_call("search_restaurant", RESTAURANT, id="abc")),
        "Aylesbray Lodge and Michaelhouse Cafe are both available.",
    ])
    (result,) = run_agent_turns([state], backend, fmt, SamplingParams())

    assert result.spoke and not result.failed and result.generations == 2
    assert result.text == "Aylesbray Lodge and Michaelhouse Cafe are both available."
    assert [m["role"] for m in state.context] == ["system", "user", "assistant", "tool", "tool", "assistant"]
    assert state.context[0]["content"] == NATIVE_SYSTEM_PROMPT
    assistant = state.context[2]
    # A missing id gets a generated nine-character one; a given id is kept.
    assert [tc["id"] for tc in assistant["tool_calls"]] == ["call00001", "abc"]
    assert assistant["tool_calls"][0]["function"] == {"name": "search_hotel", "arguments": HOTEL}
    hotel_msg, restaurant_msg = state.context[3], state.context[4]
    assert (hotel_msg["tool_call_id"], hotel_msg["name"]) == ("call00001", "search_hotel")
    assert (restaurant_msg["tool_call_id"], restaurant_msg["name"]) == ("abc", "search_restaurant")
    hotel_rows = json.loads(hotel_msg["content"])
    assert [r["name"] for r in hotel_rows] == ["aylesbray lodge guest house"]
    assert [r["name"] for r in json.loads(restaurant_msg["content"])] == ["michaelhouse cafe"]
    # The environment recorded both calls; the turn reports them; the goals are met.
    assert [c.name for c in state.env.calls] == ["search_hotel", "search_restaurant"]
    assert [c.name for c in result.calls] == ["search_hotel", "search_restaurant"]
    assert state.tool_calls[0] == {"name": "search_hotel", "arguments": HOTEL, "result": hotel_rows}
    assert state.env.score().reward == 1.0
    assert state.visible == [
        {"role": "user", "content": "I need a hotel."},
        {"role": "assistant", "content": "Aylesbray Lodge and Michaelhouse Cafe are both available."},
    ]
    assert state.errors == []
    assert state.counters.to_dict() == {
        "agent_turns": 1, "generations": 2, "tool_calls": 2, "prompt_tokens": 0, "completion_tokens": 0,
    }
    # Native requests carry the tool schemas and the context so far (a copy per request).
    first, second = backend.requests
    assert first.tools == tw.env(TASK).tools and len(first.messages) == 2 and len(second.messages) == 5


def test_native_tokens_are_counted(tw):
    fmt = NativeFormat()
    state = new_state(tw, fmt)
    out = GenerationOutput(text="Hello!", prompt_tokens=120, completion_tokens=7)
    run_agent_turns([state], ScriptedBackend([out]), fmt)
    assert (state.counters.prompt_tokens, state.counters.completion_tokens) == (120, 7)


# -- react -----------------------------------------------------------------------------------
def test_react_plan_apicall_then_speak(tw):
    fmt = ReactFormat()
    state = new_state(tw, fmt)
    backend = ScriptedBackend([
        react('PLAN Look the hotel up. <COMMAND_END>\nAPICALL {"name": "search_hotel", "parameters": '
              '{"name": "aylesbray lodge guest house"}} <COMMAND_END>'),
        react("PLAN It exists. <COMMAND_END> SPEAK Aylesbray Lodge has rooms. <COMMAND_END>"),
    ])
    (result,) = run_agent_turns([state], backend, fmt)

    assert result.spoke and result.text == "Aylesbray Lodge has rooms."
    assert [m["role"] for m in state.context] == ["system", "user", "assistant", "user", "assistant"]
    assert state.context[2]["content"] == (
        'PLAN Look the hotel up. <COMMAND_END> APICALL {"name": "search_hotel", "parameters": '
        '{"name": "aylesbray lodge guest house"}} <COMMAND_END>'
    )
    apireturn = state.context[3]["content"]
    assert apireturn.startswith("APIRETURN ")
    assert json.loads(apireturn.removeprefix("APIRETURN ")) == state.tool_calls[0]["result"]
    assert state.tool_calls[0]["result"][0]["name"] == "aylesbray lodge guest house"
    assert state.context[4]["content"] == "PLAN It exists. <COMMAND_END> SPEAK Aylesbray Lodge has rooms. <COMMAND_END>"
    assert state.visible[-1] == {"role": "assistant", "content": "Aylesbray Lodge has rooms."}
    # The tools are in the system prompt, not in the request.
    assert backend.requests[0].tools is None
    assert '"search_hotel"' in state.context[0]["content"] and "<COMMAND_END>" in state.context[0]["content"]


def test_react_parse_rules():
    fmt = ReactFormat()
    # Missing <COMMAND_END>, text before the first command, markdown and colons are tolerated.
    step = fmt.parse(react('Sure! **PLAN**: search APICALL: {"name": "search_train", "parameters": {"day": "monday"}}'))
    assert [(c.name, c.arguments, c.plan) for c in step.calls] == [("search_train", {"day": "monday"}, "search")]
    assert step.speech is None and step.error is None
    # Single quotes (a Python literal) are accepted; "arguments" stands in for "parameters".
    step = fmt.parse(react("APICALL {'name': 'search_hotel', 'arguments': {'area': 'north'}} <COMMAND_END>"))
    assert (step.calls[0].name, step.calls[0].arguments, step.calls[0].error) == ("search_hotel", {"area": "north"}, None)
    # No parameters at all means an empty dict; trailing text after the JSON is ignored.
    step = fmt.parse(react('APICALL {"name": "search_hotel"} please <COMMAND_END>'))
    assert step.calls[0].arguments == {}
    # Several calls in one generation; the first SPEAK ends it and later commands are ignored.
    step = fmt.parse(react(
        'APICALL {"name": "a", "parameters": {}} <COMMAND_END> APICALL {"name": "b", "parameters": {}} <COMMAND_END>'
        ' SPEAK done <COMMAND_END> APICALL {"name": "c", "parameters": {}} <COMMAND_END>'
    ))
    assert [c.name for c in step.calls] == ["a", "b"] and step.speech == "done"
    # Plain text is not speech; a lone PLAN is an error too.
    assert fmt.parse(react("Hello, how can I help?")).error.message == NO_COMMAND_MESSAGE
    lone = fmt.parse(react("PLAN think first <COMMAND_END>"))
    assert (lone.error.kind, lone.error.message, lone.plan) == (NO_COMMAND, PLAN_ONLY_MESSAGE, "think first")
    # Unparseable payloads are format errors; a JSON non-object is a bad call.
    assert fmt.parse(react("APICALL search_hotel(area=north)")).calls[0].error.kind == BAD_JSON
    assert fmt.parse(react('APICALL {"parameters": {}} <COMMAND_END>')).calls[0].error.kind == BAD_CALL
    assert split_commands("PLAN a <COMMAND_END> SPEAK b") == [("PLAN", "a"), ("SPEAK", "b")]


def test_get_format():
    assert isinstance(get_format("native"), NativeFormat) and isinstance(get_format("react"), ReactFormat)
    fmt = ReactFormat()
    assert get_format(fmt) is fmt
    with pytest.raises(ValueError, match="unknown agent format"):
        get_format("xml")


def test_system_prompt_override_fills_tools(tw):
    state = AgentState.start(tw.env(TASK), ReactFormat(), system_prompt="Agent. Tools: {tools}")
    prompt = state.context[0]["content"]
    assert prompt.startswith("Agent. Tools: [") and json.loads(prompt.removeprefix("Agent. Tools: ")) == tw.env(TASK).tools


# -- malformed output: answered, counted, never raised ----------------------------------------
MALFORMED = [
    # (id, format, bad generation, error kind, reaches the env, answer the model reads)
    ("native-bad-json", "native", calls_out(tool_call("search_hotel", '{"area": "nor')), BAD_JSON, False,
     json.dumps(NATIVE_BAD_JSON)),
    ("native-unknown-tool", "native", calls_out(tool_call("find_taxi", {"area": "north"})), INVALID_CALL, True,
     json.dumps(ERROR_NOT_ALLOWED)),
    ("native-list-value", "native", calls_out(tool_call("search_hotel", {"area": ["north", "south"]})),
     INVALID_CALL, True, json.dumps(ERROR_LIST_OR_DICT)),
    ("native-json-list-arguments", "native", calls_out(tool_call("search_hotel", '["north"]')), INVALID_CALL, True,
     json.dumps(ERROR_NOT_A_DICT)),
    ("native-empty", "native", GenerationOutput(text=""), NO_COMMAND, False, None),
    ("react-bad-json", "react", react("APICALL {name: search_hotel, parameters: {area: north}} <COMMAND_END>"),
     BAD_JSON, False, "APIRETURN " + json.dumps(REACT_BAD_JSON)),
    ("react-unknown-tool", "react", react('APICALL {"name": "find_taxi", "parameters": {}} <COMMAND_END>'),
     INVALID_CALL, True, "APIRETURN " + json.dumps(ERROR_NOT_ALLOWED)),
    ("react-dict-value", "react",
     react('APICALL {"name": "search_hotel", "parameters": {"area": {"in": "north"}}} <COMMAND_END>'),
     INVALID_CALL, True, "APIRETURN " + json.dumps(ERROR_LIST_OR_DICT)),
    ("react-non-dict-parameters", "react",
     react('APICALL {"name": "search_hotel", "parameters": ["north"]} <COMMAND_END>'),
     INVALID_CALL, True, "APIRETURN " + json.dumps(ERROR_NOT_A_DICT)),
    ("react-no-command", "react", react("Let me check that for you."), NO_COMMAND, False, NO_COMMAND_MESSAGE),
]


@pytest.mark.parametrize("fmt_name, bad, kind, reaches_env, answer", [c[1:] for c in MALFORMED],
                         ids=[c[0] for c in MALFORMED])
def test_malformed_output_is_answered_and_counted(tw, fmt_name, bad, kind, reaches_env, answer):
    fmt = get_format(fmt_name)
    state = new_state(tw, fmt)
    speech = "Here you go." if fmt_name == "native" else "SPEAK Here you go. <COMMAND_END>"
    (result,) = run_agent_turns([state], ScriptedBackend([bad, speech]), fmt)

    # The turn went on to the next generation and ended normally.
    assert result.spoke and result.text == "Here you go." and result.generations == 2 and not result.failed
    assert [e["kind"] for e in state.errors] == [kind] and state.errors[0]["turn"] == 0
    assert result.errors == state.errors
    assert state.env.num_calls == (1 if reaches_env else 0)
    assert len(state.tool_calls) == (1 if reaches_env else 0)
    if reaches_env:  # the env recorded the refused call with its error string
        assert state.env.calls[0].returned == json.loads(answer.removeprefix("APIRETURN "))
    # The answer the model reads is the message right after its bad generation.
    feedback = state.context[3]
    if answer is not None:
        assert feedback["content"] == answer
    else:
        assert feedback["role"] == "user" and feedback["content"].startswith("ERROR")
    assert state.context[-1]["role"] == "assistant"


def test_turn_budget_ends_with_error_message(tw):
    fmt = ReactFormat()
    state = new_state(tw, fmt)
    call = react('APICALL {"name": "search_hotel", "parameters": {"area": "north"}} <COMMAND_END>')
    backend = ScriptedBackend([call] * 5)
    (result,) = run_agent_turns([state], backend, fmt, max_generations=3)

    assert not result.spoke and result.out_of_generations and result.generations == 3
    assert backend.batch_sizes == [1, 1, 1]
    assert state.env.num_calls == 3
    assert [e["kind"] for e in state.errors] == [OUT_OF_GENERATIONS]
    assert result.text == OUT_OF_GENERATIONS_TEXT
    assert state.visible[-1] == {"role": "assistant", "content": OUT_OF_GENERATIONS_TEXT}
    assert state.context[-1] == fmt.speech_message(OUT_OF_GENERATIONS_TEXT)


def test_backend_error_fails_only_that_conversation(tw):
    fmt = NativeFormat()
    states = [new_state(tw, fmt, "ok"), new_state(tw, fmt, "broken")]

    def script(req: GenerationRequest):
        if req.messages[-1]["content"] == "broken":
            return GenerationOutput(text="", error="CUDA out of memory")
        return "Hello."

    ok, broken = run_agent_turns(states, ScriptedBackend(script), fmt)
    assert ok.spoke and not ok.failed
    assert broken.failed and not broken.spoke and [e["kind"] for e in broken.errors] == ["backend_error"]


def test_backend_exception_is_isolated_per_request(tw):
    fmt = NativeFormat()
    states = [new_state(tw, fmt, t) for t in ("a", "poison", "b")]

    def script(req: GenerationRequest):
        if req.messages[-1]["content"] == "poison":
            raise RuntimeError("bad request")
        return "Hi."

    backend = ScriptedBackend(script)
    a, poison, b = run_agent_turns(states, backend, fmt)
    assert a.spoke and b.spoke and poison.failed
    assert poison.errors[0]["kind"] == "backend_error" and "bad request" in poison.errors[0]["message"]
    # One failed batched call, then one call per request.
    assert backend.batch_sizes == [3, 1, 1, 1]


# -- batching and sampling --------------------------------------------------------------------
def test_each_round_is_one_batched_call(tw):
    fmt = NativeFormat()
    # "0" speaks at once, "1" calls one tool first, "2" never speaks.
    states = [new_state(tw, fmt, str(k)) for k in range(3)]

    def script(req: GenerationRequest):
        kind = req.messages[1]["content"]
        tool_rounds = sum(m["role"] == "tool" for m in req.messages)
        if kind == "0" or (kind == "1" and tool_rounds == 1):
            return "Done."
        return calls_out(tool_call("search_hotel", {"area": "north"}))

    backend = ScriptedBackend(script)
    results = run_agent_turns(states, backend, fmt, max_generations=3)
    assert backend.batch_sizes == [3, 2, 1]
    assert [r.generations for r in results] == [1, 2, 3]
    assert [r.spoke for r in results] == [True, True, False]


def test_sampling_per_state_and_per_generation(tw):
    fmt = NativeFormat()
    seeded = new_state(tw, fmt, sampling=SamplingParams(temperature=1.0, seed=7))
    plain = new_state(tw, fmt)
    backend = ScriptedBackend([calls_out(tool_call("search_hotel", {})), "a", "b"])
    run_agent_turns([seeded, plain], backend, fmt, SamplingParams(temperature=0.5))

    by_round = [r.sampling for r in backend.requests]
    # The state's own sampling wins and its seed moves on with every generation.
    assert by_round[0] == SamplingParams(temperature=1.0, seed=stable_seed(7, 0))
    assert by_round[2] == SamplingParams(temperature=1.0, seed=stable_seed(7, 1))
    assert by_round[1] == SamplingParams(temperature=0.5)
    assert generation_sampling(SamplingParams(seed=None), 3).seed is None
    # A list gives one setting per state.
    backend = ScriptedBackend(["x", "y"])
    run_agent_turns([new_state(tw, fmt), new_state(tw, fmt)], backend, fmt,
                    [SamplingParams(seed=1), SamplingParams(seed=2)])
    assert [r.sampling.seed for r in backend.requests] == [stable_seed(1, 0), stable_seed(2, 0)]
    with pytest.raises(ValueError):
        run_agent_turns([new_state(tw, fmt)], backend, fmt, [SamplingParams(), SamplingParams()])


def test_state_copy_is_independent(tw):
    fmt = NativeFormat()
    state = new_state(tw, fmt)
    branch = state.copy()
    run_agent_turns([branch], ScriptedBackend([calls_out(tool_call("search_hotel", HOTEL)), "Found it."]), fmt)
    assert len(branch.context) == 5 and branch.env.num_calls == 1 and branch.counters.agent_turns == 1
    assert len(state.context) == 2 and state.env.num_calls == 0 and state.counters.agent_turns == 0
    assert state.visible == [{"role": "user", "content": "I need a hotel."}] and state.tool_calls == []
