"""PRISM reader: exact pairs, histories, drop counts and error messages on small fixtures."""

import json
from pathlib import Path

import pytest

from mrm_lightning.records import LoadSummary, RecordError
from mrm_lightning.sources.prism import read_prism

FIXTURES = Path(__file__).parent / "fixtures" / "prism"
CONVERSATIONS, SURVEY = FIXTURES / "conversations.jsonl", FIXTURES / "survey.jsonl"

MEZZE = "A mezze spread: hummus, falafel, tabbouleh and flatbreads."
HUMMUS = "Hummus improves overnight; make the falafel mix ahead and fry it late."
ETHICS = "Many ethicists accept small lies that prevent serious harm."
VOTING = "Compulsory voting raises turnout but limits freedom of choice."

# (unit, user, chosen, rejected) in file, turn and within-turn order
EXPECTED_WITH_SURVEY = [
    ("c1", "user1", MEZZE, "Try a vegetable lasagne: it feeds six easily."),
    ("c1", "user1", MEZZE, "A mushroom risotto scales well and can be prepared ahead."),
    ("c1", "user1", MEZZE, "Cook whatever you like."),
    ("c1", "user1", HUMMUS, "Hummus and tabbouleh keep well overnight; fry falafel on the day."),
    ("c1", "user1", "Baklava or an orange and pistachio cake would suit the mezze.", "Ice cream."),
    ("c2", "user1", ETHICS, "No, honesty always comes first."),
    ("c2", "user1", ETHICS, "It depends on the culture you live in and the stakes involved."),
    ("c4", "user3", VOTING, "Yes, everyone must vote."),
    ("c4", "user3", VOTING, "Australia has compulsory voting and turnout above 90%."),
]

DROPS_IN_KEPT_USERS = {
    "identical chosen and rejected": 1,  # c2 turn 0: a repeated response
    "turn without chosen response": 1,  # c2 turn 1
    "turn without rejected response": 1,  # c3 turn 0: a single response
    "conversation with no usable turn": 1,  # c3
    "turn without user message": 1,  # c4 turn 1
}


def _pairs(records):
    return [(r.unit, r.user, r.chosen, r.rejected) for r in records]


def test_pairs_with_survey_are_exact():
    summary = LoadSummary("prism")
    records = read_prism(CONVERSATIONS, SURVEY, summary)
    assert _pairs(records) == EXPECTED_WITH_SURVEY
    assert all(r.split is None for r in records)
    assert summary.kept == 9
    assert dict(summary.dropped) == {
        **DROPS_IN_KEPT_USERS,
        "user has no completed conversation": 1,  # user4, counted once for c5 and c7
        "user absent from survey": 1,  # user5 (c6)
    }


def test_prompts_histories_and_origins():
    records = read_prism(CONVERSATIONS, SURVEY)
    first, turn_1, turn_2 = records[0], records[3], records[4]
    assert first.prompt == "What should I cook for a vegetarian dinner party of six?"
    assert first.history == ()
    assert turn_1.prompt == "Which of those can I make the day before?"
    assert turn_1.history == (
        ("user", "What should I cook for a vegetarian dinner party of six?"),
        ("assistant", MEZZE),
    )
    # earlier turns carry the chosen response, the one the conversation continued from
    assert turn_2.prompt == "And a dessert to go with it?"
    assert turn_2.history == (
        ("user", "What should I cook for a vegetarian dinner party of six?"),
        ("assistant", MEZZE),
        ("user", "Which of those can I make the day before?"),
        ("assistant", HUMMUS),
    )
    assert first.origin == f"{CONVERSATIONS}:1"
    assert records[-1].origin == f"{CONVERSATIONS}:4"
    assert records[-1].prompt == "Should voting be compulsory?" and records[-1].history == ()


def test_without_survey_every_user_is_kept():
    summary = LoadSummary("prism")
    records = read_prism(CONVERSATIONS, summary=summary)
    assert _pairs(records)[:9] == EXPECTED_WITH_SURVEY
    assert _pairs(records)[9:] == [
        ("c5", "user4", "About 384,400 km on average.", "Very far."),
        ("c6", "user5", "Bonjour.", "Bonsoir."),
        ("c7", "user4", "By most definitions, yes.", "No, it is its own category."),
    ]
    assert summary.kept == 12
    assert dict(summary.dropped) == DROPS_IN_KEPT_USERS


def test_reading_is_deterministic():
    assert read_prism(CONVERSATIONS, SURVEY) == read_prism(CONVERSATIONS, SURVEY)


def _utterance(turn, role, content, chosen=None, within=0):
    item = {"turn": turn, "role": role, "content": content}
    if role == "model":
        item.update(if_chosen=chosen, within_turn_id=within, model_name="m", score=50)
    return item


def _conversation(history, cid="c1"):
    return {"conversation_id": cid, "user_id": "u1", "conversation_history": history}


GOOD = [
    _utterance(0, "user", "hi"),
    _utterance(0, "model", "a", True, 0),
    _utterance(0, "model", "b", False, 1),
]


def test_empty_history_is_a_conversation_without_usable_turn(tmp_path):
    path = tmp_path / "conversations.jsonl"
    path.write_text(json.dumps(_conversation([])) + "\n")
    summary = LoadSummary("prism")
    assert read_prism(path, summary=summary) == []
    assert dict(summary.dropped) == {"conversation with no usable turn": 1}


def test_empty_user_message_counts_as_missing(tmp_path):
    path = tmp_path / "conversations.jsonl"
    path.write_text(json.dumps(_conversation([{**GOOD[0], "content": "  "}, *GOOD[1:]])) + "\n")
    summary = LoadSummary("prism")
    assert read_prism(path, summary=summary) == []
    assert dict(summary.dropped) == {
        "turn without user message": 1,
        "conversation with no usable turn": 1,
    }


def test_history_keeps_earlier_turns_with_a_chosen_response(tmp_path):
    history = [
        _utterance(0, "user", "first"),
        _utterance(0, "model", "only answer", True),
        _utterance(1, "user", "second"),
        _utterance(1, "model", "x", False, 0),
        _utterance(1, "model", "y", False, 1),
        _utterance(2, "user", "third"),
        _utterance(2, "model", "good", True, 0),
        _utterance(2, "model", "bad", False, 1),
    ]
    path = tmp_path / "conversations.jsonl"
    path.write_text(json.dumps(_conversation(history)) + "\n")
    summary = LoadSummary("prism")
    [record] = read_prism(path, summary=summary)
    # turn 0 (no rejected response) still shaped the conversation; turn 1 (nothing chosen)
    # left no assistant reply, so it is left out to keep user/assistant alternating
    assert record.history == (("user", "first"), ("assistant", "only answer"))
    assert (record.prompt, record.chosen, record.rejected) == ("third", "good", "bad")
    assert dict(summary.dropped) == {
        "turn without rejected response": 1,
        "turn without chosen response": 1,
    }


def _without(item, key):
    return {k: v for k, v in item.items() if k != key}


MALFORMED = {
    "missing history": (
        _without(_conversation(GOOD), "conversation_history"),
        "'conversation_history'",
    ),
    "history not a list": (_conversation({"turn": 0}), "'conversation_history'"),
    "utterance not an object": (_conversation(["hi"]), "'conversation_history[0]'"),
    "utterance without role": (
        _conversation([GOOD[0], _without(GOOD[1], "role")]),
        "'conversation_history[1].role'",
    ),
    "utterance without content": (
        _conversation([_without(GOOD[0], "content")]),
        "'conversation_history[0].content'",
    ),
    "turn not an int": (
        _conversation([{**GOOD[0], "turn": "0"}]),
        "'conversation_history[0].turn'",
    ),
    "unknown role": (
        _conversation([{**GOOD[0], "role": "system"}]),
        "'conversation_history[0].role'",
    ),
    "model without if_chosen": (
        _conversation([GOOD[0], _without(GOOD[1], "if_chosen")]),
        "'conversation_history[1].if_chosen'",
    ),
    "two chosen": (
        _conversation([*GOOD[:2], {**GOOD[2], "if_chosen": True}]),
        "'conversation_history[2].if_chosen'",
    ),
    "two user messages": (_conversation([GOOD[0], *GOOD]), "'conversation_history[1].role'"),
    "empty then second user message": (
        _conversation([{**GOOD[0], "content": " "}, *GOOD]),
        "'conversation_history[1].role'",
    ),
    "missing conversation_id": (
        _without(_conversation(GOOD), "conversation_id"),
        "'conversation_id'",
    ),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_conversation_names_file_line_and_field(tmp_path, name):
    obj, field = MALFORMED[name]
    path = tmp_path / "conversations.jsonl"
    path.write_text(json.dumps(_conversation(GOOD, "ok")) + "\n" + json.dumps(obj) + "\n")
    with pytest.raises(RecordError) as caught:
        read_prism(path)
    message = str(caught.value)
    assert "conversations.jsonl:2:" in message
    assert field in message


def test_bad_json_names_file_and_line(tmp_path):
    path = tmp_path / "conversations.jsonl"
    path.write_text(json.dumps(_conversation(GOOD)) + "\n" + '{"conversation_id": \n')
    with pytest.raises(RecordError, match=r"conversations\.jsonl:2: field '<json>'"):
        read_prism(path)


def test_malformed_survey_names_file_line_and_field(tmp_path):
    survey = tmp_path / "survey.jsonl"
    survey.write_text(
        '{"user_id": "u1", "num_completed_conversations": 1}\n'
        '{"user_id": "u2", "num_completed_conversations": "two"}\n'
    )
    with pytest.raises(RecordError, match=r"survey\.jsonl:2: field 'num_completed_conversations'"):
        read_prism(CONVERSATIONS, survey)
