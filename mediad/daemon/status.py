"""`mediad status`: queue counts and recent jobs, read from the daemon's state database."""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path

from mediad.config import Config, default_config_path, load_config
from mediad.daemon.queue import DB_NAME, STATES, connect, counts, read_nodes, recent
from mediad.errors import MediadError, Reason
from mediad.log import printable
from mediad.media.commit import pid_alive

PID_FILE = "mediad.pid"


def daemon_pid(state_dir: Path) -> int | None:
    """The pid of the daemon that holds this state_dir, if it is alive."""
    try:
        pid = int((state_dir / PID_FILE).read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and pid_alive(pid) else None


def state_database(config_path: Path | None) -> tuple[Path, Config, Path]:
    """(config file, config, state database) as the daemon would use them; the database must
    exist. Without a path: $MEDIAD_CONFIG, else /etc/mediad/mediad.toml."""
    path = config_path or default_config_path()
    config = load_config(path)
    db = config.daemon.state_dir / DB_NAME
    if not db.is_file():
        raise MediadError(f"{db}: no state database yet (has the daemon run with {path}?)",
                          reason=Reason.NO_STATE)
    return path, config, db


def status_report(config_path: Path | None, limit: int = 20) -> dict:
    """Counts by state and the most recent jobs, as plain data."""
    path, config, db = state_database(config_path)
    state_dir = config.daemon.state_dir
    try:
        conn = connect(db, readonly=True)
        try:
            by_state = counts(conn)
            jobs = [j.summary() for j in recent(conn, limit)]
            nodes = [asdict(n) for n in read_nodes(conn)]
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise MediadError(f"{db}: cannot read the state database: {e}", reason=Reason.NO_STATE) from None
    # A ladder's output is a folder (`talk.hls/`): its profile says so, or, for a watch gone
    # from the config since, the output on disk.
    ladders = {w.profile for w in config.watch if w.loaded_profile.is_ladder}
    for j in jobs:
        j["output_is_folder"] = j["profile"] in ladders or os.path.isdir(j["output"])
    return {
        "config": str(path),
        "state_dir": str(state_dir),
        "daemon_pid": daemon_pid(state_dir),
        "counts": by_state,
        "recent": jobs,
        "nodes": nodes,  # a cluster executor's nodes; empty for local workers
    }


def _ago(t: float | None) -> str:
    if not t:
        return "-"
    s = max(0, int(time.time() - t))
    return f"{s}s ago" if s < 120 else f"{s // 60}m ago" if s < 7200 else f"{s // 3600}h ago"


def format_status(report: dict) -> str:
    """Human-readable status."""
    pid = report["daemon_pid"]
    lines = [
        f"daemon:    {'running, pid ' + str(pid) if pid else 'not running'}",
        f"state_dir: {printable(report['state_dir'])}",
        "jobs:      " + "  ".join(f"{s}={report['counts'].get(s, 0)}" for s in STATES),
    ]
    if report["nodes"]:
        lines.append("")
        lines.append(f"{'node':16} {'state':6} resource: used/declared")
        for n in report["nodes"]:
            shown = ", ".join(f"{k} {n['used'].get(k, 0):g}/{v:g}" for k, v in sorted(n["declared"].items())
                              if k not in ("memory", "object_store_memory"))
            lines.append(f"{printable(n['node']):16} {'up' if n['alive'] else 'lost':6} {shown}")
    if report["recent"]:
        lines.append("")
        lines.append(f"{'id':>6}  {'state':8} {'tries':>5}  {'updated':>9}  source -> output / reason")
        for j in report["recent"]:
            detail = printable(j["output"]) + ("/" if j.get("output_is_folder") else "")
            if j.get("node"):
                detail += f"  (on {printable(j['node'])})"
            if j["state"] == "running" and j.get("frames_done") is not None:
                total = j.get("frames_total")
                detail += f"  [{j['frames_done']}/{total or '?'} frames, {j.get('fps') or 0:.1f} fps]"
            if j.get("reason") and j["state"] in ("failed", "queued"):
                detail = printable(f"{j['reason']}: {j.get('error') or ''}".strip())
            lines.append(f"{j['id']:>6}  {j['state']:8} {j['attempts']:>5}  {_ago(j['updated']):>9}"
                         f"  {printable(j['source'])} -> {detail}")
    return "\n".join(lines)
