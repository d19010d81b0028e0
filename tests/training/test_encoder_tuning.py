"""Stage 0 (``mrm encoder-tune``) on a tiny random BERT and a tiny random Llama: the pooled
Bradley-Terry loss falls; only the seen users' training pairs are read to tune and only the
validation pairs to choose; the saved folder is a plain Hugging Face model that `mrm embed`
and the data module load; LoRA tunes adapters only and saves merged weights."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mrm_lightning.cli import main
from mrm_lightning.cli.encoder_tune import main as encoder_tune
from mrm_lightning.data.cache import text_digests
from mrm_lightning.data.encoder import TextEncoder
from mrm_lightning.data.splits import TEST, TRAIN, VAL
from tests.tiny_encoder import build_tiny_bert

REPO = Path(__file__).resolve().parents[2]
FILLER = "the a cat rain cloud water one sentence".split()


def write_ratings(path: Path, users: int = 30, texts: int = 80, per_user: int = 40) -> Path:
    """Everyone shares one taste (score = #yes - #no in the text, plus a little noise), so a
    pooled reward model has something to learn; every text is rated by several users."""
    rng = random.Random(0)
    bank = []
    for _ in range(texts):
        words = [rng.choice(FILLER) for _ in range(4)]
        words += ["yes"] * rng.randint(0, 3) + ["no"] * rng.randint(0, 3)
        rng.shuffle(words)
        bank.append(" ".join(words))
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "text", "score"])
        for user in range(users):
            for text in rng.sample(bank, per_user):
                score = text.split().count("yes") - text.split().count("no") + rng.gauss(0, 0.3)
                writer.writerow([f"u{user}", text, round(score, 2)])
    return path


@pytest.fixture(scope="module")
def setup_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoder-tune")
    return {
        "bert": build_tiny_bert(root / "bert"),
        "ratings": write_ratings(root / "ratings.csv"),
        "cache": root / "cache",
        "root": root,
    }


def data_args(files, model) -> list[str]:
    return [
        "--config",
        str(REPO / "configs/sbic.yaml"),
        "--data.source.init_args.paths",
        f"[{files['ratings']}]",
        "--data.source.init_args.cache_dir",
        str(files["cache"]),
        "--data.source.init_args.encoder.init_args.model",
        str(model),
        "--data.source.init_args.encoder.init_args.max_length",
        "32",
        "--data.source.init_args.item_groups",
        "10",
        "--data.min_pairs_per_user",
        "10",
        "--data.validation_users",
        "0.3",
    ]


def test_tuning_reads_only_training_pairs_and_the_loss_falls(setup_files, monkeypatch):
    files = setup_files
    read: list[tuple] = []
    tokenize = TextEncoder.tokenize

    def spying_tokenize(self, items):
        read.extend(items)
        return tokenize(self, items)

    monkeypatch.setattr(TextEncoder, "tokenize", spying_tokenize)
    out = files["root"] / "tuned-bert"
    record = encoder_tune(
        [
            *data_args(files, files["bert"]),
            "--out",
            str(out),
            "--epochs",
            "3",
            "--batch-size",
            "16",
            "--lr",
            "1e-3",
            "--accelerator",
            "cpu",
        ]
    )
    monkeypatch.undo()  # what follows encodes every text, to rebuild the split with vectors
    # the split the tuning read is the data module's own
    from mrm_lightning.training.lightning_cli import cli_main

    cli = cli_main(data_args(files, files["bert"]), run=False, prog="mrm fit")
    dm = cli.datamodule
    dm.setup("fit")
    data, split = dm.data, dm.split
    texts = dm.source.texts()

    def texts_of(rows: torch.Tensor) -> set:
        return {texts[i] for i in torch.cat([data.chosen[rows], data.rejected[rows]]).tolist()}

    in_split = {part: (split.pair_split == part) for part in (TRAIN, VAL, TEST)}
    seen = torch.isin(data.user, split.seen_users)
    allowed = texts_of((in_split[TRAIN] & seen).nonzero().flatten()) | texts_of(
        torch.cat([dm.held_out(VAL)[u] for u in dm.eval_users(VAL)])
    )
    tested = texts_of(in_split[TEST].nonzero().flatten())
    assert read and set(read) <= allowed
    assert not set(read) & tested  # not one text of a test pair, of anybody
    assert record.train_users == int(
        data.user[(in_split[TRAIN] & seen).nonzero().flatten()].unique().numel()
    )
    assert record.train_pairs == int((in_split[TRAIN] & seen).sum())

    # tuning learned the shared taste: validation pairs ordered far better than chance, and
    # the first check (after a few steps) is worse than the best
    accuracies = [c.pair_accuracy for c in record.checks]
    assert len(accuracies) == 6 and max(accuracies) > 0.8
    assert record.chosen.pair_accuracy == max(accuracies)
    assert record.checks[-1].loss < math.log(2) - 0.2
    saved = json.loads((out / "tuning.json").read_text())
    assert saved["chosen_step"] == record.chosen_step and saved["train_pairs"] > 100


def vectors(model, items) -> torch.Tensor:
    encoder = TextEncoder(str(model), max_length=32, device="cpu")
    return encoder.encode(items, progress=False)


def test_saved_folder_loads_in_mrm_embed_and_differs_from_the_base(setup_files, capsys):
    files = setup_files
    out = files["root"] / "tuned-for-embed"
    encoder_tune(
        [
            *data_args(files, files["bert"]),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--lr",
            "1e-3",
            "--accelerator",
            "cpu",
        ]
    )
    assert "Use it: --data.source.init_args.encoder.init_args.model" in capsys.readouterr().out
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    main(
        [
            "embed",
            *data_args(files, out),
            "--trainer.accelerator",
            "cpu",
            "--trainer.logger",
            "false",
        ]
    )
    from mrm_lightning.training.lightning_cli import cli_main

    cli = cli_main(data_args(files, out), run=False, prog="mrm fit")
    source = cli.datamodule.source
    identity = source.encoder.identity()
    items = source.texts()
    assert not source.cache.missing(identity, text_digests(items))  # embed encoded them all
    tuned, base = vectors(out, items[:8]), vectors(files["bert"], items[:8])
    assert tuned.shape == base.shape and not torch.allclose(tuned, base, atol=1e-4)


def build_tiny_llama(folder: Path) -> Path:
    """A seeded random 2-layer Llama with a chat template, over the tiny BERT's vocabulary."""
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    from tests.tiny_encoder import VOCAB

    folder.mkdir(parents=True, exist_ok=True)
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {word: i for i, word in enumerate(VOCAB)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", eos_token="[SEP]"
    )
    tok.padding_side = "left"
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} [SEP] {% endfor %}"
    )
    tok.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    LlamaModel(config).eval().save_pretrained(str(folder))
    return folder


def test_lora_tunes_adapters_only_and_saves_merged_weights(setup_files, tmp_path):
    from mrm_lightning.training.reward_encoder import EncoderTuning, TuningSettings

    llama = build_tiny_llama(tmp_path / "llama")
    files = setup_files
    args = [
        *data_args(files, llama),
        "--data.source.init_args.encoder.init_args.pooling",
        "last_token",
        "--data.source.init_args.encoder.init_args.normalize",
        "false",
    ]
    out = tmp_path / "tuned-llama"
    record = encoder_tune(
        [*args, "--out", str(out), "--lora-rank", "4", "--lr", "1e-2", "--accelerator", "cpu"]
    )
    assert record.settings["lora_rank"] == 4 and record.checks
    # what LoRA trains: the adapters and the head, never a base weight
    encoder = TextEncoder(str(llama), pooling="last_token", normalize=False, max_length=32)
    module = EncoderTuning(encoder, TuningSettings(lora_rank=4))
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    # the saved folder is a plain Llama (adapters merged), and its vectors moved
    saved = json.loads((out / "config.json").read_text())
    assert saved["architectures"] == ["LlamaModel"]
    from safetensors.torch import load_file

    weights = load_file(str(out / "model.safetensors"))
    assert not any("lora" in key for key in weights)
    items = [((), "is it rain", "yes yes the cat"), ((), "one", "no no water")]
    base = TextEncoder(str(llama), pooling="last_token", normalize=False, max_length=32)
    tuned = TextEncoder(str(out), pooling="last_token", normalize=False, max_length=32)
    before, after = base.encode(items, progress=False), tuned.encode(items, progress=False)
    assert not torch.allclose(before, after, atol=1e-5)


def test_a_source_without_texts_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["encoder-tune", "--config", str(REPO / "configs/tiny.yaml"), "--out", "x"])
    assert "no texts to tune an encoder on" in capsys.readouterr().err


@pytest.mark.slow
def test_tuning_over_two_processes_saves_one_encoder(setup_files, tmp_path):
    """DDP on CPU: each process tunes on its share of the pairs; rank 0 saves the folder."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK")
    }
    out = tmp_path / "tuned-ddp"
    command = [sys.executable, "-m", "mrm_lightning", "encoder-tune"]
    command += [*data_args(setup_files, setup_files["bert"]), "--out", str(out)]
    command += ["--accelerator", "cpu", "--devices", "2", "--lr", "1e-3", "--epochs", "1"]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((out / "tuning.json").read_text())
    # two checks an epoch, each over half the batches of one process's share
    assert len(record["checks"]) == 2 and record["checks"][-1]["epoch"] == 1.0
    assert not list(tmp_path.glob(".tuned-ddp.partial-*"))
    assert vectors(out, [((), "", "yes yes the cat")]).shape == (1, 16)
