"""SIGTERM stops `mrm serve` within seconds, even while a long request is on the model's thread
(a subprocess on 127.0.0.1; the tiny text model, made slow by the size of the request)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse

import pytest

from tests.cli.test_use_cli import text_model  # noqa: F401 (the module-scoped fixture)
from tests.use.test_server import DIRECT, HOST, call, start, wait_healthy

STOP_WITHIN_S = 10.0  # uvicorn's 5 s grace for requests in flight, and room to spare
SCORING_S = 40.0  # how long the big request would keep the model busy: far beyond the limit
# --batch-wait-ms 0: the whole request is ONE model call, which nothing can interrupt midway
LIMITS = ["--batch-wait-ms", "0", "--max-items", "10000000", "--max-body-mb", "512"]
LIMITS += ["--request-timeout-s", "600"]


def body(items: int) -> dict:
    """A /get_reward body of ``items`` distinct queries (prompt + response)."""
    query = [f"write about one thing {i} the rain and a cat {i}" for i in range(items)]
    return {"query": query, "prompts": ["write about one thing"] * items}


def model_calls(base: str) -> float:
    """``mrm_model_calls_total`` from /metrics: the model calls begun so far."""
    with DIRECT.open(base + "/metrics", timeout=30) as answer:
        text = answer.read().decode()
    return float(re.search(r"^mrm_model_calls_total (\S+)$", text, re.MULTILINE)[1])


def items_for(base: str, seconds: float) -> int:
    """How many items keep this machine's model busy for about ``seconds`` (measured)."""
    probe = 4096
    began = time.monotonic()
    status, answer = call(base, "/get_reward", body(probe))
    assert status == 200, answer
    rate = probe / (time.monotonic() - began)  # the transfer included: an underestimate
    return max(probe, int(rate * seconds))


def refused(base: str) -> bool:
    port = urllib.parse.urlsplit(base).port
    try:
        socket.create_connection((HOST, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.slow
def test_sigterm_mid_request_stops_the_server_within_seconds(text_model, tmp_path):  # noqa: F811
    ckpt, _, _ = text_model
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process, base = start(ckpt, tmp_path / "profiles.db", log, *LIMITS)
        try:
            wait_healthy(process, base, log_path)
            big = body(items_for(base, SCORING_S))
            before = model_calls(base)
            answered: dict = {}

            def send() -> None:
                try:
                    answered["status"] = call(base, "/get_reward", big)[0]
                except OSError as error:  # the connection closed under it: expected
                    answered["error"] = error

            client = threading.Thread(target=send, daemon=True)
            client.start()
            deadline = time.monotonic() + 60
            while model_calls(base) == before:  # until the big request is on the model
                assert time.monotonic() < deadline, "the big request never reached the model"
                time.sleep(0.1)

            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            try:
                process.wait(timeout=STOP_WITHIN_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"mrm serve still runs {STOP_WITHIN_S:g} s after SIGTERM")
            stopped_after = time.monotonic() - signalled
            # mid-request indeed: the big request had no answer of 200 when the server stopped
            client.join(timeout=30)
            assert answered.get("status") != 200, answered
            assert refused(base), "a new connection was accepted after the server stopped"
            assert stopped_after < STOP_WITHIN_S
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
