"""TextEncoder, the embedding cache and a text source end to end, on a tiny random BERT.

Offline and fast: the encoder is a seeded 16-dimensional BERT written to a temporary folder
(tests/tiny_encoder.py), never the bundled MiniLM; caches live under tmp_path.
"""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mrm_lightning.data import cache as cache_module
from mrm_lightning.data.cache import ArrowEmbeddings, EmbeddingCache, fingerprint, texts_digest
from mrm_lightning.data.encoder import TextEncoder, pool
from mrm_lightning.data.sources.pairs import PairsFiles
from mrm_lightning.data.sources.text import index_texts
from tests.conftest import REPO
from tests.tiny_encoder import HIDDEN, build_tiny_bert

PAIRS = REPO / "tests/fixtures/generic/pairs.jsonl"
# the tiny vocabulary spells most words letter by letter, so a few fixture responses are longer
# than max_length and are cut, with a warning (tested in tests/test_truncation.py)
pytestmark = pytest.mark.filterwarnings("ignore:.*longer than encoder.max_length:UserWarning")


class SimulatedKill(BaseException):
    """Like KeyboardInterrupt: not an Exception, so no ``except OSError`` swallows it."""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), seed=0)


def make_encoder(model_dir: Path, **settings) -> TextEncoder:
    return TextEncoder(
        model=str(model_dir), **{"max_length": 32, "batch_size": 3, "device": "cpu", **settings}
    )


@pytest.fixture
def encoder(model_dir) -> TextEncoder:
    return make_encoder(model_dir)


def count_encoded(monkeypatch, encoder: TextEncoder) -> list[int]:
    """Wrap ``encoder.encode_batch``; the returned list gets each batch's size."""
    sizes: list[int] = []
    original = encoder.encode_batch

    def counting(items):
        sizes.append(len(items))
        return original(items)

    monkeypatch.setattr(encoder, "encode_batch", counting)
    return sizes


def forbid_encoding(monkeypatch, encoder: TextEncoder) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the encoder must not be used on a cache hit")

    monkeypatch.setattr(encoder, "load", refuse)
    monkeypatch.setattr(encoder, "encode_batch", refuse)


def entries(cache_dir: Path) -> list[str]:
    """Names of complete-looking entries (not staging folders) under ``cache_dir``."""
    if not cache_dir.exists():
        return []
    return sorted(p.name for p in cache_dir.iterdir() if not p.name.startswith(".tmp-"))


def all_rows(table) -> torch.Tensor:
    return table[torch.arange(len(table))]


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
    sizes = count_encoded(monkeypatch, encoder)
    source = PairsFiles([str(PAIRS)], encoder=encoder, cache_dir=str(tmp_path), progress=False)
    data = source.load()
    records = source.records()
    items, chosen, rejected = index_texts(records)

    assert len(items) < 2 * len(records)  # the fixture repeats texts ("Cat." twice) ...
    assert sum(sizes) == len(items)  # ... and each distinct text went through the model once
    assert max(sizes) <= encoder.batch_size
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
    assert len(entries(tmp_path)) == 1


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
    assert len(entries(tmp_path)) == 1


def changed_copy(tmp_path: Path) -> Path:
    """The pairs fixture with the first record's chosen text replaced."""
    lines = PAIRS.read_text().splitlines()
    record = json.loads(lines[0])
    record["chosen"] = "Miso, short and warm, and a little grey."
    lines[0] = json.dumps(record)
    path = tmp_path / "pairs_changed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_changed_input_or_encoder_setting_makes_a_new_entry(model_dir, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"

    def run(paths, **settings):
        encoder = make_encoder(model_dir, **settings)
        sizes = count_encoded(monkeypatch, encoder)
        data = PairsFiles(
            [str(p) for p in paths], encoder=encoder, cache_dir=str(cache_dir), progress=False
        ).load()
        return data, sum(sizes)

    original, encoded = run([PAIRS])
    assert encoded > 0 and len(entries(cache_dir)) == 1

    changed, encoded = run([changed_copy(tmp_path)])
    assert encoded == len(changed.embeddings) and len(entries(cache_dir)) == 2
    # same text layout apart from the one changed text, whose row is the only new vector
    assert len(changed.embeddings) == len(original.embeddings)
    differs = (all_rows(changed.embeddings) - all_rows(original.embeddings)).abs().amax(-1) > 1e-4
    assert differs.sum() == 1 and int(differs.nonzero()) == int(changed.chosen[0])

    _, encoded = run([PAIRS], max_length=24)
    assert encoded > 0 and len(entries(cache_dir)) == 3
    _, encoded = run([PAIRS], pooling="last_token")
    assert encoded > 0 and len(entries(cache_dir)) == 4

    # the original input and settings still hit their own entry; batch size is not in the key
    _, encoded = run([PAIRS], batch_size=5)
    assert encoded == 0 and len(entries(cache_dir)) == 4


# ----------------------------------------------------------------------- crash during save
def crash_on_rename(monkeypatch):
    def rename(*args, **kwargs):
        raise SimulatedKill("killed just before the rename")

    monkeypatch.setattr(cache_module, "os", types.SimpleNamespace(rename=rename))


def crash_after_save_to_disk(monkeypatch):
    from datasets import Dataset

    original = Dataset.save_to_disk

    def save_then_die(self, *args, **kwargs):
        original(self, *args, **kwargs)  # the Arrow files are written, the metadata is not
        raise SimulatedKill("killed while writing the entry")

    monkeypatch.setattr(Dataset, "save_to_disk", save_then_die)


@pytest.mark.parametrize("crash", [crash_on_rename, crash_after_save_to_disk])
def test_a_crash_while_saving_leaves_no_trusted_entry(model_dir, tmp_path, crash):
    # the key of these inputs, from a clean run elsewhere (not a copy of the key formula)
    reference = tmp_path / "reference"
    PairsFiles(
        [str(PAIRS)], encoder=make_encoder(model_dir), cache_dir=str(reference), progress=False
    ).load()
    [key] = entries(reference)

    cache_dir = tmp_path / "cache"
    cache = EmbeddingCache(cache_dir)
    encoder = make_encoder(model_dir)
    source = PairsFiles([str(PAIRS)], encoder=encoder, cache_dir=str(cache_dir), progress=False)
    with pytest.MonkeyPatch.context() as patch:
        crash(patch)
        with pytest.raises(SimulatedKill):
            source.load()

    assert cache.load(key) is None
    assert entries(cache_dir) == []
    leftovers = list(cache_dir.iterdir())
    assert len(leftovers) <= 1 and all(p.name.startswith(f".tmp-{key}-") for p in leftovers)

    with pytest.MonkeyPatch.context() as patch:
        rerun = make_encoder(model_dir)
        sizes = count_encoded(patch, rerun)
        data = PairsFiles(
            [str(PAIRS)], encoder=rerun, cache_dir=str(cache_dir), progress=False
        ).load()
    items = index_texts(source.records())[0]
    assert sum(sizes) == len(items)
    assert entries(cache_dir) == [key] and cache.load(key) is not None
    torch.testing.assert_close(
        all_rows(data.embeddings), encoder.encode(items, progress=False), atol=1e-6, rtol=0
    )


def test_a_stale_entry_folder_without_metadata_is_replaced(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.path("key").mkdir(parents=True)
    (cache.path("key") / "data-00000-of-00001.arrow").write_bytes(b"half")
    assert cache.load("key") is None
    vectors = torch.randn(3, 4)
    assert torch.equal(all_rows(cache.save("key", vectors, {})), vectors)


def test_identity_tracks_the_tokenizer_files(model_dir, tmp_path):
    folder = Path(shutil.copytree(model_dir, tmp_path / "model"))
    before = make_encoder(folder).identity()
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["normalizer"]["lowercase"] = False  # "Cat" no longer tokenizes like "cat"
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert make_encoder(folder).identity() != before


def test_texts_digest_is_order_and_boundary_sensitive():
    a, b = ((), "ab", "c"), ((("user", "hi"),), "ab", "c")
    assert texts_digest([a, b]) == texts_digest([tuple(a), tuple(b)])
    assert texts_digest([a, b]) != texts_digest([b, a])
    assert texts_digest([a]) != texts_digest([((), "a", "bc")])
    assert texts_digest([a]) != texts_digest([b]) != texts_digest([a, a])


# ------------------------------------------------------------------------- Arrow embeddings
def test_arrow_embeddings_gather_across_chunks(tmp_path):
    torch.manual_seed(0)
    original = torch.randn(2500, 8)
    cache = EmbeddingCache(tmp_path)
    saved = cache.save("key", original, {"note": "test"})
    table = cache.load("key")

    assert len(table.chunks) >= 3  # datasets writes 1000-row record batches
    assert table.shape == (2500, 8) and len(table) == 2500 and saved.shape == table.shape
    for chunk in table.chunks:  # memory-mapped views, not copies
        assert chunk.dtype.name == "float32" and chunk.ndim == 2
        assert not chunk.flags["OWNDATA"]
    meta = json.loads((tmp_path / "key" / cache_module.META).read_text())
    assert meta["dim"] == 8 and meta["rows"] == 2500 and meta["note"] == "test"

    for index in (
        torch.tensor([0, 999, 1000, 2499, 1500, 0, 2001]),
        torch.tensor([[2499, 0, 1000, 1000], [5, 1999, 2000, 999], [1234, 2498, 1, 1001]]),
        torch.tensor([7]),
        torch.arange(2500),
    ):
        assert torch.equal(table[index], original[index]), index.shape
        assert torch.equal(saved[index], original[index]), index.shape
    assert table[torch.tensor([], dtype=torch.long)].shape == (0, 8)


def test_nan_embeddings_raise_and_cache_nothing(tmp_path):
    vectors = torch.randn(10, 4)
    vectors[3, 1] = float("nan")
    vectors[7, 0] = float("inf")
    cache = EmbeddingCache(tmp_path / "cache")
    with pytest.raises(ValueError, match=r"2 texts \(first: text 3\)"):
        cache.save("key", vectors, {})
    assert cache.load("key") is None
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_nan_from_the_encoder_stops_the_source(model_dir, tmp_path, monkeypatch):
    encoder = make_encoder(model_dir)
    original = encoder.encode

    def poisoned(items, progress=True):
        out = original(items, progress)
        out[2, 0] = float("nan")
        return out

    monkeypatch.setattr(encoder, "encode", poisoned)
    source = PairsFiles([str(PAIRS)], encoder=encoder, cache_dir=str(tmp_path), progress=False)
    with pytest.raises(ValueError, match=r"first: text 2"):
        source.load()
    assert entries(tmp_path) == [] and not any(tmp_path.iterdir())
