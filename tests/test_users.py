"""User simulators on real ToolWOZ tasks: the agenda user, the replay user, the LLM users."""

from __future__ import annotations

import pytest

from josh_hf.agents.rule_based import RuleBasedAgent
from josh_hf.backends.base import GenerationOutput
from josh_hf.backends.scripted import ScriptedBackend
from josh_hf.simulation.runner import ConversationRunner, RunnerConfig
from josh_hf.toolwoz import ToolWOZ, default_multiwoz_path
from josh_hf.users import (
    END_OF_CONVERSATION,
    AgendaUser,
    LLMGoalUser,
    LLMGuideUser,
    ReplayUser,
    UserTurn,
    load_user,
)
from josh_hf.users.agenda import build_plan
from josh_hf.users.llm import OPENING_MESSAGE
from josh_hf.users.slots import (
    DONTCARE,
    Vocabulary,
    asked_slots,
    booking_reference,
    requested_attributes,
    says_booking_failed,
    says_no_match,
)


@pytest.fixture(scope="module")
def tw() -> ToolWOZ:
    return ToolWOZ.from_multiwoz(default_multiwoz_path())


@pytest.fixture(scope="module")
def vocab(tw: ToolWOZ) -> Vocabulary:
    return Vocabulary.from_database(tw.database)


def talk(user, session, agent_messages: list[str]) -> list[dict]:
    """Drive ``session`` with fixed agent messages; the visible conversation that results."""
    conv: list[dict] = []
    for text in [None, *agent_messages]:
        if text is not None:
            conv.append({"role": "assistant", "content": text})
        turn = user.respond([(session, list(conv))])[0]
        conv.append({"role": "user", "content": turn.text, "end": turn.end})
        if turn.end:
            break
    return conv


# -- slots -------------------------------------------------------------------------------
def test_extract_reads_templated_and_natural_values(vocab: Vocabulary) -> None:
    got = vocab.extract("I need a cheap guesthouse in the north with free wifi. It should be fine without free parking.", "hotel")
    assert got == {"pricerange": "cheap", "type": "guesthouse", "area": "north", "internet": "yes", "parking": "no"}
    got = vocab.extract("A train from Kings Cross to Cambridge on Sunday, arriving by 9:30 please, for 3 people.", "train")
    assert got == {"departure": "london kings cross", "destination": "cambridge", "day": "sunday", "arriveBy": "09:30", "people": "3"}
    got = vocab.extract("Please book a table for six people at 9:45 on friday.", "restaurant")
    assert got == {"people": "6", "time": "9:45", "day": "friday"}  # restaurant times stay as said
    assert vocab.extract("I'm looking for a particular restaurant called Rosa's place, please.", "restaurant")["name"] == "rosas place"
    assert vocab.extract("I want to visit King's College.", "attraction") == {"name": "king's college"}
    # A "no preference" answer waives the slots asked about.
    assert vocab.extract("I don't mind.", "hotel", expecting=["area"]) == {"area": DONTCARE}


def test_agent_act_patterns() -> None:
    assert booking_reference("Booked! Your reference number is JXVKZ7KV.") == "JXVKZ7KV"
    assert booking_reference("I can give you the reference number once it is booked.") is None
    assert says_booking_failed("I'm sorry, I was unable to book that for 8 people.")
    assert not says_booking_failed("Your booking is confirmed, reference number is 00000083.")
    assert says_no_match("I'm sorry, there is no restaurant matching your request.")
    assert not says_no_match("I found bangkok city, an expensive thai restaurant in the centre.")
    assert asked_slots("I found 3. What area would you like? And your price range?", "hotel") == ["area", "pricerange"]
    assert asked_slots("Would you like me to book it?", "hotel") == []
    assert requested_attributes("What is the phone number and postcode?", "attraction") == ["phone", "postcode"]
    assert requested_attributes("It should have free parking.", "hotel") == []


# -- agenda user ---------------------------------------------------------------------------
def test_plan_uses_backup_goals_only_where_the_instructions_name_them(tw: ToolWOZ) -> None:
    restaurant, hotel = build_plan(tw.task("MUL1211"))
    assert (restaurant.domain, hotel.domain) == ("restaurant", "hotel")
    assert restaurant.first_info == {"food": "spanish", "pricerange": "expensive", "area": "centre"}
    assert restaurant.info["food"] == "african"
    assert hotel.first_book == {"stay": "3", "day": "friday", "people": "8"} and hotel.book["stay"] == "2"
    # MUL1466's fail_info name "taj tandoori" is nowhere in its instructions: no first choice.
    plans = build_plan(tw.task("MUL1466"))
    assert [p.domain for p in plans] == ["restaurant", "train"]  # the instructions' order
    assert plans[0].first_info is None


def test_agenda_answers_questions_with_goal_values(tw: ToolWOZ, vocab: Vocabulary) -> None:
    # MUL0003: hotel {pricerange cheap, internet yes, type guesthouse, parking yes},
    # booking 6 people, 4 nights, sunday; no area constraint.
    user = AgendaUser()
    session = user.new_session(tw.task("MUL0003"), seed=0)
    conv = talk(user, session, ["What price range are you looking for?"])
    reply = conv[-1]["content"]
    assert vocab.extract(reply, "hotel")["pricerange"] == "cheap"
    conv = talk(user, session, ["What price range are you looking for?", "Which area of town would you like?"])
    assert vocab.extract(conv[-1]["content"], "hotel", expecting=["area"])["area"] == DONTCARE
    conv = talk(user, session, ["How many people, and how many nights will you stay?"])
    got = vocab.extract(conv[-1]["content"], "hotel")
    assert (got["people"], got["stay"], got["day"]) == ("6", "4", "sunday")

    # MUL2060 opens with a train from kings lynn to cambridge on sunday, leaving after 09:30.
    session = user.new_session(tw.task("MUL2060"), seed=0)
    conv = talk(user, session, ["Where will you be departing from?"])
    assert vocab.extract(conv[-1]["content"], "train", expecting=["departure"])["departure"] == "kings lynn"
    conv = talk(user, session, ["What time would you like to leave?"])
    assert vocab.extract(conv[-1]["content"], "train", expecting=["leaveAt"])["leaveAt"] == "09:30"


def test_agenda_switches_from_fail_info_to_info_after_no_match(tw: ToolWOZ) -> None:
    user = AgendaUser()
    session = user.new_session(tw.task("MUL1211"), seed=0)
    conv = talk(user, session, [
        "I found bangkok city, an expensive thai restaurant in the centre. Would you like me to book it?",
    ])
    said = " ".join(m["content"] for m in conv if m["role"] == "user").lower()
    assert "spanish" in said and "african" not in said  # the first choice, all constraints out
    assert session.state.trying_first_info
    conv = talk(user, session, [
        "I found bangkok city, an expensive thai restaurant in the centre. Would you like me to book it?",
        "I'm sorry, there is no restaurant serving spanish food in the centre.",
    ])
    last = conv[-1]["content"].lower()
    assert "african" in last and "spanish" not in last
    assert not session.state.trying_first_info
    assert not conv[-1]["end"]


def test_agenda_switches_from_fail_book_to_book_after_failure(tw: ToolWOZ, vocab: Vocabulary) -> None:
    user = AgendaUser()
    session = user.new_session(tw.task("MUL1211"), seed=0)
    offer = "I found bedouin, an expensive african restaurant in the centre. The phone number is 01223367660."
    talk(user, session, ["I'm sorry, there is no restaurant like that.", offer])
    assert session.state.index == 1  # restaurant done (no booking wanted): on to the hotel
    hotel_offer = "I found gonville hotel, a 3-star hotel in the centre, expensive, with free wifi."
    conv = talk(user, session, ["I'm sorry, there is no restaurant like that.", offer, hotel_offer, hotel_offer + " Really."])
    assert vocab.extract(conv[-1]["content"], "hotel")["stay"] == "3"  # the first choice
    conv = talk(user, session, ["I'm sorry, there is no restaurant like that.", offer, hotel_offer, hotel_offer + " Really.",
                                "I'm sorry, I was unable to book that."])
    assert vocab.extract(conv[-1]["content"], "hotel")["stay"] == "2"
    conv.pop()
    conv = talk(user, session, ["I'm sorry, there is no restaurant like that.", offer, hotel_offer, hotel_offer + " Really.",
                                "I'm sorry, I was unable to book that.", "Booked! The reference number is 1KWO1IPE."])
    assert conv[-1]["end"] and session.state.end_reason == "goal done"


def test_agenda_ends_when_the_agent_is_stuck(tw: ToolWOZ) -> None:
    user = AgendaUser()
    session = user.new_session(tw.task("MUL0003"), seed=0)
    conv = talk(user, session, ["Sorry, could you say that again?"] * 2)
    assert conv[-1]["end"] and session.state.end_reason == "agent repeated itself"
    session = user.new_session(tw.task("MUL0003"), seed=0)
    conv = talk(user, session, [f"Hmm, let me see ({i})." for i in range(10)])
    assert conv[-1]["end"] and session.state.end_reason == "no progress"


def _run(tw: ToolWOZ, user, ids: list[str], seed: int, fmt: str = "native"):
    runner = ConversationRunner(tw, RuleBasedAgent(tw), user, RunnerConfig(agent_format=fmt, seed=seed))
    return runner.run(ids)


def test_agenda_is_deterministic_per_seed(tw: ToolWOZ) -> None:
    ids = [t.id for t in tw.split("test")[:12]]
    first = _run(tw, AgendaUser(), ids, seed=0)
    again = _run(tw, AgendaUser(), ids, seed=0)
    other = _run(tw, AgendaUser(), ids, seed=1)
    assert [t.messages for t in first] == [t.messages for t in again]
    assert [t.messages for t in first] != [t.messages for t in other]
    # Each conversation opens with the first domain of the plan, whatever the wording.
    assert all(t.messages[0]["role"] == "user" for t in first)


def test_agenda_session_copies_are_independent(tw: ToolWOZ) -> None:
    user = AgendaUser()
    session = user.new_session(tw.task("MUL0003"), seed=3)
    opening = user.respond([(session, [])])[0]
    branch = session.copy()
    conv = [{"role": "user", "content": opening.text}, {"role": "assistant", "content": "What area do you prefer?"}]
    a = user.respond([(session, conv)])[0]
    b = user.respond([(branch, conv)])[0]
    assert a == b
    # The other branch heard something else and goes its own way; the first is unaffected.
    conv_b = conv[:1] + [{"role": "assistant", "content": "I'm sorry, there is no hotel like that."}]
    assert user.respond([(branch, conv_b)])[0] != a
    assert user.respond([(session, conv)])[0] == a


# -- replay user ---------------------------------------------------------------------------
def test_replay_reproduces_the_multiwoz_user_turns(tw: ToolWOZ) -> None:
    ids = ["MUL0021", "MUL0035", "MUL0080"]  # dialogues of 10 turns: 5 user turns each
    for transcript in _run(tw, ReplayUser(), ids, seed=0):
        task = tw.task(transcript.task_id)
        original = [t["text"] for t in task.dialogue if t["role"] == "user"]
        said = [m["content"] for m in transcript.messages if m["role"] == "user"]
        assert said == original
        assert transcript.ended_by == "user"
        assert transcript.messages[-1]["role"] == "assistant"  # the last original turn got its answer


def test_replay_ends_after_the_last_turn(tw: ToolWOZ) -> None:
    task = tw.task("MUL0021")
    user = ReplayUser()
    session = user.new_session(task)
    conv: list[dict] = []
    for _ in range(5):
        turn = user.respond([(session, list(conv))])[0]
        assert not turn.end
        conv += [{"role": "user", "content": turn.text}, {"role": "assistant", "content": "ok"}]
    assert user.respond([(session, conv)])[0].end


# -- LLM users -----------------------------------------------------------------------------
def test_llm_goal_prompt_role_flip_and_one_call_per_batch(tw: ToolWOZ) -> None:
    tasks = [tw.task(i) for i in ("MUL0003", "MUL0004", "MUL0014")]
    backend = ScriptedBackend([
        "Hi, I need a cheap guesthouse.",
        "Customer: I'm looking for a restaurant called hakka.",
        GenerationOutput(text="I need a hotel in the south."),
    ])
    user = load_user("llm-goal", backend=backend)
    assert isinstance(user, LLMGoalUser) and not isinstance(user, LLMGuideUser)
    sessions = [user.new_session(t, seed=0) for t in tasks]
    turns = user.respond([(s, []) for s in sessions])
    assert backend.batch_sizes == [3]
    assert turns[0] == UserTurn("Hi, I need a cheap guesthouse.")
    assert turns[1].text == "I'm looking for a restaurant called hakka."  # speaker label dropped
    for task, request in zip(tasks, backend.requests):
        system = request.messages[0]
        assert system["role"] == "system"
        for sentence in task.user_goal:
            assert sentence in system["content"]
        assert "<span" not in system["content"] and END_OF_CONVERSATION in system["content"]
        assert task.dialogue[1]["text"] not in system["content"]  # llm-goal sees no dialogue
        assert request.messages[1:] == [{"role": "user", "content": OPENING_MESSAGE}]
        assert request.tools is None and request.sampling.temperature == 0.0

    conv = [
        {"role": "user", "content": "Hi, I need a cheap guesthouse."},
        {"role": "assistant", "content": "Any area?"},
        {"role": "user", "content": "No, but free parking."},
        {"role": "assistant", "content": "Booked, reference ABC12345."},
    ]
    backend = ScriptedBackend([f"Thanks, that's all. {END_OF_CONVERSATION}"])
    user = LLMGoalUser(backend)
    turn = user.respond([(user.new_session(tasks[0]), conv)])[0]
    assert turn == UserTurn("Thanks, that's all.", end=True)
    flipped = backend.requests[0].messages[2:]
    assert [m["role"] for m in flipped] == ["assistant", "user", "assistant", "user"]
    assert [m["content"] for m in flipped] == [m["content"] for m in conv]


def test_llm_guide_sees_the_original_dialogue(tw: ToolWOZ) -> None:
    task = tw.task("MUL0003")
    backend = ScriptedBackend([END_OF_CONVERSATION])
    user = load_user("llm-guide", backend=backend)
    turn = user.respond([(user.new_session(task), [])])[0]
    assert turn.end and turn.text == ""
    prompt = backend.requests[0].messages[0]["content"]
    for sentence in task.user_goal:
        assert sentence in prompt
    for t in task.dialogue:
        who = "Customer" if t["role"] == "user" else "Agent"
        assert f"{who}: {' '.join(t['text'].split())}" in prompt


def test_llm_user_backend_error_raises_and_load_user_checks_names(tw: ToolWOZ) -> None:
    user = LLMGoalUser(ScriptedBackend([]))  # exhausted script: an error output
    with pytest.raises(RuntimeError, match="user backend failed"):
        user.respond([(user.new_session(tw.task("MUL0003")), [])])
    with pytest.raises(ValueError, match="needs a backend"):
        load_user("llm-goal")
    with pytest.raises(ValueError, match="unknown user"):
        load_user("oracle")
    assert isinstance(load_user("agenda", patience=5), AgendaUser)
