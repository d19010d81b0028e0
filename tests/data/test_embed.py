"""`mrm embed`: the encoder pass through Trainer.predict fills the cache that training reads."""

import os
import subprocess
import sys

import pytest
import torch

from mrm_lightning import RedditTLDR, TextEncoder
from mrm_lightning.cli import main
from mrm_lightning.data.sources.text import TextPreferences, index_texts
from tests.conftest import REPO
from tests.data.cache_helpers import segments
from tests.tiny_encoder import build_tiny_bert

FIXTURE = REPO / "tests/fixtures/tldr/comparisons.jsonl"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def embed_args(model, cache_dir, *extra):
    return [
        "embed",
        "--config",
        str(REPO / "configs/tldr.yaml"),
        "--data.source.init_args.paths",
        f"[{FIXTURE}]",
        "--data.source.init_args.cache_dir",
        str(cache_dir),
        "--data.source.init_args.encoder.init_args.model",
        str(model),
        "--data.source.init_args.encoder.init_args.max_length",
        "32",
        "--trainer.accelerator",
        "cpu",
        "--trainer.logger",
        "false",
        *extra,
    ]


class RefusingEncoder(TextEncoder):
    """Reads its identity from the model folder but must never encode (cache hits only)."""

    def load(self, device=None):
        raise AssertionError("the encoder was loaded although the cache should hold every text")


def cached_embeddings(model, cache_dir):
    source = RedditTLDR(
        [str(FIXTURE)],
        encoder=RefusingEncoder(str(model), max_length=32),
        cache_dir=str(cache_dir),
        progress=False,
    )
    data = source.load()
    return data, index_texts(source.records())[0]


def test_embed_fills_the_cache_that_training_reads(tiny_model, tmp_path):
    main(embed_args(tiny_model, tmp_path / "cache"))
    data, items = cached_embeddings(tiny_model, tmp_path / "cache")
    expected = TextEncoder(str(tiny_model), max_length=32, device="cpu").encode(
        items, progress=False
    )
    torch.testing.assert_close(
        data.embeddings[torch.arange(len(items))], expected, atol=1e-5, rtol=0
    )
    assert not [p for p in (tmp_path / "cache").rglob(".tmp*")]
    assert len(segments(tmp_path / "cache")) == 1
    main(embed_args(tiny_model, tmp_path / "cache"))  # a second run finds every text: no-op
    assert len(segments(tmp_path / "cache")) == 1
    assert len(list((tmp_path / "cache").iterdir())) == 1  # one folder: this encoder's


def test_embed_encodes_only_the_texts_not_cached_yet(tiny_model, tmp_path, monkeypatch):
    items = index_texts(RedditTLDR([str(FIXTURE)], encoder=TextEncoder(str(tiny_model))).records())[
        0
    ]
    # a first run (another subset, another seed) already encoded every other text
    TextPreferences(
        TextEncoder(str(tiny_model), max_length=32), cache_dir=str(tmp_path), progress=False
    ).embeddings(items[::2])

    encoded = []
    original = TextEncoder.encode_batch

    def recording(self, batch):
        encoded.extend(batch)
        return original(self, batch)

    monkeypatch.setattr(TextEncoder, "encode_batch", recording)
    main(embed_args(tiny_model, tmp_path))
    assert sorted(encoded) == sorted(items[1::2])  # only the rest went through the model
    assert len(segments(tmp_path)) == 2

    data, _ = cached_embeddings(tiny_model, tmp_path)  # training then finds every text
    expected = TextEncoder(str(tiny_model), max_length=32, device="cpu").encode(
        items, progress=False
    )
    torch.testing.assert_close(
        data.embeddings[torch.arange(len(items))], expected, atol=1e-5, rtol=0
    )


def test_embed_refuses_a_source_without_text(tmp_path):
    with pytest.raises(SystemExit, match="no text"):
        main(["embed", "--config", str(REPO / "configs/tiny.yaml"), "--trainer.logger", "false"])


@pytest.mark.slow
def test_embed_sharded_over_two_processes_equals_one(tiny_model, tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK")
    }
    command = [
        sys.executable,
        "-m",
        "mrm_lightning",
        *embed_args(
            tiny_model, tmp_path / "two", "--trainer.devices", "2", "--trainer.strategy", "ddp"
        ),
    ]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    main(embed_args(tiny_model, tmp_path / "one"))
    two, items = cached_embeddings(tiny_model, tmp_path / "two")
    one, _ = cached_embeddings(tiny_model, tmp_path / "one")
    rows = torch.arange(len(items))
    torch.testing.assert_close(two.embeddings[rows], one.embeddings[rows], atol=1e-5, rtol=0)
