"""Concurrent one-sample requests share one model call; one request's failure stays its own;
a full queue refuses at once; and over HTTP every client gets its own reward."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from mrm_lightning.use.batching import Busy, RewardBatcher
from mrm_lightning.use.server import Batching, create_app
from tests.use.test_server import call, serving_in_a_thread


class CountingScore:
    """Reward = the item's number; a profile "bad" fails the whole call it is in."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, items, profiles):
        self.calls.append(len(items))
        if "bad" in profiles:
            raise ValueError("profile 'bad' does not fit the model")
        return [float(item) for item in items]


def run_inline(work):
    async def done():
        return work()

    return done()


def test_concurrent_requests_share_one_call_and_get_their_own_rewards():
    score = CountingScore()

    async def main():
        batcher = RewardBatcher(score, run_inline, max_wait_s=0.01)
        requests = [batcher.rewards([i, i + 100], [None, None]) for i in range(20)]
        return await asyncio.gather(*requests)

    answers = asyncio.run(main())
    assert answers == [[float(i), float(i + 100)] for i in range(20)]
    assert score.calls == [40]  # one call for all twenty


def test_a_batch_holds_at_most_max_items():
    score = CountingScore()

    async def main():
        batcher = RewardBatcher(score, run_inline, max_wait_s=0.01, max_items=8)
        return await asyncio.gather(*(batcher.rewards([i], [None]) for i in range(20)))

    assert asyncio.run(main()) == [[float(i)] for i in range(20)]
    assert score.calls == [8, 8, 4]


def test_one_bad_request_fails_alone():
    score = CountingScore()

    async def main():
        batcher = RewardBatcher(score, run_inline, max_wait_s=0.01)
        tasks = [batcher.rewards([i], ["bad" if i == 3 else None]) for i in range(6)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    answers = asyncio.run(main())
    assert isinstance(answers[3], ValueError)
    assert [a for i, a in enumerate(answers) if i != 3] == [[0.0], [1.0], [2.0], [4.0], [5.0]]


def test_a_full_queue_refuses_at_once_and_no_wait_means_no_batching():
    score = CountingScore()

    async def main():
        batcher = RewardBatcher(score, run_inline, max_wait_s=0.05, max_queued=3)
        first = asyncio.ensure_future(batcher.rewards([1, 2, 3], [None] * 3))
        await asyncio.sleep(0)
        with pytest.raises(Busy):
            await batcher.rewards([4], [None])
        await first
        alone = RewardBatcher(score, run_inline, max_wait_s=0)
        await asyncio.gather(*(alone.rewards([i], [None]) for i in range(3)))

    asyncio.run(main())
    assert score.calls == [3, 1, 1, 1]


class CountingModel:
    """A served model whose reward is the length of the response; counts its calls."""

    digest, encoder_info = "0" * 64, None

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def score_items(self, items, profiles):
        with self.lock:
            self.calls += 1
        return [float(len(response)) for _, _, response in items]


def test_over_http_64_one_sample_clients_share_calls(tmp_path):
    model = CountingModel()
    app = create_app(model, tmp_path / "p.db", batching=Batching(wait_ms=20))
    with serving_in_a_thread(app) as base, ThreadPoolExecutor(64) as clients:
        bodies = [{"query": ["x" * n], "prompts": [""]} for n in range(1, 65)]
        answers = list(clients.map(lambda body: call(base, "/get_reward", body), bodies))
    assert [a[0] for a in answers] == [200] * 64
    assert [a[1]["rewards"] for a in answers] == [[float(n)] for n in range(1, 65)]
    assert model.calls < 32  # batched: far fewer model calls than requests
