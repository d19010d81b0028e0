"""`mrm adapt` / `mrm score` end to end on a tiny text model (the tiny random BERT)."""

import io
import json
import sys
from pathlib import Path

import pytest
import torch

from mrm_lightning.cli import main
from mrm_lightning.data.encoder import TextEncoder
from mrm_lightning.data.sources.pairs import read_pairs
from mrm_lightning.training.lightning_cli import cli_main
from mrm_lightning.use.inference import PersonalizedRewardModel, load_checkpoint, ranking
from mrm_lightning.use.profiles import UserProfile
from mrm_lightning.use.store import ProfileStore
from tests.conftest import REPO
from tests.tiny_encoder import build_tiny_bert

FIXTURES = REPO / "tests" / "fixtures" / "use"
USERS = [f"u{i}" for i in range(12)]


def write_pairs(path: Path) -> Path:
    """12 users x 16 pairs over 16 shared prompts; half the users like cats, half rain."""
    lines = []
    for index, user in enumerate(USERS):
        likes, other = ("cat", "rain") if index % 2 else ("rain", "cat")
        for prompt in range(16):
            lines.append(
                {
                    "user_id": user,
                    "prompt": f"write about one thing {prompt}",
                    "chosen": f"a {likes} {prompt} {index}",
                    "rejected": f"the {other} {prompt} {index}",
                }
            )
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """(checkpoint, pairs file, encoder folder) of a one-epoch text run."""
    folder = tmp_path_factory.mktemp("use")
    bert = build_tiny_bert(folder / "bert")
    pairs = write_pairs(folder / "pairs.jsonl")
    overrides = {
        "data.source.init_args.paths": f"[{pairs}]",
        "data.source.init_args.encoder.init_args.model": bert,
        "data.source.init_args.cache_dir": folder / "cache",
        "trainer.logger.init_args.save_dir": folder / "runs",
    }
    args = [a for k, v in overrides.items() for a in (f"--{k}", str(v))]
    cli = cli_main(["fit", "--config", str(FIXTURES / "text.yaml"), *args])
    return Path(cli.trainer.checkpoint_callback.best_model_path), pairs, bert


def test_the_checkpoint_records_its_encoder(text_model):
    ckpt, _, bert = text_model
    recorded = load_checkpoint(ckpt)[0]["mrm_encoder"]
    encoder = TextEncoder(str(bert), max_length=32, device="cpu")
    assert recorded["identity"] == encoder.identity()
    assert recorded["init_args"] == {
        "model": str(bert),
        "revision": None,
        "pooling": "mean",
        "normalize": True,
        "max_length": 32,
        "chat_template": True,
        "dtype": "auto",
        "batch_size": 64,
    }


def test_adapt_then_score_through_files(text_model, tmp_path):
    ckpt, pairs, _ = text_model
    out = tmp_path / "profile.json"
    main(["adapt", "--ckpt", str(ckpt), "--pairs", str(pairs), "--user", "u3", "--out", str(out)])
    profile = UserProfile.from_json(out.read_text())
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    records = [r for r in read_pairs(pairs) if r.user == "u3"]
    assert profile.num_pairs == len(records) == 16
    assert profile.encoder == load_checkpoint(ckpt)[0]["mrm_encoder"]["identity"]
    assert profile.weights == model.adapt(records).weights  # the API and the CLI agree
    assert profile.weights != model.prior()

    candidates = tmp_path / "candidates.jsonl"
    rows = [
        {"id": "q1", "prompt": "write about one thing 3", "responses": ["a cat", "the rain", "no"]},
        {"prompt": "explain clouds", "responses": ["water", "one cloud"]},
    ]
    candidates.write_text("".join(json.dumps(row) + "\n" for row in rows))
    scores = tmp_path / "scores.jsonl"
    main(["score", "--ckpt", str(ckpt), "--profile", str(out), "--input", str(candidates)]
         + ["--out", str(scores)])  # fmt: skip
    answers = [json.loads(line) for line in scores.read_text().splitlines()]
    assert [sorted(a) for a in answers] == [["id", "ranking", "scores"], ["ranking", "scores"]]
    assert answers[0]["id"] == "q1"
    for row, answer in zip(rows, answers):
        expected = model.score(row["prompt"], row["responses"], profile)
        assert answer["scores"] == pytest.approx(expected, abs=1e-6)
        assert answer["ranking"] == ranking(answer["scores"])
        assert model.rank(row["prompt"], row["responses"], profile)[0] == answer["ranking"]


def test_adapt_all_users_from_stdin_into_a_store_and_score_to_stdout(
    text_model, tmp_path, monkeypatch, capsys
):
    ckpt, pairs, _ = text_model
    store_path = tmp_path / "profiles.db"
    monkeypatch.setattr(sys, "stdin", io.StringIO(pairs.read_text()))
    main(["adapt", "--ckpt", str(ckpt), "--pairs", "-", "--store", str(store_path)])
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    with ProfileStore(store_path, checkpoint=model.digest) as store:
        assert store.users() == sorted(USERS)
        u5 = store.get("u5")
    records = [r for r in read_pairs(pairs) if r.user == "u5"]
    torch.testing.assert_close(
        torch.tensor(u5.weights), torch.tensor(model.adapt(records).weights), atol=1e-6, rtol=0
    )
    line = {"id": 7, "user_id": "u5", "prompt": "write about one thing 1", "responses": ["a", "b"]}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(line) + "\n"))
    capsys.readouterr()
    main(["score", "--ckpt", str(ckpt), "--store", str(store_path), "--input", "-", "--out", "-"])
    (answer,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert answer["id"] == 7
    assert answer["scores"] == pytest.approx(model.score(line["prompt"], ["a", "b"], u5), abs=1e-6)
    # the same user named by --user, and a user the store does not have
    for extra, message in [(["--user", "u5"], None), (["--user", "nobody"], "no profile")]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(line) + "\n"))
        args = ["score", "--ckpt", str(ckpt), "--store", str(store_path), *extra]
        if message is None:
            main([*args, "--input", "-", "--out", "-"])
            assert json.loads(capsys.readouterr().out)["scores"] == answer["scores"]
        else:
            with pytest.raises(SystemExit) as stop:
                main([*args, "--input", "-", "--out", "-"])
            assert stop.value.code == 2
            assert "<stdin>:1: field 'user_id': no profile of 'nobody'" in capsys.readouterr().err


def test_malformed_pairs_give_file_line_field_errors_and_status_2(text_model, tmp_path, capsys):
    ckpt, _, _ = text_model
    bad = tmp_path / "bad.jsonl"
    good = {"user_id": "x", "prompt": "p", "chosen": "a", "rejected": "b"}
    broken = {k: v for k, v in good.items() if k != "chosen"}
    bad.write_text(json.dumps(good) + "\n" + json.dumps(broken) + "\n")
    with pytest.raises(SystemExit) as stop:
        main(["adapt", "--ckpt", str(ckpt), "--pairs", str(bad), "--out", "-"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"mrm: error: {bad}:2: field 'chosen': missing"
    assert "Traceback" not in "\n".join(err)


def test_usage_and_refusals_end_with_one_error_line(text_model, tmp_path, capsys, monkeypatch):
    ckpt, pairs, _ = text_model

    def error_of(args, stdin=""):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        with pytest.raises(SystemExit) as stop:
            main(args)
        assert stop.value.code == 2
        return capsys.readouterr().err.strip().splitlines()[-1]

    base = ["--ckpt", str(ckpt)]
    assert error_of(["adapt", *base, "--pairs", str(pairs), "--out", "-"]) == (
        f"mrm: error: {pairs} holds pairs of 12 users: choose one with --user"
    )
    assert error_of(["adapt", *base, "--pairs", str(pairs)]).startswith("mrm: error: one of")
    assert "no such file" in error_of(["score", "--ckpt", str(tmp_path / "x.ckpt")]
                                      + ["--input", "-", "--out", "-"]).lower()  # fmt: skip
    bad_line = json.dumps({"prompt": "p", "responses": "not a list"}) + "\n"
    assert error_of(["score", *base, "--input", "-", "--out", "-"], "\n" + bad_line) == (
        "mrm: error: <stdin>:2: field 'responses': expected list, got str"
    )
    foreign = tmp_path / "foreign.json"
    profile = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu").adapt([])
    foreign.write_text(UserProfile(**{**profile.__dict__, "checkpoint": "f" * 64}).to_json() + "\n")
    message = error_of(["score", *base, "--profile", str(foreign), "--input", "-", "--out", "-"])
    assert "checkpoint digest" in message and "f" * 64 in message


def test_an_encoder_folder_changed_since_training_is_refused(text_model, tmp_path):
    ckpt, _, bert = text_model
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    model.encoder_info = {
        **model.encoder_info,
        "init_args": {**model.encoder_info["init_args"], "model": str(bert), "max_length": 16},
    }
    with pytest.raises(ValueError, match="max_length \\(32 -> 16\\)"):
        model.score("p", ["a", "b"])


def test_adapt_with_an_embedding_cache_gives_the_same_profile(text_model, tmp_path):
    ckpt, pairs, _ = text_model
    outs = [tmp_path / "plain.json", tmp_path / "cached.json", tmp_path / "again.json"]
    for out, extra in zip(
        outs, ([], ["--cache-dir", str(tmp_path / "c")], ["--cache-dir", str(tmp_path / "c")])
    ):
        main(
            [
                "adapt",
                "--ckpt",
                str(ckpt),
                "--pairs",
                str(pairs),
                "--user",
                "u1",
                "--out",
                str(out),
                *extra,
            ]
        )
    plain, cached, again = (UserProfile.from_json(out.read_text()) for out in outs)
    torch.testing.assert_close(torch.tensor(cached.weights), torch.tensor(plain.weights))
    assert again.weights == cached.weights  # the second run read the entry back
    assert len([p for p in (tmp_path / "c").iterdir() if not p.name.startswith(".")]) == 1
