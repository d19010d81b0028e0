"""No single request can stall `mrm serve`: bodies, items and texts have limits (413 naming
the limit, never echoing the input), and /health answers while a long request is scored."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest

from mrm_lightning.use.limits import RequestLimits, check_sizes, validation_details
from mrm_lightning.use.server import create_app
from tests.use.test_server import call, serving_in_a_thread


class SlowModel:
    """Scores every item 0.5 after ``seconds``: a big request, without the big request."""

    digest, encoder_info = "0" * 64, None

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds

    def score_items(self, items, profiles):
        time.sleep(self.seconds)
        return [0.5] * len(items)


def test_check_sizes_names_the_limit_and_the_item():
    limits = RequestLimits(max_items=2, max_text_chars=5)
    check_sizes(limits, 2, [("query[0]", "12345")])
    with pytest.raises(Exception, match=r"3 items: at most 2 a request \(--max-items\)"):
        check_sizes(limits, 3, [])
    with pytest.raises(Exception, match=r"query\[1\] has 6 characters: at most 5"):
        check_sizes(limits, 2, [("query[0]", "a"), ("query[1]", "123456")])


def test_validation_details_drop_the_values_sent():
    errors = [{"type": "list_type", "loc": ("body", "query"), "msg": "m", "input": "x" * 99}]
    assert validation_details(errors) == [{"type": "list_type", "loc": ("body", "query"),
                                           "msg": "m"}]  # fmt: skip


def raw_post(base: str, head_length: int, body: bytes) -> tuple[int, bytes]:
    """POST declaring ``head_length`` bytes but sending only ``body``; the status and answer."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            b"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {head_length}\r\n\r\n".encode()
            + body
        )
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < 200:
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


def test_big_bodies_are_refused_before_they_are_read(tmp_path):
    app = create_app(SlowModel(), tmp_path / "p.db", limits=RequestLimits(max_body_bytes=4096))
    with serving_in_a_thread(app) as base:
        started = time.monotonic()
        status, body = raw_post(base, 70 << 20, b'{"query": ["' + b"x" * 1000)  # 70 MB declared
        assert status == 413 and time.monotonic() - started < 1.0
        assert b"--max-body-mb" in body and b"xxxx" not in body
        # streamed without a length (chunked), cut off once past the limit
        host, port = base.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        chunks = iter([b'{"query": ["', b"y" * 3000, b"y" * 3000, b'"], "prompts": ["p"]}'])
        connection.request("POST", "/get_reward", body=chunks, encode_chunked=True,
                           headers={"Content-Type": "application/json"})  # fmt: skip
        answer = connection.getresponse()
        detail = json.loads(answer.read())["detail"]
        assert answer.status == 413 and "over 4096 bytes" in detail
        connection.close()
        assert call(base, "/health")[0] == 200  # and it goes on serving


def test_items_and_texts_over_the_limits_and_no_echo(tmp_path):
    limits = RequestLimits(max_items=3, max_text_chars=100)
    with serving_in_a_thread(create_app(SlowModel(), tmp_path / "p.db", limits=limits)) as base:
        status, answer = call(base, "/get_reward", {"query": ["a"] * 4, "prompts": ["a"] * 4})
        assert status == 413 and "at most 3 a request" in answer["detail"]
        status, answer = call(base, "/get_reward", {"query": ["z" * 101], "prompts": [""]})
        assert status == 413 and "query[0] has 101 characters" in answer["detail"]
        pairs = [{"prompt": "p", "chosen": "c" * 101, "rejected": "r"}]
        status, answer = call(base, "/adapt", {"user_id": "u", "pairs": pairs})
        assert status == 413 and "pairs[0].chosen" in answer["detail"]
        # a body of the wrong shape: where and what, never the value sent back
        status, answer = call(base, "/get_reward", {"query": "q" * 5000, "prompts": ["p"]})
        assert status == 422 and "qqqq" not in json.dumps(answer)
        assert answer["detail"][0]["loc"] == ["body", "query"]


def test_health_answers_while_a_long_request_is_scored(tmp_path):
    with serving_in_a_thread(create_app(SlowModel(seconds=4.0), tmp_path / "p.db")) as base:
        results = {}
        scoring = threading.Thread(
            target=lambda: results.update(
                answer=call(base, "/get_reward", {"query": ["q"], "prompts": ["p"]})
            )
        )
        scoring.start()
        time.sleep(0.5)  # the request is on the model's thread now
        for _ in range(3):
            started = time.monotonic()
            assert call(base, "/health")[0] == 200
            assert time.monotonic() - started < 1.0
        scoring.join(timeout=30)
        assert results["answer"][0] == 200


class InfiniteModel(SlowModel):
    """A model whose rewards overflow, as a damaged checkpoint's would."""

    def score_items(self, items, profiles):
        from mrm_lightning.use.inference import NonFiniteReward

        raise NonFiniteReward("item 0: the reward is inf (1 of 1 items not finite)")


def test_a_non_finite_reward_is_a_500_with_a_message_never_null(tmp_path):
    with serving_in_a_thread(create_app(InfiniteModel(), tmp_path / "p.db")) as base:
        status, answer = call(base, "/get_reward", {"query": ["q"], "prompts": ["p"]})
    assert status == 500 and "not finite" in answer["detail"] and "rewards" not in answer


def test_absurd_weights_are_refused_when_written_and_read(tmp_path):
    import dataclasses
    import sqlite3

    from mrm_lightning.use.profiles import (
        INNER_KEYS,
        STANDARDIZATION_KEYS,
        ProfileError,
        UserProfile,
    )
    from mrm_lightning.use.store import ProfileStore

    good = UserProfile(
        weights=[0.5, -0.2],
        checkpoint="0" * 64,
        encoder=None,
        standardization={key: 1.0 for key in STANDARDIZATION_KEYS},
        inner={key: 1 for key in INNER_KEYS},
        num_pairs=3,
        created_at="now",
    )
    with ProfileStore(tmp_path / "s.db") as store:
        with pytest.raises(ProfileError, match="beyond"):
            store.put("u", dataclasses.replace(good, weights=[1e308, 0.0]))
        store.put("u", good)
    with sqlite3.connect(tmp_path / "s.db") as db:  # a forged row, written around the store
        (text,) = db.execute("SELECT profile FROM profiles WHERE user = 'u'").fetchone()
        db.execute("UPDATE profiles SET profile = ?", (text.replace("0.5", "1e308"),))
    with ProfileStore(tmp_path / "s.db") as store, pytest.raises(ProfileError, match="beyond"):
        store.get("u")


def test_adapt_drops_what_the_file_readers_drop(tmp_path):
    from tests.use.test_server import Broken  # never reached: nothing usable to adapt from

    with serving_in_a_thread(create_app(Broken(), tmp_path / "p.db")) as base:
        pairs = [
            {"prompt": "p", "chosen": "same", "rejected": "same"},
            {"prompt": "p", "chosen": " ", "rejected": "x"},
        ]
        status, answer = call(base, "/adapt", {"user_id": "u", "pairs": pairs})
    assert status == 400
    assert "1 identical chosen and rejected, 1 empty response text" in answer["detail"]


def test_a_request_past_its_time_gets_504_and_the_server_goes_on(tmp_path):
    limits = RequestLimits(request_timeout_s=0.5)
    app = create_app(SlowModel(seconds=2.0), tmp_path / "p.db", limits=limits)
    with serving_in_a_thread(app) as base:
        started = time.monotonic()
        status, answer = call(base, "/get_reward", {"query": ["q"], "prompts": ["p"]})
        assert status == 504 and "--request-timeout-s" in answer["detail"]
        assert time.monotonic() - started < 1.5
        assert call(base, "/health")[0] == 200
