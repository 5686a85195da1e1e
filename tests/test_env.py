"""Hand-worked cases for every ToolWOZ search, booking, error and scoring rule.

A tiny mock domain (five restaurants, three trains, one hand-written task) keeps each
expected answer derivable by hand from the rules in the reference page.
"""

from __future__ import annotations

import json

import pytest

from josh_hf.toolwoz import GoalCall, RecordedCall, ToolSet, ToolWOZ, default_multiwoz_path, goals_met
from josh_hf.toolwoz.database import Database
from josh_hf.toolwoz.tasks import Task, build_goal_calls
from josh_hf.toolwoz.tools import (
    ERROR_INVALID,
    ERROR_LIST_OR_DICT,
    ERROR_NOT_A_DICT,
    ERROR_NOT_ALLOWED,
)

R = [
    {"name": "alpha", "food": "italian", "area": "centre", "pricerange": "cheap", "id": "0"},
    {"name": "bravo", "food": "italian", "area": "centre", "pricerange": "expensive", "id": "1"},
    {"name": "charlie's", "food": "italian", "area": "north", "pricerange": "cheap", "id": "2"},
    {"name": "Delta", "food": "chinese", "area": "centre", "pricerange": "cheap", "id": "3"},
    {"name": "echo", "food": "italian", "area": "centre", "pricerange": "cheap", "id": "4"},
]
T = [
    {"trainID": "TR1", "leaveAt": "08:00", "arriveBy": "09:00", "day": "monday", "departure": "cambridge", "destination": "ely"},
    {"trainID": "TR2", "leaveAt": "09:30", "arriveBy": "10:30", "day": "monday", "departure": "cambridge", "destination": "ely"},
    {"trainID": "TR3", "leaveAt": "10:00", "arriveBy": "11:15", "day": "monday", "departure": "cambridge", "destination": "ely"},
]
GOAL = {
    "restaurant": {
        "info": {"food": "italian", "area": "centre", "pricerange": "cheap"},
        "book": {"people": "2", "day": "monday", "time": "18:00", "invalid": False},
        "fail_info": {},
        "fail_book": {},
    },
    "hotel": {},
    "attraction": {},
    "train": {},
    "taxi": {},
    "police": {},
    "hospital": {},
    "message": ["You want a <span class='emphasis'>cheap</span> italian place"],
}
LOG = [
    {"text": "hi", "metadata": {}},
    {
        "text": "booked",
        "metadata": {"restaurant": {"book": {"booked": [{"name": "alpha", "reference": "REF1"}]}, "semi": {}}},
    },
]


@pytest.fixture(scope="module")
def tools() -> ToolSet:
    root = default_multiwoz_path() / "toolwoz"
    return ToolSet.from_files(json.loads((root / "tools.json").read_text()), json.loads((root / "valid_api_defs.json").read_text()))


@pytest.fixture(scope="module")
def mock(tools) -> ToolWOZ:
    db = Database({"restaurant": R, "train": T, "hotel": [], "attraction": []})
    task = Task(id="MOCK1", goal=GOAL, goal_calls=build_goal_calls(GOAL, LOG, db, tools))
    return ToolWOZ({"MOCK1": task}, db, tools, {"test": ["MOCK1"]})


def test_goal_calls_hold_every_parameter_and_the_booked_record(mock):
    search, book = mock.task("MOCK1").goal_calls
    assert search == GoalCall("search_restaurant", {"food": "italian", "pricerange": "cheap", "name": "", "area": "centre"})
    assert book.name == "book_restaurant"
    assert book.arguments == {"time": "18:00", "day": "monday", "people": "2", "name": "alpha"}
    assert book.booked_uid == "alpha" and book.returns == {"name": "alpha", "reference": "REF1"}
    assert mock.task("MOCK1").user_goal == ["You want a cheap italian place"]


@pytest.mark.parametrize(
    "args, expected_name",
    [
        # goal ⊆ args and the task books: the booked row (r0, not the later match r4)
        ({"food": "italian", "area": "centre", "pricerange": "cheap"}, "alpha"),
        # args ⊆ goal: the last matching row that breaks the goal (r2 is in the north)
        ({"food": "Italian"}, "charlie's"),
        ({"food": "italian", "area": "centre"}, "bravo"),
        # "dont care" is skipped when filtering and dropped by ⊆: wrong row r3 (chinese)
        ({"food": "dont care", "area": "centre"}, "Delta"),
        # neither ⊆ holds: the first matching row
        ({"food": "chinese"}, "Delta"),
        # non-string values are not filters, and 3 != "italian": first row of the table
        ({"food": 3}, "alpha"),
    ],
)
def test_search_rules(mock, args, expected_name):
    result = mock.env("MOCK1").call("search_restaurant", args)
    assert isinstance(result, list) and len(result) == 1
    assert result[0]["name"] == expected_name


def test_search_goal_args_but_no_acceptable_row_returns_nothing(mock):
    # Only r4 matches; it satisfies the goal (no wrong row) but is not the booked one.
    env = mock.env("MOCK1")
    assert env.call("search_restaurant", {"food": "italian", "area": "centre", "pricerange": "cheap", "name": "echo"}) == []
    assert env.calls[0].returned is None


def test_search_quirks_apostrophes_and_capitals_never_match(mock):
    env = mock.env("MOCK1")
    assert env.call("search_restaurant", {"name": "charlie's"}) == []
    assert env.call("search_restaurant", {"name": "delta"}) == []
    assert env.call("search_restaurant", {"name": "Delta"}) == []  # lower-cased before matching


def test_time_comparisons_are_strict_string_comparisons(mock):
    env = mock.env("MOCK1")  # train is not a domain of MOCK1: first row of the matches
    assert env.call("search_train", {"leaveAt": "09:30"})[0]["trainID"] == "TR3"
    assert env.call("search_train", {"leaveAt": "08:00"})[0]["trainID"] == "TR2"
    assert env.call("search_train", {"arriveBy": "10:30"})[0]["trainID"] == "TR1"
    assert env.call("search_train", {"arriveBy": "09:00"}) == []
    assert env.call("search_train", {"leaveAt": "9:30"}) == []  # "10:00" < "9:30" as strings
    assert env.call("search_train", {"leaveAt": "11:00"}) == []


def test_bookings(mock):
    env = mock.env("MOCK1")
    ok = {"name": "alpha", "people": "2", "day": "Monday", "time": "18:00"}
    assert env.call("book_restaurant", ok) == {"success": True, "return": {"name": "alpha", "reference": "REF1"}}
    assert env.call("book_restaurant", {**ok, "people": 2}) == {"success": False, "return": {}}
    assert env.call("book_restaurant", {"name": "alpha", "people": "2", "day": "monday"}) == {"success": False, "return": {}}
    assert env.call("book_restaurant", {**ok, "name": "echo"}) == {"success": False, "return": {}}
    assert env.call("book_train", {"trainID": "TR1", "people": "2"}) == {"success": False, "return": {}}
    assert env.call("book_attraction", {}) == {"success": False, "return": {}}


@pytest.mark.parametrize(
    "name, args, error",
    [
        ("find_food", {}, ERROR_NOT_ALLOWED),
        ("search_restaurant", {"cuisine": "italian"}, ERROR_NOT_ALLOWED),
        ("book_attraction", {"name": "x"}, ERROR_NOT_ALLOWED),
        (None, {}, ERROR_NOT_ALLOWED),
        ("search_police", {}, ERROR_NOT_ALLOWED),
        ("search_restaurant", {"food": ["italian"]}, ERROR_LIST_OR_DICT),
        ("search_restaurant", {"food": {"x": 1}}, ERROR_LIST_OR_DICT),
        ("search_restaurant", "food=italian", ERROR_NOT_A_DICT),
        ("search_restaurant", ["italian"], ERROR_NOT_A_DICT),
        # taxi/hospital APIs pass validation (valid_api_defs lists them) and are then refused
        ("search_taxi", {"departure": "x"}, ERROR_INVALID),
        ("book_hospital", {}, ERROR_INVALID),
    ],
)
def test_error_strings_are_returned_and_recorded(mock, name, args, error):
    env = mock.env("MOCK1")
    assert env.call(name, args) == error
    assert env.calls[-1] == RecordedCall(name, args, error)


def test_scoring_full_partial_and_the_refused_booking_quirk(mock):
    env = mock.env("MOCK1")
    env.call("search_restaurant", {"food": "italian"})  # returns the wrong row (r2)
    assert env.score().reward == 0.0
    env.call("book_restaurant", {"name": "alpha", "people": "2", "day": "monday", "time": "18:00", "stars": "5"})
    assert env.calls[-1].returned == ERROR_NOT_ALLOWED
    score = env.score()  # quirk kept: the refused booking still counts
    assert score.reward == 0.5 and not score.success
    assert [g.name for g in score.missed] == ["search_restaurant"]
    env.call("search_restaurant", {"food": "italian", "area": "centre", "pricerange": "cheap"})
    assert env.score().reward == 1.0 and env.score().success


def test_search_scored_by_uid_only_while_the_booking_goal_remains(mock):
    search, book = mock.task("MOCK1").goal_calls
    r4 = RecordedCall("search_restaurant", {"food": "italian", "area": "centre", "pricerange": "cheap"}, R[4])
    assert goals_met([search, book], [r4]) == [False, False]
    assert goals_met([search], [r4]) == [True]  # booking met earlier: judged as without booking
    # args ⊆ goal: needs goal ⊆ row when there is no booking
    partial_ok = RecordedCall("search_restaurant", {"food": "italian"}, R[0])
    partial_bad = RecordedCall("search_restaurant", {"food": "italian"}, R[1])
    assert goals_met([search], [partial_ok]) == [True]
    assert goals_met([search], [partial_bad]) == [False]
    assert goals_met([search, book], [partial_ok]) == [True, False]  # r0 is the booked uid
    # an error string or an empty search never counts
    assert goals_met([search], [RecordedCall("search_restaurant", {"food": "italian"}, None)]) == [False]
    env = mock.env("MOCK1")
    assert env.goals_met_by([r4], remaining=[search]) == [search]


def test_episodes_copy_independently_and_results_cannot_touch_the_database(mock):
    env = mock.env("MOCK1")
    env.call("search_restaurant", {"food": "chinese"})
    branch = env.copy()
    branch.call("book_restaurant", {"name": "alpha", "people": "2", "day": "monday", "time": "18:00"})
    assert env.num_calls == 1 and branch.num_calls == 2
    row = env.call("search_restaurant", {"food": "chinese"})[0]
    row["name"] = "hacked"
    assert mock.database["restaurant"].rows[3]["name"] == "Delta"
    args = {"food": "chinese"}
    env.call("search_restaurant", args)
    args["food"] = "changed"
    assert env.calls[-1].arguments == {"food": "chinese"}


# -- the real data ------------------------------------------------------------------------

IMPOSSIBLE_TEST_TASKS = {
    "MUL0003": ["search_restaurant"], "MUL0089": ["search_restaurant"], "MUL0225": ["search_train"],
    "MUL0575": ["search_attraction"], "MUL0594": ["search_attraction"], "MUL0744": ["search_hotel"],
    "MUL0831": ["search_attraction"], "MUL0843": ["search_restaurant"], "MUL1050": ["search_hotel"],
    "MUL1254": ["search_restaurant"], "MUL1546": ["search_train"], "MUL1606": ["search_train"],
    "MUL1806": ["search_attraction"], "MUL1901": ["search_attraction"], "MUL2195": ["search_train"],
    "MUL2204": ["search_hotel"], "MUL2365": ["search_restaurant"], "MUL2609": ["search_attraction"],
    "PMUL0630": ["search_train"], "PMUL0815": ["search_train"], "PMUL1087": ["search_train"],
    "PMUL1091": ["search_train"], "PMUL1266": ["search_attraction"], "PMUL1739": ["search_train"],
    "PMUL1772": ["search_train"], "PMUL1779": ["search_train"], "PMUL1966": ["search_train"],
    "PMUL2351": ["search_restaurant"],
}


@pytest.fixture(scope="module")
def toolwoz() -> ToolWOZ:
    return ToolWOZ.from_multiwoz(default_multiwoz_path())


def test_reference_counts(toolwoz):
    s = toolwoz.summary()
    assert s["num_tasks"] == 1598
    assert "train" not in s["splits"] and any("train split" in n for n in s["notes"])
    assert {k: v["tasks"] for k, v in s["splits"].items()} == {"validation": 793, "test": 450, "test_full": 805}
    test = s["splits"]["test"]
    assert test["goal_calls"] == 1291
    assert test["goal_calls_per_tool"] == {
        "search_train": 350, "search_restaurant": 194, "search_attraction": 187, "book_train": 174,
        "search_hotel": 169, "book_restaurant": 127, "book_hotel": 90,
    }
    ids = toolwoz.splits["test"]
    assert ids == sorted(ids) and sum(i.startswith("MUL") for i in ids) == 285
    assert sum(i.startswith("PMUL") for i in ids) == 165


def test_replaying_goal_calls_reaches_the_published_ceiling(toolwoz):
    failures, rewards = {}, []
    for task in toolwoz.split("test"):
        env = toolwoz.env(task.id)
        for g in task.goal_calls:
            env.call(g.name, g.arguments)
        score = env.score()
        rewards.append(score.reward)
        if not score.success:
            failures[task.id] = [g.name for g in score.missed]
    assert failures == IMPOSSIBLE_TEST_TASKS
    assert round(sum(rewards) / len(rewards), 3) == 0.980


def test_known_oddities(toolwoz):
    assert toolwoz.task("MUL0003").booked_uid("restaurant") == "ask"  # not a database name
    # MUL0744: the booked hotel has no name; the reference's fallback (return keys zipped
    # with a pandas row's values by position) fills it with the first matching row's postcode.
    book = toolwoz.task("MUL0744").goal_call("book_hotel")
    assert book.booked_uid == "cb13lh" and book.returns == {"reference": "XJW0KU7Q", "name": "cb13lh"}
    with pytest.raises(KeyError, match="unknown ToolWOZ task id"):
        toolwoz.env("NOPE")


def test_indexed_goal_subset_equals_the_definition(toolwoz):
    checked = 0
    for task in toolwoz.split("test_full"):
        for g in task.goal_calls:
            if g.action == "search":
                table = toolwoz.database[g.domain]
                assert table.subset_mask(g.arguments) == table.subset_mask_scan(g.arguments), (task.id, g.name)
                checked += 1
    table = toolwoz.database["restaurant"]
    for goal in ({"food": "Dont Care"}, {"name": "pizza hut city centre"}, {"signature": "x"}, {"food": "", "area": "centre"}):
        assert table.subset_mask(goal) == table.subset_mask_scan(goal)
    assert checked > 1000
