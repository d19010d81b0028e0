"""`mrm adapt` / `mrm score` read new users' files with the column names of the files the model
was trained on (the checkpoint's ``mrm_columns``), and ``--columns`` replaces them."""

import csv
import json
from pathlib import Path

import pytest

from mrm_lightning.cli import main
from mrm_lightning.data.sources.pairs import read_pairs
from mrm_lightning.training.lightning_cli import cli_main
from mrm_lightning.use.inference import PersonalizedRewardModel, load_checkpoint
from mrm_lightning.use.profiles import UserProfile
from tests.conftest import REPO
from tests.tiny_encoder import build_tiny_bert

TEXT = REPO / "tests" / "fixtures" / "use" / "text.yaml"
COLUMNS = {
    "user_id": "annotator",
    "prompt": "question",
    "chosen": "good_answer",
    "rejected": "bad_answer",
}
HEADER = list(COLUMNS.values())


def pair_rows(users: list[str], prompts: int) -> list[list[str]]:
    """Half the users like cats, half rain, over shared prompts (annotator, question, good, bad)."""
    rows = []
    for index, user in enumerate(users):
        likes, other = ("cat", "rain") if index % 2 else ("rain", "cat")
        for prompt in range(prompts):
            question = f"write about one thing {prompt}"
            rows.append([user, question, f"a {likes} {prompt} {index}", f"the {other} {prompt}"])
    return rows


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(checkpoint, folder) of a one-epoch text run on a pairs CSV with other column names."""
    folder = tmp_path_factory.mktemp("columns")
    bert = build_tiny_bert(folder / "bert")
    pairs = write_csv(folder / "train.csv", HEADER, pair_rows([f"u{i}" for i in range(12)], 16))
    overrides = {
        "data.source.init_args.paths": json.dumps([str(pairs)]),
        "data.source.init_args.columns": json.dumps(COLUMNS),
        "data.source.init_args.encoder.init_args.model": bert,
        "data.source.init_args.cache_dir": folder / "cache",
        "trainer.logger.init_args.save_dir": folder / "runs",
    }
    args = [a for k, v in overrides.items() for a in (f"--{k}", str(v))]
    cli = cli_main(["fit", "--config", str(TEXT), *args])
    return Path(cli.trainer.checkpoint_callback.best_model_path), folder


def adapt(ckpt: Path, pairs: Path, out: Path, *extra: str) -> UserProfile:
    main(["adapt", "--ckpt", str(ckpt), "--pairs", str(pairs), "--out", str(out), *extra])
    return UserProfile.from_json(out.read_text())


def error_of(argv: list[str], capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_the_checkpoint_records_the_columns(trained):
    ckpt, _ = trained
    assert load_checkpoint(ckpt)[0]["mrm_columns"] == {"source": "PairsFiles", "columns": COLUMNS}
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    assert model.columns == {"source": "PairsFiles", "columns": COLUMNS}


def test_adapt_reads_the_training_columns_without_flags(trained, tmp_path):
    ckpt, _ = trained
    new_user = write_csv(tmp_path / "new_user.csv", HEADER, pair_rows(["newcomer"], 6))
    profile = adapt(ckpt, new_user, tmp_path / "profile.json")
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    records = read_pairs(new_user, columns=COLUMNS)
    assert profile.num_pairs == len(records) == 6
    assert profile.weights == model.adapt(records).weights


def test_columns_override_the_checkpoints(trained, tmp_path, capsys):
    ckpt, _ = trained
    rows = pair_rows(["newcomer"], 6)
    expected = adapt(ckpt, write_csv(tmp_path / "a.csv", HEADER, rows), tmp_path / "a.json")
    standard = write_csv(
        tmp_path / "standard.csv", ["user_id", "prompt", "chosen", "rejected"], rows
    )
    own = write_csv(tmp_path / "own.csv", ["rater", "prompt", "better", "worse"], rows)
    mapping = {"user_id": "rater", "chosen": "better", "rejected": "worse"}
    for path, columns in [(standard, {}), (own, mapping)]:
        profile = adapt(ckpt, path, tmp_path / "p.json", "--columns", json.dumps(columns))
        assert profile.weights == expected.weights
    # the standard names without --columns: the error says where the names came from
    plain = ["adapt", "--ckpt", str(ckpt), "--pairs", str(standard), "--out", "-"]
    assert error_of(plain, capsys) == (
        f"mrm: error: {standard}:1: field 'annotator': no such column (columns maps 'user_id' to "
        "it); the header has 'user_id', 'prompt', 'chosen', 'rejected' (the checkpoint's files "
        "name user_id as 'annotator', prompt as 'question', chosen as 'good_answer', rejected "
        "as 'bad_answer'; --columns overrides)"
    )
    assert error_of([*plain, "--columns", '{"user_id": x}'], capsys) == (
        'mrm: error: --columns: not valid JSON (Expecting value): {"user_id": x}'
    )
    assert error_of([*plain, "--columns", '{"score": "x"}'], capsys) == (
        "mrm: error: --columns: 'score' is not a field; the fields are user_id, prompt, chosen, "
        "rejected"
    )


def test_score_reads_the_training_name_of_the_prompt(trained, tmp_path):
    ckpt, _ = trained
    profile = tmp_path / "profile.json"
    adapt(ckpt, write_csv(tmp_path / "new.csv", HEADER, pair_rows(["newcomer"], 6)), profile)
    line = {"id": 1, "responses": ["a cat", "the rain"]}
    answers = []
    for key, extra in [("question", []), ("prompt", ["--columns", "{}"])]:
        candidates = tmp_path / "candidates.jsonl"
        candidates.write_text(json.dumps({**line, key: "write about one thing 2"}) + "\n")
        out = tmp_path / "scores.jsonl"
        main(["score", "--ckpt", str(ckpt), "--profile", str(profile), "--input",
              str(candidates), "--out", str(out), *extra])  # fmt: skip
        answers.append(json.loads(out.read_text()))
    assert answers[0] == answers[1] and answers[0]["id"] == 1
