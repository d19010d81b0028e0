"""Each text is encoded once, whatever the run: runs whose texts overlap (another seed of a
capped ratings set, another file) send only the new texts through the encoder, and get the
same vectors as encoding everything at once, in their own order."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from mrm_lightning import RatingsFiles
from mrm_lightning.data.sources.pairs import PairsFiles
from mrm_lightning.data.sources.text import TextPreferences, index_texts
from tests.conftest import REPO
from tests.data.cache_helpers import (
    all_rows,
    forbid_encoding,
    make_encoder,
    record_encoded,
    segments,
)
from tests.tiny_encoder import build_tiny_bert

PAIRS = REPO / "tests/fixtures/generic/pairs.jsonl"
pytestmark = pytest.mark.filterwarnings("ignore:.*longer than encoder.max_length:UserWarning")
WORDS = "the cat rain cloud water yes no name prime one".split()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), seed=0)


@pytest.fixture(scope="module")
def ratings(tmp_path_factory) -> Path:
    """An SBIC-shaped file (``user_id,text,score``, no prompt): 6 annotators, each rating 12 of
    30 short posts."""
    posts = [f"{WORDS[i % 10]} {WORDS[(3 * i) % 7]} {i}" for i in range(30)]
    path = tmp_path_factory.mktemp("ratings") / "ratings.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "text", "score"])
        for user in range(6):
            for k in range(12):
                post = (5 * user + k) % len(posts)
                writer.writerow([f"annotator{user}", posts[post], (post * 7 + user) % 5])
    return path


def ratings_run(path, model_dir, cache_dir, seed, monkeypatch):
    encoder = make_encoder(model_dir)
    encoded = record_encoded(monkeypatch, encoder)
    source = RatingsFiles(
        [str(path)],
        max_pairs_per_user=3,  # a small seeded cap: each seed keeps different texts
        item_groups=2,
        seed=seed,
        encoder=encoder,
        cache_dir=str(cache_dir),
        progress=False,
    )
    data = source.load()
    return index_texts(source.records())[0], data, encoded


def test_a_second_seed_encodes_only_the_texts_the_first_did_not(
    ratings, model_dir, tmp_path, monkeypatch
):
    cache_dir = tmp_path / "cache"
    first_items, _, first_encoded = ratings_run(ratings, model_dir, cache_dir, 0, monkeypatch)
    assert sorted(first_encoded) == sorted(first_items)

    items, data, encoded = ratings_run(ratings, model_dir, cache_dir, 1, monkeypatch)
    new = [item for item in items if item not in set(first_items)]
    assert new and len(new) < len(items)  # the seeds share some texts and differ in others
    assert sorted(encoded) == sorted(new)  # the encoder saw the new texts only, each once
    assert len(segments(cache_dir)) == 2

    # the same vectors as a fresh cache that encodes all of seed 1's texts at once
    _, fresh, _ = ratings_run(ratings, model_dir, tmp_path / "fresh", 1, monkeypatch)
    torch.testing.assert_close(all_rows(data.embeddings), all_rows(fresh.embeddings))

    # a third seed, and seed 0 again: only what no earlier seed encoded
    seen = set(first_items) | set(items)
    items, _, encoded = ratings_run(ratings, model_dir, cache_dir, 2, monkeypatch)
    assert sorted(encoded) == sorted(i for i in items if i not in seen)
    _, _, encoded = ratings_run(ratings, model_dir, cache_dir, 0, monkeypatch)
    assert encoded == []


def write_pairs(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_overlapping_sources_share_texts_and_match_encoding_all_at_once(
    model_dir, tmp_path, monkeypatch
):
    lines = PAIRS.read_text().splitlines()
    first_file = write_pairs(tmp_path / "first.jsonl", lines[:4])
    second_file = write_pairs(tmp_path / "second.jsonl", lines[2:][::-1])  # overlaps, reordered
    cache_dir = tmp_path / "cache"

    def run(path, encoder):
        source = PairsFiles([str(path)], encoder=encoder, cache_dir=str(cache_dir), progress=False)
        return index_texts(source.records())[0], source.load()

    first_items, _ = run(first_file, make_encoder(model_dir))
    encoder = make_encoder(model_dir)
    encoded = record_encoded(monkeypatch, encoder)
    items, data = run(second_file, encoder)
    new = [item for item in items if item not in set(first_items)]
    assert new and len(new) < len(items)
    assert sorted(encoded) == sorted(new)

    everything_at_once = make_encoder(model_dir).encode(items, progress=False)
    torch.testing.assert_close(all_rows(data.embeddings), everything_at_once, atol=1e-6, rtol=0)
    # and each row is its own text's vector, in the requested order
    for row, item in enumerate(items):
        alone = make_encoder(model_dir).encode_batch([item])[0]
        torch.testing.assert_close(
            data.embeddings[torch.tensor([row])][0], alone, atol=1e-5, rtol=0
        )


def test_a_request_with_repeats_encodes_each_new_text_once(model_dir, tmp_path, monkeypatch):
    # what `mrm adapt --cache-dir` asks: any texts, repeats included
    encoder = make_encoder(model_dir)
    source = TextPreferences(encoder, cache_dir=str(tmp_path), progress=False)
    a, b, c = ((), "is it rain?", "yes."), ((), "is it rain?", "no."), ((), "a cat", "miso")
    source.embeddings([a, b])
    encoded = record_encoded(monkeypatch, encoder)
    table = source.embeddings([c, a, c, b])
    assert encoded == [c]
    rows = all_rows(table)
    assert torch.equal(rows[0], rows[2]) and not torch.equal(rows[0], rows[1])
    torch.testing.assert_close(
        rows, encoder.encode([c, a, c, b], progress=False), atol=1e-6, rtol=0
    )


def test_an_encoder_with_other_weights_never_reads_the_first_ones_vectors(
    model_dir, tmp_path, monkeypatch
):
    """A tuned encoder (stage 0) has its own identity (the weights' hash): none of the frozen
    encoder's vectors are taken for its texts."""
    cache_dir = tmp_path / "cache"
    frozen = PairsFiles(
        [str(PAIRS)], encoder=make_encoder(model_dir), cache_dir=str(cache_dir), progress=False
    ).load()
    tuned_dir = build_tiny_bert(tmp_path / "tuned", seed=1)
    tuned = make_encoder(tuned_dir)
    encoded = record_encoded(monkeypatch, tuned)
    source = PairsFiles([str(PAIRS)], encoder=tuned, cache_dir=str(cache_dir), progress=False)
    data = source.load()
    assert sorted(encoded) == sorted(index_texts(source.records())[0])
    assert len({s.split("/")[0] for s in segments(cache_dir)}) == 2  # one folder per encoder
    assert not torch.allclose(all_rows(data.embeddings), all_rows(frozen.embeddings), atol=1e-3)

    # and the frozen encoder still reads its own, without loading anything
    again = make_encoder(model_dir)
    forbid_encoding(monkeypatch, again)
    reread = PairsFiles([str(PAIRS)], encoder=again, cache_dir=str(cache_dir), progress=False)
    assert torch.equal(all_rows(reread.load().embeddings), all_rows(frozen.embeddings))
