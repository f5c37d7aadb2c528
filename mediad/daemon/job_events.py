"""A job's event log: what happened to it and when, as the state database saw it.

Recorded by SQLite triggers on the jobs table, in the same transaction as each change, so
every writer is covered the same way (the daemon, `mediad retry` and `cancel` while the daemon
is stopped, the recovery after a crash) and no change can be made without its event. Paths go
in a column of their own, as the jobs table holds them (text, or the bytes of a name that is
not UTF-8): a trigger never splices one into text.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from enum import StrEnum


class EventKind(StrEnum):
    QUEUED = "queued"        # found in a watch or submitted
    STARTED = "started"      # a worker took it (detail: the attempt, the GPU)
    PLACED = "placed"        # the cluster node it runs on
    RETRY = "retry"          # a transient failure: queued again after a backoff
    REQUEUED = "requeued"    # queued again: a retry asked by a person, or an interrupted run
    DONE = "done"            # output committed (path: the output)
    FAILED = "failed"        # for good (detail: reason: error)
    CANCELLED = "cancelled"
    DISPOSED = "disposed"    # its source dealt with (path: where a failed one was moved)
    OUTPUT = "output"        # its output name changed (path: the new one)
    SOURCE = "source"        # its file moved before it ran (path: where it is now)
    PRIORITY = "priority"


_CLOCK = "((julianday('now') - 2440587.5) * 86400.0)"  # the Unix time, in SQL (to the ms)
# Never before the job's previous event: its first comes from Python's clock (to the us)
_NOW = f"MAX({_CLOCK}, COALESCE((SELECT MAX(at) FROM job_events WHERE job = NEW.id), 0))"
_INSERT = "INSERT INTO job_events (job, at, kind, detail, path) VALUES"
# A run that failed and is queued again after a backoff (Queue.retry sets its error and when it
# may start); a run stopped by a shutdown or a crash is queued again with neither changed.
_RETRIED = ("NEW.state = 'queued' AND OLD.state = 'running' AND NEW.reason IS NOT NULL "
            "AND (NEW.not_before IS NOT OLD.not_before OR NEW.error IS NOT OLD.error)")

# Step 6 of the schema (queue._STEPS): the table and the triggers that fill it.
_SCHEMA = [
    "CREATE TABLE job_events (id INTEGER PRIMARY KEY, job INTEGER NOT NULL, at REAL NOT NULL, "
    "kind TEXT NOT NULL, detail TEXT, path)",
    "CREATE INDEX job_events_job ON job_events (job, id)",
    f"""CREATE TRIGGER job_events_queued AFTER INSERT ON jobs BEGIN
        {_INSERT} (NEW.id, NEW.created, 'queued', 'profile ' || NEW.profile, NEW.source); END""",
    f"""CREATE TRIGGER job_events_state AFTER UPDATE OF state ON jobs
        WHEN NEW.state IS NOT OLD.state BEGIN
        {_INSERT} (NEW.id, {_NOW},
          CASE WHEN NEW.state = 'running' THEN 'started'
               WHEN {_RETRIED} THEN 'retry'
               WHEN NEW.state = 'queued' THEN 'requeued'
               ELSE NEW.state END,
          CASE WHEN NEW.state = 'running' THEN 'attempt ' || (NEW.attempts + 1)
                 || CASE WHEN NEW.gpu GLOB '[0-9]*' THEN ', GPU ' || NEW.gpu ELSE '' END
               WHEN {_RETRIED} THEN NEW.reason || COALESCE(': ' || NEW.error, '') || ' (again in '
                   || MAX(0, CAST(ROUND(NEW.not_before - NEW.updated) AS INTEGER)) || ' s)'
               WHEN NEW.state = 'queued' AND OLD.state = 'running'
                 THEN 'interrupted (a restart or a stop): it runs again from the start'
               WHEN NEW.state IN ('done', 'cancelled') THEN NULL
               ELSE NEW.reason || COALESCE(': ' || NEW.error, '') END,
          CASE WHEN NEW.state = 'done' THEN NEW.output END); END""",
    f"""CREATE TRIGGER job_events_node AFTER UPDATE OF node ON jobs
        WHEN NEW.node IS NOT OLD.node AND NEW.node IS NOT NULL BEGIN
        {_INSERT} (NEW.id, {_NOW}, 'placed', 'on node ' || NEW.node, NULL); END""",
    f"""CREATE TRIGGER job_events_disposed AFTER UPDATE OF disposed ON jobs
        WHEN NEW.disposed AND NOT OLD.disposed BEGIN
        {_INSERT} (NEW.id, {_NOW}, 'disposed',
          CASE WHEN NEW.moved_to IS NOT NULL THEN 'source moved aside'
               WHEN NEW.state = 'done' THEN 'source dealt with as the watch''s on_success says'
               ELSE 'source left where it is' END, NEW.moved_to); END""",
    f"""CREATE TRIGGER job_events_output AFTER UPDATE OF output ON jobs
        WHEN NEW.output IS NOT OLD.output BEGIN
        {_INSERT} (NEW.id, {_NOW}, 'output', 'output name taken: another one reserved',
                   NEW.output); END""",
    f"""CREATE TRIGGER job_events_source AFTER UPDATE OF source ON jobs
        WHEN NEW.source IS NOT OLD.source BEGIN
        {_INSERT} (NEW.id, {_NOW}, 'source', 'its file moved; the job follows it', NEW.source);
        END""",
    f"""CREATE TRIGGER job_events_priority AFTER UPDATE OF priority ON jobs
        WHEN NEW.priority IS NOT OLD.priority BEGIN
        {_INSERT} (NEW.id, {_NOW}, 'priority', 'priority ' || NEW.priority, NULL); END""",
    """CREATE TRIGGER job_events_forget AFTER DELETE ON jobs BEGIN
        DELETE FROM job_events WHERE job = OLD.id; END""",
]


def create(conn: sqlite3.Connection) -> None:
    """Schema step 6: the event log and its triggers (an existing database's jobs start
    their logs at the upgrade)."""
    for statement in _SCHEMA:
        conn.execute(statement)


@dataclass(frozen=True)
class JobEvent:
    """One line of a job's event log."""

    at: float  # Unix time
    kind: EventKind
    detail: str | None
    path: str | None  # the file it concerns (output, moved source), when there is one


def read(conn: sqlite3.Connection, job_id: int, limit: int = 500) -> list[JobEvent]:
    """A job's events, oldest first (its latest `limit`)."""
    rows = conn.execute("SELECT at, kind, detail, path FROM job_events WHERE job = ? "
                        "ORDER BY id DESC LIMIT ?", (job_id, limit)).fetchall()
    return [JobEvent(r[0], EventKind(r[1]), r[2], _path(r[3])) for r in reversed(rows)]


def _path(value: str | bytes | None) -> str | None:
    # A name that is not UTF-8 is stored as its bytes (queue.db_path): the same name back
    return os.fsdecode(value) if isinstance(value, bytes) else value
