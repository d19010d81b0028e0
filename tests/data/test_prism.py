"""PRISM reader: exact pairs, histories, drop counts and error messages on small fixtures in
the release's shape (ties, single responses, "EMPTY STRING"), then a short CLI run on them."""

import json
from pathlib import Path

import pytest

from mrm_lightning.data.encoder import TextEncoder
from mrm_lightning.data.records import LoadSummary, RecordError
from mrm_lightning.data.sources.prism import HISTORY, PRISM, read_prism
from mrm_lightning.training.lightning_cli import cli_main
from tests.conftest import REPO, SHARED, needs_shared
from tests.tiny_encoder import HIDDEN, build_tiny_bert

FIXTURES = REPO / "tests" / "fixtures" / "prism"
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


@pytest.mark.parametrize(
    "rule, expected",
    [
        ("paired_turns", ()),  # turn 0 made no pair: the reference protocol leaves it out
        ("chosen_turns", (("user", "first"), ("assistant", "only answer"))),
    ],
)
def test_history_of_earlier_turns_under_each_rule(tmp_path, rule, expected):
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
    [record] = read_prism(path, summary=summary, history=rule)
    # turn 1 (nothing chosen) left no assistant reply: out under both rules, which keeps
    # user/assistant alternating
    assert record.history == expected
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
    "two chosen with different texts": (
        _conversation([*GOOD[:2], {**GOOD[2], "if_chosen": True}]),
        "'conversation_history[2].if_chosen': second chosen response in turn 0 with a different",
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


def test_ties_are_one_chosen_response(tmp_path):
    history = [
        _utterance(0, "user", "hi"),
        _utterance(0, "model", "a", True, 0),
        _utterance(0, "model", "a ", True, 1),  # the same text: one tie, the first kept
        _utterance(0, "model", "b", False, 2),
    ]
    path = tmp_path / "conversations.jsonl"
    path.write_text(json.dumps(_conversation(history)) + "\n")
    summary = LoadSummary("prism")
    [record] = read_prism(path, summary=summary)
    assert (record.prompt, record.chosen, record.rejected) == ("hi", "a", "b")
    assert summary.kept == 1 and not summary.dropped


@pytest.mark.parametrize("empty", ["EMPTY STRING", "  EMPTY STRING\n", "", " "])
def test_empty_string_is_an_empty_text(tmp_path, empty):
    def conversation(user="hi", chosen="a", rejected=("b",)):
        model = [_utterance(0, "model", chosen, True, 0)]
        model += [_utterance(0, "model", text, False, i + 1) for i, text in enumerate(rejected)]
        return _conversation([_utterance(0, "user", user), *model])

    rows = [
        conversation(user=empty),
        conversation(chosen=empty),
        conversation(rejected=(empty, "b")),
        conversation(rejected=("empty string", "EMPTY STRINGS")),  # texts, not the marker
    ]
    path = tmp_path / "conversations.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = LoadSummary("prism")
    records = read_prism(path, summary=summary)
    assert [(r.origin[-1], r.rejected) for r in records] == [
        ("3", "b"),
        ("4", "empty string"),
        ("4", "EMPTY STRINGS"),
    ]
    assert dict(summary.dropped) == {
        "turn without user message": 1,
        "turn without chosen response": 1,
        "empty response text": 1,
        "conversation with no usable turn": 2,
    }


def test_unknown_history_rule_names_the_setting():
    with pytest.raises(ValueError, match=r"PRISM\.history .*'every_turn'"):
        read_prism(CONVERSATIONS, history="every_turn")
    with pytest.raises(ValueError, match=r"PRISM\.history"):
        PRISM(conversations=str(CONVERSATIONS), history="every_turn")


# --- the release's own cases, in its exact shape -----------------------------------------------

RELEASE_CASES = FIXTURES / "conversations_release_cases.jsonl"
MISO, FORECAST = "Call it Miso.", "I cannot see forecasts; check a weather service."
VIEWS = "Views differ; many weigh animal welfare against tradition."
RELEASE_PAIRS = [  # (unit, user, prompt, chosen, rejected)
    ("r1", "ana", "Suggest a name for a cat.", MISO, "Whiskers."),  # EMPTY STRING dropped
    ("r1", "ana", "Suggest a name for a cat.", MISO, "Tom."),
    ("r1", "ana", "One that suits a black cat?", "Shadow.", "Snowball."),  # after a tie
    ("r2", "ana", "Will it rain tomorrow?", FORECAST, "Yes."),  # after an EMPTY STRING message
    (
        "r2",
        "ana",
        "Explain clouds in one sentence.",
        "Clouds are water droplets held up by rising air.",
        "Clouds are fluffy.",
    ),  # after an EMPTY STRING chosen
    ("r4", "ben", "Is it ethical to eat meat?", VIEWS, "No."),  # its copy is no pair
]
RELEASE_DROPS = {
    "empty response text": 2,  # r1 turn 0, r5 (its only rejected response)
    "turn without rejected response": 3,  # r1 turn 1 and r4 turn 1 (ties), r3 (one response)
    "turn without user message": 1,  # r2 turn 0
    "turn without chosen response": 1,  # r2 turn 2
    "identical chosen and rejected": 1,  # r4 turn 0
    "conversation with no usable turn": 2,  # r3, r5
}
CAT = (("user", "Suggest a name for a cat."), ("assistant", MISO))
RAIN = (("user", "Will it rain tomorrow?"), ("assistant", FORECAST))
RELEASE_HISTORIES = {
    "paired_turns": [(), (), CAT, (), RAIN, ()],
    # the tie turn made no pair but has a chosen response; r2 turn 2 has none under both rules
    "chosen_turns": [
        (),
        (),
        (*CAT, ("user", "Another name?"), ("assistant", "Pepper.")),
        (),
        RAIN,
        (),
    ],
}


@pytest.mark.parametrize("rule", RELEASE_HISTORIES)
def test_release_cases_pairs_histories_and_counts(rule):
    summary = LoadSummary("prism")
    records = read_prism(RELEASE_CASES, summary=summary, history=rule)
    assert [(r.unit, r.user, r.prompt, r.chosen, r.rejected) for r in records] == RELEASE_PAIRS
    assert [r.history for r in records] == RELEASE_HISTORIES[rule]
    assert summary.kept == 6 and dict(summary.dropped) == RELEASE_DROPS


def test_the_default_is_the_reference_history():
    assert read_prism(RELEASE_CASES) == read_prism(RELEASE_CASES, history="paired_turns")
    assert PRISM().history == "paired_turns"


PRISM_SHAPE = SHARED / "data" / "prism-shape"


@pytest.mark.parametrize(
    "name, pairs, drops, last_history",
    [
        # c0: "EMPTY STRING" rejected in turn 0, a tie ("Rome.") in turn 1
        (
            "conversations_tie.jsonl",
            3,
            {"empty response text": 1, "turn without rejected response": 1},
            (("user", "What is the capital of France?"), ("assistant", "Paris.")),
        ),
        # c1: a single response ("11") in turn 1
        (
            "conversations_single.jsonl",
            2,
            {"turn without rejected response": 1},
            (("user", "Name a prime number."), ("assistant", "7")),
        ),
    ],
)
@needs_shared("data/prism-shape")
def test_shared_release_shaped_samples_load(name, pairs, drops, last_history):
    summary = LoadSummary("prism")
    records = read_prism(PRISM_SHAPE / name, PRISM_SHAPE / "survey.jsonl", summary)
    assert len(records) == summary.kept == pairs
    assert dict(summary.dropped) == drops
    assert records[-1].history == last_history


# --- through the PRISM source, the encoder and the CLI -----------------------------------------


MODEL = {"score": 50, "model_provider": "openai", "model_name": "gpt-4"}


def write_prism_files(folder: Path, users: int = 10, conversations: int = 8) -> tuple[Path, Path]:
    """Release-shaped files: each conversation has a four-response opening turn (one rejected
    response "EMPTY STRING" in every third conversation), a tie (even conversations) or a
    single response (odd ones) in turn 1, and a two-response turn 2. Per user of 8
    conversations: 3 x (2 + 1) + 5 x (3 + 1) = 29 pairs over 3 x 5 + 5 x 6 = 45 texts."""
    rows, survey = [], [{"user_id": "quit", "num_completed_conversations": 0}]
    for u in range(users):
        survey.append({"user_id": f"u{u}", "num_completed_conversations": conversations})
        for c in range(conversations):
            opening = [f"cat name {u}{c}{k}" for k in "abcd"]
            if c % 3 == 0:
                opening[(c + 1) % 4] = "EMPTY STRING"
            turns = [
                (f"suggest a name for cat {u}{c}", opening, c % 4),
                (f"another one {c}", [f"rain {u}{c}"] * (2 if c % 2 == 0 else 1), None),
                (f"explain clouds {u}{c}", [f"water {u}{c}", f"no {u}{c}"], u % 2),
            ]
            history = []
            for turn, (message, texts, chosen) in enumerate(turns):
                history.append({"turn": turn, "role": "user", "content": message})
                for w, text in enumerate(texts):
                    pick = chosen is None or w == chosen  # None: every response is chosen
                    response = {"content": text, "if_chosen": pick, "within_turn_id": w}
                    history.append({"turn": turn, "role": "model", **response, **MODEL})
            conversation = {"conversation_id": f"u{u}c{c}", "user_id": f"u{u}"}
            rows.append({**conversation, "conversation_turns": 3, HISTORY: history})
    rows.append({**rows[0], "conversation_id": "q0", "user_id": "quit"})
    paths = folder / "conversations.jsonl", folder / "survey.jsonl"
    for path, lines in zip(paths, (rows, survey)):
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return paths


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), seed=0)


def test_release_shaped_prism_loads_through_the_source_and_trains(tmp_path, tiny_bert):
    conversations, survey = write_prism_files(tmp_path)
    encoder = TextEncoder(model=str(tiny_bert), max_length=32, device="cpu")
    cache = str(tmp_path / "c")
    source = PRISM(
        str(conversations), str(survey), encoder=encoder, cache_dir=cache, progress=False
    )
    data = source.load()
    assert data.num_pairs == source.summary.kept == 10 * 29
    assert dict(source.summary.dropped) == {
        "empty response text": 10 * 3,
        "turn without rejected response": 10 * 8,  # every turn 1: a tie or a single response
        "user has no completed conversation": 1,
    }
    assert tuple(data.embeddings.shape) == (10 * 45, HIDDEN)
    # turn 2's history is turn 0 alone: the tie or single response of turn 1 made no pair
    last = source.records()[-1]
    assert (last.unit, last.prompt) == ("u9c7", "explain clouds 97")
    assert last.history == (("user", "suggest a name for cat 97"), ("assistant", "cat name 97d"))

    overrides = {
        "data.source.init_args.conversations": conversations,
        "data.source.init_args.survey": survey,
        "data.source.init_args.cache_dir": cache,  # encoded above: a cache hit
        "data.source.init_args.progress": "false",
        "data.source.init_args.encoder.init_args.model": tiny_bert,
        "data.source.init_args.encoder.init_args.max_length": 32,
        "data.source.init_args.encoder.init_args.device": "cpu",
        "trainer.max_epochs": 2,
        "trainer.accelerator": "cpu",
        "trainer.check_val_every_n_epoch": 1,
        "trainer.logger.init_args.save_dir": tmp_path / "runs",
        "trainer.enable_progress_bar": "false",
    }
    config = ["--config", str(REPO / "configs/prism.yaml")]
    cli = cli_main(["fit", *config, *(a for k, v in overrides.items() for a in (f"--{k}", str(v)))])
    assert cli.trainer.state.finished and cli.trainer.current_epoch == 2
    assert cli.trainer.global_step == 2 * cli.trainer.num_training_batches > 0
    assert cli.datamodule.data.num_pairs == 10 * 29
    split = cli.datamodule.split
    # 10 users: 5 unseen, 5 seen of which the config holds 20% out as validation users
    assert len(split.unseen_users) == 5
    assert len(split.seen_users) == 4 and len(split.validation_users) == 1
    assert cli.model.hparams.embedding_dim == HIDDEN
    results = json.loads(next((tmp_path / "runs").rglob("results.json")).read_text())
    assert "checkpoints" in results["checkpoint"]  # selected on validation, then tested
    for split_name in ("test_seen", "test_unseen", "test"):
        assert 0.0 <= results["metrics"][f"{split_name}/user_acc"] <= 1.0
