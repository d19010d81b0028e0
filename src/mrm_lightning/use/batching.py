"""Many small reward requests scored as one batch.

OpenRLHF's rollout workers send many concurrent requests of one sample each. Scored one by one,
every request pays a whole encoder call; gathered for a few milliseconds, they share one.
:class:`RewardBatcher` queues each request's items, waits ``max_wait_s`` for company (or until
``max_items`` are queued), scores everything gathered with one call on the model's thread,
and hands each request its own rewards. While a batch is being scored, the next one gathers.

A request that fails on its own (a profile that no longer fits the model, say) must not fail
the others: when a batch fails, each of its requests is scored alone and gets its own answer
or error. The queue is bounded (``max_queued`` items): beyond it a request is refused at once
(:class:`Busy`, a 503 from the server) rather than waiting without end.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Score = Callable[[list, list], list[float]]  # (items, profiles) -> rewards, on the model thread


@dataclass(frozen=True)
class Batching:
    """``--batch-wait-ms`` (0: each request alone), ``--max-batch`` items a model call, and the
    most items queued before requests are refused with 503."""

    wait_ms: float = 2.0
    max_items: int = 256
    max_queued: int = 8192


class Busy(RuntimeError):
    """The queue is full: the caller should retry later."""


@dataclass
class Waiting:
    items: list
    profiles: list
    answer: asyncio.Future = field(repr=False)


class RewardBatcher:
    """Args:
    score: the model's scoring of ``(items, profiles)`` (``score_items``), run by ``run``.
    run: runs a function on the model's thread and awaits it.
    max_wait_s: how long the first request of a batch waits for others (0: no batching,
        each request alone).
    max_items: the most items one batch holds.
    max_queued: the most items waiting; more is refused (:class:`Busy`).
    """

    def __init__(
        self,
        score: Score,
        run: Callable[[Callable[[], Any]], Awaitable[Any]],
        max_wait_s: float = 0.002,
        max_items: int = 256,
        max_queued: int = 8192,
    ) -> None:
        if max_wait_s < 0 or max_items < 1 or max_queued < 1:
            raise ValueError("--batch-wait-ms must be >= 0, --max-batch and the queue >= 1")
        self.score, self.run = score, run
        self.max_wait_s, self.max_items, self.max_queued = max_wait_s, max_items, max_queued
        self.queue: deque[Waiting] = deque()
        self.queued_items = 0
        self.draining: asyncio.Task | None = None
        self.batches = 0  # how many model calls were made (for tests and metrics)

    async def rewards(self, items: Sequence, profiles: Sequence) -> list[float]:
        """The rewards of ``items`` under ``profiles``, scored with whatever else is queued."""
        if self.max_wait_s == 0:
            self.batches += 1
            return await self.run(lambda: self.score(list(items), list(profiles)))
        if self.queued_items + len(items) > self.max_queued:
            raise Busy(f"{self.queued_items} items are waiting to be scored: retry shortly")
        waiting = Waiting(list(items), list(profiles), asyncio.get_running_loop().create_future())
        self.queue.append(waiting)
        self.queued_items += len(items)
        if self.draining is None or self.draining.done():
            self.draining = asyncio.create_task(self.drain())
        return await waiting.answer

    async def drain(self) -> None:
        while self.queue:
            if self.queued_items < self.max_items:
                await asyncio.sleep(self.max_wait_s)  # let concurrent requests join
            batch, size = [], 0
            while self.queue and (not batch or size + len(self.queue[0].items) <= self.max_items):
                waiting = self.queue.popleft()
                batch.append(waiting)
                size += len(waiting.items)
            self.queued_items -= size
            await self.score_batch(batch)

    async def score_batch(self, batch: list[Waiting]) -> None:
        items = [item for waiting in batch for item in waiting.items]
        profiles = [profile for waiting in batch for profile in waiting.profiles]
        self.batches += 1
        try:
            rewards = await self.run(lambda: self.score(items, profiles))
        except Exception as error:
            if len(batch) == 1:
                settle(batch[0].answer, error=error)
                return
            for waiting in batch:  # one request's fault must not fail the others
                await self.score_batch([waiting])
            return
        start = 0
        for waiting in batch:
            settle(waiting.answer, rewards[start : start + len(waiting.items)])
            start += len(waiting.items)


def settle(answer: asyncio.Future, rewards: list[float] | None = None, error=None) -> None:
    if answer.done():  # the client went away (its request was cancelled)
        return
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(rewards)
