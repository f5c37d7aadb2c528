"""Watchdog observers, one per watched folder, funnelled into one thread-safe inbox."""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from mediad import log
from mediad.config import WatchConfig


@dataclass(frozen=True)
class Seen:
    """Something happened at `path` under watch number `watch`.

    kind: "write" (created/modified), "moved_in" (renamed into place or moved in from outside:
    complete), "touched" (attributes changed), "closed" (a writer closed it), "dir" (a folder
    appeared: scan it), "gone" (deleted or moved away).
    """

    watch: int
    path: Path
    kind: str


class _Handler(FileSystemEventHandler):
    def __init__(self, index: int, inbox: queue.SimpleQueue[Seen], wake: Callable[[], None]) -> None:
        self.index, self.inbox, self.wake = index, inbox, wake

    def _put(self, path: str | bytes, kind: str) -> None:
        self.inbox.put(Seen(self.index, Path(os.fsdecode(path)), kind))
        self.wake()

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileOpenedEvent | FileClosedNoWriteEvent):
            return  # our own reads (fingerprints, workers) show up as these
        if isinstance(event, DirCreatedEvent | DirMovedEvent):
            if isinstance(event, DirMovedEvent) and not event.dest_path:
                return  # moved out of the folder (its files were no candidates of their own)
            self._put(event.dest_path or event.src_path, "dir")
        elif event.is_directory:
            return
        elif isinstance(event, FileMovedEvent):
            # "x.part" renamed to "x", or a file moved in from outside the folder (full events:
            # no source path): the new name is a complete file, "moved_in". One moved out (no
            # destination) is gone.
            if event.src_path:
                self._put(event.src_path, "gone")
            if event.dest_path:
                self._put(event.dest_path, "moved_in")
        elif isinstance(event, FileDeletedEvent):
            self._put(event.src_path, "gone")
        elif isinstance(event, FileClosedEvent):
            self._put(event.src_path, "closed")
        elif isinstance(event, FileAttribEvent):
            self._put(event.src_path, "touched")  # chmod, touch: no writer implied
        else:  # created, modified, attributes changed
            self._put(event.src_path, "write")


class Watcher:
    """Runs the observers for the current watches; `drain()` returns what they saw."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake
        self.inbox: queue.SimpleQueue[Seen] = queue.SimpleQueue()
        self.observers: dict[int, BaseObserver] = {}
        self._complained: set[Path] = set()  # folders already reported missing (log once)

    def start(self, index: int, watch: WatchConfig) -> bool:
        """Start watching one folder; False (logged) when it cannot be watched yet."""
        if not watch.path.is_dir():
            level = logging.DEBUG if watch.path in self._complained else logging.ERROR
            self._complained.add(watch.path)
            log.event("watch_missing", level, path=watch.path,
                      hint="will retry every 10 s; is the folder created and mounted?")
            return False
        self._complained.discard(watch.path)
        observer: BaseObserver = (PollingObserver(timeout=watch.poll_interval_seconds)
                                  if watch.polling else Observer(generate_full_events=True))
        observer.schedule(_Handler(index, self.inbox, self.wake), str(watch.path),
                          recursive=watch.recursive)
        try:
            observer.start()
        except OSError as e:  # e.g. inotify watch limit reached
            log.event("watch_failed", logging.ERROR, path=watch.path, error=e.strerror or str(e))
            return False
        self.observers[index] = observer
        log.event("watch_started", path=watch.path, profile=watch.profile,
                  observer="polling" if watch.polling else "inotify", recursive=watch.recursive)
        return True

    def alive(self, index: int) -> bool:
        """True while the observer of watch `index` runs (a vanished folder stops it)."""
        observer = self.observers.get(index)
        return observer is not None and observer.is_alive()

    def stop_all(self) -> None:
        """Stop and join every observer."""
        for observer in self.observers.values():
            observer.stop()
        for observer in self.observers.values():
            observer.join(timeout=5)
        self.observers.clear()

    def drain(self) -> Iterator[Seen]:
        """What the observers saw since the last call."""
        while True:
            try:
                yield self.inbox.get_nowait()
            except queue.Empty:
                return


def scan(watch: WatchConfig, folder: Path | None = None) -> Iterator[Path]:
    """Every entry under the watched folder (or a sub-folder of it), symlinks included, unfollowed."""
    top = folder or watch.path
    if not watch.recursive:
        try:
            with os.scandir(top) as it:
                for entry in it:
                    if not entry.is_dir(follow_symlinks=False):
                        yield Path(entry.path)
        except OSError as e:
            log.event("scan_failed", logging.ERROR, path=top, error=e.strerror or str(e))
        return
    for root, dirs, files, in _walk(top):
        # Symlinked folders are not followed by os.walk; report them so the refusal is logged.
        yield from (Path(root) / d for d in dirs if os.path.islink(os.path.join(root, d)))
        yield from (Path(root) / f for f in files)


def _walk(top: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    def onerror(e: OSError) -> None:
        log.event("scan_failed", logging.ERROR, path=e.filename, error=e.strerror or str(e))

    for root, dirs, files in os.walk(top, onerror=onerror):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        yield root, dirs, files
