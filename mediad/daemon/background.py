"""Slow file work on a thread of its own, off the daemon's main loop: hashing whole files,
moving sources across filesystems (copies of tens of GB). In the loop either would stall the
watchers' events, the workers' progress and systemd's watchdog.

Items go in with a key (one at a time per key); results come back to the loop, which alone
writes the state database.
"""

from __future__ import annotations

import logging
import queue
import threading
import traceback
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from mediad import log

T = TypeVar("T")
R = TypeVar("R")
_STOP = object()
_FAILED: object = object()


class Background(Generic[T, R]):
    """One thread applying `work` to the items it is given, in order; `drain()` the results."""

    def __init__(self, work: Callable[[T], R], wake: Callable[[], None], *, name: str) -> None:
        self.work = work
        self.wake = wake
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.done: queue.SimpleQueue[tuple[Hashable, R]] = queue.SimpleQueue()
        self.pending: set[Hashable] = set()  # submitted, not yet drained
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def submit(self, key: Hashable, item: T) -> bool:
        """Queue `item` unless an item with this key is still pending; True when queued."""
        if key in self.pending:
            return False
        self.pending.add(key)
        self.inbox.put((key, item))
        return True

    def _run(self) -> None:
        while (entry := self.inbox.get()) is not _STOP:
            key, item = entry
            try:
                result = self.work(item)  # its expected failures are results
            except Exception as e:  # a bug: this item is dropped (redone at the next start)
                log.event("internal_error", logging.ERROR, thread=self.thread.name, item=key,
                          error=f"{type(e).__name__}: {e}", trace=traceback.format_exc(limit=-3))
                result = _FAILED
            self.done.put((key, result))
            self.wake()

    def drain(self) -> list[R]:
        """The results finished so far."""
        out: list[R] = []
        while True:
            try:
                key, result = self.done.get_nowait()
            except queue.Empty:
                return out
            self.pending.discard(key)
            if result is not _FAILED:
                out.append(result)

    def __len__(self) -> int:
        return len(self.pending)

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread after its current item; what is still queued is dropped (the
        caller redoes it at its next start: nothing was recorded for it)."""
        while True:
            try:
                self.inbox.get_nowait()
            except queue.Empty:
                break
        self.inbox.put(_STOP)
        self.thread.join(timeout=timeout)
