"""Each job's event log, written by the state database's triggers on every change of a job,
whoever makes it (the daemon, `mediad retry`, the recovery after a crash)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from mediad.daemon import job_events, schema
from mediad.daemon import queue as queue_module
from mediad.daemon.fingerprint import Fingerprint
from mediad.daemon.job_events import EventKind
from mediad.daemon.queue import Queue
from mediad.errors import Reason

FP = Fingerprint(size=10, mtime_ns=1, inode=2, digest="d")


def _log(q: Queue, job: int) -> list[tuple[str, str | None, str | None]]:
    return [(e.kind, e.detail, e.path) for e in job_events.read(q.conn, job)]


def test_every_change_of_a_job_is_in_its_log_with_its_why(tmp_path: Path) -> None:
    q = Queue(tmp_path)
    # A name that is not UTF-8 (an SMB share's Latin-1): kept as bytes, given back as it was
    odd = Path(os.fsdecode(b"/in/caf\xe9.mkv"))
    job = q.enqueue(key="k", source=odd, watch=Path("/in"), profile="h264",
                    output=Path("/out/cafe.mp4"), fp=FP)
    assert job is not None
    q.mark_running(job.id, "0")
    q.retry(job.id, Reason.WORKER_CRASHED, "the worker died", time.time() + 30)
    q.mark_running(job.id, "auto")
    q.set_node(job.id, "gpu-2")
    q.failed(job.id, Reason.CORRUPT, "decode failed at 12.0s")
    q.disposed(job.id, Path(os.fsdecode(b"/failed/caf\xe9.mkv")))
    assert q.requeue_failed(job.id, "k2", FP)
    q.set_priority(job.id, 5)
    q.mark_running(job.id, "auto")
    q.requeue(job.id)  # stopped by a shutdown
    q.mark_running(job.id, "auto")
    q.done(job.id, {})
    q.disposed(job.id)
    log = _log(q, job.id)
    assert [kind for kind, _, _ in log] == [
        "queued", "started", "retry", "started", "placed", "failed", "disposed", "requeued",
        "priority", "started", "requeued", "started", "done", "disposed"]
    assert log[0] == ("queued", "profile h264", str(odd))
    assert log[1][1] == "attempt 1, GPU 0" and log[3][1] == "attempt 2"
    kind, detail, _ = log[2]
    assert detail is not None and detail.startswith("worker_crashed: the worker died (again in ")
    assert log[4][1] == "on node gpu-2"
    assert log[5][1] == "corrupt: decode failed at 12.0s"
    assert log[6] == ("disposed", "source moved aside", os.fsdecode(b"/failed/caf\xe9.mkv"))
    assert log[7][1] == "user_retry: requeued by mediad retry"
    assert log[8][1] == "priority 5"
    assert log[10][1] == "interrupted (a restart or a stop): it runs again from the start"
    assert log[12] == ("done", None, "/out/cafe.mp4")
    assert log[13][1] == "source dealt with as the watch's on_success says"
    times = [e.at for e in job_events.read(q.conn, job.id)]
    assert times == sorted(times) and abs(times[-1] - time.time()) < 5


def test_a_forgotten_job_takes_its_log_with_it_and_an_old_database_gets_one(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / queue_module.DB_NAME, isolation_level=None)
    conn.row_factory = sqlite3.Row
    schema.migrate(conn, to=5)  # a database of schema v5
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 5
    conn.close()
    q = Queue(tmp_path)  # upgraded in place
    job = q.enqueue(key="k", source=Path("/in/a.mkv"), watch=Path("/in"), profile="h264",
                    output=Path("/out/a.mp4"), fp=FP)
    assert job is not None
    assert [e.kind for e in job_events.read(q.conn, job.id)] == [EventKind.QUEUED]
    q.forget(job.id)
    assert q.conn.execute("SELECT COUNT(*) FROM job_events").fetchone()[0] == 0
