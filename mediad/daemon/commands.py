"""`mediad cancel` and `mediad priority`: what the command channel carries to the daemon.

A running daemon owns its jobs: the command is written to its state database and applied by
its main loop (a running job's worker is stopped, its temporary output removed, the source
left where it is). With no daemon running there is nobody to ask, and the change is made here.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from mediad.daemon.queue import Queue, disk_full
from mediad.daemon.status import daemon_pid, state_database
from mediad.errors import MediadError, Reason

WAIT_SECONDS = 30.0  # for a running daemon to apply a command (and a running job to stop)


def send(config_path: Path | None, kind: str, job_ids: list[int],
         value: int | None = None) -> list[str | MediadError]:
    """Apply `kind` ('cancel' or 'priority', with `value`) to each job; per job, the line to
    print (`job N: cancelled`) or why not."""
    _path, config, db = state_database(config_path)
    try:
        queue = Queue(config.daemon.state_dir)
    except sqlite3.Error as e:
        raise MediadError(f"{db}: cannot open the state database: {e}",
                          reason=Reason.BAD_STATE) from None
    try:
        running = daemon_pid(config.daemon.state_dir) is not None
        return [_one(queue, kind, job_id, value, running) for job_id in job_ids]
    finally:
        queue.close()


def _one(queue: Queue, kind: str, job_id: int, value: int | None,
         running: bool) -> str | MediadError:
    try:
        return _apply(queue, kind, job_id, value, running)
    except MediadError as e:  # the command could not be written (a full state disk)
        return MediadError(f"job {job_id}: {e}", reason=e.reason)
    except sqlite3.OperationalError as e:
        if not disk_full(e):
            raise
        return MediadError(f"job {job_id}: the state database's disk is full: nothing changed",
                           reason=Reason.DISK_FULL)


def _apply(queue: Queue, kind: str, job_id: int, value: int | None,
           running: bool) -> str | MediadError:
    job = queue.get(job_id)
    if job is None:
        return MediadError(f"job {job_id}: no such job", reason=Reason.NO_JOB)
    if running:
        result = _through_daemon(queue, kind, job_id, value)
    elif kind == "cancel":
        result = "cancelled" if queue.cancel_queued(job_id) else f"is {job.state}: nothing to cancel"
    else:
        assert value is not None
        result = f"priority {value}" if queue.set_priority(job_id, value) else \
            f"is {job.state}: only a queued job can be reordered"
    if result.startswith("is "):
        return MediadError(f"job {job_id}: {result}", reason=Reason.BAD_REQUEST)
    return f"job {job_id}: {result}"


def _through_daemon(queue: Queue, kind: str, job_id: int, value: int | None) -> str:
    """Write the command, wait for the daemon to apply it (and a cancelled running job to
    stop); the daemon's word for it."""
    command_id = queue.add_command(kind, job_id, value)
    deadline = time.monotonic() + WAIT_SECONDS
    result: str | None = None
    while time.monotonic() < deadline:
        command = queue.command(command_id)
        if command is not None and command.result is not None:
            result = command.result
            if result != "cancelling":
                return result
            job = queue.get(job_id)
            if job is not None and job.state != "running":
                return "cancelled" if job.state == "cancelled" else f"is {job.state}: it ended first"
        time.sleep(0.05)
    return result or "asked: the daemon has not answered yet (it applies it when it can)"
