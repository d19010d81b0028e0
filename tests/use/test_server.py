"""`mrm serve` for real: a subprocess on 127.0.0.1, spoken to over HTTP (tiny text model)."""

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from math import exp

import pytest
import uvicorn

from mrm_lightning.cli import main
from mrm_lightning.data.sources.pairs import read_pairs
from mrm_lightning.use.inference import PersonalizedRewardModel
from mrm_lightning.use.server import create_app
from mrm_lightning.use.store import ProfileStore
from tests.cli.test_use_cli import text_model  # noqa: F401 (the module-scoped fixture)

HOST = "127.0.0.1"  # the only address these tests ever use
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def call(base: str, path: str, body=None) -> tuple[int, dict]:
    """(status, JSON answer) of GET (no body) or POST (a JSON value, or raw bytes)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with DIRECT.open(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def start(ckpt, store, log, *extra) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = ["--ckpt", str(ckpt), "--store", str(store), "--host", HOST, "--port", str(port)]
    process = subprocess.Popen(
        [sys.executable, "-m", "mrm_lightning", "serve", *args, "--device", "cpu", *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process, f"http://{HOST}:{port}"


def wait_healthy(process, base, log_path, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mrm serve exited:\n{log_path.read_text()}")
        try:
            if call(base, "/health")[0] == 200:
                return
        except OSError:  # not listening yet
            pass
        time.sleep(0.2)
    raise RuntimeError(f"mrm serve did not answer /health in {seconds} s")


@contextmanager
def serving_in_a_thread(app):
    """``app`` under uvicorn in a thread of this process, on 127.0.0.1; yields its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def servers(text_model, tmp_path_factory):  # noqa: F811
    """Two servers on one store, {"prior": URL, "error": URL}, the model, the pairs, the store.

    ``mrm serve`` runs as a subprocess (with ``--unknown-user prior``); the ``error`` one is
    :func:`create_app` under uvicorn in a thread of this process: a second subprocess would
    import torch and Lightning again (seconds on two cores)."""
    ckpt, pairs, _ = text_model
    folder = tmp_path_factory.mktemp("serve")
    store = folder / "profiles.db"
    log_path = folder / "serve.log"
    strict = create_app(PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu"), store, "error")
    with serving_in_a_thread(strict) as strict_base, log_path.open("w") as log:
        process, base = start(ckpt, store, log, "--unknown-user", "prior")
        try:
            wait_healthy(process, base, log_path)
            model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
            yield {"prior": base, "error": strict_base}, model, pairs, store
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def test_health_adapt_and_rewards_equal_the_python_api(servers):
    bases, model, pairs, store_path = servers
    base = bases["prior"]
    status, health = call(base, "/health")
    assert status == 200
    assert health["status"] == "ok" and health["checkpoint"] == model.digest
    assert health["encoder"] == model.encoder_info["identity"]["model"]
    assert health["unknown_user"] == "prior"

    records = [r for r in read_pairs(pairs) if r.user == "u3"]
    body = {"user_id": "u3", "pairs": [
        {"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected} for r in records
    ]}  # fmt: skip
    status, adapted = call(base, "/adapt", body)
    assert status == 200, adapted
    assert adapted["num_pairs"] == 16 and adapted["user_id"] == "u3"
    assert adapted["weights"] == pytest.approx(model.adapt(records).weights, abs=1e-6)
    assert call(base, "/adapt", body)[1]["replaced"] is True
    assert call(base, "/health")[1]["users"] >= 1
    with ProfileStore(store_path, checkpoint=model.digest) as store:
        profile = store.get("u3")
    assert profile.weights == adapted["weights"]

    prompts = ["write about one thing 3", "write about one thing 3", "explain clouds"]
    responses = ["a cat", "the rain", "water"]
    queries = [f"{p} {r}" for p, r in zip(prompts, responses)]  # OpenRLHF: prompt + response
    status, answer = call(base, "/get_reward", {"query": queries, "prompts": prompts,
                                                "user_id": "u3", "labels": [None] * 3})  # fmt: skip
    assert status == 200, answer
    expected = [model.score(p, [r], profile)[0] for p, r in zip(prompts, responses)]
    assert answer["rewards"] == pytest.approx(expected, abs=1e-5)
    assert answer["profile"] == "u3" and answer["profiles"] == ["u3"] * 3

    # per-item users: a user with no profile, and no user at all, get the prior
    status, mixed = call(base, "/get_reward", {"query": queries, "prompts": prompts,
                                               "user_ids": ["u3", "ghost", "u3"]})  # fmt: skip
    assert status == 200 and mixed["profiles"] == ["u3", "prior", "u3"] and "profile" not in mixed
    prior = model.score(prompts[1], [responses[1]])[0]
    assert mixed["rewards"] == pytest.approx([expected[0], prior, expected[2]], abs=1e-5)
    status, anonymous = call(base, "/get_reward", {"query": queries[1:2], "prompts": prompts[1:2]})
    assert anonymous == {"rewards": pytest.approx([prior], abs=1e-5), "profiles": ["prior"],
                         "profile": "prior", "scores": pytest.approx([1 / (1 + exp(-prior))]),
                         "extra_logs": {"personalized": [0.0]}}  # fmt: skip
    assert mixed["extra_logs"] == {"personalized": [1.0, 0.0, 1.0]}
    # a query that does not start with its prompt is all response
    status, whole = call(base, "/get_reward", {"query": ["water"], "prompts": ["other"]})
    assert whole["rewards"] == pytest.approx(model.score("other", ["water"]), abs=1e-5)


@pytest.mark.parametrize(
    "path, body, status, words",
    [
        ("/get_reward", {"prompts": ["p"]}, 422, "query"),
        ("/get_reward", {"query": "p r", "prompts": ["p"]}, 422, "query"),
        ("/get_reward", {"query": ["p r"], "prompts": ["p"], "user_id": 7}, 422, "user_id"),
        ("/get_reward", b"not json", 422, "json"),
        ("/get_reward", [1, 2], 422, ""),
        ("/get_reward", {"query": ["a", "b"], "prompts": ["a"]}, 400, "'prompts' 1"),
        ("/get_reward", {"query": ["a"], "prompts": ["a"], "user_ids": []}, 400, "'user_ids'"),
        (
            "/get_reward",
            {"query": ["a"], "prompts": ["a"], "user_id": "x", "user_ids": ["x"]},
            400,
            "not both",
        ),  # fmt: skip
        ("/adapt", {"user_id": "u", "pairs": []}, 400, "at least one pair"),
        (
            "/adapt",
            {"user_id": "", "pairs": [{"prompt": "p", "chosen": "a", "rejected": "b"}]},
            400,
            "empty",
        ),  # fmt: skip
        ("/adapt", {"user_id": "u", "pairs": [{"prompt": "p", "chosen": "a"}]}, 422, "rejected"),
        ("/adapt", {"pairs": [{"prompt": "p", "chosen": "a", "rejected": "b"}]}, 422, "user_id"),
    ],
)
def test_malformed_requests_get_4xx_with_a_message(servers, path, body, status, words):
    got, answer = call(servers[0]["prior"], path, body)
    assert got == status, answer
    assert words.lower() in json.dumps(answer["detail"]).lower()


def test_unknown_users_under_error_get_404_and_known_ones_their_rewards(servers):
    bases, model, _, _ = servers
    base = bases["error"]
    pair = {"prompt": "write about one thing 1", "chosen": "a rain", "rejected": "the cat"}
    assert call(base, "/adapt", {"user_id": "strict", "pairs": [pair] * 3})[0] == 200
    body = {"query": ["p a cat"], "prompts": ["p"]}
    status, answer = call(base, "/get_reward", {**body, "user_ids": ["strict"]})
    assert status == 200 and answer["profiles"] == ["strict"]
    status, answer = call(base, "/get_reward", {**body, "user_id": "ghost"})
    assert status == 404 and "no profile of user 'ghost'" in answer["detail"]
    status, answer = call(base, "/get_reward", body)
    assert status == 400 and "name the user" in answer["detail"]


def test_bad_arguments_end_with_one_error_line(tmp_path, capsys):
    for args, message in [
        (["--store", "s.db"], "the following arguments are required: --ckpt"),
        (["--ckpt", str(tmp_path / "none.ckpt"), "--store", "s.db"], "no such file"),
    ]:
        with pytest.raises(SystemExit) as stop:
            main(["serve", *args])
        assert stop.value.code == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("mrm: error:") and message in last.lower()


class Broken:
    """A model whose every use fails unexpectedly (a bug, not a bad request)."""

    digest, encoder_info = "0" * 64, None

    def embed(self, items):
        raise RuntimeError("boom\nsecond line of a long story")

    def score_items(self, items, profiles):
        return self.embed(items)


def test_an_unexpected_failure_is_a_500_with_one_line_and_no_traceback(tmp_path):
    with serving_in_a_thread(create_app(Broken(), tmp_path / "p.db")) as base:
        status, answer = call(base, "/get_reward", {"query": ["a"], "prompts": ["a"]})
        assert call(base, "/health")[0] == 200  # and the server goes on
    assert status == 500
    assert answer == {"detail": "internal error: RuntimeError: boom"}


def test_openrlhf_labels_name_each_items_user(text_model, tmp_path):  # noqa: F811
    """OpenRLHF sends no user field: with --user-field labels, each item's label (the dataset
    column --data.label_key names) picks its profile; "" is the prior."""
    ckpt, pairs, _ = text_model
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    store = tmp_path / "profiles.db"
    records = [r for r in read_pairs(pairs) if r.user == "u3"]
    with ProfileStore(store, checkpoint=model.digest) as profiles:
        profiles.put("u3", model.adapt(records))
        profile = profiles.get("u3")
    prompt, response = "explain clouds", "water"
    personal = model.score(prompt, [response], profile)[0]
    prior = model.score(prompt, [response])[0]
    # OpenRLHF's single-turn executor: one sample a request, query = prompt + response
    body = {"query": [prompt + " " + response], "prompts": [prompt]}
    by_labels = create_app(model, store, user_field="labels")
    with serving_in_a_thread(by_labels) as base:
        for label in ("u3", {"user_id": "u3"}, '{"user_id": "u3"}'):
            status, answer = call(base, "/get_reward", {**body, "labels": [label]})
            assert status == 200, answer
            assert answer["rewards"] == pytest.approx([personal], abs=1e-5)
            assert answer["scores"] == pytest.approx([1 / (1 + exp(-personal))], abs=1e-5)
            assert answer["extra_logs"] == {"personalized": [1.0]}
        status, answer = call(base, "/get_reward", {**body, "labels": [""]})
        assert answer["rewards"] == pytest.approx([prior], abs=1e-5)
        assert answer["extra_logs"] == {"personalized": [0.0]}
        # an explicit user_id still wins over the label
        status, answer = call(base, "/get_reward", {**body, "labels": ["ghost"], "user_id": "u3"})
        assert answer["profiles"] == ["u3"]
        status, answer = call(base, "/get_reward", {**body, "labels": [1.5]})
        assert status == 400 and "labels[0] is 1.5" in answer["detail"]
        status, answer = call(base, "/get_reward", {**body, "labels": ["u3", "u3"]})
        assert status == 400 and "'labels' has 2 items" in answer["detail"]
    # without --user-field labels the labels are ignored, as before
    with serving_in_a_thread(create_app(model, store)) as base:
        status, answer = call(base, "/get_reward", {**body, "labels": ["u3"]})
        assert answer["profiles"] == ["prior"]
