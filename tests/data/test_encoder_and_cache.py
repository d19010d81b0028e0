"""TextEncoder, the embedding cache and a text source end to end, on a tiny random BERT.

Offline and fast: the encoder is a seeded 16-dimensional BERT written to a temporary folder
(tests/tiny_encoder.py), never the bundled MiniLM; caches live under tmp_path.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mrm_lightning.data.cache import ArrowEmbeddings, fingerprint
from mrm_lightning.data.encoder import TextEncoder, pool
from mrm_lightning.data.sources.pairs import PairsFiles
from mrm_lightning.data.sources.text import index_texts
from tests.conftest import REPO
from tests.data.cache_helpers import (
    all_rows,
    forbid_encoding,
    make_encoder,
    record_encoded,
    segments,
)
from tests.tiny_encoder import HIDDEN, build_tiny_bert

PAIRS = REPO / "tests/fixtures/generic/pairs.jsonl"
# the tiny vocabulary spells most words letter by letter, so a few fixture responses are longer
# than max_length and are cut, with a warning (tested in tests/test_truncation.py)
pytestmark = pytest.mark.filterwarnings("ignore:.*longer than encoder.max_length:UserWarning")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), seed=0)


@pytest.fixture
def encoder(model_dir) -> TextEncoder:
    return make_encoder(model_dir)


ITEMS = [
    ((), "suggest a name for the cat.", "miso."),
    (
        (("user", "is it rain?"), ("assistant", "no.")),
        "explain rain in one sentence.",
        "water in the clouds gets heavy and falls to the ground as rain.",
    ),
    ((), "", "yes"),
    ((), "is 17 prime?", "yes: 1 and 17."),
    ((), "write about the cat, please.", "a cat"),
    ((), "no", "it is the name of a cat and the name of a cloud and the name of a rain."),
    ((), "suggest a name for the cat.", "pepper"),
]


# ------------------------------------------------------------------------------------ pool
HIDDEN_STATES = torch.arange(24, dtype=torch.float32).reshape(2, 4, 3)


@pytest.mark.parametrize(
    "mask, mean, last",
    [
        (  # right padding: 3 and 2 real tokens
            [[1, 1, 1, 0], [1, 1, 0, 0]],
            [[3.0, 4.0, 5.0], [13.5, 14.5, 15.5]],
            [[6.0, 7.0, 8.0], [15.0, 16.0, 17.0]],
        ),
        (  # left padding: 3 and 2 real tokens
            [[0, 1, 1, 1], [0, 0, 1, 1]],
            [[6.0, 7.0, 8.0], [19.5, 20.5, 21.5]],
            [[9.0, 10.0, 11.0], [21.0, 22.0, 23.0]],
        ),
    ],
    ids=["right-padding", "left-padding"],
)
def test_pool_by_hand(mask, mean, last):
    for dtype in (torch.long, torch.bool):
        mask_t = torch.tensor(mask, dtype=dtype)
        assert torch.equal(pool(HIDDEN_STATES, mask_t, "mean"), torch.tensor(mean))
        assert torch.equal(pool(HIDDEN_STATES, mask_t, "last_token"), torch.tensor(last))


def test_pool_rejects_unknown_pooling():
    with pytest.raises(ValueError, match="pooling"):
        pool(HIDDEN_STATES, torch.ones(2, 4), "cls")


# ------------------------------------------------------------------------------- encoder
def test_embedding_dim_from_config_without_loading(encoder):
    assert encoder.embedding_dim == HIDDEN
    assert encoder._model is None and encoder._tokenizer is None
    identity = encoder.identity()  # hashing the weight files does not load them either
    assert identity["max_length"] == 32 and identity["pooling"] == "mean"
    assert encoder._model is None


def test_encode_keeps_input_order_and_matches_one_by_one(encoder):
    order = encoder.length_order(ITEMS)
    assert order != list(range(len(ITEMS)))  # batches really are permuted ...
    assert len(ITEMS) > encoder.batch_size  # ... and there are several of them
    batched = encoder.encode(ITEMS, progress=False)
    alone = torch.cat([encoder.encode_batch([item]) for item in ITEMS])
    assert batched.shape == (len(ITEMS), HIDDEN) and batched.dtype == torch.float32
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
    # the rows really differ from each other, so a permutation could not go unnoticed
    assert torch.cdist(alone, alone).add(torch.eye(len(ITEMS))).min() > 1e-3


def test_normalize_gives_unit_vectors(model_dir):
    unit = make_encoder(model_dir).encode(ITEMS, progress=False)
    raw = make_encoder(model_dir, normalize=False).encode(ITEMS, progress=False)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(len(ITEMS)), atol=1e-5, rtol=0)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(len(ITEMS)), atol=1e-2)
    torch.testing.assert_close(unit, F.normalize(raw, dim=-1), atol=1e-5, rtol=0)


def test_identical_inputs_give_identical_rows(encoder):
    a, b, c = ITEMS[0], ITEMS[1], ITEMS[2]
    out = encoder.encode([a, b, c, a, b, a], progress=False)
    torch.testing.assert_close(out[0], out[3], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[0], out[5], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1], out[4], atol=1e-6, rtol=0)
    assert not torch.allclose(out[0], out[1], atol=1e-3)


def test_truncation_cuts_the_prompt_start_and_keeps_the_response(model_dir):
    encoder = make_encoder(model_dir, max_length=10)
    encoder.load()
    tok = encoder._tokenizer
    assert not encoder.uses_template  # a BERT tokenizer: prompt and response as a text pair
    prompt = "no " * 40 + "rain cloud"
    inputs, cut = encoder.tokenize([((("user", "a cat"),), prompt, "yes it is")])
    ids = inputs["input_ids"][0]
    assert cut == 0
    assert len(ids) == 10
    assert ids.tolist()[-4:] == tok.convert_tokens_to_ids(["yes", "it", "is", "[SEP]"])
    # the prompt lost its start (and the history before it), not its end
    kept = ["[CLS]", "no", "no", "rain", "cloud", "[SEP]", "yes", "it", "is", "[SEP]"]
    assert ids.tolist() == tok.convert_tokens_to_ids(kept)
    # the truncated text still encodes
    assert encoder.encode_batch([((), prompt, "yes it is")]).shape == (1, HIDDEN)


def test_identity_tracks_every_setting_that_changes_vectors(model_dir, tmp_path):
    base = make_encoder(model_dir).identity()
    for setting, value in [
        ("pooling", "last_token"),
        ("max_length", 16),
        ("chat_template", False),
        ("normalize", False),
        ("dtype", "bfloat16"),
    ]:
        changed = make_encoder(model_dir, **{setting: value}).identity()
        assert changed != base, setting
        assert fingerprint(changed) != fingerprint(base), setting
    # settings that cannot change the vectors keep the key
    assert make_encoder(model_dir, batch_size=17).identity() == base

    other_weights = build_tiny_bert(tmp_path / "other", seed=1)
    same_weights = Path(shutil.copytree(model_dir, tmp_path / "copy"))
    assert make_encoder(other_weights).identity()["weights"] != base["weights"]
    assert make_encoder(same_weights).identity()["weights"] == base["weights"]


# ------------------------------------------------------------------ source + cache, end to end
def test_pairs_source_encodes_each_distinct_text_once(encoder, tmp_path, monkeypatch):
    encoded = record_encoded(monkeypatch, encoder)
    source = PairsFiles([str(PAIRS)], encoder=encoder, cache_dir=str(tmp_path), progress=False)
    data = source.load()
    records = source.records()
    items, chosen, rejected = index_texts(records)

    assert len(items) < 2 * len(records)  # the fixture repeats texts ("Cat." twice) ...
    assert sorted(encoded) == sorted(items)  # ... and each distinct text went through once
    assert len(data.embeddings) == len(items) and data.embedding_dim == HIDDEN
    assert isinstance(data.embeddings, ArrowEmbeddings)
    assert torch.equal(data.chosen, chosen) and torch.equal(data.rejected, rejected)
    assert data.num_pairs == len(records)

    expected = encoder.encode(items, progress=False)
    torch.testing.assert_close(all_rows(data.embeddings), expected, atol=1e-6, rtol=0)
    # each pair's rows are the embeddings of its own (history, prompt, response)
    for p, record in enumerate(records):
        for row, response in ((data.chosen[p], record.chosen), (data.rejected[p], record.rejected)):
            alone = encoder.encode_batch([(record.history, record.prompt, response)])[0]
            torch.testing.assert_close(data.embeddings[row.view(1)][0], alone, atol=1e-5, rtol=0)
    assert len(segments(tmp_path)) == 1


def test_second_run_reads_the_cache_without_loading_the_encoder(model_dir, tmp_path, monkeypatch):
    first = PairsFiles(
        [str(PAIRS)], encoder=make_encoder(model_dir), cache_dir=str(tmp_path), progress=False
    ).load()

    fresh = make_encoder(model_dir)
    forbid_encoding(monkeypatch, fresh)
    second = PairsFiles([str(PAIRS)], encoder=fresh, cache_dir=str(tmp_path), progress=False).load()

    assert fresh._model is None and fresh._tokenizer is None
    assert torch.equal(all_rows(second.embeddings), all_rows(first.embeddings))
    assert torch.equal(second.chosen, first.chosen) and torch.equal(second.user, first.user)
    assert len(segments(tmp_path)) == 1  # nothing new: no new segment


def changed_copy(tmp_path: Path) -> Path:
    """The pairs fixture with the first record's chosen text replaced."""
    lines = PAIRS.read_text().splitlines()
    record = json.loads(lines[0])
    record["chosen"] = "Miso, short and warm, and a little grey."
    lines[0] = json.dumps(record)
    path = tmp_path / "pairs_changed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_changed_text_encodes_only_itself_and_a_changed_setting_all(
    model_dir, tmp_path, monkeypatch
):
    cache_dir = tmp_path / "cache"

    def run(paths, **settings):
        encoder = make_encoder(model_dir, **settings)
        encoded = record_encoded(monkeypatch, encoder)
        data = PairsFiles(
            [str(p) for p in paths], encoder=encoder, cache_dir=str(cache_dir), progress=False
        ).load()
        return data, encoded

    original, encoded = run([PAIRS])
    assert len(encoded) == len(original.embeddings) and len(segments(cache_dir)) == 1

    changed, encoded = run([changed_copy(tmp_path)])
    # only the one new text went through the encoder, into a second segment of the same encoder
    assert encoded == [
        ((), "Suggest a name for a cat.", "Miso, short and warm, and a little grey.")
    ]
    assert (
        len(segments(cache_dir)) == 2 and len({s.split("/")[0] for s in segments(cache_dir)}) == 1
    )
    # same text layout apart from the one changed text, whose row is the only new vector
    assert len(changed.embeddings) == len(original.embeddings)
    differs = (all_rows(changed.embeddings) - all_rows(original.embeddings)).abs().amax(-1) > 1e-4
    assert differs.sum() == 1 and int(differs.nonzero()) == int(changed.chosen[0])

    # a setting that changes the vectors is another encoder: everything is encoded anew
    _, encoded = run([PAIRS], max_length=24)
    assert len(encoded) == len(original.embeddings) and len(segments(cache_dir)) == 3
    _, encoded = run([PAIRS], pooling="last_token")
    assert len(encoded) == len(original.embeddings) and len(segments(cache_dir)) == 4

    # the original input and settings still hit their own segment; batch size is not in the key
    _, encoded = run([PAIRS], batch_size=5)
    assert encoded == [] and len(segments(cache_dir)) == 4


def test_identity_tracks_the_tokenizer_files(model_dir, tmp_path):
    folder = Path(shutil.copytree(model_dir, tmp_path / "model"))
    before = make_encoder(folder).identity()
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["normalizer"]["lowercase"] = False  # "Cat" no longer tokenizes like "cat"
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert make_encoder(folder).identity() != before
