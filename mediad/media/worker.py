"""One stream's work on its own thread: items in, in order, results back to the caller's thread.

FFmpeg's codecs release the GIL while they decode and encode, so a codec on a worker thread
runs beside the demuxing and muxing of the caller, as each encoder does on its own thread in
the ffmpeg CLI. The muxer stays on the caller's thread: an output container is not safe to
write from two threads.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
_END = object()
# Longer than the queue's lock is ever held by the other side (one put or get)
_LOCK_WAIT_S = 1.0


class OrderedWorker(Generic[T, R]):
    """Applies `work` to each item on a thread, in order, behind a bounded queue.

    `put` hands an item over and returns the results finished so far; `finish` waits for all;
    a failure in the worker is raised in the caller's thread at its next call.
    """

    def __init__(self, work: Callable[[T], list[R]], *, name: str, depth: int = 32) -> None:
        self.work = work
        self.inbox: queue.Queue = queue.Queue(maxsize=depth)  # bounded: the reader waits
        self.outbox: queue.Queue = queue.Queue()
        self.failed: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.inbox.get()) is not _END:
            if self.failed is not None:
                continue  # drain without work after a failure, so put() never blocks for good
            try:
                self.outbox.put(self.work(item))
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                self.failed = e
        self.outbox.put(_END)

    def put(self, item: T) -> list[R]:
        """Queue `item`; returns the results finished so far."""
        self._raise_failure()
        self.inbox.put(item)
        return self._collect(wait=False)

    def finish(self) -> list[R]:
        """Wait for every queued item; returns the results not yet collected."""
        self.inbox.put(_END)
        done = self._collect(wait=True)
        self.thread.join()
        self._raise_failure()
        return done

    def close(self) -> None:
        """End the thread when the caller gives up before the end; idempotent."""
        if not self.thread.is_alive():
            return
        if self.failed is None:
            self.failed = RuntimeError("cancelled")  # the worker drains without work
        # A stopping signal is raised as an exception wherever the caller is (cli): raised
        # inside this queue just after its lock was taken, it leaves the lock held, and the
        # thread can then be neither told nor waited for. It is a daemon: leave it.
        if not self.inbox.mutex.acquire(timeout=_LOCK_WAIT_S):
            return
        self.inbox.mutex.release()
        self.inbox.put(_END)
        self.thread.join()

    def _raise_failure(self) -> None:
        if self.failed is not None:
            raise self.failed

    def _collect(self, wait: bool) -> list[R]:
        out: list[R] = []
        while True:
            try:
                item = self.outbox.get(block=wait)
            except queue.Empty:
                return out
            if item is _END:
                return out
            out.extend(item)
