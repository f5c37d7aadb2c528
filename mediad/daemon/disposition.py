"""What happens to a source after its job: kept, moved to done_dir, deleted, or moved to failed_dir
with `<name>.error.json` beside it. Sources are never removed before their output is committed."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from mediad import log
from mediad.config import WatchConfig
from mediad.daemon.paths import unique_destination
from mediad.daemon.queue import Job
from mediad.fsutil import atomic_write_bytes


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to a temporary name beside `path`, fsync, rename: never a half file."""
    # 0644, not mkstemp's 0600: the note is for whoever looks after the folder.
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode(), mode=0o644)


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
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=folder)
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


def after_success(watch: WatchConfig | None, job: Job) -> None:
    """Apply on_success (keep/move/delete) to a done job's source; errors are logged, not raised."""
    src = Path(job.source)
    action = watch.on_success if watch is not None else "keep"
    if action == "keep" or not os.path.lexists(src):
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


def after_failure(watch: WatchConfig | None, job: Job, reason: str, message: str) -> Path | None:
    """Move a failed source to failed_dir (if set) and write `<name>.error.json` beside it."""
    src = Path(job.source)
    where = src
    moved = False
    if watch is not None and watch.failed_dir is not None and os.path.lexists(src):
        try:
            where = move_file(src, watch.failed_dir)
            moved = True
        except OSError as e:
            log.event("source_action_failed", logging.ERROR, job=job.id, source=src,
                      action="move_failed", error=e.strerror or str(e))
    elif watch is not None and watch.failed_dir is not None:
        where = watch.failed_dir / src.name  # nothing to move; the note goes where failures are
    note = where.with_name(where.name + ".error.json")
    data = {
        "source": str(src),
        # Only a file really moved: `mediad retry` moves back whatever this names.
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
        return None
    log.event("error_note", job=job.id, path=note)
    return note
