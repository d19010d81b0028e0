"""`mrm adapt --store --append`: a user's new judgements from a file join the stored ones (the
same store /feedback writes), and the profile is adapted from all of them."""

from __future__ import annotations

import json

import pytest

from mrm_lightning.cli import main
from mrm_lightning.data.sources.pairs import read_pairs
from mrm_lightning.use.inference import PersonalizedRewardModel
from mrm_lightning.use.store import ProfileStore
from tests.cli.test_use_cli import text_model  # noqa: F401 (the module-scoped fixture)


def write(path, records) -> str:
    with open(path, "w") as handle:
        for r in records:
            row = {"user_id": r.user, "prompt": r.prompt, "chosen": r.chosen,
                   "rejected": r.rejected}  # fmt: skip
            handle.write(json.dumps(row) + "\n")
    return str(path)


def test_append_adds_to_the_stored_pairs_and_adapts_from_all(text_model, tmp_path):  # noqa: F811
    ckpt, pairs_file, _ = text_model
    records = [r for r in read_pairs(pairs_file) if r.user == "u3"]
    first, second = (
        write(tmp_path / "a.jsonl", records[:6]),
        write(tmp_path / "b.jsonl", records[4:12]),
    )
    store = tmp_path / "profiles.db"
    common = ["--ckpt", str(ckpt), "--store", str(store), "--device", "cpu", "--quiet"]
    main(["adapt", "--pairs", first, *common])
    main(["adapt", "--pairs", second, *common, "--append"])  # 2 of its 8 pairs are stored already
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    with ProfileStore(store, checkpoint=model.digest) as kept:
        stored, profile, version = kept.judgements("u3"), kept.get("u3"), kept.version("u3")
    assert len(stored) == 12 and version == 2
    assert profile.weights == pytest.approx(model.adapt(records[:12]).weights, abs=1e-6)
    main(["adapt", "--pairs", first, *common])  # without --append the file's pairs replace them
    with ProfileStore(store, checkpoint=model.digest) as kept:
        assert len(kept.judgements("u3")) == 6


def test_append_needs_a_store(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["adapt", "--ckpt", "x.ckpt", "--pairs", "p.jsonl", "--out", "-", "--append"])
    assert "--append needs --store" in capsys.readouterr().err
