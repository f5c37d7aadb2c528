"""What the dashboard's pages show, as plain data read from the state database (a read-only
connection of the caller's) and from a job's report: no web stack here."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from mediad.api import reports
from mediad.api.reports import mapping, number, text, texts, whole
from mediad.api.text import clean
from mediad.daemon.job_events import JobEvent as StoredEvent
from mediad.daemon.queue import Job, job_of_row

DONE_SHOWN = 25  # done jobs on the queue page
FAILED_SHOWN = 50
HISTORY_DAYS = 14



@dataclass
class QueueRow:
    """A job as a row of the queue page."""

    job: Job

    @property
    def out_size(self) -> int | None:
        """A done job's outputs, bytes; None when unknown (or none)."""
        return self.job.out_size or None

    @property
    def name(self) -> str:
        return clean(self.job.source.rsplit("/", 1)[-1])

    @property
    def percent(self) -> float | None:
        j = self.job
        if j.frames_done is None or not j.frames_total:
            return None
        return min(100.0, 100.0 * j.frames_done / j.frames_total)

    @property
    def eta(self) -> float | None:
        """Seconds left at the job's current speed."""
        j = self.job
        if j.frames_done is None or not j.frames_total or not j.fps:
            return None
        return max(0.0, (j.frames_total - j.frames_done) / j.fps)

    @property
    def saved(self) -> int | None:
        return None if self.out_size is None else self.job.size - self.out_size


@dataclass
class QueueView:
    running: list[QueueRow] = field(default_factory=list)
    queued: list[QueueRow] = field(default_factory=list)
    failed: list[QueueRow] = field(default_factory=list)
    done: list[QueueRow] = field(default_factory=list)


def queue_view(conn: sqlite3.Connection) -> QueueView:
    """Running and queued jobs (all) and the latest failed and done ones (the counts by state
    are the page's stats)."""
    view = QueueView()

    def rows(sql: str, *args: Any) -> list[QueueRow]:
        return [QueueRow(job_of_row(r)) for r in conn.execute(sql, args)]

    view.running = rows("SELECT * FROM jobs WHERE state = 'running' ORDER BY started, id")
    view.queued = rows("SELECT * FROM jobs WHERE state = 'queued' ORDER BY priority DESC, "
                       "not_before, id")
    view.failed = rows("SELECT * FROM jobs WHERE state = 'failed' ORDER BY updated DESC, id DESC "
                       "LIMIT ?", FAILED_SHOWN)
    view.done = rows("SELECT * FROM jobs WHERE state = 'done' ORDER BY finished DESC, id DESC "
                     "LIMIT ?", DONE_SHOWN)
    return view


@dataclass(frozen=True)
class Day:
    """One day of the history page (the daemon's local time)."""

    day: str
    done: int
    failed: int
    frames: int
    bytes_in: int
    bytes_out: int

    @property
    def saved(self) -> int:
        return self.bytes_in - self.bytes_out


def history(conn: sqlite3.Connection, days: int = HISTORY_DAYS,
            now: float | None = None) -> list[Day]:
    """Jobs ended per day over the last `days` days, oldest first, every day listed."""
    now = time.time() if now is None else now
    since = now - days * 86400
    found: dict[str, Day] = {}
    for r in conn.execute(
            "SELECT date(finished, 'unixepoch', 'localtime') AS day, "
            "SUM(state = 'done'), SUM(state = 'failed'), "
            "COALESCE(SUM(CASE WHEN state = 'done' THEN frames_done END), 0), "
            "COALESCE(SUM(CASE WHEN state = 'done' AND out_size > 0 THEN size END), 0), "
            "COALESCE(SUM(CASE WHEN state = 'done' THEN out_size END), 0) "
            "FROM jobs WHERE finished >= ? AND state IN ('done', 'failed') "
            "GROUP BY day", (since,)):
        found[r[0]] = Day(r[0], r[1] or 0, r[2] or 0, r[3] or 0, r[4] or 0, r[5] or 0)
    out = []
    for i in range(days - 1, -1, -1):
        day = time.strftime("%Y-%m-%d", time.localtime(now - i * 86400))
        out.append(found.get(day, Day(day, 0, 0, 0, 0, 0)))
    return out


@dataclass(frozen=True)
class Event:
    """One line of a job's event log."""

    at: float | None
    what: str
    detail: str = ""


def job_events(conn: sqlite3.Connection, job: Job, stored: list[StoredEvent],
               report: dict | None) -> list[Event]:
    """A job's log: every change the store recorded (`stored`, daemon.job_events: each attempt,
    retry, failure, move), the commands about it (submit, retry, cancel, priority) and what
    came of them, then its report's fallbacks and warnings."""
    events = [Event(e.at, e.kind.value, " ".join(clean(p) for p in (e.detail, e.path) if p))
              for e in stored]
    if not events:  # a job older than the log (a database upgraded from schema 5)
        events.append(Event(job.created, "queued",
                            f"profile {clean(job.profile.rsplit('/', 1)[-1])}"))
    for c in conn.execute("SELECT * FROM commands WHERE job = ? ORDER BY id", (job.id,)):
        asked = c["kind"] + (f" {c['value']}" if c["value"] is not None else "")
        events.append(Event(c["created"], f"command {asked}",
                            clean(c["result"] or "") if c["applied"] else "not applied yet"))
    for f in texts((report or {}).get("fallbacks")):
        events.append(Event(None, "fallback", f))
    for w in texts((report or {}).get("warnings")):
        events.append(Event(None, "warning", w))
    timed = sorted((e for e in events if e.at is not None), key=lambda e: e.at or 0)
    return timed + [e for e in events if e.at is None]


@dataclass(frozen=True)
class Decision:
    """One decision of a plan: where in the plan, what was decided, why."""

    where: str
    what: str
    why: str


_SHOWN = ("action", "kind", "codec", "encoder", "hardware", "device", "precision", "model",
          "width", "height", "bit_rate", "max_bit_rate", "language", "channels", "source_codec",
          "pix_fmt", "speed", "quality", "deinterlace")


def _summary(d: dict) -> str:
    parts = []
    for k in _SHOWN:
        v = d.get(k)
        if v is None or v == "" or (k == "hardware" and v is False):
            continue
        if k == "hardware":
            parts.append("hardware")
        elif k == "width" and d.get("height"):
            parts.append(f"{v}x{d['height']}")
        elif k == "height" and d.get("width"):
            continue
        elif k in ("bit_rate", "max_bit_rate"):
            if number(v) is not None:
                parts.append(f"{k.replace('_', ' ')} {v / 1000:.0f} kb/s")
        else:
            parts.append(f"{k.replace('_', ' ')} {v}")
    return ", ".join(parts)


def decisions(plan: dict | None) -> list[Decision]:
    """Every decision of a plan (single output or ladder) that carries a reason, in plan order:
    each part with a `reason` (or a stage's `reasons`), frames on the GPU or not, the notes,
    skipped renditions and fallbacks."""
    out: list[Decision] = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            if "name" in value and "video" in value and isinstance(value["video"], dict):
                # an output: a ladder's rung, or a single transcode's one ("video")
                where = "" if value["name"] == "video" else f"rendition {value['name']}"
            reasons = texts(value.get("reason")) or texts(value.get("reasons"))
            if reasons:
                what = _summary(value) or ("no device" if value.get("device", 0) is None else "")
                out.append(Decision(where, what, "; ".join(reasons)))
            for k, v in value.items():
                if isinstance(v, dict | list) and k not in ("options", "hdr", "nvenc", "nvdec"):
                    walk(v, f"{where}.{k}" if where else k)
            if why := "; ".join(texts(value.get("frames_reason"))):
                out.append(Decision(f"{where}.frames" if where else "frames",
                                    "on the GPU" if value.get("frames_on_gpu") else "host memory",
                                    why))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")

    plan = mapping(plan)
    walk(plan, "")
    for key in ("notes", "skipped", "fallbacks"):
        for note in texts(plan.get(key)):
            out.append(Decision(key.rstrip("s"), "", note))
    return out


def renditions(plan: dict | None, report: dict | None) -> list[dict[str, Any]]:
    """A ladder's renditions as table rows (empty for a single output); a field of the wrong
    type is left out. Reports before the plan's `outputs` (and `package`) named them
    `renditions`."""
    sizes = {o.name: o.size for o in reports.outputs(report) if o.name is not None}
    plan = mapping(plan)
    rungs = plan.get("renditions") if "outputs" not in plan else \
        plan["outputs"] if plan.get("package") != "file" else []
    rows = []
    for r in rungs if isinstance(rungs, list) else []:
        if not isinstance(r, dict):
            continue
        v = mapping(r.get("video"))
        name = text(r.get("name"))
        width, height = whole(v.get("width")), whole(v.get("height"))
        rows.append({"name": name, "size": f"{width}x{height}" if width and height else "?",
                     "codec": text(v.get("codec")), "encoder": text(v.get("encoder")),
                     "bit_rate": number(v.get("bit_rate")),
                     "max_bit_rate": number(r.get("max_bit_rate")),
                     "quality": number(v.get("quality")), "gop": whole(r.get("gop")),
                     "bytes": sizes.get(name), "reason": text(v.get("reason"))})
    return rows


MAX_SHOTS = 24  # thumbnails on a job page's contact sheet


@dataclass(frozen=True)
class Pictures:
    """What a job's page shows as pictures: a frame at each shot's start (an analysis job's
    contact sheet) and a before/after pair for an upscale."""

    of: str  # where the frames come from: "output" (a file) or "source" (a ladder's folder)
    shots: list[float] = field(default_factory=list)  # seconds, into `of`
    before_after: bool = False


def pictures(plan: dict | None, output: str) -> Pictures:
    """The pictures of a job from its plan and its output as it is on disk (`output`: the real
    path): its shots from the stages' sidecar beside the output (or inside a ladder's set);
    nothing that cannot be read."""
    is_file = os.path.isfile(output)
    stages = (plan or {}).get("stages")
    upscale = isinstance(stages, list) and any(
        isinstance(s, dict) and s.get("kind") == "upscale" for s in stages)
    sidecar = output + ".mediad.json" if is_file else os.path.join(output, "analysis.mediad.json")
    shots: list[float] = []
    try:
        with open(sidecar, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        doc = None
    found = doc.get("shots") if isinstance(doc, dict) else None
    if isinstance(found, list):
        shots = [float(s["start"]) for s in found[:MAX_SHOTS]
                 if isinstance(s, dict) and isinstance(s.get("start"), int | float)]
    # A ladder's set is a folder: its frames come from the source (same timeline)
    return Pictures("output" if is_file else "source", shots, upscale and is_file)
