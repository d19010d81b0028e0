"""Reddit TL;DR reader and the paper's split protocols: exact records, drops, errors, splits.

The fixture (tests/fixtures/tldr/comparisons.jsonl) has invented texts in the OpenAI
"summarize from feedback" format. Its 16 lines, by worker:

- A: post 1 twice, posts 2 and 3 in train; news article (line 5, dropped); post 4 twice and
  post 3 again in valid1 / valid2 (post 3 is on both sides: the leak guard leaves it unused).
- B: posts 1 and 5 in train; post 2 with no choice (line 11, dropped) and post 2 in valid1.
- C: posts 5 and 6 in train, then identical summaries (line 15, dropped): train only.
- D: post 6 in valid2: validation only.
"""

import hashlib
import json
from pathlib import Path

import pytest
import torch

import mrm_lightning
from mrm_lightning import EpisodicDataModule, PreferenceData, PreferenceSource
from mrm_lightning.data.records import LoadSummary, RecordError
from mrm_lightning.data.sources.tldr import read_tldr, release_split, tldr_prompt
from mrm_lightning.data.splits import TEST, TRAIN, UNUSED, VAL, split_pairs
from tests.conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "tldr" / "comparisons.jsonl"
A = "Qx7LmN2pRt5VbK9wZc3HfJ8sYd1GuE"
B = "Hn4TzW8kPq2XrM6vLc9BfS3jDy7GaU"
C = "Rb5YcK1mVn8TqZ3wLx6HsP9dFj2GeN"
D = "Wf2KsN7xQb4LmR9tZv1HcJ6pYd3GaE"

# (fixture line, worker, post id, split) of every kept record, in file order
EXPECTED_RECORDS = [
    (1, A, "t3_fx0001", "train"),
    (2, A, "t3_fx0001", "train"),
    (3, A, "t3_fx0002", "train"),
    (4, A, "t3_fx0003", "train"),
    (6, A, "t3_fx0004", "test"),
    (7, A, "t3_fx0004", "test"),
    (8, A, "t3_fx0003", "test"),
    (9, B, "t3_fx0001", "train"),
    (10, B, "t3_fx0005", "train"),
    (12, B, "t3_fx0002", "test"),
    (13, C, "t3_fx0005", "train"),
    (14, C, "t3_fx0006", "train"),
    (16, D, "t3_fx0006", "test"),
]


def fixture_rows():
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


# --- the fixture itself ---------------------------------------------------------------------


def test_fixture_is_in_the_release_format():
    rows = fixture_rows()
    assert len(rows) == 16
    for row in rows:
        assert set(row) == {"info", "summaries", "choice", "worker", "split", "batch", "extra"}
        assert len(row["worker"]) == 30
        assert len(row["summaries"]) == 2
        assert all(set(s) == {"text", "policy", "note"} for s in row["summaries"])
    assert {row["split"] for row in rows} == {"train", "valid1", "valid2"}
    assert sum("article" in row["info"] and "post" not in row["info"] for row in rows) == 1


# --- reader -----------------------------------------------------------------------------------


def test_read_tldr_keeps_the_exact_records_and_counts_the_drops():
    summary = LoadSummary("tldr")
    records = read_tldr([FIXTURE], summary)
    got = [(int(r.origin.rsplit(":", 1)[1]), r.user, r.unit, r.split) for r in records]
    assert got == EXPECTED_RECORDS
    assert all(r.origin == f"{FIXTURE}:{line}" for r, (line, *_) in zip(records, got))
    assert all(r.history == () for r in records)
    assert summary.kept == 13
    assert dict(summary.dropped) == {
        "not a post comparison (news article)": 1,  # line 5
        "missing or invalid choice": 1,  # line 11
        "identical chosen and rejected": 1,  # line 15
    }
    assert "kept 13 pairs" in str(summary)


def test_chosen_and_rejected_follow_choice():
    rows = fixture_rows()
    records = read_tldr([FIXTURE])
    for record, (line, *_) in zip(records, EXPECTED_RECORDS):
        row = rows[line - 1]
        texts = [s["text"] for s in row["summaries"]]
        assert record.chosen == texts[row["choice"]]
        assert record.rejected == texts[1 - row["choice"]]
    # line 2: choice 1, so the second summary is chosen
    second = records[1]
    assert rows[1]["choice"] == 1
    assert second.chosen.startswith(" Tomatoes split after rain")
    assert second.rejected == " Rain is bad for tomatoes, what do?"
    # line 1: choice 0
    assert records[0].chosen == second.chosen and records[0].rejected == " My tomatoes crack."


def test_prompt_is_the_post_in_the_policy_format():
    records = read_tldr([FIXTURE])
    first = records[0]
    assert first.prompt.startswith("SUBREDDIT: r/gardening\nTITLE: My tomato plants keep")
    assert "\nPOST: Every time it rains after a dry week" in first.prompt
    assert first.prompt.endswith("\nTL;DR:")
    for record in records:
        assert "SUBREDDIT: r/" in record.prompt and "TITLE:" in record.prompt
        assert "POST:" in record.prompt and record.prompt.endswith("TL;DR:")
    # every comparison of one post shares the prompt
    assert records[0].prompt == records[1].prompt == records[7].prompt
    assert records[3].prompt == records[6].prompt
    assert tldr_prompt({"id": "x", "post": "Body", "title": "Head", "subreddit": "sub"}) == (
        "SUBREDDIT: r/sub\nTITLE: Head\nPOST: Body\nTL;DR:"
    )


@pytest.mark.parametrize(
    "value, expected",
    [
        ("train", "train"),
        ("valid1", "test"),
        ("valid2", "test"),
        ("validation", "test"),
        ("test", "test"),
        ("TRAIN", "train"),
        (None, None),
        ("other", None),
    ],
)
def test_release_split(value, expected):
    assert release_split(value) == expected


# --- malformed rows ---------------------------------------------------------------------------


def _good_row():
    return fixture_rows()[0]


def _write(tmp_path, bad_line: str) -> Path:
    """A good row on line 1, a blank line 2 and the bad row on line 3."""
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_good_row()) + "\n\n" + bad_line + "\n")
    return path


def _without_worker():
    row = _good_row()
    del row["worker"]
    return row


def _three_summaries():
    row = _good_row()
    row["summaries"].append({"text": " A third one.", "policy": "ref", "note": ""})
    return row


def _summary_without_text():
    row = _good_row()
    del row["summaries"][1]["text"]
    return row


def _summary_text_not_a_string():
    row = _good_row()
    row["summaries"][0]["text"] = 42
    return row


def _worker_not_a_string():
    row = _good_row()
    row["worker"] = 17
    return row


@pytest.mark.parametrize(
    "make_row, field_name",
    [
        (_without_worker, "worker"),
        (_worker_not_a_string, "worker"),
        (_three_summaries, "summaries"),
        (_summary_without_text, "summaries[1].text"),
        (_summary_text_not_a_string, "summaries[0].text"),
    ],
)
def test_malformed_rows_name_file_line_and_field(tmp_path, make_row, field_name):
    path = _write(tmp_path, json.dumps(make_row()))
    with pytest.raises(RecordError) as caught:
        read_tldr([path])
    error = caught.value
    assert (error.path, error.line, error.field_name) == (str(path), 3, field_name)
    assert str(error).startswith(f"{path}:3: field {field_name!r}:")


def test_bad_json_line_names_file_and_line(tmp_path):
    path = _write(tmp_path, '{"info": {"id": "t3_x", "post": "cut off')
    with pytest.raises(RecordError, match=r"bad\.jsonl:3: field '<json>': not valid JSON"):
        read_tldr([path])


def test_post_without_id_names_the_info_field(tmp_path):
    row = _good_row()
    del row["info"]["id"]
    path = _write(tmp_path, json.dumps(row))
    with pytest.raises(RecordError) as caught:
        read_tldr([path])
    assert caught.value.field_name == "id" and caught.value.line == "3 (info)"


def test_the_error_comes_from_the_right_file(tmp_path):
    bad = _write(tmp_path, json.dumps(_without_worker()))
    with pytest.raises(RecordError, match=r"bad\.jsonl:3: field 'worker'"):
        read_tldr([FIXTURE, bad])


# --- protocols on hand-built data --------------------------------------------------------------


def make_data(rows, given=True, dim=4, seed=0):
    """PreferenceData from ``(user, unit, given_split)`` rows; every pair has its own texts."""
    gen = torch.Generator().manual_seed(seed)
    num_pairs = len(rows)
    users = [r[0] for r in rows]
    return PreferenceData(
        embeddings=torch.randn(2 * num_pairs, dim, generator=gen),
        user=torch.tensor(users),
        chosen=torch.arange(0, 2 * num_pairs, 2),
        rejected=torch.arange(1, 2 * num_pairs, 2),
        unit=torch.tensor([r[1] for r in rows]),
        user_ids=[f"user{u}" for u in range(max(users) + 1)],
        given_split=torch.tensor([r[2] for r in rows]) if given else None,
    ).validate()


def given_split_rows():
    """u0 and u3 have both sides; u1 only train, u2 only test (both dropped)."""
    rows = []
    for unit in range(6):  # u0: six train units of two pairs
        rows += [(0, unit, TRAIN)] * 2
    rows += [(0, 10, TEST), (0, 11, TEST), (0, 11, TEST)]
    rows += [(0, 10, TRAIN)]  # the same post in u0's train and test: the leak guard
    rows += [(0, 12, UNUSED)]  # no given label: never used
    rows += [(1, u, TRAIN) for u in range(20, 26)]
    rows += [(2, u, TEST) for u in range(30, 33)]
    for unit in range(40, 46):  # u3: six train units of two pairs
        rows += [(3, unit, TRAIN)] * 2
    rows += [(3, 50, TEST), (3, 51, TEST)]
    return rows


GIVEN_SETTINGS = dict(
    unseen_fraction=0.5,
    val_fraction=0.2,
    test_fraction=0.3,
    max_train_pairs_seen=4,
    max_train_pairs_unseen=2,
    min_pairs_per_user=1,
    seed=3,
    use_given_split=True,
)


def test_given_split_keeps_test_pairs_and_drops_one_sided_users():
    rows = given_split_rows()
    data = make_data(rows)
    uncapped = {**GIVEN_SETTINGS, "max_train_pairs_seen": None, "max_train_pairs_unseen": None}
    split = split_pairs(data, **uncapped)  # no cap: only the leak guard can leave a pair unused
    assert sorted(split.dropped_users.tolist()) == [1, 2]
    assert sorted(split.seen_users.tolist() + split.unseen_users.tolist()) == [0, 3]
    assert len(split.seen_users) == len(split.unseen_users) == 1
    given, pair_split = data.given_split, split.pair_split
    kept = torch.isin(data.user, torch.tensor([0, 3]))
    # every given TEST pair of a kept user is TEST, and only those are
    assert torch.equal(pair_split == TEST, (given == TEST) & kept)
    # TRAIN / VAL come only from given TRAIN pairs
    assert (given[(pair_split == TRAIN) | (pair_split == VAL)] == TRAIN).all()
    # dropped users' pairs and unlabelled pairs are unused
    assert (pair_split[~kept] == UNUSED).all()
    assert pair_split[rows.index((0, 12, UNUSED))] == UNUSED
    # the leak guard: u0's train pair on unit 10 (also a test unit) is unused
    assert pair_split[rows.index((0, 10, TRAIN))] == UNUSED


def test_given_split_carves_validation_by_unit_and_caps_training():
    rows = given_split_rows()
    data = make_data(rows)
    split = split_pairs(data, **GIVEN_SETTINGS)
    side_of_unit = {}
    for unit, side in zip(data.unit.tolist(), split.pair_split.tolist()):
        if side != UNUSED:  # a unit is on one side for everybody
            assert side_of_unit.setdefault(unit, side) == side
    seen, unseen = int(split.seen_users[0]), int(split.unseen_users[0])
    for user, cap in ((seen, 4), (unseen, 2)):
        mine = data.user == user
        # the cap keeps whole units (2 pairs each) and never exceeds the cap
        train = int((mine & (split.pair_split == TRAIN)).sum())
        assert train <= cap and train % 2 == 0
        # the test side is never capped
        assert int((mine & (split.pair_split == TEST)).sum()) == int(
            (mine & (data.given_split == TEST)).sum()
        )
    # validation comes from the training pool only: units with no TEST pair of any user
    assert split.pair_split[data.unit == 10].tolist() == [TEST, UNUSED]  # unit 10: test wins
    test_units = set(data.unit[data.given_split == TEST].tolist())
    val_units = set(data.unit[split.pair_split == VAL].tolist())
    assert val_units and val_units.isdisjoint(test_units)
    assert (data.given_split[split.pair_split == VAL] == TRAIN).all()


def test_given_split_is_reproducible():
    data = make_data(given_split_rows())
    first, second = split_pairs(data, **GIVEN_SETTINGS), split_pairs(data, **GIVEN_SETTINGS)
    assert torch.equal(first.pair_split, second.pair_split)
    assert torch.equal(first.seen_users, second.seen_users)
    assert torch.equal(first.unseen_users, second.unseen_users)


def test_given_split_without_labels_names_the_setting():
    data = make_data(given_split_rows(), given=False)
    with pytest.raises(ValueError, match="use_given_split"):
        split_pairs(data, **GIVEN_SETTINGS)


def test_min_units_per_user_counts_distinct_units_not_pairs():
    rows = [(0, u % 2, TRAIN) for u in range(12)]  # 12 pairs over 2 units
    rows += [(1, u, TRAIN) for u in range(6)]  # 6 units (shares units 0, 1 with user 0)
    rows += [(2, u % 5, TRAIN) for u in range(10)]  # 10 pairs over 5 units
    rows += [(3, 100 + u, TRAIN) for u in range(7)]  # 7 units
    data = make_data(rows, given=False)
    settings = dict(
        unseen_fraction=0.0,
        val_fraction=0.0,
        test_fraction=0.5,
        max_train_pairs_seen=None,
        max_train_pairs_unseen=None,
        min_pairs_per_user=1,
        seed=0,
    )
    split = split_pairs(data, min_units_per_user=6, **settings)  # PRISM: >= 6 conversations
    assert sorted(split.dropped_users.tolist()) == [0, 2]
    assert sorted(split.seen_users.tolist()) == [1, 3]
    assert (split.pair_split[torch.isin(data.user, torch.tensor([0, 2]))] == UNUSED).all()
    everyone = split_pairs(data, min_units_per_user=1, **settings)
    assert len(everyone.dropped_users) == 0
    # min_pairs_per_user still applies on its own
    few = split_pairs(data, **{**settings, "min_pairs_per_user": 8})
    assert sorted(few.dropped_users.tolist()) == [1, 3]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generic_protocol_never_puts_a_unit_on_two_sides(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    rows = []
    units_of = {}
    for user in range(8):
        units_of[user] = 10 if user % 2 == 0 else 7
        for unit in range(units_of[user]):  # 1 to 3 pairs per unit; unit ids shared by users
            rows += [(user, unit, UNUSED)] * int(torch.randint(1, 4, (1,), generator=gen))
    data = make_data(rows, given=False)
    split = split_pairs(
        data,
        unseen_fraction=0.5,
        val_fraction=0.0,
        test_fraction=0.5,
        max_train_pairs_seen=None,
        max_train_pairs_unseen=None,
        min_pairs_per_user=1,
        seed=seed,
    )
    assert len(split.dropped_users) == 0 and len(split.seen_users) == 4
    assert (split.pair_split != UNUSED).all()
    side_of_unit = {}
    for unit, side in zip(data.unit.tolist(), split.pair_split.tolist()):
        assert side_of_unit.setdefault(unit, side) == side  # one side for every user
    # PRISM's 50/50: half of the 10 distinct units, for everybody
    assert sorted(side_of_unit.values()).count(TEST) == 5


def test_generic_protocol_with_validation_keeps_three_sides_apart():
    rows = [(user, unit, UNUSED) for user in range(4) for unit in range(10) for _ in range(2)]
    data = make_data(rows, given=False)
    split = split_pairs(
        data,
        unseen_fraction=0.25,
        val_fraction=0.2,
        test_fraction=0.5,
        max_train_pairs_seen=None,
        max_train_pairs_unseen=2,
        min_pairs_per_user=1,
        seed=7,
    )
    assert len(split.unseen_users) == 1
    for user in range(4):
        mine = data.user == user
        sides = {
            p: set(data.unit[mine & (split.pair_split == p)].tolist())
            for p in (TRAIN, VAL, TEST, UNUSED)
        }
        for a, b in ((TRAIN, VAL), (TRAIN, TEST), (VAL, TEST), (UNUSED, TEST), (UNUSED, VAL)):
            assert sides[a].isdisjoint(sides[b])
        assert len(sides[TEST]) == 5 and len(sides[VAL]) == 2
        expected_train = 1 if user in split.unseen_users.tolist() else 3  # cap 2 pairs = 1 unit
        assert len(sides[TRAIN]) == expected_train


# --- the data module ---------------------------------------------------------------------------


class HandBuilt(PreferenceSource):
    """A source returning fixed data, as a user's own source class would."""

    embedding_dim = 4

    def __init__(self, rows):
        self.rows = rows

    def load(self) -> PreferenceData:
        return make_data(self.rows)


def test_data_module_with_the_given_split(monkeypatch):
    lines = []
    monkeypatch.setattr(mrm_lightning.data.datamodule, "rank_zero_info", lines.append)
    rows = given_split_rows()
    dm = EpisodicDataModule(
        HandBuilt(rows),
        users_per_batch=1,
        support_size=2,
        eval_users_per_batch=2,
        val_fraction=0.2,
        max_train_pairs_seen=None,
        max_train_pairs_unseen=4,
        min_pairs_per_user=1,
        use_given_split=True,
        seed=0,
    )
    assert dm.embedding_dim == 4
    dm.setup("fit")
    assert sorted(dm.split.dropped_users.tolist()) == [1, 2]
    for part in (TRAIN, VAL, TEST):
        assert sorted(dm.pairs_by_split[part]) == [0, 3]
    given = dm.data.given_split
    for user in (0, 3):
        test_rows = dm.pairs_by_split[TEST][user]
        assert sorted(test_rows.tolist()) == [
            i for i, r in enumerate(rows) if r[0] == user and r[2] == TEST
        ]
        assert (given[dm.pairs_by_split[TRAIN][user]] == TRAIN).all()
        assert (given[dm.pairs_by_split[VAL][user]] == TRAIN).all()
    seen, unseen = int(dm.split.seen_users[0]), int(dm.split.unseen_users[0])
    # 12 pool pairs (six units of two), less those in validation units; no cap on seen users
    assert len(dm.pairs_by_split[TRAIN][seen]) + len(dm.pairs_by_split[VAL][seen]) == 12
    assert len(dm.pairs_by_split[TRAIN][unseen]) <= 4
    assert len(lines) == 1
    assert lines[0].startswith("4 users: 1 seen, 1 unseen, 0 validation, 2 removed (")
    assert "1 users with no pair in the test units" in lines[0]  # u1: train only
    assert "1 users with no pair in the training units" in lines[0]  # u2: test only
    batch = next(iter(dm.train_dataloader()))
    assert batch is not None


# --- end to end: RedditTLDR with a stub encoder -------------------------------------------------


def stub_vector(item) -> torch.Tensor:
    digest = hashlib.sha256(json.dumps(item).encode()).digest()
    return torch.tensor([b / 255.0 - 0.5 for b in digest[:4]], dtype=torch.float32)


class StubEncoder:
    """Stands in for the MiniLM encoder: a deterministic hash of each (history, prompt, text)."""

    embedding_dim = 4

    def __init__(self):
        self.encoded = []

    def identity(self):
        return {"model": "stub-hash-encoder", "dim": 4}

    def encode(self, items, progress=True):
        self.encoded.append(list(items))
        return torch.stack([stub_vector(item) for item in items])


class RefusingEncoder(StubEncoder):
    def encode(self, items, progress=True):
        raise AssertionError("the cache should have answered")


def test_reddit_tldr_end_to_end_with_a_stub_encoder(tmp_path):
    encoder = StubEncoder()
    source = mrm_lightning.RedditTLDR(
        paths=[str(FIXTURE)], encoder=encoder, cache_dir=str(tmp_path / "cache"), progress=False
    )
    assert source.embedding_dim == 4
    data = source.load()
    records = source.records()
    assert source.summary.kept == 13 and sum(source.summary.dropped.values()) == 3
    assert data.num_pairs == 13
    assert data.user_ids == [A, B, C, D]
    assert data.user.tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 3]
    assert data.unit.tolist() == [0, 0, 1, 2, 3, 3, 2, 0, 4, 1, 4, 5, 5]  # post ids, first seen
    expected_given = [TRAIN if split == "train" else TEST for *_, split in EXPECTED_RECORDS]
    assert data.given_split.tolist() == expected_given
    # 18 distinct (prompt, summary): 4 for post 1, 3 each for posts 2, 3, 4 and 6, 2 for post 5
    assert data.embeddings.shape == (18, 4)
    assert len(encoder.encoded) == 1 and len(encoder.encoded[0]) == 18
    assert len(set(encoder.encoded[0])) == 18
    chosen, rejected = data.chosen, data.rejected
    assert chosen[0] == chosen[1]  # A chose the same summary of post 1 twice
    assert rejected[0] == rejected[7]  # A and B rejected the same summary of post 1
    assert chosen[8] == chosen[10] and rejected[8] == rejected[10]  # B and C: same pair
    assert rejected[2] == chosen[9]  # post 2's " Should I pay off my loan?"
    assert rejected[3] == chosen[6]  # post 3's first summary, in A's train and test
    assert chosen[11] == rejected[12]  # post 6's first summary, C train / D test
    # " Need advice." under two different posts: two different rows
    assert records[6].rejected == records[12].chosen == " Need advice."
    assert rejected[6] != chosen[12]
    # each row holds the embedding of its own (history, prompt, text)
    for index, record in enumerate(records):
        item_chosen = (record.history, record.prompt, record.chosen)
        item_rejected = (record.history, record.prompt, record.rejected)
        assert torch.equal(data.embeddings[chosen[index : index + 1]][0], stub_vector(item_chosen))
        assert torch.equal(
            data.embeddings[rejected[index : index + 1]][0], stub_vector(item_rejected)
        )
    # a second source with the same inputs reads the cache and never encodes
    again = mrm_lightning.RedditTLDR(
        paths=[str(FIXTURE)], encoder=RefusingEncoder(), cache_dir=str(tmp_path / "cache")
    ).load()
    everything = torch.arange(18)
    assert torch.equal(again.embeddings[everything], data.embeddings[everything])


def test_reddit_tldr_under_the_paper_protocol(tmp_path):
    source = mrm_lightning.RedditTLDR(
        paths=[str(FIXTURE)], encoder=StubEncoder(), cache_dir=str(tmp_path), progress=False
    )
    data = source.load()
    split = split_pairs(
        data,
        unseen_fraction=0.5,
        val_fraction=0.0,
        test_fraction=0.3,
        max_train_pairs_seen=150,
        max_train_pairs_unseen=50,
        min_pairs_per_user=1,
        seed=0,
        use_given_split=True,
    )
    # C (train only) and D (validation only) are dropped; A and B split 50/50
    assert sorted(split.dropped_users.tolist()) == [2, 3]
    assert sorted(split.seen_users.tolist() + split.unseen_users.tolist()) == [0, 1]
    # A: post 3 is in its train and its test, so its train pair (line 4) is unused; post 2 is
    # in A's train and B's test: a post is on one side for everybody, so A's line 3 is unused
    assert split.pair_split.tolist() == [
        TRAIN, TRAIN, UNUSED, UNUSED, TEST, TEST, TEST,  # A
        TRAIN, TRAIN, TEST,  # B
        UNUSED, UNUSED,  # C
        UNUSED,  # D
    ]  # fmt: skip


def test_float_choice_from_a_json_writer_is_read_as_an_int(tmp_path):
    row = json.loads(FIXTURE.read_text().splitlines()[0])
    row["choice"] = 1.0
    path = tmp_path / "float_choice.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (record,) = read_tldr([path])
    assert record.chosen == row["summaries"][1]["text"]


def test_given_split_drops_a_user_whose_only_training_posts_leak_into_test():
    # user 0's one training post is also in its test set: after the leak guard it has no
    # training pair, so it must be removed rather than kept with nothing to adapt on.
    user, unit = torch.tensor([0, 0, 1, 1]), torch.tensor([1, 1, 2, 3])
    data = PreferenceData(
        torch.randn(8, 3),
        user,
        torch.tensor([0, 2, 4, 6]),
        torch.tensor([1, 3, 5, 7]),
        unit,
        ["a", "b"],
        given_split=torch.tensor([TRAIN, TEST, TRAIN, TEST]),
    )
    summary = split_pairs(
        data,
        unseen_fraction=0.0,
        val_fraction=0.0,
        test_fraction=0.3,
        max_train_pairs_seen=None,
        max_train_pairs_unseen=None,
        min_pairs_per_user=1,
        seed=0,
        use_given_split=True,
    )
    assert summary.dropped_users.tolist() == [0] and summary.seen_users.tolist() == [1]
