"""The state database's schema and its versions: step N upgrades a database of version N-1 in
place, in one transaction (SQLite's user_version); a database of a newer mediad is refused."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from mediad.daemon import job_events
from mediad.errors import MediadError, Reason

MAX_OUTPUT_SIZE = 2**48  # bytes: an output size above this is not one


def out_size_sql(report: str) -> str:
    """SQL: the sum of the output sizes (a ladder's every track) of `report`, an SQL expression
    of a report's JSON text; NULL when it is not JSON or lists no outputs. An output that is
    not an object, or whose size is not a whole number of bytes, counts as nothing. Each CASE
    tests before it reads, so a malformed report never reaches json_each."""
    return (f"(CASE WHEN NOT json_valid({report}) THEN NULL "
            f"WHEN json_type({report}, '$.outputs') = 'array' THEN (SELECT CAST(TOTAL(CASE "
            "WHEN o.type <> 'object' THEN NULL "
            "WHEN json_type(o.value, '$.size') = 'integer' AND json_extract(o.value, '$.size') "
            f"BETWEEN 0 AND {MAX_OUTPUT_SIZE} THEN json_extract(o.value, '$.size') END) "
            f"AS INTEGER) FROM json_each({report}, '$.outputs') o) END)")


_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,          -- content digest + profile + output_dir: the dedup key
    source TEXT NOT NULL,
    watch TEXT NOT NULL,
    profile TEXT NOT NULL,
    output TEXT NOT NULL UNIQUE,       -- reserved when queued, so two jobs never share a name
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,   -- failed attempts so far
    reason TEXT,
    error TEXT,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    digest TEXT NOT NULL,
    not_before REAL NOT NULL DEFAULT 0,    -- retry backoff: not started before this time
    created REAL NOT NULL,
    updated REAL NOT NULL,
    started REAL,
    finished REAL,
    gpu TEXT,
    frames_done INTEGER,
    frames_total INTEGER,
    fps REAL,
    report TEXT,
    disposed INTEGER NOT NULL DEFAULT 0    -- on_success / failed_dir applied to the source
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (state, not_before, id);
CREATE INDEX IF NOT EXISTS jobs_updated ON jobs (updated);
-- Paths already identified, so a restart does not re-hash every file kept in a watched folder.
CREATE TABLE IF NOT EXISTS seen (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    key TEXT NOT NULL
);
"""


def _add_moved_to(conn: sqlite3.Connection) -> None:
    # Databases made between the column's arrival and schema versions have it already
    if "moved_to" not in {r["name"] for r in conn.execute("PRAGMA table_info(jobs)")}:
        conn.execute("ALTER TABLE jobs ADD COLUMN moved_to TEXT")


# Schema versions (SQLite's user_version): step N upgrades a database of version N-1 in place,
# in one transaction. Version 1 is the schema as it was before versions; its CREATE ... IF NOT
# EXISTS also makes a new database, which the later steps then bring up to date.
def _create_v1(conn: sqlite3.Connection) -> None:
    # Statement by statement: executescript() would commit the migration's transaction first
    for statement in _SCHEMA_V1.split(";\n"):
        if statement.strip():
            conn.execute(statement)


_JOBS_V3 = _SCHEMA_V1[_SCHEMA_V1.index("CREATE TABLE IF NOT EXISTS jobs ("):
                      _SCHEMA_V1.index(");\n") + 1] \
    .replace("CREATE TABLE IF NOT EXISTS jobs (", "CREATE TABLE jobs_v3 (") \
    .replace("'done', 'failed')", "'done', 'failed', 'cancelled')") \
    .replace("    disposed INTEGER NOT NULL DEFAULT 0    -- on_success / failed_dir applied to the source\n",
             "    disposed INTEGER NOT NULL DEFAULT 0,   -- on_success / failed_dir applied to the source\n"
             "    moved_to TEXT,                         -- where a failed source was moved\n"
             "    priority INTEGER NOT NULL DEFAULT 0    -- higher runs first\n")
_JOBS_V2_COLUMNS = ("id, key, source, watch, profile, output, state, attempts, reason, error, size, "
                    "mtime_ns, inode, digest, not_before, created, updated, started, finished, gpu, "
                    "frames_done, frames_total, fps, report, disposed, moved_to")


def _v3_cancel_priority_commands(conn: sqlite3.Connection) -> None:
    # SQLite cannot change a CHECK constraint: the table is rebuilt with the new state allowed
    conn.execute(_JOBS_V3)
    conn.execute(f"INSERT INTO jobs_v3 ({_JOBS_V2_COLUMNS}) SELECT {_JOBS_V2_COLUMNS} FROM jobs")
    conn.execute("DROP TABLE jobs")
    conn.execute("ALTER TABLE jobs_v3 RENAME TO jobs")
    conn.execute("CREATE INDEX jobs_ready ON jobs (state, priority DESC, not_before, id)")
    conn.execute("CREATE INDEX jobs_updated ON jobs (updated)")
    # What `mediad cancel` / `priority` (and the API) ask of the running daemon, applied in order
    conn.execute("CREATE TABLE commands (id INTEGER PRIMARY KEY, kind TEXT NOT NULL CHECK (kind "
                 "IN ('cancel', 'priority')), job INTEGER NOT NULL, value INTEGER, created REAL "
                 "NOT NULL, applied REAL, result TEXT)")
    conn.execute("CREATE INDEX commands_pending ON commands (id) WHERE applied IS NULL")


def _v4_nodes(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE jobs ADD COLUMN node TEXT")
    # The cluster's nodes as the daemon last saw them (what `mediad status` and the API show)
    conn.execute("CREATE TABLE nodes (node TEXT PRIMARY KEY, alive INTEGER NOT NULL, declared "
                 "TEXT NOT NULL, used TEXT NOT NULL, seen REAL NOT NULL)")


def _v5_submit_retry_commands(conn: sqlite3.Connection) -> None:
    # The API's submit and retry: new kinds (a CHECK constraint: the table is rebuilt), a job
    # the command names only once applied (a submit's new job), and the arguments it carries.
    conn.execute("CREATE TABLE commands_v5 (id INTEGER PRIMARY KEY, kind TEXT NOT NULL CHECK (kind "
                 "IN ('cancel', 'priority', 'submit', 'retry')), job INTEGER, value INTEGER, "
                 "created REAL NOT NULL, applied REAL, result TEXT, args TEXT)")
    conn.execute("INSERT INTO commands_v5 (id, kind, job, value, created, applied, result) "
                 "SELECT id, kind, job, value, created, applied, result FROM commands")
    conn.execute("DROP TABLE commands")
    conn.execute("ALTER TABLE commands_v5 RENAME TO commands")
    conn.execute("CREATE INDEX commands_pending ON commands (id) WHERE applied IS NULL")
    # The output folder a submit named, when it is not its watch's (where a renamed output and
    # a retried job's key go); NULL for everything else
    conn.execute("ALTER TABLE jobs ADD COLUMN output_dir TEXT")


def _v7_out_size(conn: sqlite3.Connection) -> None:
    # A done job's output size, recorded once (Queue.done) rather than summed from every
    # report each time the pages or the stats are served; the done jobs so far get theirs here
    conn.execute("ALTER TABLE jobs ADD COLUMN out_size INTEGER")
    conn.execute(f"UPDATE jobs SET out_size = {out_size_sql('report')} WHERE state = 'done'")


_STEPS: list[Callable[[sqlite3.Connection], None]] = [
    _create_v1,
    _add_moved_to,  # 2: where a failed source was moved (mediad retry trusts only this)
    _v3_cancel_priority_commands,  # 3: the cancelled state, priorities, the command channel
    _v4_nodes,  # 4: the node a job ran on, the cluster's nodes
    _v5_submit_retry_commands,  # 5: the API's submit and retry commands, a job's output_dir
    job_events.create,  # 6: each job's event log, written by triggers
    _v7_out_size,  # 7: a done job's output size
]
SCHEMA_VERSION = len(_STEPS)


def migrate(conn: sqlite3.Connection, to: int | None = None) -> int:
    """Bring the state database up to SCHEMA_VERSION (or to version `to`: the databases older
    mediads made, for tests of the upgrades); returns the version it had. A database of a
    newer mediad is refused (one line), never downgraded."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise MediadError(f"the state database is of schema version {version}, made by a newer "
                          f"mediad (this one knows {SCHEMA_VERSION})", reason=Reason.BAD_STATE)
    for number, step in enumerate(_STEPS[version:to], version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            step(conn)
            conn.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return version
