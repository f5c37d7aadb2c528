"""The API's contracts: every request and answer a typed pydantic model, the JSON error
body, and how the store's records become them (file names made safe for JSON)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from mediad.api import reports
from mediad.api.text import clean
from mediad.daemon import job_events
from mediad.daemon.job_events import EventKind
from mediad.daemon.queue import Command, Job, JobState

# ----- the contracts ----------------------------------------------------------------------------

class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Model):
    """Every error: what went wrong, in a line, and a machine-readable reason."""

    error: str
    reason: str


class JobView(_Model):
    """A job as the store holds it (its report left out: see JobDetail)."""

    id: int
    state: JobState
    source: str
    watch: str
    profile: str
    output: str
    attempts: int
    reason: str | None
    error: str | None
    size: int = Field(description="the source's size in bytes")
    priority: int
    created: float = Field(description="seconds since the epoch")
    updated: float
    started: float | None
    finished: float | None
    duration: float | None = Field(description="finished - started, seconds")
    gpu: str | None
    node: str | None = Field(description="the cluster node that ran it; null: this machine")
    frames_done: int | None
    frames_total: int | None
    fps: float | None
    disposed: bool = Field(description="on_success / failed_dir applied to the source")
    moved_to: str | None = Field(description="where a failed source was moved")
    output_dir: str | None = Field(description="the output folder a submit named; null: the "
                                               "watch's")


class JobEventView(_Model):
    """One line of a job's event log, as the store recorded it."""

    at: float = Field(description="seconds since the epoch")
    kind: EventKind
    detail: str | None
    path: str | None = Field(description="the file it concerns (an output, a moved source)")


class JobDetail(JobView):
    """A job with its report (the plan with its decisions and reasons, the outputs) when it
    recorded one, and its event log (oldest first)."""

    report: dict[str, Any] | None
    plan: dict[str, Any] | None
    events: list[JobEventView] = Field(default_factory=list)


class JobPage(_Model):
    """One page of jobs, newest first."""

    jobs: list[JobView]
    total: int = Field(description="jobs that match the filters, on every page")
    limit: int
    offset: int
    next_cursor: int | None = Field(description="pass as `before` for the next page; null: last")


class SubmitRequest(_Model):
    """A file to transcode: under a watched folder, with a profile by name."""

    path: str = Field(max_length=4096, description="absolute path of a file under a watch")
    profile: str = Field(max_length=255, description="a built-in or configured profile's name")
    output_dir: str | None = Field(default=None, max_length=4096,
                                   description="inside a configured output_dir; default: the "
                                               "watch's")


class PriorityRequest(_Model):
    """A queued job's new priority (higher runs first)."""

    priority: int = Field(ge=-1_000_000_000, le=1_000_000_000)


class CommandView(_Model):
    """A command the daemon's loop applies: what was asked and, once applied, what came of it."""

    id: int
    kind: Literal["cancel", "priority", "submit", "retry"]
    job: int | None = Field(description="the job it is about; a submit's: the job it queued "
                                        "(or that has the content already), once applied")
    value: int | None
    created: float
    applied: float | None
    result: str | None = Field(description="the daemon's word: queued, exists: job N, "
                                           "requeued, cancelled, cancelling, priority N, "
                                           "refused: REASON: why, is STATE: ...")
    ok: bool | None = Field(description="null while not applied")


class ProfileSummary(_Model):
    """A profile a submit may name."""

    name: str
    description: str
    builtin: bool
    ladder: bool
    watches: list[str] = Field(description="watched folders that use it")


class ProfileDetail(ProfileSummary):
    """A profile: its TOML and its settings as validated."""

    toml: str
    settings: dict[str, Any]


class ValidateRequest(_Model):
    """A profile's TOML text."""

    toml: str = Field(max_length=1_000_000)


class ValidateResult(_Model):
    """Every error of a profile, `key.path: reason`; none: valid."""

    valid: bool
    errors: list[str]


class GpuReport(_Model):
    """`mediad gpus --json --no-probe`: the GPUs NVML sees and their telemetry."""

    model_config = ConfigDict(extra="allow")
    available: bool
    reason: str | None
    driver_version: str | None
    cuda_driver_version: Any
    cuda_visible_devices: str | None
    probed: bool
    devices: list[dict[str, Any]]
    auto: dict[str, Any] | None
    read_at: float = Field(description="when this report was read (it is cached briefly)")


class NodeView(_Model):
    """A cluster node as the daemon last recorded it (Ray executor)."""

    node: str
    alive: bool
    declared: dict[str, float]
    used: dict[str, float]
    seen: float


class StateCounts(_Model):
    """Jobs in each state."""

    queued: int
    running: int
    done: int
    failed: int
    cancelled: int


class Stats(_Model):
    """Counts, throughput over the last 24 hours, and bytes saved."""

    counts: StateCounts
    done_last_24h: int
    frames_last_24h: int
    jobs_per_hour: float = Field(description="done jobs per hour over the last 24 h")
    frames_per_hour: float
    bytes_in: int = Field(description="sources of done jobs whose output size is known")
    bytes_out: int
    bytes_saved: int = Field(description="bytes_in - bytes_out")


class JobEvent(_Model):
    """One event of GET /api/v1/events (the `data:` line)."""

    job: int
    state: JobState
    frames_done: int | None
    frames_total: int | None
    fps: float | None
    updated: float


class Health(_Model):
    status: Literal["ok"]


class Ready(_Model):
    ready: bool
    problems: list[str]


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": what} for code, what in (
        (401, "no token, or not the right one"), (404, "no such job, command or profile"),
        (422, "the request is not valid"))}


class ApiError(Exception):
    """An error answered as ErrorBody with this status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def _status_reason(status: int) -> str:
    return {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
            409: "conflict", 413: "too_large", 415: "unsupported_media_type"}.get(status, "error")


def _error(status: int, reason: str, message: str, **kw: Any) -> JSONResponse:
    return JSONResponse(ErrorBody(error=clean(message), reason=reason).model_dump(),
                        status_code=status, **kw)


def _job_view(job: Job, detail: bool = False,
              events: list[job_events.JobEvent] | None = None) -> JobView | JobDetail:
    d: dict[str, Any] = {k: getattr(job, k) for k in JobView.model_fields if hasattr(job, k)}
    for k in ("source", "watch", "output", "profile", "error", "moved_to", "reason", "output_dir"):
        if d.get(k) is not None:
            d[k] = clean(d[k])
    d["disposed"] = bool(job.disposed)
    d["duration"] = round(job.finished - job.started, 3) if job.started and job.finished else None
    if not detail:
        return JobView(**d)
    report = reports.parse(job.report)
    plan = reports.plan(report)
    return JobDetail(**d, report=report, plan=plan,
                     events=[JobEventView(at=e.at, kind=e.kind, detail=clean(e.detail) if e.detail
                                          else None, path=clean(e.path) if e.path else None)
                             for e in events or []])


def _command_view(c: Command) -> CommandView:
    return CommandView(id=c.id, kind=c.kind, job=c.job, value=c.value, created=c.created,  # type: ignore[arg-type]
                       applied=c.applied, result=clean(c.result) if c.result else None, ok=c.ok)
