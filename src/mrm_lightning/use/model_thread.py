"""The thread the server's model (and each thread's store connection) runs on.

A :class:`~concurrent.futures.ThreadPoolExecutor` would do, but Python joins its threads when
the interpreter exits: a SIGTERM that arrives during a long model call would wait for the call
to end (minutes, for a large request). This executor's one thread is a daemon, so a stopping
server leaves a call in flight behind: nothing it computes is acknowledged to anyone, and a
store write it had begun is rolled back by the database when the process ends.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

_STOP = object()


class DaemonThreadExecutor(Executor):
    """One daemon thread running submitted calls in order (``loop.run_in_executor`` ready)."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        if self._stopped:
            raise RuntimeError("cannot submit to a stopped executor")
        future: Future = Future()
        self._calls.put((future, fn, args, kwargs))
        return future

    def _run(self) -> None:
        while (call := self._calls.get()) is not _STOP:
            future, fn, args, kwargs = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as error:  # handed to the caller, as ThreadPoolExecutor does
                future.set_exception(error)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop after the calls already queued (``cancel_futures``: cancel those not begun);
        ``wait``: until the thread ends."""
        if cancel_futures:
            while True:
                try:
                    call = self._calls.get_nowait()
                except queue.Empty:
                    break
                if call is not _STOP:
                    call[0].cancel()
        if not self._stopped:
            self._stopped = True
            self._calls.put(_STOP)
        if wait:
            self._thread.join()
