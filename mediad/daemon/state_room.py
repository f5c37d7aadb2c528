"""A full state disk: what the loop could not record waits in memory and is written once there
is room, without a restart. Files identified but not queued, and the writes that record what
already happened (a job's end, a source's disposal, a command's answer): losing one of those
would leave a finished job `running` until the next start. A mixin of service.Daemon."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable

from mediad import log
from mediad.daemon.fingerprint import Identified
from mediad.daemon.queue import disk_full
from mediad.daemon.state import DaemonState

STATE_FULL_RETRY = 5.0  # seconds between tries to record while the state disk is full


class StateRoom(DaemonState):
    """StateRoom (see the module)."""

    def _state_full(self, item: Identified | None) -> None:
        """The state database's disk is full: keep `item` (identified, not yet recorded) to try
        again every few seconds, without reading it again. Once per episode (until a write
        goes through, _state_room): say so, and give back what the log holds."""
        if item is not None:
            self.unrecorded[(item.watch, item.path)] = item
        self.next_unrecorded = time.monotonic() + STATE_FULL_RETRY
        if self.state_full:
            return
        self.state_full = True
        with contextlib.suppress(sqlite3.Error):  # room, when the log was what filled it
            self.queue.reclaim()
        log.event("state_full", logging.ERROR, state_dir=self.state_dir,
                  note="the state database's disk is full: files wait, and are queued as soon "
                       "as there is room")

    def _state_room(self) -> None:
        """A write went through: the state disk has room again (a full disk after this is a
        new episode)."""
        self.state_full = False

    def _unrecorded_due(self, now: float) -> list[Identified]:
        """Files identified while the state disk was full, when it is time to try again."""
        if not self.unrecorded or now < self.next_unrecorded:
            return []
        items = list(self.unrecorded.values())
        self.unrecorded.clear()
        return items

    def _record(self, write: Callable[[], object]) -> None:
        """Record something that has happened; on a full state disk, keep the write to make
        again (in order) once there is room."""
        if self.unrecorded_writes:
            self.unrecorded_writes.append(write)
            return
        try:
            write()
        except sqlite3.OperationalError as e:
            if not disk_full(e):
                raise
            self.unrecorded_writes.append(write)
            self._state_full(None)

    def _record_waiting(self, now: float) -> None:
        """Make the writes a full disk held back, when it is time to try again."""
        if not self.unrecorded_writes or now < self.next_unrecorded:
            return
        while self.unrecorded_writes:
            try:
                self.unrecorded_writes[0]()
            except sqlite3.OperationalError as e:
                if not disk_full(e):
                    raise
                self._state_full(None)
                return
            self.unrecorded_writes.pop(0)
        self._state_room()
