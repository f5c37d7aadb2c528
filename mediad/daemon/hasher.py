"""Fingerprints (a hash of the whole file) on a thread of their own, off the daemon's loop.

Hashing a 50 GB remux takes most of a minute; in the main loop it would stall the watchers'
events, the workers' progress and systemd's watchdog. Settled files go in; identified ones (or
why not) come back to the loop, which queues them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mediad.daemon.fingerprint import Fingerprint, fingerprint
from mediad.errors import MediadError

_STOP = object()


@dataclass(frozen=True)
class Identified:
    """A settled file of watch number `watch`, fingerprinted, or why it could not be."""

    watch: int
    path: Path
    fp: Fingerprint | None
    error: MediadError | None = None


class Hasher:
    """One thread that fingerprints the files it is given, in order; `drain()` the results."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.done: queue.SimpleQueue[Identified] = queue.SimpleQueue()
        self.pending: set[tuple[int, Path]] = set()  # submitted, not yet drained
        self.thread = threading.Thread(target=self._run, name="mediad-hasher", daemon=True)
        self.thread.start()

    def submit(self, watch: int, path: Path) -> None:
        """Fingerprint `path` (once, however often it is submitted before its result is out)."""
        if (watch, path) in self.pending:
            return
        self.pending.add((watch, path))
        self.inbox.put((watch, path))

    def _run(self) -> None:
        while (item := self.inbox.get()) is not _STOP:
            watch, path = item
            try:
                result = Identified(watch, path, fingerprint(path))
            except MediadError as e:
                result = Identified(watch, path, None, e)
            except OSError as e:  # read errors: the file is unreadable now
                result = Identified(watch, path, None, MediadError(
                    f"{path}: cannot read: {e.strerror or e}", reason="unreadable"))
            self.done.put(result)
            self.wake()

    def drain(self) -> list[Identified]:
        """The results finished so far."""
        out: list[Identified] = []
        while True:
            try:
                item = self.done.get_nowait()
            except queue.Empty:
                return out
            self.pending.discard((item.watch, item.path))
            out.append(item)

    def __len__(self) -> int:
        return len(self.pending)

    def stop(self) -> None:
        """End the thread after the file it is hashing (a stop does not wait for a queue)."""
        while True:
            try:
                self.inbox.get_nowait()
            except queue.Empty:
                break
        self.inbox.put(_STOP)
        self.thread.join(timeout=60)
