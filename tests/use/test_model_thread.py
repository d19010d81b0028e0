"""The server's model thread: calls run in order on one daemon thread (so a stopping server
never waits for a model call), results and errors reach the caller, and shutdown cancels
what has not begun."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mrm_lightning.use.model_thread import DaemonThreadExecutor


def test_calls_run_in_order_on_one_daemon_thread():
    executor = DaemonThreadExecutor("test-model")
    seen: list[tuple[int, str]] = []
    futures = [executor.submit(lambda i=i: seen.append((i, threading.current_thread().name)) or i)
               for i in range(5)]  # fmt: skip
    assert [future.result(timeout=10) for future in futures] == [0, 1, 2, 3, 4]
    assert seen == [(i, "test-model") for i in range(5)]
    assert executor._thread.daemon
    executor.shutdown(wait=True)
    assert not executor._thread.is_alive()
    with pytest.raises(RuntimeError, match="stopped executor"):
        executor.submit(int)


def test_an_error_reaches_the_caller_and_the_thread_goes_on():
    executor = DaemonThreadExecutor("test-model")
    with pytest.raises(ZeroDivisionError):
        executor.submit(lambda: 1 / 0).result(timeout=10)
    assert executor.submit(lambda: 7).result(timeout=10) == 7
    executor.shutdown()


def test_shutdown_without_waiting_cancels_calls_not_begun():
    executor = DaemonThreadExecutor("test-model")
    began, release = threading.Event(), threading.Event()
    running = executor.submit(lambda: began.set() or release.wait())
    assert began.wait(timeout=10)
    queued = executor.submit(lambda: "never")
    executor.shutdown(wait=False, cancel_futures=True)  # returns while a call is in flight
    assert queued.cancelled() and not running.done()
    release.set()
    assert running.result(timeout=10) is True


def test_usable_as_an_asyncio_executor():
    executor = DaemonThreadExecutor("test-model")

    async def main() -> int:
        return await asyncio.get_running_loop().run_in_executor(executor, lambda: 41 + 1)

    assert asyncio.run(main()) == 42
    executor.shutdown()
