"""`columns`: reading pairs and ratings files whose columns have other names."""

import dataclasses
import json
from pathlib import Path

import pytest

from mrm_lightning import PairsFiles, RatingsFiles
from mrm_lightning.cli import main
from mrm_lightning.data.records import LoadSummary, RecordError
from mrm_lightning.data.sources.pairs import read_pairs
from mrm_lightning.data.sources.ratings import read_ratings
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "generic"
PAIRS_JSONL, PAIRS_CSV = FIXTURES / "pairs.jsonl", FIXTURES / "pairs.csv"
RATINGS, RATINGS_NO_PROMPT = FIXTURES / "ratings.jsonl", FIXTURES / "ratings_no_prompt.csv"
PAIR_COLUMNS = {
    "user_id": "annotator",
    "prompt": "question",
    "chosen": "better",
    "rejected": "worse",
    "split": "fold",
    "unit": "topic",
}
RATING_COLUMNS = {"score": "offensiveness", "user_id": "annotator_id", "text": "comment"}


def renamed_copy(source: Path, folder: Path, columns: dict[str, str]) -> Path:
    """``source`` with its columns / keys renamed by ``columns``, every line where it was."""
    target = folder / source.name
    if source.suffix == ".csv":
        header, rest = source.read_text(encoding="utf-8").split("\n", 1)
        names = [columns.get(name, name) for name in header.split(",")]
        target.write_text(",".join(names) + "\n" + rest, encoding="utf-8")
        return target
    lines = []
    for line in source.read_text(encoding="utf-8").split("\n"):
        row = json.loads(line) if line.strip() else None
        lines.append(json.dumps({columns.get(k, k): v for k, v in row.items()}) if row else line)
    target.write_text("\n".join(lines), encoding="utf-8")
    return target


def same_records(first, second, first_path, second_path):
    """Equal records, the origins naming each file at the same lines."""
    assert [r.origin.replace(str(first_path), "") for r in first] == [
        r.origin.replace(str(second_path), "") for r in second
    ]
    assert [dataclasses.replace(r, origin="") for r in first] == [
        dataclasses.replace(r, origin="") for r in second
    ]


@pytest.mark.parametrize("source", [PAIRS_JSONL, PAIRS_CSV])
def test_renamed_pairs_read_like_the_standard_names(tmp_path, source):
    renamed = renamed_copy(source, tmp_path, PAIR_COLUMNS)
    standard_summary, renamed_summary = LoadSummary("a"), LoadSummary("b")
    standard = read_pairs(source, standard_summary)
    mapped = read_pairs(renamed, renamed_summary, columns=PAIR_COLUMNS)
    assert len(standard) == 6 and {r.split for r in standard} == {"train", "test", None}
    same_records(standard, mapped, source, renamed)
    assert standard_summary.dropped == renamed_summary.dropped


@pytest.mark.parametrize("source", [RATINGS, RATINGS_NO_PROMPT])
def test_renamed_ratings_read_like_the_standard_names(tmp_path, source):
    renamed = renamed_copy(source, tmp_path, RATING_COLUMNS)
    standard = read_ratings(source, item_groups=3, seed=1)
    mapped = read_ratings(renamed, item_groups=3, seed=1, columns=RATING_COLUMNS)
    assert len(standard) > 5
    same_records(standard, mapped, source, renamed)


def test_a_partial_mapping_keeps_the_other_names_and_ignores_other_columns(tmp_path):
    path = tmp_path / "r.csv"
    # "score" is just another column once score is mapped to "offensiveness"
    path.write_text("user_id,prompt,text,offensiveness,score\nu,p,a,1,9\nu,p,b,3,0\n")
    (record,) = read_ratings(path, columns={"score": "offensiveness"})
    assert (record.user, record.chosen, record.rejected) == ("u", "b", "a")


def test_errors_name_the_column_as_the_file_has_it(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("annotator_id,text,offensiveness\nu,a,1\nu,b,2\nu,c,x\n")
    with pytest.raises(RecordError) as caught:
        read_ratings(path, columns={"score": "offensiveness", "user_id": "annotator_id"})
    problem = "field 'offensiveness' (score): expected a number, got 'x'"
    assert str(caught.value) == f"{path}:4: {problem}"
    assert (caught.value.line, caught.value.field_name) == (4, "offensiveness")
    pairs = tmp_path / "pairs.jsonl"
    row = {"annotator": "u", "prompt": "p", "chosen": "a", "rejected": "b"}
    pairs.write_text(json.dumps(row) + "\n" + json.dumps({**row, "annotator": 1.5}) + "\n")
    with pytest.raises(RecordError, match=r":2: field 'annotator' \(user_id\): expected str/int"):
        read_pairs(pairs, columns={"user_id": "annotator"})
    # a field that keeps its name is named as before
    pairs.write_text(json.dumps({"annotator": "u", "prompt": "p", "chosen": "a"}) + "\n")
    with pytest.raises(RecordError, match=r":1: field 'rejected': missing$"):
        read_pairs(pairs, columns={"user_id": "annotator"})


def test_a_mapped_column_missing_from_a_csv_header_is_one_error_at_the_header(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("user_id,prompt,chosen,rejected\n" + "u,p,a,b\n" * 50)
    with pytest.raises(RecordError) as caught:
        read_pairs(path, columns={"split": "fold"})  # even an optional field, once mapped
    assert (caught.value.line, caught.value.field_name) == (1, "fold")
    assert str(caught.value).startswith(f"{path}:1: field 'fold': no such column")
    assert "'split'" in str(caught.value) and "'rejected'" in str(caught.value)  # the header


def test_a_mapped_column_missing_from_json_lines(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        json.dumps({"user_id": "u", "prompt": "p", "chosen": "a", "rejected": "b"}) + "\n"
    )
    with pytest.raises(RecordError, match=r":1: field 'annotator' \(user_id\): missing"):
        read_pairs(path, columns={"user_id": "annotator"})  # required: the first line
    with pytest.raises(ValueError, match="no line has the column 'fold'") as caught:
        read_pairs(path, columns={"split": "fold"})  # optional: once the file is read
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    "reader, columns, valid",
    [
        (read_pairs, {"score": "x"}, "user_id, prompt, chosen, rejected, split, unit"),
        (read_ratings, {"chosen": "x"}, "user_id, prompt, text, score"),
        (read_ratings, {"Score": "x"}, "user_id, prompt, text, score"),
    ],
)
def test_unknown_fields_are_refused_listing_the_valid_ones(reader, columns, valid):
    (key,) = columns
    with pytest.raises(ValueError, match=f"'{key}' is not a field; the fields are {valid}$"):
        reader(RATINGS, columns=columns)


@pytest.mark.parametrize("columns", [{"score": ""}, {"score": 3}, ["score"]])
def test_bad_column_names_are_refused(columns):
    with pytest.raises(ValueError, match="columns"):
        read_ratings(RATINGS, columns=columns)


def test_sources_check_their_columns_when_built():
    with pytest.raises(ValueError, match=r"PairsFiles.columns: 'text' is not a field"):
        PairsFiles([str(PAIRS_JSONL)], columns={"text": "body"})
    with pytest.raises(ValueError, match=r"RatingsFiles.columns: 'chosen' is not a field"):
        RatingsFiles([str(RATINGS)], columns={"chosen": "best"})


def test_sources_read_with_their_columns(tmp_path):
    renamed = renamed_copy(RATINGS, tmp_path, RATING_COLUMNS)
    source = RatingsFiles([str(renamed)], columns=RATING_COLUMNS, progress=False)
    records = source.read_records(LoadSummary("r"))
    same_records(read_ratings(RATINGS), records, RATINGS, renamed)
    pairs = renamed_copy(PAIRS_CSV, tmp_path, PAIR_COLUMNS)
    records = PairsFiles([str(pairs)], columns=PAIR_COLUMNS).read_records(LoadSummary("p"))
    same_records(read_pairs(PAIRS_CSV), records, PAIRS_CSV, pairs)


def cli_args(tmp_path, columns: str) -> list[str]:
    path = tmp_path / "ratings.csv"
    path.write_text("annotator_id,prompt,text,offensiveness\na,p,x one,1\na,p,x two,3\n")
    return [
        "--config",
        str(REPO / "tests/fixtures/use/text.yaml"),
        "--data.source",
        "mrm_lightning.RatingsFiles",
        "--data.source.init_args.paths",
        f"[{path}]",
        "--data.source.init_args.columns",
        columns,
        "--trainer.logger",
        "false",
    ]


def test_columns_through_the_cli_config(tmp_path):
    from mrm_lightning.data.datamodule import EpisodicDataModule
    from mrm_lightning.training.lightning_cli import MRMCLI, OneLineErrorParser
    from mrm_lightning.training.module import MetaRewardModel

    args = cli_args(tmp_path, "{score: offensiveness, user_id: annotator_id}")
    cli = MRMCLI(
        MetaRewardModel, EpisodicDataModule, args=args, run=False, parser_class=OneLineErrorParser
    )
    source = cli.datamodule.source
    assert isinstance(source, RatingsFiles)
    assert source.columns == {"score": "offensiveness", "user_id": "annotator_id"}
    ((user, chosen, rejected),) = [(r.user, r.chosen, r.rejected) for r in source.records()]
    assert (user, chosen, rejected) == ("a", "x two", "x one")


def test_a_bad_columns_setting_ends_the_command_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MRM_DEBUG", "")  # restored after the test
    with pytest.raises(SystemExit) as stop:
        main(["fit", *cli_args(tmp_path, "{scor: offensiveness}")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "mrm: error: RatingsFiles.columns: 'scor' is not a field; the fields are user_id, "
        "prompt, text, score"
    )
