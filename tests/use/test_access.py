"""Keys and roles of `mrm serve`: the rules by hand, then for real over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from mrm_lightning.use.access import (
    AccessRules,
    bearer_token,
    exposure_warning,
    is_loopback,
)
from mrm_lightning.use.inference import PersonalizedRewardModel
from mrm_lightning.use.server import create_app
from tests.cli.test_use_cli import text_model  # noqa: F401 (the module-scoped fixture)
from tests.use.test_server import DIRECT, serving_in_a_thread

WRITE = "w" * 8 + "-write-key-0001"
READ = "r" * 8 + "-read-key-00001"


@pytest.mark.parametrize(
    "header, token",
    [
        (None, None),
        ("", None),
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("abc", None),
    ],
)
def test_bearer_token(header, token):
    assert bearer_token(header) == token


def test_rules_by_hand():
    open_rules = AccessRules()
    assert open_rules.check_write(None) is None and open_rules.check_read(None) is None
    rules = AccessRules(write_key=WRITE, read_key=READ)
    assert rules.check_write(None).status == 401
    assert rules.check_write(f"Bearer {READ}").status == 403  # a read key never writes
    assert rules.check_write(f"Bearer {WRITE}") is None
    assert rules.check_read(f"Bearer {READ}") is None
    assert rules.check_read(f"Bearer {WRITE}") is None  # the write key also reads
    assert rules.check_read("Bearer nope").status == 403
    assert AccessRules(read_only=True, write_key=WRITE).check_write(f"Bearer {WRITE}").status == 403
    with pytest.raises(ValueError, match="at least 16"):
        AccessRules(write_key="short")


def test_exposure_warning_only_for_open_writes_beyond_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("node7")
    assert exposure_warning("127.0.0.1", AccessRules()) is None
    assert "MRM_API_KEY" in exposure_warning("0.0.0.0", AccessRules())
    assert exposure_warning("0.0.0.0", AccessRules(write_key=WRITE)) is None
    assert exposure_warning("0.0.0.0", AccessRules(read_only=True)) is None


def post(base: str, path: str, body: dict, key: str | None = None) -> tuple[int, dict, dict]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(base + path, json.dumps(body).encode(), headers)
    try:
        with DIRECT.open(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read()), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def test_keys_over_http(text_model, tmp_path):  # noqa: F811
    ckpt, _, _ = text_model
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    adapt = {"user_id": "u", "pairs": [{"prompt": "p", "chosen": "the rain", "rejected": "a"}]}
    reward = {"query": ["p the rain"], "prompts": ["p"], "user_id": "u"}
    rules = AccessRules(write_key=WRITE, read_key=READ)
    with serving_in_a_thread(create_app(model, tmp_path / "keys.db", access=rules)) as base:
        status, answer, headers = post(base, "/adapt", adapt)
        assert status == 401 and "Authorization: Bearer" in answer["detail"]
        assert headers.get("www-authenticate") == "Bearer"
        status, answer, _ = post(base, "/adapt", adapt, key=READ)
        assert status == 403 and READ not in json.dumps(answer)  # never echoed
        assert post(base, "/adapt", adapt, key=WRITE)[0] == 200
        assert post(base, "/get_reward", reward)[0] == 401
        status, answer, _ = post(base, "/get_reward", reward, key=READ)
        assert status == 200 and answer["profiles"] == ["u"]
        with DIRECT.open(base + "/health", timeout=30) as answer:  # probes need no key
            assert answer.status == 200
    read_only = AccessRules(write_key=WRITE, read_only=True)
    with serving_in_a_thread(create_app(model, tmp_path / "keys.db", access=read_only)) as base:
        status, answer, _ = post(base, "/adapt", adapt, key=WRITE)
        assert status == 403 and "read-only" in answer["detail"]
        assert post(base, "/get_reward", reward)[0] == 200  # reads stay open without a read key


def test_a_short_key_is_one_error_line_before_anything_loads(tmp_path, capsys, monkeypatch):
    from mrm_lightning.cli import main

    monkeypatch.setenv("MRM_API_KEY", "tiny")
    with pytest.raises(SystemExit) as stop:
        main(["serve", "--ckpt", str(tmp_path / "missing.ckpt"), "--store", "x.db"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--api-key must be at least 16 characters" in err and "tiny" not in err
