"""Bad checkpoints and profile stores end every command that reads them with one line naming
the file and what is wrong with it, and exit status 2: adapt, score, serve (before listening),
and fit / validate / test --ckpt_path (before Lightning loads the file)."""

import datetime
import json
import pickle
import random
import sqlite3
from pathlib import Path

import pytest
import torch

from mrm_lightning.cli import main
from mrm_lightning.training.checkpoint_file import CheckpointError, check_ckpt_path, read_checkpoint
from mrm_lightning.training.lightning_cli import cli_main
from tests.conftest import REPO

TINY = str(REPO / "configs/tiny.yaml")
NOT_UNPICKLED = "which are never unpickled (that could run code)"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A real checkpoint of a tiny run, bad ones made from it, a pairs and a candidates file."""
    folder = tmp_path_factory.mktemp("bad_files")
    cli = cli_main(["fit", "--config", TINY, "--trainer.logger.init_args.save_dir", str(folder)])
    good = Path(cli.trainer.checkpoint_callback.best_model_path)
    data = good.read_bytes()
    made = {"good": good}

    def write(name: str, content: bytes) -> None:
        made[name] = folder / f"{name}.ckpt"
        made[name].write_bytes(content)

    write("empty", b"")
    write("truncated", data[: len(data) // 2])
    noise = random.Random(0).randbytes(4096)
    assert noise[:1] != b"\x80" and noise[:2] != b"PK"  # neither a pickle nor a zip archive
    write("random", noise)
    torch.save({"x": object()}, folder / "foreign_objects.ckpt")
    made["foreign_objects"] = folder / "foreign_objects.ckpt"
    write("python_pickle", pickle.dumps(datetime.date(2024, 1, 1)))
    torch.save(
        {"state_dict": {"encoder.weight": torch.zeros(2)}, "hyper_parameters": {}},
        folder / "other_model.ckpt",
    )
    made["other_model"] = folder / "other_model.ckpt"
    made["pairs"] = folder / "pairs.jsonl"
    made["pairs"].write_text(
        json.dumps({"user_id": "u", "prompt": "p", "chosen": "a", "rejected": "b"}) + "\n"
    )
    made["candidates"] = folder / "candidates.jsonl"
    made["candidates"].write_text(json.dumps({"prompt": "p", "responses": ["a", "b"]}) + "\n")
    made["not_a_database"] = folder / "not_a_database.db"
    made["not_a_database"].write_text("user,weights\nu1,0.5\n")
    made["other_database"] = folder / "other_database.db"
    with sqlite3.connect(made["other_database"]) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    db.close()
    return made


def problem(name: str, files: dict[str, Path]) -> str:
    """What the one line says after ``mrm: error: FILE: ``."""
    return {
        "empty": "empty file (0 bytes), not a checkpoint",
        "truncated": "cut short: the checkpoint's zip archive ends early "
        f"({files['truncated'].stat().st_size} bytes, no end-of-archive record); was it "
        "copied or written only in part?",
        "random": "not a checkpoint: neither the zip archive torch.save writes nor a pickle "
        "(it starts with bytes cd 07 2c d8)",
        "foreign_objects": "refused: the file holds Python objects other than tensors and "
        f"plain values (first found: object), {NOT_UNPICKLED}",
        "python_pickle": "a Python pickle, not a torch checkpoint (torch.save writes a zip "
        "archive)",
        "other_model": "not an MRM checkpoint: a checkpoint of another model (its weights have "
        "no w0 and base_rewards; they start with encoder.weight)",
        "not_a_database": "not a profile store: the file is not an SQLite database",
        "other_database": "not a profile store: an SQLite database without a profiles table "
        "(it has users); mrm adapt --store makes a store",
    }[name]


def command(name: str, ckpt: Path, files: dict[str, Path], store: Path | None = None) -> list:
    out = str(ckpt.parent / "out.json")
    if name == "adapt":
        where = ["--store", str(store)] if store else ["--out", out]
        return ["adapt", "--ckpt", str(ckpt), "--pairs", str(files["pairs"]), *where]
    if name == "score":
        given = ["--store", str(store), "--user", "u"] if store else []
        return ["score", "--ckpt", str(ckpt), "--input", str(files["candidates"]), "--out", out,
                *given]  # fmt: skip
    if name == "serve":
        store = store or ckpt.parent / "profiles.db"
        return ["serve", "--ckpt", str(ckpt), "--store", str(store), "--port", "1"]
    return [name, "--config", TINY, "--trainer.logger", "false", "--ckpt_path", str(ckpt)]


def error_line(argv: list[str], capsys, monkeypatch) -> str:
    """The last line of stderr of ``mrm ARGV``, which must end with status 2, no traceback."""
    monkeypatch.setenv("MRM_DEBUG", "")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.strip()][-1]


BAD_CHECKPOINTS = [
    "empty",
    "truncated",
    "random",
    "foreign_objects",
    "python_pickle",
    "other_model",
]
COMMANDS = ["adapt", "score", "serve", "fit", "validate", "test"]


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("bad", BAD_CHECKPOINTS)
def test_a_bad_checkpoint_is_one_line_naming_it(files, name, bad, capsys, monkeypatch):
    ckpt = files[bad]
    line = error_line(command(name, ckpt, files), capsys, monkeypatch)
    assert line == f"mrm: error: {ckpt}: {problem(bad, files)}"


@pytest.mark.parametrize("name", COMMANDS)
def test_a_missing_checkpoint_is_one_line_naming_it(files, name, capsys, monkeypatch):
    missing = files["good"].parent / "no_such.ckpt"
    line = error_line(command(name, missing, files), capsys, monkeypatch)
    assert line == f"mrm: error: {missing}: no such file"


@pytest.mark.parametrize("name", ["adapt", "score", "serve"])
@pytest.mark.parametrize("bad", ["not_a_database", "other_database"])
def test_a_bad_store_is_one_line_naming_it(files, name, bad, capsys, monkeypatch):
    store = files[bad]
    line = error_line(command(name, files["good"], files, store), capsys, monkeypatch)
    assert line == f"mrm: error: {store}: {problem(bad, files)}"


def test_fit_refuses_to_resume_from_weights_only(files, tmp_path, capsys, monkeypatch):
    checkpoint = torch.load(files["good"], weights_only=True)
    del checkpoint["optimizer_states"]
    weights_only = tmp_path / "weights.ckpt"
    torch.save(checkpoint, weights_only)
    line = error_line(command("fit", weights_only, files), capsys, monkeypatch)
    assert line == (
        f"mrm: error: {weights_only}: holds the weights only (ModelCheckpoint "
        "save_weights_only): fit cannot resume from it; validate and test can use it"
    )


def test_lightnings_own_ckpt_path_names_are_left_to_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file of these names here: only Lightning resolves them
    for value in ["best", "last", "hpc", "registry", "registry:model:v1", "s3://b/x.ckpt", None]:
        check_ckpt_path(value, "validate")
    with pytest.raises(FileNotFoundError):
        check_ckpt_path("x.ckpt", "validate")


def test_adapt_says_why_no_pair_was_usable(files, tmp_path, capsys, monkeypatch):
    pairs = tmp_path / "same.jsonl"
    same = {"user_id": "u", "prompt": "p", "chosen": "a", "rejected": "a"}
    pairs.write_text(json.dumps(same) + "\n" + json.dumps(same) + "\n")
    argv = ["adapt", "--ckpt", str(files["good"]), "--pairs", str(pairs), "--out", "-"]
    assert error_line(argv, capsys, monkeypatch) == (
        f"mrm: error: {pairs}: no usable pair was read; dropped 2 (identical chosen and rejected)"
    )
    pairs.write_text("")
    assert error_line(argv, capsys, monkeypatch) == (
        f"mrm: error: {pairs}: no usable pair was read; it holds no pairs"
    )


def test_score_names_a_bad_profile_or_input_file(files, tmp_path, capsys, monkeypatch):
    profile = tmp_path / "profile.json"
    profile.write_text("not json\n")
    base = ["score", "--ckpt", str(files["good"]), "--out", "-"]
    argv = [*base, "--profile", str(profile), "--input", str(files["candidates"])]
    assert error_line(argv, capsys, monkeypatch) == (
        f"mrm: error: {profile}: profile is not valid JSON: Expecting value: line 1 column 1 "
        "(char 0)"
    )
    candidates = tmp_path / "latin1.jsonl"
    candidates.write_bytes(files["candidates"].read_bytes() + b'{"prompt": "caf\xe9"}\n')
    assert error_line([*base, "--input", str(candidates)], capsys, monkeypatch) == (
        f"mrm: error: {candidates}:2: field '<encoding>': not UTF-8 (0xe9)"
    )


def test_score_never_makes_a_store_it_was_asked_to_read(files, tmp_path, capsys, monkeypatch):
    missing = tmp_path / "profiles.db"
    base = ["score", "--ckpt", str(files["good"]), "--store", str(missing), "--user", "u"]
    argv = [*base, "--input", str(files["candidates"]), "--out", "-"]
    assert error_line(argv, capsys, monkeypatch) == (
        f"mrm: error: {missing}: no such profile store (mrm adapt --store makes one)"
    )
    assert not missing.exists()


def test_a_checkpoint_cut_anywhere_is_a_checkpoint_error(files):
    data = files["good"].read_bytes()
    cut = files["good"].parent / "cut.ckpt"
    for size in sorted({*range(0, 64, 7), *range(64, len(data), max(1, len(data) // 97))}):
        cut.write_bytes(data[:size])
        with pytest.raises(CheckpointError) as caught:
            read_checkpoint(cut)
        assert str(caught.value).startswith(f"{cut}: "), size
