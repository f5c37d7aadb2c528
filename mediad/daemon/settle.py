"""When is a file complete? Closed by its writer and unchanged in size and mtime for settle_seconds.

"Closed" is asked of the kernel where it can answer: a read lease (fcntl F_SETLEASE) is refused
with EAGAIN while any process has the file open for writing. Where a lease cannot be taken (a file
we do not own, a network mount) the inotify close events and the quiet period decide.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)
# Without a lease answer, a file we saw modified but never saw closed waits this many settle
# periods of silence (at least a minute) before it is taken anyway: lost events must not
# block a file forever.
UNCLOSED_FACTOR = 12
UNCLOSED_MIN = 60.0


def writer_state(path: Path) -> str:
    """'open' if some process has `path` open for writing, 'closed' if none, 'unknown'."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return "unknown"
    try:
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_RDLCK)
    except OSError as e:
        return "open" if e.errno == errno.EAGAIN else "unknown"
    else:
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_UNLCK)
        return "closed"
    finally:
        os.close(fd)


@dataclass
class _Candidate:
    watch: int
    size: int
    mtime_ns: int
    quiet_since: float  # monotonic time since which size and mtime have not changed
    unclosed: bool      # a write event was seen and no close event after it
    local: bool         # inotify on a local file system: leases and close events mean something


class Settler:
    """Candidates waiting to settle; `tick()` returns the ones that are complete."""

    def __init__(self) -> None:
        self.candidates: dict[Path, _Candidate] = {}

    def __len__(self) -> int:
        return len(self.candidates)

    def note(self, watch: int, path: Path, kind: str, *, settle: float, local: bool) -> None:
        """Record an event or a scan hit: kind is "write", "moved_in", "touched", "closed",
        "scan", "gone". A file renamed or moved into the folder is complete, as one closed.

        `local` is False for polling watches (network mounts): only the quiet period counts there.
        """
        if kind == "gone":
            self.candidates.pop(path, None)
            return
        try:
            st = os.lstat(path)
        except OSError:
            self.candidates.pop(path, None)
            return
        now = time.monotonic()
        cand = self.candidates.get(path)
        if cand is None:
            quiet_since = now
            if kind == "scan" and local:
                # Found by a scan (e.g. arrived while we were stopped): if its mtime is already
                # older than the settle time, count that quiet time, so old files go at once.
                age = time.time() - st.st_mtime_ns / 1e9
                if age > 0:
                    quiet_since = now - min(age, settle)
            cand = _Candidate(watch, st.st_size, st.st_mtime_ns, quiet_since, False, local)
            self.candidates[path] = cand
        if (st.st_size, st.st_mtime_ns) != (cand.size, cand.mtime_ns):
            cand.size, cand.mtime_ns, cand.quiet_since = st.st_size, st.st_mtime_ns, now
        if kind == "write":
            cand.unclosed = True
        elif kind in ("closed", "moved_in"):
            cand.unclosed = False

    def tick(self, settle: float) -> list[tuple[int, Path]]:
        """Re-check every candidate; return (watch, path) of those now complete, and drop them."""
        now = time.monotonic()
        ready: list[tuple[int, Path]] = []
        for path, cand in list(self.candidates.items()):
            try:
                st = os.lstat(path)
            except OSError:
                del self.candidates[path]
                continue
            if not stat.S_ISREG(st.st_mode):
                # Symlinks and the like are refused by the intake; let it log why, once.
                ready.append((cand.watch, path))
                del self.candidates[path]
                continue
            if (st.st_size, st.st_mtime_ns) != (cand.size, cand.mtime_ns):
                cand.size, cand.mtime_ns, cand.quiet_since = st.st_size, st.st_mtime_ns, now
                continue
            quiet = now - cand.quiet_since
            if quiet < settle:
                continue
            state = writer_state(path) if cand.local else "unknown"
            if state == "open":
                continue  # a slow writer: still open, however quiet
            if (state == "unknown" and cand.local and cand.unclosed
                    and quiet < max(UNCLOSED_MIN, settle * UNCLOSED_FACTOR)):
                continue
            ready.append((cand.watch, path))
            del self.candidates[path]
        return ready

    def forget_watch(self, watch: int) -> None:
        """Drop the candidates of a watch (config reloaded)."""
        self.candidates = {p: c for p, c in self.candidates.items() if c.watch != watch}
