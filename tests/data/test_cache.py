"""The embedding cache on its own: text addresses, the row map, segments gathered lazily,
atomic writes (a killed save leaves nothing trusted) and the NaN check."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch

from mrm_lightning.data import cache as cache_module
from mrm_lightning.data.cache import (
    ArrowEmbeddings,
    EmbeddingCache,
    row_map,
    segment_name,
    text_digests,
)
from mrm_lightning.data.sources.pairs import PairsFiles
from mrm_lightning.data.sources.text import index_texts
from tests.conftest import REPO
from tests.data.cache_helpers import SimulatedKill, all_rows, make_encoder, record_encoded, segments
from tests.tiny_encoder import build_tiny_bert

PAIRS = REPO / "tests/fixtures/generic/pairs.jsonl"
IDENTITY = {"model": "made-up", "weights": "w0"}
pytestmark = pytest.mark.filterwarnings("ignore:.*longer than encoder.max_length:UserWarning")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), seed=0)


def names(n: int) -> list[str]:
    """``n`` made-up text digests."""
    return [f"text-{i}" for i in range(n)]


# ------------------------------------------------------------------------- pure functions
def test_text_digests_keep_boundaries_and_ignore_the_sequence_type():
    a, b = ((), "ab", "c"), ((("user", "hi"),), "ab", "c")
    assert text_digests([a, b]) == text_digests([tuple(a), tuple(b)])
    assert text_digests([a]) == text_digests([[[], "ab", "c"]])  # a list from JSON, say
    assert text_digests([a]) != text_digests([((), "a", "bc")])
    assert len(set(text_digests([a, b, ((), "", "abc")]))) == 3
    assert text_digests([b, a]) == text_digests([a, b])[::-1]  # per text, not per list


def test_row_map_by_hand():
    # segments of 3, 5 and 2 rows; the request uses segment 2 first, then 0 (1 not at all)
    used, rows = row_map([(2, 1), (0, 0), (2, 0), (0, 2), (2, 1)], sizes=[3, 5, 2])
    assert used == [2, 0]
    # laid end to end: segment 2's rows are 0-1, segment 0's rows 2-4
    assert rows.tolist() == [1, 2, 0, 4, 1]
    used, rows = row_map([], sizes=[3])
    assert used == [] and rows.tolist() == []


def test_arrow_embeddings_with_a_row_map_by_hand():
    chunks = [torch.arange(6.0).view(3, 2).numpy(), torch.arange(10.0, 14.0).view(2, 2).numpy()]
    table = ArrowEmbeddings(chunks, rows=torch.tensor([4, 0, 3]))
    assert table.shape == (3, 2) and len(table) == 3
    assert table[torch.tensor([0, 1, 2])].tolist() == [[12.0, 13.0], [0.0, 1.0], [10.0, 11.0]]
    assert table[torch.tensor([[2], [2]])].tolist() == [[[10.0, 11.0]], [[10.0, 11.0]]]


# ---------------------------------------------------------------------------- segments
def test_arrow_embeddings_gather_across_chunks(tmp_path):
    torch.manual_seed(0)
    original = torch.randn(2500, 8)
    cache = EmbeddingCache(tmp_path)
    path = cache.add(IDENTITY, names(2500), original)
    table = cache.table(IDENTITY, names(2500))

    assert len(table.chunks) >= 3  # datasets writes 1000-row record batches
    assert table.shape == (2500, 8) and len(table) == 2500
    for chunk in table.chunks:  # memory-mapped views, not copies
        assert chunk.dtype.name == "float32" and chunk.ndim == 2
        assert not chunk.flags["OWNDATA"]
    meta = json.loads((path / cache_module.META).read_text())
    assert meta["dim"] == 8 and meta["rows"] == 2500 and meta["texts"] == names(2500)
    assert meta["encoder"] == IDENTITY and path.name == segment_name(names(2500))

    for index in (
        torch.tensor([0, 999, 1000, 2499, 1500, 0, 2001]),
        torch.tensor([[2499, 0, 1000, 1000], [5, 1999, 2000, 999], [1234, 2498, 1, 1001]]),
        torch.tensor([7]),
        torch.arange(2500),
    ):
        assert torch.equal(table[index], original[index]), index.shape
    assert table[torch.tensor([], dtype=torch.long)].shape == (0, 8)


def test_a_lookup_spanning_two_segments_gathers_in_the_requested_order(tmp_path):
    torch.manual_seed(0)
    first, second = torch.randn(1200, 4), torch.randn(5, 4)
    cache = EmbeddingCache(tmp_path)
    cache.add(IDENTITY, names(1200), first)
    cache.add(IDENTITY, [f"new-{i}" for i in range(5)], second)
    assert len(segments(tmp_path)) == 2

    request = ["new-3", "text-1100", "text-0", "new-0", "text-1100", "text-7"]
    assert cache.missing(IDENTITY, request) == []
    assert cache.missing(IDENTITY, ["text-3", "unknown", "new-1", "unknown", "other"]) == [1, 4]
    table = cache.table(IDENTITY, request)
    expected = torch.stack([second[3], first[1100], first[0], second[0], first[1100], first[7]])
    assert table.shape == (6, 4)
    assert torch.equal(all_rows(table), expected)
    assert torch.equal(table[torch.tensor([[5, 0]])], expected[torch.tensor([[5, 0]])])
    assert all(not chunk.flags["OWNDATA"] for chunk in table.chunks)  # still memory-mapped

    only_second = cache.table(IDENTITY, ["new-4", "new-2"])  # uses one segment's chunks only
    assert len(only_second.chunks) == 1
    assert torch.equal(all_rows(only_second), second[[4, 2]])
    with pytest.raises(KeyError, match="1 of 2 texts"):
        cache.table(IDENTITY, ["new-4", "unknown"])


def test_another_identity_sees_none_of_the_segments(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.add(IDENTITY, names(3), torch.randn(3, 4))
    tuned = {**IDENTITY, "weights": "w1"}  # the same model after tuning: other weights
    assert cache.missing(tuned, names(3)) == [0, 1, 2]
    assert cache.folder(tuned) != cache.folder(IDENTITY)


def test_a_stale_segment_folder_without_metadata_is_replaced(tmp_path):
    cache = EmbeddingCache(tmp_path)
    stale = cache.folder(IDENTITY) / segment_name(names(3))
    stale.mkdir(parents=True)
    (stale / "data-00000-of-00001.arrow").write_bytes(b"half")
    assert cache.missing(IDENTITY, names(3)) == [0, 1, 2]
    vectors = torch.randn(3, 4)
    cache.add(IDENTITY, names(3), vectors)
    assert torch.equal(all_rows(cache.table(IDENTITY, names(3))), vectors)


def test_an_entry_of_the_old_layout_is_ignored(tmp_path):
    old = tmp_path / ("0" * 64)  # one folder per whole list, directly under the cache folder
    old.mkdir()
    (old / cache_module.META).write_text(json.dumps({"dim": 4, "rows": 3, "texts": 3}))
    assert EmbeddingCache(tmp_path).missing(IDENTITY, names(3)) == [0, 1, 2]


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
        raise SimulatedKill("killed while writing the segment")

    monkeypatch.setattr(Dataset, "save_to_disk", save_then_die)


@pytest.mark.parametrize("crash", [crash_on_rename, crash_after_save_to_disk])
def test_a_crash_while_saving_leaves_no_trusted_segment(model_dir, tmp_path, crash):
    # the segment of these inputs, from a clean run elsewhere (not a copy of the name formula)
    reference = tmp_path / "reference"
    PairsFiles(
        [str(PAIRS)], encoder=make_encoder(model_dir), cache_dir=str(reference), progress=False
    ).load()
    [segment] = segments(reference)

    cache_dir = tmp_path / "cache"
    encoder = make_encoder(model_dir)
    source = PairsFiles([str(PAIRS)], encoder=encoder, cache_dir=str(cache_dir), progress=False)
    with pytest.MonkeyPatch.context() as patch:
        crash(patch)
        with pytest.raises(SimulatedKill):
            source.load()

    items = index_texts(source.records())[0]
    identity = encoder.identity()
    assert segments(cache_dir) == []
    assert source.cache.missing(identity, text_digests(items)) == list(range(len(items)))
    leftovers = list(source.cache.folder(identity).iterdir())
    assert all(p.name.startswith(".tmp-") for p in leftovers) and len(leftovers) <= 1

    with pytest.MonkeyPatch.context() as patch:
        rerun = make_encoder(model_dir)
        encoded = record_encoded(patch, rerun)
        data = PairsFiles(
            [str(PAIRS)], encoder=rerun, cache_dir=str(cache_dir), progress=False
        ).load()
    assert sorted(encoded) == sorted(items)
    assert segments(cache_dir) == [segment]
    torch.testing.assert_close(
        all_rows(data.embeddings), encoder.encode(items, progress=False), atol=1e-6, rtol=0
    )


# ------------------------------------------------------------------------------ NaN check
def test_nan_embeddings_raise_and_cache_nothing(tmp_path):
    vectors = torch.randn(10, 4)
    vectors[3, 1] = float("nan")
    vectors[7, 0] = float("inf")
    cache = EmbeddingCache(tmp_path / "cache")
    with pytest.raises(ValueError, match=r"2 texts \(first: text 3\)"):
        cache.add(IDENTITY, names(10), vectors)
    assert cache.missing(IDENTITY, names(10)) == list(range(10))
    assert not (tmp_path / "cache").exists() or segments(tmp_path / "cache") == []


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
    assert segments(tmp_path) == [] and not list(tmp_path.rglob("*.arrow"))
