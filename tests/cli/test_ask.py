"""``mrm ask``: the comparisons to ask a user next, from a candidates file, as the Python API
chooses them; never one the store already holds for the user; bad lines named."""

from __future__ import annotations

import json

import pytest

from mrm_lightning.cli import main
from mrm_lightning.data.sources.pairs import read_pairs
from mrm_lightning.use.inference import PersonalizedRewardModel
from mrm_lightning.use.store import ProfileStore
from tests.cli.test_use_cli import text_model  # noqa: F401 (the module-scoped fixture)

PROMPT = "write about one thing 3"


def candidates_file(path):
    rows = [
        {"id": "c0", "prompt": PROMPT, "a": "a cat 3 1", "b": "the rain 3 1"},
        {"id": "c1", "prompt": PROMPT, "a": "the rain 3 1", "b": "a cat 3 1"},  # c0 again
        {"id": "c2", "prompt": PROMPT, "chosen": "a cat 3 3", "rejected": "the rain 3 3"},
        {"id": "c3", "prompt": "explain clouds", "a": "water in the air", "b": "a cat"},
        {"id": "c4", "prompt": PROMPT, "a": "the rain 9 9", "b": "a cat 9 9"},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def test_ask_a_stored_user_skips_their_pairs_and_follows_the_api(text_model, tmp_path, capsys):  # noqa: F811
    ckpt, pairs, _ = text_model
    rows = candidates_file(tmp_path / "pool.jsonl")
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    mine = [r for r in read_pairs(pairs) if r.user == "u3"][:4]
    stored = {"prompt": PROMPT, "chosen": "a cat 3 3", "rejected": "the rain 3 3", "history": []}
    with ProfileStore(tmp_path / "profiles.db", checkpoint=model.digest) as store:
        store.put("u3", model.adapt(mine))
        store.set_judgements("u3", [stored])
        profile = store.get("u3")
    main(["ask", "--ckpt", str(ckpt), "--store", str(tmp_path / "profiles.db"), "--user", "u3",
          "--candidates", str(tmp_path / "pool.jsonl"), "--k", "5", "--out", "-"])  # fmt: skip
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ids = [a["id"] for a in answers]
    assert sorted(ids) == ["c0", "c3", "c4"]  # c1 repeats c0, c2 is stored for u3
    assert [a["order"] for a in answers] == [0, 1, 2]
    assert all(rows[a["line"] - 1]["id"] == a["id"] for a in answers)
    expected = model.next_pairs(profile, rows, 5, answered=[stored])
    assert ids == [rows[i]["id"] for i in expected]


def test_ask_a_new_user_and_bad_lines(text_model, tmp_path, capsys):  # noqa: F811
    ckpt, _, _ = text_model
    rows = candidates_file(tmp_path / "pool.jsonl")
    out = tmp_path / "asked.jsonl"
    main(["ask", "--ckpt", str(ckpt), "--candidates", str(tmp_path / "pool.jsonl"),
          "--out", str(out)])  # fmt: skip
    (only,) = [json.loads(line) for line in out.read_text().splitlines()]
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    assert only["id"] == rows[model.next_pairs(None, rows, 1)[0]]["id"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"prompt": PROMPT, "a": "x"}) + "\n")
    with pytest.raises(SystemExit) as stop:
        main(["ask", "--ckpt", str(ckpt), "--candidates", str(bad), "--out", "-"])
    assert stop.value.code == 2
    assert f"{bad}:2: field 'b': missing" in capsys.readouterr().err
