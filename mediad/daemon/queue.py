"""The durable job queue: SQLite in WAL mode in state_dir.

States (JobState): queued -> running -> done | failed | cancelled; a transient failure or a stop
puts a job back to queued, and `mediad retry` puts a failed one back. The daemon's main thread
does every other write; `mediad retry` changes only failed rows whose source the daemon has
finished with (`disposed`), which it never changes again; `mediad cancel` and `priority` (and the
API's submit and retry) write commands that a running daemon applies (commands table), and
`mediad status` (and the API) read alongside.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from mediad.daemon.fingerprint import Fingerprint
from mediad.daemon.schema import migrate, out_size_sql
from mediad.errors import MediadError, Reason


class JobState(StrEnum):
    """Where a job is: queued -> running -> done | failed (a transient failure or a stop: back
    to queued; `mediad retry`: failed back to queued); `mediad cancel`: cancelled, for good."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"  # by `mediad cancel` (or the API): never run again, source left alone


STATES = tuple(JobState)
USER_RETRY = Reason.USER_RETRY  # reason of a job `mediad retry` put back, until it runs to an end
DB_NAME = "queue.sqlite3"
MAX_ID = 2**63 - 1  # ids are SQLite INTEGERs: no job or command has a larger one
NODES_SEEN_EVERY = 30.0  # seconds: an unchanged record of the nodes is confirmed this often

@dataclass(frozen=True)
class Job:
    """One row of the jobs table."""

    id: int
    key: str
    source: str
    watch: str
    profile: str
    output: str
    state: JobState
    attempts: int
    reason: str | None
    error: str | None
    size: int
    mtime_ns: int
    inode: int
    digest: str
    not_before: float
    created: float
    updated: float
    started: float | None
    finished: float | None
    gpu: str | None
    frames_done: int | None
    frames_total: int | None
    fps: float | None
    report: str | None
    disposed: int
    moved_to: str | None = None  # a failed source in failed_dir: what `mediad retry` moves back
    priority: int = 0  # higher runs first
    node: str | None = None  # the cluster node that ran (or runs) it; None: this machine
    output_dir: str | None = None  # a submit's own output folder; None: its watch's
    out_size: int | None = None  # a done job's outputs, bytes (schema.out_size_sql)

    @property
    def fingerprint(self) -> Fingerprint:
        """The source's fingerprint when it was queued."""
        return Fingerprint(self.size, self.mtime_ns, self.inode, self.digest)

    def summary(self) -> dict:
        """Plain data for `mediad status --json` (the report itself left out)."""
        d = {k: v for k, v in self.__dict__.items() if k not in ("report", "key", "digest")}
        if self.started and self.finished:
            d["duration"] = round(self.finished - self.started, 3)
        return d


@dataclass(frozen=True)
class NodeView:
    """A cluster node as the daemon last saw it: what it declared (Ray resources) and what
    this daemon's running jobs use of it."""

    node: str
    alive: bool
    declared: dict[str, float]
    used: dict[str, float]
    seen: float = 0.0  # when the executor saw it so (Unix time)


def read_nodes(conn: sqlite3.Connection) -> list[NodeView]:
    """The cluster's nodes as last recorded (none without a cluster executor)."""
    return [NodeView(r["node"], bool(r["alive"]), json.loads(r["declared"]), json.loads(r["used"]),
                     r["seen"]) for r in conn.execute("SELECT * FROM nodes ORDER BY node")]


@dataclass(frozen=True)
class Command:
    """One row of the commands table: what was asked of the daemon, and what came of it."""

    id: int
    kind: str
    job: int | None  # a submit's: the job it queued (or found), once applied
    value: int | None
    created: float
    applied: float | None
    result: str | None
    args: str | None = None  # a submit's request, JSON

    @property
    def ok(self) -> bool | None:
        """Whether the daemon did what was asked; None while it is not applied. A refusal's
        result starts with `refused:`, `is ` (the job's state) or `no such`."""
        if self.result is None:
            return None
        return not self.result.startswith(("refused", "is ", "no such"))

    def refusal(self) -> tuple[str, str]:
        """(reason, message) of a result that is not ok: `refused: <reason>: <message>` as a
        retry or submit writes it; a state answer (`is done: ...`) is a conflict."""
        result = self.result or ""
        if result.startswith("refused: "):
            reason, _, message = result.removeprefix("refused: ").partition(": ")
            return reason, message or reason
        return "conflict", result


def refused(reason: str, message: object) -> str:
    """A command's result when the daemon would not do it; Command.refusal reads it back."""
    return f"refused: {reason}: {message}"


def disk_full(e: sqlite3.OperationalError) -> bool:
    """SQLITE_FULL: the state database's disk (or its quota) is full."""
    return getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "is full" in str(e)


def db_path(path: Path | str) -> str | bytes:
    """A path as the database holds it: text, or its bytes when the name is not UTF-8 (a
    Latin-1 name from an SMB share or an old archive). SQLite text must be UTF-8, and the
    bytes give back the very same name (see _job)."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text)
    return text


def db_text(text: str | None) -> str | None:
    """A message for the database: a non-UTF-8 name inside it shown escaped (\\xe9)."""
    if text is None:
        return None
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def job_of_row(row: sqlite3.Row | dict) -> Job:
    """A jobs row (SELECT *) as a Job; paths stored as bytes (db_path) back to the names they
    were."""
    d = dict(row)
    d["state"] = JobState(d["state"])
    for k in ("source", "watch", "output", "moved_to", "output_dir"):
        if isinstance(d[k], bytes):
            d[k] = os.fsdecode(d[k])
    return Job(**d)


def connect(path: Path, *, readonly: bool = False, any_thread: bool = False) -> sqlite3.Connection:
    """Open the state database (WAL, durable commits). `any_thread`: a read-only connection
    its owner uses from one thread after another (never two at once)."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0,
                               check_same_thread=not any_thread)
    else:
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed state change survives power loss, not only a crash of the daemon.
        conn.execute("PRAGMA synchronous=FULL")
        # The log checkpointed every 100 pages (400 KB; SQLite's default is 4 MB) and cut back
        # to 1 MB after: every version of every page it holds takes disk, and on a small or
        # full state disk a log that outgrew its checkpoint could never be checkpointed again
        # (the checkpoint needs room in the database file).
        conn.execute("PRAGMA wal_autocheckpoint=100")
        conn.execute("PRAGMA journal_size_limit=1048576")
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class Queue:
    """The jobs table and its state changes; every change is its own transaction."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / DB_NAME
        self.conn = connect(self.path)
        try:
            migrate(self.conn)
        except MediadError as e:
            raise MediadError(f"{self.path}: {e}", reason=e.reason) from None
        self._data_version = self._read_data_version()
        # The nodes record as this Queue last wrote it (None: not yet known, read on first use):
        # set_nodes compares with it instead of reading the table back every tick.
        self._nodes: list[NodeView] | None = None

    def check(self) -> str | None:
        """SQLite's quick check of every page (milliseconds for a queue's size); None: sound."""
        try:
            rows = [r[0] for r in self.conn.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as e:
            return str(e)
        return None if rows == ["ok"] else "; ".join(rows[:3])

    def reclaim(self) -> None:
        """Give the disk back what the write-ahead log holds: its pages into the database, the
        log truncated. On a full disk the log cannot reach its automatic checkpoint (4 MB) and
        would otherwise keep every version of every page it has; errors are the caller's."""
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Close the database."""
        self.conn.close()

    def _one(self, sql: str, args: tuple = ()) -> Job | None:
        row = self.conn.execute(sql, args).fetchone()
        return job_of_row(row) if row else None

    def get(self, job_id: int) -> Job | None:
        """The job with this id."""
        return self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))

    def by_key(self, key: str) -> Job | None:
        """The job with this dedup key."""
        return self._one("SELECT * FROM jobs WHERE key = ?", (key,))

    def by_source(self, source: Path) -> list[Job]:
        """Jobs whose source was this path, newest first."""
        rows = self.conn.execute("SELECT * FROM jobs WHERE source = ? ORDER BY id DESC", (db_path(source),))
        return [job_of_row(r) for r in rows]

    def failed_jobs(self) -> list[Job]:
        """Every failed job, oldest first."""
        rows = self.conn.execute("SELECT * FROM jobs WHERE state = 'failed' ORDER BY id")
        return [job_of_row(r) for r in rows]

    def output_taken(self, output: Path) -> bool:
        """True when another job has reserved this output path."""
        return self.conn.execute("SELECT 1 FROM jobs WHERE output = ?", (db_path(output),)).fetchone() is not None

    def recover(self) -> list[Job]:
        """After a crash: jobs left running go back to queued (their attempt is not counted)."""
        jobs = [job_of_row(r) for r in self.conn.execute("SELECT * FROM jobs WHERE state = 'running'")]
        self.conn.execute("UPDATE jobs SET state = 'queued', updated = ?, gpu = NULL "
                          "WHERE state = 'running'", (time.time(),))
        return jobs

    def enqueue(self, *, key: str, source: Path, watch: Path, profile: str, output: Path,
                fp: Fingerprint, output_dir: Path | None = None) -> Job | None:
        """Add a queued job; None when a job with this key already exists. `output_dir`: a
        submit's own, when it is not the watch's."""
        now = time.time()
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO jobs (key, source, watch, profile, output, state, size, mtime_ns,"
            " inode, digest, created, updated, output_dir) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, "
            "?, ?, ?, ?, ?)",
            (key, db_path(source), db_path(watch), profile, db_path(output), fp.size, fp.mtime_ns, fp.inode,
             fp.digest, now, now, None if output_dir is None else db_path(output_dir)))
        return self.get(cur.lastrowid) if cur.rowcount else None

    def ready(self, now: float, limit: int = 100) -> list[Job]:
        """Queued jobs whose backoff has passed, oldest first."""
        rows = self.conn.execute(
            "SELECT * FROM jobs WHERE state = 'queued' AND not_before <= ? "
            "ORDER BY priority DESC, id LIMIT ?",
            (now, limit))
        return [job_of_row(r) for r in rows]

    def next_retry(self) -> float | None:
        """The earliest time a backed-off queued job becomes ready."""
        row = self.conn.execute("SELECT MIN(not_before) FROM jobs WHERE state = 'queued'").fetchone()
        return row[0] if row and row[0] else None

    def mark_running(self, job_id: int, gpu: str) -> None:
        """A worker took the job."""
        now = time.time()
        self.conn.execute("UPDATE jobs SET state = 'running', started = ?, updated = ?, gpu = ?, "
                          "node = NULL, frames_done = 0, frames_total = NULL, fps = NULL WHERE id = ?",
                          (now, now, gpu, job_id))

    def set_node(self, job_id: int, node: str | None) -> None:
        """The cluster node a running job was placed on: it started there now (until then it
        waited for a node with what it needs)."""
        now = time.time()
        self.conn.execute("UPDATE jobs SET node = ?, started = ?, updated = ? WHERE id = ?",
                          (node, now, now, job_id))

    def set_nodes(self, nodes: list[NodeView]) -> bool:
        """Record the cluster's nodes as the executor last saw them (each one's `seen`: when).
        Written only when something changed, or to confirm an unchanged record every
        NODES_SEEN_EVERY seconds: a reader tells a stale record by its `seen`. True: written."""
        def state(views: list[NodeView]) -> dict[str, tuple]:
            return {n.node: (n.alive, n.declared, n.used) for n in views}

        if self._nodes is None:
            self._nodes = read_nodes(self.conn)  # what a daemon before this one left
        recorded = self._nodes
        newest = max((n.seen for n in nodes), default=0.0)
        if state(recorded) == state(nodes) and \
                min((n.seen for n in recorded), default=newest) > newest - NODES_SEEN_EVERY:
            return False
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute("DELETE FROM nodes")
            self.conn.executemany(
                "INSERT INTO nodes (node, alive, declared, used, seen) VALUES (?, ?, ?, ?, ?)",
                [(n.node, int(n.alive), json.dumps(n.declared), json.dumps(n.used), n.seen)
                 for n in nodes])
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        self._nodes = list(nodes)
        return True

    def progress(self, job_id: int, frames_done: int, frames_total: int | None, fps: float) -> None:
        """Record a running job's progress."""
        self.conn.execute("UPDATE jobs SET frames_done = ?, frames_total = ?, fps = ?, updated = ? "
                          "WHERE id = ? AND state = 'running'",
                          (frames_done, frames_total, fps, time.time(), job_id))

    def set_output(self, job_id: int, output: Path) -> None:
        """Reserve another output name for the job (its first one was taken by someone else)."""
        self.conn.execute("UPDATE jobs SET output = ?, updated = ? WHERE id = ?",
                          (db_path(output), time.time(), job_id))

    def follow(self, job_id: int, *, source: Path, watch: Path, output: Path,
               fp: Fingerprint) -> bool:
        """The job's file, not yet transcoded, is now at `source` (renamed, or moved out and back):
        the job follows it. A queued job keeps its state; one failed as `missing_input` (the
        file was away when its turn came) is queued again as new. False when it is neither."""
        # One statement, so it is all or nothing; CASE reads the row as it was before.
        cur = self.conn.execute(
            "UPDATE jobs SET source = ?, watch = ?, output = ?, size = ?, mtime_ns = ?, inode = ?,"
            " updated = ?, state = 'queued',"
            " attempts = CASE WHEN state = 'failed' THEN 0 ELSE attempts END,"
            " reason = CASE WHEN state = 'failed' THEN NULL ELSE reason END,"
            " error = CASE WHEN state = 'failed' THEN NULL ELSE error END,"
            " finished = NULL, disposed = 0"
            " WHERE id = ? AND (state = 'queued' OR (state = 'failed' AND reason = 'missing_input'))",
            (db_path(source), db_path(watch), db_path(output), fp.size, fp.mtime_ns, fp.inode, time.time(),
             job_id))
        return cur.rowcount == 1

    def done(self, job_id: int, report: dict) -> None:
        """The output is committed."""
        now = time.time()
        self.conn.execute("UPDATE jobs SET state = 'done', finished = :now, updated = :now, "
                          "reason = NULL, error = NULL, report = :report, "
                          f"out_size = {out_size_sql(':report')} WHERE id = :id",
                          {"now": now, "report": json.dumps(report, default=str), "id": job_id})

    def failed(self, job_id: int, reason: Reason, error: str, *, count_attempt: bool = True) -> None:
        """The job failed for good."""
        now = time.time()
        self.conn.execute("UPDATE jobs SET state = 'failed', finished = ?, updated = ?, reason = ?,"
                          " error = ?, attempts = attempts + ? WHERE id = ?",
                          (now, now, reason, db_text(error), int(count_attempt), job_id))

    def retry(self, job_id: int, reason: Reason, error: str, not_before: float, *,
              count_attempt: bool = True) -> None:
        """A transient failure: back to queued, not before `not_before`."""
        self.conn.execute("UPDATE jobs SET state = 'queued', updated = ?, reason = ?, error = ?, "
                          "attempts = attempts + ?, not_before = ?, gpu = NULL WHERE id = ?",
                          (time.time(), reason, db_text(error), int(count_attempt), not_before,
                           job_id))

    def requeue(self, job_id: int) -> None:
        """Stopped by the daemon (shutdown): back to queued, the attempt not counted."""
        self.conn.execute("UPDATE jobs SET state = 'queued', updated = ?, gpu = NULL WHERE id = ?",
                          (time.time(), job_id))

    def reidentify(self, job_id: int, key: str, fp: Fingerprint) -> bool:
        """A failed job's source as it is now (fixed, perhaps), before it is put back in its
        watch: the daemon then knows the file when it sees it. False when no longer failed.
        Raises sqlite3.IntegrityError when another job has this key."""
        cur = self.conn.execute("UPDATE jobs SET key = ?, size = ?, mtime_ns = ?, inode = ?, "
                                "digest = ? WHERE id = ? AND state = 'failed'",
                                (key, fp.size, fp.mtime_ns, fp.inode, fp.digest, job_id))
        return cur.rowcount == 1

    def requeue_failed(self, job_id: int, key: str, fp: Fingerprint) -> bool:
        """`mediad retry`: a failed job back to queued as if new (attempts, backoff and its
        disposal reset), its source as it is now; False when it was no longer failed."""
        cur = self.conn.execute(
            "UPDATE jobs SET state = 'queued', attempts = 0, reason = ?, error = ?, "
            "not_before = 0, started = NULL, finished = NULL, gpu = NULL, frames_done = NULL, "
            "frames_total = NULL, fps = NULL, report = NULL, out_size = NULL, disposed = 0, "
            "key = ?, size = ?, mtime_ns = ?, inode = ?, digest = ?, updated = ? "
            "WHERE id = ? AND state = 'failed'",
            (USER_RETRY, "requeued by mediad retry", key, fp.size, fp.mtime_ns, fp.inode,
             fp.digest, time.time(), job_id))
        return cur.rowcount == 1

    def disposed(self, job_id: int, moved_to: Path | None = None) -> None:
        """The source has been kept, moved or deleted as configured: never again. `moved_to`:
        where a failed source now is, the only place `mediad retry` takes it back from."""
        self.conn.execute("UPDATE jobs SET disposed = 1, moved_to = ? WHERE id = ?",
                          (db_path(moved_to) if moved_to is not None else None, job_id))

    def forget(self, job_id: int) -> None:
        """Drop a queued job whose source changed before it ran (it will be queued anew)."""
        self.conn.execute("DELETE FROM jobs WHERE id = ? AND state = 'queued'", (job_id,))

    def add_command(self, kind: str, job_id: int | None, value: int | None = None,
                    args: dict | None = None) -> int:
        """Ask the running daemon for `kind` (cancel, priority, submit, retry) on a job, or with `args` (a
        submit's request); the command's id."""
        return add_command(self.conn, kind, job_id, value, args)

    def pending_commands(self) -> list[Command]:
        """Commands not yet applied, oldest first."""
        rows = self.conn.execute("SELECT * FROM commands WHERE applied IS NULL ORDER BY id")
        return [Command(**dict(r)) for r in rows]

    def command(self, command_id: int) -> Command | None:
        """One command, applied or not."""
        return read_command(self.conn, command_id)

    def command_applied(self, command_id: int, result: str, job_id: int | None = None) -> None:
        """The daemon (or, while none runs, the command itself) has applied it; `job_id`: the
        job a submit queued (or found)."""
        self.conn.execute("UPDATE commands SET applied = ?, result = ?, job = COALESCE(?, job) "
                          "WHERE id = ?", (time.time(), db_text(result), job_id, command_id))

    def cancel_queued(self, job_id: int) -> bool:
        """A queued job cancelled (never started again); False when it is not queued."""
        now = time.time()
        cur = self.conn.execute("UPDATE jobs SET state = 'cancelled', finished = ?, updated = ?, "
                                "gpu = NULL WHERE id = ? AND state = 'queued'", (now, now, job_id))
        return cur.rowcount == 1

    def cancelled(self, job_id: int) -> None:
        """A running job whose worker was stopped for a cancel."""
        now = time.time()
        self.conn.execute("UPDATE jobs SET state = 'cancelled', finished = ?, updated = ?, "
                          "gpu = NULL WHERE id = ?", (now, now, job_id))

    def set_priority(self, job_id: int, priority: int) -> bool:
        """Reorder a queued job (higher first); False when it is not queued."""
        cur = self.conn.execute("UPDATE jobs SET priority = ?, updated = ? WHERE id = ? AND "
                                "state = 'queued'", (priority, time.time(), job_id))
        return cur.rowcount == 1

    def counts(self) -> dict[str, int]:
        """Number of jobs in each state."""
        return counts(self.conn)

    def _read_data_version(self) -> int:
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    def changed_elsewhere(self) -> bool:
        """True when another connection (`mediad retry`) has committed since the last call."""
        # data_version moves only on other connections' commits; it reads no table.
        version = self._read_data_version()
        changed, self._data_version = version != self._data_version, version
        return changed

    def seen_job(self, path: Path, st: os.stat_result) -> Job | None:
        """The job of `path` if it was identified before with exactly this stat (one query)."""
        return self._one("SELECT jobs.* FROM seen JOIN jobs ON jobs.key = seen.key "
                         "WHERE seen.path = ? AND seen.size = ? AND seen.mtime_ns = ? "
                         "AND seen.inode = ?", (db_path(path), st.st_size, st.st_mtime_ns, st.st_ino))

    def remember(self, path: Path, fp: Fingerprint, key: str) -> None:
        """Cache the dedup key of `path` at this stat."""
        self.conn.execute("INSERT OR REPLACE INTO seen (path, size, mtime_ns, inode, key) "
                          "VALUES (?, ?, ?, ?, ?)", (db_path(path), fp.size, fp.mtime_ns, fp.inode, key))


def add_command(conn: sqlite3.Connection, kind: str, job_id: int | None, value: int | None = None,
                args: dict | None = None) -> int:
    """Write a command for the daemon's loop (Queue.add_command; the API's own connection)."""
    try:
        cur = conn.execute("INSERT INTO commands (kind, job, value, created, args) VALUES "
                           "(?, ?, ?, ?, ?)", (kind, job_id, value, time.time(),
                                               None if args is None else json.dumps(args)))
    except sqlite3.OperationalError as e:
        if not disk_full(e):
            raise
        raise MediadError("the state database's disk is full: the command cannot be written; "
                          "ask again once there is room", reason=Reason.DISK_FULL) from None
    return int(cur.lastrowid or 0)


def read_job(conn: sqlite3.Connection, job_id: int) -> Job | None:
    """One job, on a connection of one's own (the API's and the dashboard's reads)."""
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return job_of_row(row) if row is not None else None


def read_command(conn: sqlite3.Connection, command_id: int) -> Command | None:
    """One command, applied or not."""
    row = conn.execute("SELECT * FROM commands WHERE id = ?", (command_id,)).fetchone()
    return Command(**dict(row)) if row else None


def recent(conn: sqlite3.Connection, limit: int = 20) -> list[Job]:
    """The most recently changed jobs."""
    rows = conn.execute("SELECT * FROM jobs ORDER BY updated DESC, id DESC LIMIT ?", (limit,))
    return [job_of_row(r) for r in rows]


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Number of jobs in each state."""
    result = dict.fromkeys(STATES, 0)
    for state, n in conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
        result[state] = n
    return result
