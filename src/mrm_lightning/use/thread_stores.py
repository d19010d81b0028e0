"""One profile-store connection per thread: SQLite and psycopg connections are not to be
shared between threads, and the server uses the store from its model thread and its probe
thread."""

from __future__ import annotations

import threading
from pathlib import Path

from .store import ProfileStore


class ThreadStores:
    """Each thread's connection to the store at ``target``, opened on first use."""

    def __init__(self, target: str | Path, checkpoint: str | None) -> None:
        self.target, self.checkpoint = str(target), checkpoint
        self._opened: dict[int, ProfileStore] = {}

    def get(self) -> ProfileStore:
        thread = threading.get_ident()
        if thread not in self._opened:
            self._opened[thread] = ProfileStore(self.target, checkpoint=self.checkpoint)
        return self._opened[thread]

    def close_this_threads(self) -> None:
        store = self._opened.pop(threading.get_ident(), None)
        if store is not None:
            store.close()
