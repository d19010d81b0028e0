"""Generic pairs and per-user ratings: exact records, drop counts, pairing rules, caps, errors."""

import dataclasses
import itertools
import json

import pytest

from mrm_lightning.data.records import DUPLICATE_PAIR, LoadSummary, RecordError
from mrm_lightning.data.sources.pairs import PairsFiles, read_pairs
from mrm_lightning.data.sources.ratings import (
    DUPLICATE_RATING,
    EMPTY_RATED_TEXT,
    OVER_CAP,
    item_group,
    read_ratings,
)
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "generic"
PAIRS_JSONL, PAIRS_CSV = FIXTURES / "pairs.jsonl", FIXTURES / "pairs.csv"
RATINGS, RATINGS_NO_PROMPT = FIXTURES / "ratings.jsonl", FIXTURES / "ratings_no_prompt.csv"
HAIKU = "Red leaves drift down,\nthe river carries them home,\nthe year exhales."


def without_origin(records):
    return [dataclasses.replace(record, origin="") for record in records]


def pair_tuples(records):
    return [(r.user, r.chosen, r.rejected, r.unit) for r in records]


# --- pairs -------------------------------------------------------------------------------------


def test_read_pairs_gives_the_exact_records():
    summary = LoadSummary("pairs")
    records = read_pairs(PAIRS_JSONL, summary)
    got = [(r.user, r.prompt, r.chosen, r.rejected, r.unit, r.split) for r in records]
    cat, rain = "Suggest a name for a cat.", "Explain rain in one sentence."
    haiku_prompt = 'Write a haiku about "autumn", please.'
    assert got == [
        ("alice", cat, "Miso, short and warm.", "Cat.", cat, "train"),
        ("alice", cat, "Pepper, for a grey cat.", "Cat.", cat, "train"),
        (
            "alice",
            rain,
            "Water vapour cools, condenses into droplets, and falls once they grow heavy.",
            "It just happens.",
            rain,
            "test",
        ),  # "TEST" read case-insensitively
        ("7", haiku_prompt, HAIKU, "Autumn is a season.", haiku_prompt, None),  # number -> str
        ("bob", "", "Yes, I'd take the job.", "No.", "job-offer", None),  # explicit unit
        (
            "bob",
            "Is 17 prime?",
            "Yes: its only divisors are 1 and 17.",
            "No, 17 = 3 x 6.",
            "primes",
            "test",
        ),
    ]
    assert [r.origin for r in records] == [f"{PAIRS_JSONL}:{n}" for n in (1, 2, 3, 5, 7, 8)]
    assert summary.kept == 6
    assert dict(summary.dropped) == {
        "identical chosen and rejected": 1,  # differ only by a trailing space
        "empty response text": 1,  # a blank rejected text
    }


def test_csv_pairs_equal_jsonl_pairs_apart_from_origin():
    from_json, from_csv = LoadSummary("json"), LoadSummary("csv")
    json_records = read_pairs(PAIRS_JSONL, from_json)
    csv_records = read_pairs(PAIRS_CSV, from_csv)
    assert without_origin(csv_records) == without_origin(json_records)
    assert (from_csv.kept, from_csv.dropped) == (from_json.kept, from_json.dropped)
    # the header is line 1; the haiku row spans lines 6-8, so the rows after it start at 10, 11
    assert [r.origin for r in csv_records] == [f"{PAIRS_CSV}:{n}" for n in (2, 3, 4, 6, 10, 11)]


def test_read_pairs_works_without_a_summary():
    assert len(read_pairs(PAIRS_JSONL)) == 6


# --- ratings with prompts ----------------------------------------------------------------------


def test_ratings_pair_within_a_prompt_higher_score_chosen():
    summary = LoadSummary("ratings")
    records = read_ratings(RATINGS, summary=summary)
    book, greet = "Recommend a book.", "Greet me."
    dune, anyb, hobbit, nearest = (
        "Dune, for its world-building.",
        "Any book.",
        "The Hobbit, a gentle start.",
        "Whichever is nearest.",
    )
    assert pair_tuples(records) == [
        # book: scores 5, 1, 4, 1 -> every pair but (1, 1)
        ("carol", dune, anyb, book),
        ("carol", dune, hobbit, book),
        ("carol", dune, nearest, book),
        ("carol", hobbit, anyb, book),
        ("carol", hobbit, nearest, book),
        # fruit: "Mango." rated 3 and 2 is the same text (dropped), the empty text is dropped
        # greet: 2.5 > 1; "Say hi." shares "Hello there!" with "Greet me.", so one unit
        ("carol", "Hello there!", "Greetings.", greet),
        ("carol", "Hi.", "Hello there!", greet),  # the string score "3" beats 1
        # user 42 (a JSON number): Blue and Green both 2 make no pair, both beat Red (0.5)
        ("42", "Blue.", "Red.", "Pick a colour."),
        ("42", "Green.", "Red.", "Pick a colour."),
    ]
    assert [r.prompt for r in records[:5]] == [book] * 5
    assert records[6].prompt == "Say hi."  # the prompt stays the pair's own prompt
    assert all(r.split is None for r in records)
    assert records[0].origin == f"{RATINGS}:1,2"
    assert records[3].origin == f"{RATINGS}:3,2"  # chosen line first
    assert summary.kept == 9
    assert dict(summary.dropped) == {"identical chosen and rejected": 1, "empty rated text": 1}


def test_ratings_cap_is_honoured_and_seeded():
    summary = LoadSummary("ratings")
    capped = read_ratings(RATINGS, max_pairs_per_user=3, seed=0, summary=summary)
    carol = [r for r in capped if r.user == "carol"]
    assert len(carol) == 3 and len([r for r in capped if r.user == "42"]) == 2
    assert summary.dropped[OVER_CAP] == 4  # carol had 7 pairs
    full = read_ratings(RATINGS)
    assert all(r in full for r in capped)
    positions = [full.index(r) for r in carol]
    assert positions == sorted(positions)  # the sample keeps file order
    assert read_ratings(RATINGS, max_pairs_per_user=3, seed=0) == capped
    samples = {
        tuple(pair_tuples(read_ratings(RATINGS, max_pairs_per_user=3, seed=s))) for s in range(6)
    }
    assert len(samples) > 1  # another seed, another sample


# --- ratings without prompts -------------------------------------------------------------------


def dave_scores():
    return {
        "Great.": {5.0, 2.0},
        "Okay.": {3.0},
        "Terrible, really.": {1.0},
        "Fine by me.": {3.0},
        "Loved it!": {4.5},
        "Not for me.": {1.5},
        "Meh.": {2.0},
        "Best thing I read this year.": {5.0},
    }


def test_ratings_without_prompt_one_group_pairs_every_different_score():
    summary = LoadSummary("no prompt")
    records = read_ratings(RATINGS_NO_PROMPT, item_groups=1, summary=summary)  # one group
    erin = [r for r in records if r.user == "erin"]
    # erin: 3.5, 1, 3.5 -> the two 3.5s beat the 1 and make no pair together
    assert pair_tuples(erin) == [
        ("erin", "Short and clear.", "Too long.", "group0"),
        ("erin", "Clear enough.", "Too long.", "group0"),
    ]
    dave = [r for r in records if r.user == "dave"]
    # 9 non-empty items: 36 pairs, 3 with equal scores (5/5, 3/3, 2/2), 1 "Great." vs "Great."
    assert len(dave) == 32 and {r.unit for r in dave} == {"group0"}
    scores = dave_scores()
    assert all(max(scores[r.chosen]) > min(scores[r.rejected]) for r in dave)
    assert ("Okay.", "Fine by me.") not in {(r.chosen, r.rejected) for r in dave}
    assert all(r.prompt == "" for r in records)
    assert summary.kept == 34
    assert dict(summary.dropped) == {"identical chosen and rejected": 1, "empty rated text": 1}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ratings_without_prompt_groups_never_share_a_text(seed):
    records = read_ratings(RATINGS_NO_PROMPT, seed=seed, item_groups=3)
    dave = [r for r in records if r.user == "dave"]
    texts_of: dict[str, set[str]] = {}
    for r in dave:
        texts_of.setdefault(r.unit, set()).update((r.chosen, r.rejected))
    assert set(texts_of) <= {"group0", "group1", "group2"}
    for a, b in itertools.combinations(texts_of.values(), 2):
        assert not a & b
    # every two items of one group with different scores make exactly one pair
    scores = dave_scores()
    for unit, texts in texts_of.items():
        assert all(item_group(t, 3, seed) == int(unit.removeprefix("group")) for t in texts)
        items = [(t, s) for t in texts for s in scores[t]]
        expected = sum(
            1 for (t1, s1), (t2, s2) in itertools.combinations(items, 2) if s1 != s2 and t1 != t2
        )
        assert sum(r.unit == unit for r in dave) == expected
    assert read_ratings(RATINGS_NO_PROMPT, seed=seed, item_groups=3) == records


def test_a_rated_text_is_in_the_same_group_for_every_user(tmp_path):
    rows = ["user_id,text,score"]
    texts = [f"Answer number {i}." for i in range(12)]
    for user in ("ann", "bob", "cy"):
        rows += [f"{user},{text},{(i * 7 + len(user)) % 5}" for i, text in enumerate(texts)]
    path = tmp_path / "shared_texts.csv"
    path.write_text("\n".join(rows) + "\n")
    records = read_ratings(path, item_groups=4, seed=1)
    unit_of_text: dict[str, str] = {}
    for r in records:
        for text in (r.chosen, r.rejected):
            assert unit_of_text.setdefault(text, r.unit) == r.unit  # whoever rated it
    assert len({r.user for r in records}) == 3 and len(set(unit_of_text.values())) > 1


def test_ratings_without_prompt_groups_depend_on_the_seed():
    groupings = {
        frozenset(
            (r.unit, r.chosen)
            for r in read_ratings(RATINGS_NO_PROMPT, seed=s, item_groups=3)
            if r.user == "dave"
        )
        for s in range(6)
    }
    assert len(groupings) > 1


def test_ratings_reject_bad_settings():
    with pytest.raises(ValueError, match="item_groups"):
        read_ratings(RATINGS, item_groups=0)
    with pytest.raises(ValueError, match="max_pairs_per_user"):
        read_ratings(RATINGS, max_pairs_per_user=0)


# --- errors ------------------------------------------------------------------------------------


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_record_error(call, path, line, field):
    with pytest.raises(RecordError) as caught:
        call(path)
    message = str(caught.value)
    assert path.name in message and f":{line}:" in message and repr(field) in message, message
    assert (caught.value.line, caught.value.field_name) == (line, field)


GOOD_PAIR = '{"user_id": "u", "prompt": "p", "chosen": "a", "rejected": "b"}\n'


def test_missing_field_jsonl(tmp_path):
    path = write(
        tmp_path, "missing.jsonl", GOOD_PAIR + '{"user_id": "u", "prompt": "p", "chosen": "a"}\n'
    )
    assert_record_error(read_pairs, path, 2, "rejected")


def test_missing_column_csv_names_the_data_row(tmp_path):
    path = write(tmp_path, "missing.csv", "user_id,prompt,chosen\nu,p,a\n")
    assert_record_error(read_pairs, path, 2, "rejected")


def test_short_csv_row_after_a_multiline_value(tmp_path):
    text = 'user_id,prompt,chosen,rejected\nu,"two\nlines",a,b\n\nu,p,a\n'
    path = write(tmp_path, "short.csv", text)
    assert_record_error(read_pairs, path, 5, "rejected")  # header 1, rows at 2-3, blank 4


def test_csv_row_with_too_many_values(tmp_path):
    path = write(tmp_path, "long.csv", "user_id,prompt,chosen,rejected\nu,p,a,b,c\n")
    assert_record_error(read_pairs, path, 2, "<csv>")


def test_empty_csv_has_no_header(tmp_path):
    assert_record_error(read_pairs, write(tmp_path, "empty.csv", ""), 1, "<header>")


@pytest.mark.parametrize("value", ["validation", "val", "dev"])
def test_bad_split_value(tmp_path, value):
    row = GOOD_PAIR.replace("}", f', "split": "{value}"}}')
    path = write(tmp_path, "split.jsonl", GOOD_PAIR + GOOD_PAIR + row)
    assert_record_error(read_pairs, path, 3, "split")
    csv_text = f"user_id,prompt,chosen,rejected,split\nu,p,a,b,{value}\n"
    assert_record_error(read_pairs, write(tmp_path, "split.csv", csv_text), 2, "split")


def test_empty_user_id(tmp_path):
    path = write(tmp_path, "user.csv", "user_id,prompt,chosen,rejected\n ,p,a,b\n")
    assert_record_error(read_pairs, path, 2, "user_id")


def test_wrong_type_in_json(tmp_path):
    path = write(tmp_path, "type.jsonl", GOOD_PAIR.replace('"a"', "3"))
    assert_record_error(read_pairs, path, 1, "chosen")


@pytest.mark.parametrize("score", ['"high"', "true", "NaN", '""'])
def test_non_numeric_score_jsonl(tmp_path, score):
    rows = [
        '{"user_id": "u", "text": "a", "score": 1}',
        f'{{"user_id": "u", "text": "b", "score": {score}}}',
    ]
    path = write(tmp_path, "scores.jsonl", "\n".join(rows) + "\n")
    assert_record_error(read_ratings, path, 2, "score")


def test_non_numeric_score_csv(tmp_path):
    path = write(tmp_path, "scores.csv", "user_id,text,score\nu,a,1\nu,b,4\nu,c,four\n")
    assert_record_error(read_ratings, path, 4, "score")


def test_missing_text_in_ratings(tmp_path):
    path = write(tmp_path, "text.csv", "user_id,score\nu,1\n")
    assert_record_error(read_ratings, path, 2, "text")


@pytest.mark.parametrize(
    "reader, good",
    [(read_pairs, GOOD_PAIR), (read_ratings, '{"user_id": "u", "text": "a", "score": 1}\n')],
)
def test_bad_json(tmp_path, reader, good):
    path = write(tmp_path, "bad.jsonl", good + "\n" + '{"user_id": "u", "prompt": \n')
    assert_record_error(reader, path, 3, "<json>")


@pytest.mark.parametrize("reader", [read_pairs, read_ratings])
def test_unknown_extension(tmp_path, reader):
    path = write(tmp_path, "pairs.txt", GOOD_PAIR)
    with pytest.raises(ValueError, match="pairs.txt") as caught:
        reader(path)
    assert not isinstance(caught.value, RecordError)


# --- what readers drop, said: duplicates, users with no pair ------------------------------------


def pair_line(user, prompt, chosen, rejected):
    return json.dumps({"user_id": user, "prompt": prompt, "chosen": chosen, "rejected": rejected})


def test_a_repeated_pair_is_dropped_and_counted(tmp_path):
    lines = [
        pair_line("u", "p", "a", "b"),
        pair_line("u", "p", "a", "b"),  # the same judgement again: dropped
        pair_line("u", "p", "b", "a"),  # the other way round: a different judgement, kept
        pair_line("v", "p", "a", "b"),  # another user's: kept
        pair_line("u", "p", "a", "b"),
    ]
    path = write(tmp_path, "pairs.jsonl", "\n".join(lines) + "\n")
    summary = LoadSummary("pairs")
    records = read_pairs(path, summary)
    assert [r.origin for r in records] == [f"{path}:{n}" for n in (1, 3, 4)]
    assert summary.kept == 3 and dict(summary.dropped) == {DUPLICATE_PAIR: 2}
    assert str(summary) == "pairs: kept 3 pairs\n  dropped 2 (duplicate pair)"


def test_a_pair_repeated_in_another_file_is_dropped_once(tmp_path):
    first = write(tmp_path, "a.jsonl", pair_line("u", "p", "a", "b") + "\n")
    second = write(tmp_path, "b.csv", "user_id,prompt,chosen,rejected\nu,p,a,b\nu,q,c,d\n")
    summary = LoadSummary("PairsFiles")
    records = PairsFiles([str(first), str(second)]).read_records(summary)
    assert [(r.prompt, r.chosen) for r in records] == [("p", "a"), ("q", "c")]
    assert summary.kept == 2 and dict(summary.dropped) == {DUPLICATE_PAIR: 1}


def test_users_whose_every_pair_is_dropped_are_counted(tmp_path):
    lines = [
        pair_line("u", "p", "a", "b"),
        pair_line("v", "p", "a", "a "),
        pair_line("w", "p", "", "b"),
    ]
    path = write(tmp_path, "pairs.jsonl", "\n".join(lines) + "\n")
    summary = LoadSummary("pairs")
    assert [r.user for r in read_pairs(path, summary)] == ["u"]
    assert str(summary) == (
        "pairs: kept 1 pairs\n  dropped 1 (empty response text)\n"
        "  dropped 1 (identical chosen and rejected)\n  users with no pair: 2 (every pair dropped)"
    )
    # a user with pairs in another file of the same source is not one of them
    other = write(tmp_path, "more.jsonl", pair_line("v", "q", "c", "d") + "\n")
    summary = LoadSummary("PairsFiles")
    PairsFiles([str(path), str(other)]).read_records(summary)
    assert summary.users_without_pairs() == {"every pair dropped": 1}


def test_ratings_users_with_no_pair_are_counted_by_reason(tmp_path):
    rows = [
        "user_id,prompt,text,score",
        "paired,p,a,1",
        "paired,p,b,2",
        "paired,p,b,2",  # the same rating again: dropped, or it would pair twice
        "alone,p,a,5",
        "equal,p,a,3",
        "equal,p,b,3",
        "apart,p,a,1",
        "apart,q,b,2",  # another prompt: the two never pair
        "blank,p, ,1",
    ]
    path = write(tmp_path, "ratings.csv", "\n".join(rows) + "\n")
    summary = LoadSummary("ratings")
    records = read_ratings(path, summary=summary)
    assert [(r.user, r.chosen, r.rejected) for r in records] == [("paired", "b", "a")]
    assert str(summary) == (
        "ratings: kept 1 pairs\n"
        f"  dropped 1 ({DUPLICATE_RATING})\n"
        f"  dropped 1 ({EMPTY_RATED_TEXT})\n"
        "  users with no pair: 1 (all scores equal)\n"
        "  users with no pair: 1 (every rated text empty)\n"
        "  users with no pair: 1 (no two items of one prompt or group with different scores "
        "and texts)\n"
        "  users with no pair: 1 (one rated item)"
    )
