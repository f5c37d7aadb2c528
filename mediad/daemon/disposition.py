"""What happens to a source after its job: kept, moved to done_dir, deleted, or moved to failed_dir
with `<name>.error.json` beside it. Sources are never removed before their output is committed."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mediad import log
from mediad.config import WatchConfig
from mediad.daemon.paths import refusal, unique_destination
from mediad.daemon.queue import Job
from mediad.errors import Reason
from mediad.fsutil import atomic_write_bytes
from mediad.media.commit import remove_dead_writers


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to a temporary name beside `path`, fsync, rename: never a half file."""
    # 0644, not mkstemp's 0600: the note is for whoever looks after the folder.
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode(), mode=0o644)


_MOVE_TEMP = re.compile(r"\.mediad-move\.(\d+)\.[^/]*\.tmp")


def move_temp_prefix() -> str:
    """The start of the hidden name a copy to another filesystem is written under."""
    return f".mediad-move.{os.getpid()}."


def remove_stale_moves(folder: Path) -> list[Path]:
    """Remove copies left in `folder` by a mover killed mid-copy (kill -9, power cut): their
    writer is gone, and the source they were copied from is still in place, moved again."""
    return remove_dead_writers(folder, _MOVE_TEMP)


def move_file(src: Path, folder: Path) -> Path:
    """Move `src` into `folder` under a free name; across file systems, copy then rename then unlink."""
    folder.mkdir(parents=True, exist_ok=True)
    dest = unique_destination(folder, src.name)
    try:
        os.rename(src, dest)
        return dest
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    # Streamed, not through atomic_write_bytes: a source may be tens of GB.
    fd, tmp = tempfile.mkstemp(prefix=move_temp_prefix(), suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        shutil.copy2(src, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.unlink(src)
    return dest


REWRITTEN = "written to since its job read it"


def not_the_job_file(watch: WatchConfig, job: Job, src: Path) -> str | None:
    """Why the file at `src` must not be moved or deleted as `job`'s source, or None when it is
    still the very file the job fingerprinted ("gone" when nothing is there).

    A source renamed over, or written to, while its job ran is another file: it gets a job of
    its own, and disposing of it would lose it untranscoded. Only the same inode with the same
    size and mtime is the job's file; a file merely touched is kept too (telling a touch from a
    rewrite means reading all of it, which this loop does not do): left in place, never lost.
    """
    why = refusal(watch, src)  # a symlink or a path escaping the watch is never acted on
    if why == "vanished":
        return "gone"
    if why is not None:
        return why
    try:
        st = os.lstat(src)
    except FileNotFoundError:
        return "gone"
    except OSError:
        return "unreadable"
    if st.st_ino != job.inode:
        return "replaced by another file"
    return None if job.fingerprint.same_stat(st) else REWRITTEN


def after_success(watch: WatchConfig | None, job: Job) -> None:
    """Apply on_success (keep/move/delete) to a done job's source; errors are logged, not raised."""
    src = Path(job.source)
    action = watch.on_success if watch is not None else "keep"
    if watch is None or action == "keep":
        return
    why = not_the_job_file(watch, job, src)
    if why is not None:
        if why != "gone":
            log.event("source_kept", logging.WARNING, job=job.id, source=src, action=action,
                      reason=why, note="not the file this job transcoded; left for its own job")
        return
    try:
        if action == "move":
            assert watch is not None and watch.done_dir is not None
            dest = move_file(src, watch.done_dir)
            log.event("source_moved", job=job.id, source=src, to=dest)
        else:
            os.unlink(src)
            log.event("source_deleted", job=job.id, source=src)
    except OSError as e:
        log.event("source_action_failed", logging.ERROR, job=job.id, source=src, action=action,
                  error=e.strerror or str(e))


# What a refused entry's note says, per refusal reason.
_REFUSED = {
    "symlink": "a symbolic link: mediad reads only real files inside the watched folder",
    "outside_watch": "its real path is outside the watched folder",
    "not_regular": "not a regular file (a FIFO, device, socket or folder)",
    "hard_link": "it has other hard links, which may be names outside the watched folder; set "
                 "allow_hard_links = true on this watch if its files are hard-linked on purpose",
}


@dataclass(frozen=True)
class Disposed:
    """A finished job's source dealt with: where a failed one was moved (None: not moved)."""

    job: int
    moved_to: Path | None


def dispose(item: tuple[Job, WatchConfig | None]) -> Disposed:
    """on_success for a done job's source, failed_dir and its note for a failed one's."""
    job, watch = item
    if job.state == "done":
        after_success(watch, job)
        return Disposed(job.id, None)
    return Disposed(job.id, after_failure(watch, job, job.reason or "error", job.error or ""))


def note_refusal(watch: WatchConfig, path: Path, reason: str) -> Path | None:
    """Write `<name>.error.json` for an entry the daemon will not read (in failed_dir if set,
    else beside it), as for a failed file; nothing is moved. Returns the note's path."""
    folder = watch.failed_dir if watch.failed_dir is not None else path.parent
    note = folder / (path.name + ".error.json")
    data = {"source": str(path), "moved_to": None, "reason": reason,
            "message": f"{path}: refused: {_REFUSED.get(reason, reason)}", "job": None,
            "refused_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(note, data)
    except OSError as e:
        log.event("error_note_failed", logging.ERROR, path=note, error=e.strerror or str(e))
        return None
    return note


def after_failure(watch: WatchConfig | None, job: Job, reason: Reason, message: str) -> Path | None:
    """Move a failed source to failed_dir (if set) and write `<name>.error.json` beside it;
    returns where the source was moved (None: not moved), for the state database."""
    src = Path(job.source)
    where = src
    moved = False
    if watch is not None and watch.failed_dir is not None:
        why = not_the_job_file(watch, job, src)
        if why is None:
            try:
                where = move_file(src, watch.failed_dir)
                moved = True
            except OSError as e:
                log.event("source_action_failed", logging.ERROR, job=job.id, source=src,
                          action="move_failed", error=e.strerror or str(e))
        else:
            if why != "gone":
                log.event("source_kept", logging.WARNING, job=job.id, source=src,
                          action="move_failed", reason=why,
                          note="not the file this job failed on; left where it is")
            where = watch.failed_dir / src.name  # nothing to move; the note goes where failures are
    note = where.with_name(where.name + ".error.json")
    data = {
        "source": str(src),
        # For people: `mediad retry` moves back only what the state database recorded.
        "moved_to": str(where) if moved else None,
        "reason": reason,
        "message": message,
        "attempts": job.attempts,
        "profile": job.profile,
        "job": job.id,
        "failed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        note.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(note, data)
    except OSError as e:
        log.event("error_note_failed", logging.ERROR, job=job.id, path=note,
                  error=e.strerror or str(e))
    else:
        log.event("error_note", job=job.id, path=note)
    return where if moved else None
