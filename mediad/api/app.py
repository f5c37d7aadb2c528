"""The REST API (docs/api.md): FastAPI on pydantic models, versioned under /api/v1.

Reads open their own read-only SQLite connection per request, and an event stream one for its
life (WAL: they never wait on the daemon's writes, nor it on them). Writes are commands (the store's commands table), applied by
the daemon's main loop in order, as `mediad cancel` does; a request waits a little for the
answer and otherwise hands back the command to poll (GET /api/v1/commands/{id}).
"""

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path as FsPath
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from mediad import log
from mediad.api.contracts import (
    ERRORS,
    ApiError,
    CommandView,
    ErrorBody,
    GpuReport,
    Health,
    JobDetail,
    JobEvent,
    JobPage,
    NodeView,
    PriorityRequest,
    ProfileDetail,
    ProfileSummary,
    Ready,
    StateCounts,
    Stats,
    SubmitRequest,
    ValidateRequest,
    ValidateResult,
    _command_view,
    _error,
    _job_view,
    _status_reason,
    clean,
)
from mediad.api.head import HeadAsGet
from mediad.api.profile_cache import ProfileCache
from mediad.api.ready import ReadinessBox
from mediad.api.session import COOKIE, SAFE_METHODS, session_valid
from mediad.api.token import token_matches
from mediad.config import Config
from mediad.daemon.job_events import read as read_events
from mediad.daemon.queue import (
    DB_NAME,
    MAX_ID,
    STATES,
    Command,
    Job,
    JobState,
    add_command,
    connect,
    counts,
    db_path,
    job_of_row,
    read_command,
    read_job,
    read_nodes,
)
from mediad.daemon.submit import FORBIDDEN, check_submission, profile_specs
from mediad.daemon.submit import profile_of as configured_profile
from mediad.errors import InvalidFile, MediadError, Reason
from mediad.gpu.history import TelemetryHistory
from mediad.profiles import Profile, builtin_names, parse_profile, resolve_profile_path

POLL = 0.5  # seconds between the event stream's looks at the store
GPU_CACHE = 10.0  # seconds a GPU report is served again before it is read anew
COMMAND_POLL = 0.05

JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="a job's id")]
Wait = Annotated[float, Query(ge=0.0, le=30.0, description="seconds to wait for the daemon "
                                                          "to apply the command")]


# ----- the app ---------------------------------------------------------------------------------

def create_app(state_dir: FsPath, get_config: Callable[[], Config], readiness: ReadinessBox,
               token: str, stopping: threading.Event | None = None,
               gpu_history: TelemetryHistory | None = None) -> FastAPI:
    """The ASGI app of one daemon: its state database, its config (as reloaded), its loop's
    readiness and its token; `stopping` set ends the event streams (the server stops);
    `gpu_history` the last hour of GPU telemetry (the dashboard's plots)."""
    stopping = stopping or threading.Event()
    gpu_history = gpu_history or TelemetryHistory()
    db = state_dir / DB_NAME
    gpu_cache: dict[str, GpuReport] = {}
    gpu_lock = threading.Lock()
    profile_cache = ProfileCache()

    @contextlib.contextmanager
    def reading() -> Iterator[sqlite3.Connection]:
        conn = connect(db, readonly=True)
        try:
            yield conn
        finally:
            conn.close()

    def command(kind: str, job_id: int | None, value: int | None = None,
                args: dict | None = None) -> int:
        conn = connect(db)  # the daemon made the schema; only the commands table is written
        try:
            return add_command(conn, kind, job_id, value, args)
        except MediadError as e:  # the state disk is full: Insufficient Storage, not a 500
            raise ApiError(507, e.reason, str(e)) from None
        finally:
            conn.close()

    def get_command(command_id: int) -> Command | None:
        with reading() as conn:
            return read_command(conn, command_id)

    def wait_command(command_id: int, wait: float, settled: Callable[[Command], bool]) -> Command:
        deadline = time.monotonic() + wait
        while True:
            c = get_command(command_id)
            assert c is not None
            if (c.result is not None and settled(c)) or time.monotonic() >= deadline:
                return c
            time.sleep(COMMAND_POLL)

    def get_job(job_id: int) -> Job:
        with reading() as conn:
            job = read_job(conn, job_id)
        if job is None:
            raise ApiError(404, Reason.NO_JOB, f"job {job_id}: no such job")
        return job

    def answer(c: Command) -> JSONResponse:
        """A job command's answer: 200 applied, 202 not yet, 409 refused (the job's state)."""
        if c.ok is False:
            reason, message = c.refusal()
            return _error(409, reason, message)
        return JSONResponse(_command_view(c).model_dump(), status_code=200 if c.ok else 202)

    bearer = HTTPBearer(auto_error=False, description="the token in state_dir/api-token "
                                                      "(`mediad api token` prints it)")

    def authorized(request: Request,
                   creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if "authorization" in request.headers:
            # Any Authorization header must carry the token: another scheme (Basic), none
            # (a bare Bearer) or a wrong one is 401, whatever cookie comes with it
            if creds is not None and creds.scheme.lower() == "bearer" \
                    and token_matches(creds.credentials, token):
                return
        # The dashboard's session cookie (SameSite=Strict, HttpOnly) is good for reads only:
        # its page's script reads the event stream; every write needs the bearer token.
        elif request.method in SAFE_METHODS and session_valid(request.cookies.get(COOKIE), token):
            return
        raise ApiError(401, "unauthorized", "an Authorization: Bearer <token> header with the "
                                            "daemon's API token is needed")

    app = FastAPI(title="mediad", version="1", docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json",
                  description="The mediad daemon's REST API (docs/api.md). Writes are commands "
                              "the daemon's loop applies in order.")

    app.add_middleware(HeadAsGet)  # the cookie authorises GET and HEAD: both are answered

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, e: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        return _error(e.status, e.reason, e.message, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, e: StarletteHTTPException) -> JSONResponse:
        if e.status_code == 400:  # a body that is not JSON (not UTF-8): a bad body like any other
            return _error(422, Reason.BAD_REQUEST, f"body: {e.detail}")
        return _error(e.status_code, _status_reason(e.status_code), str(e.detail),
                      headers=getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, e: RequestValidationError) -> JSONResponse:
        lines = []
        for err in e.errors()[:10]:
            loc = ".".join(str(p) for p in err.get("loc", ()))
            lines.append(f"{loc}: {err.get('msg', 'invalid')}")
        return _error(422, Reason.BAD_REQUEST, "; ".join(lines) or "invalid request")

    @app.exception_handler(Exception)
    async def _internal(_request: Request, e: Exception) -> JSONResponse:
        log.event("api_internal_error", logging.ERROR, error=f"{type(e).__name__}: {e}")
        return _error(500, Reason.INTERNAL_ERROR, "internal error (the daemon's log says more)")

    @app.get("/healthz", response_model=Health, tags=["health"])
    def healthz() -> Health:
        """The process answers."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Ready, tags=["health"],
             responses={503: {"model": Ready, "description": "not ready"}})
    def readyz() -> JSONResponse:
        """The store is writable, every watch's observer runs, the loop turns."""
        ok, why = readiness.current.verdict()
        return JSONResponse(Ready(ready=ok, problems=[clean(w) for w in why]).model_dump(),
                            status_code=200 if ok else 503)

    api = APIRouter(prefix="/api/v1", dependencies=[Depends(authorized)], responses=ERRORS)

    @api.get("/jobs", response_model=JobPage, tags=["jobs"])
    def list_jobs(
        state: Annotated[JobState | None, Query()] = None,
        watch: Annotated[str | None, Query(max_length=4096, description="a watched folder")] = None,
        profile: Annotated[str | None, Query(max_length=4096)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
        before: Annotated[int | None, Query(ge=1, le=MAX_ID,
                                            description="cursor: jobs older than this id")] = None,
    ) -> JobPage:
        """Jobs, newest first; filter by state, watch, profile; page by offset or cursor."""
        where, args = [], []
        for column, value in (("state", state), ("watch", watch), ("profile", profile)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(db_path(str(value)))
        filters = " WHERE " + " AND ".join(where) if where else ""
        page = (filters + (" AND " if where else " WHERE ") + "id < ?") if before else filters
        with reading() as conn:
            total = conn.execute(f"SELECT COUNT(*) FROM jobs{filters}", args).fetchone()[0]
            rows = conn.execute(f"SELECT * FROM jobs{page} ORDER BY id DESC LIMIT ? OFFSET ?",
                                [*args, *([before] if before else []), limit, offset]).fetchall()
        jobs = [_job_view(job_of_row(r)) for r in rows]
        more = len(rows) == limit and bool(jobs)
        return JobPage(jobs=jobs, total=total, limit=limit, offset=offset,
                       next_cursor=jobs[-1].id if more else None)

    @api.get("/jobs/{job_id}", response_model=JobDetail, tags=["jobs"])
    def show_job(job_id: JobId) -> JobDetail:
        """One job with its report (plan decisions and reasons, outputs), error and event log."""
        job = get_job(job_id)
        with reading() as conn:
            events = read_events(conn, job_id)
        return _job_view(job, detail=True, events=events)  # type: ignore[return-value]

    @api.post("/jobs", response_model=CommandView, status_code=201, tags=["jobs"], responses={
        202: {"model": CommandView, "description": "asked; not applied yet: poll the command"},
        403: {"model": ErrorBody, "description": "outside the watched folders (or a link)"},
        409: {"model": ErrorBody, "description": "refused by the daemon when it applied it"}})
    def submit(body: SubmitRequest, wait: Wait = 5.0) -> JSONResponse:
        """Queue a file under a watched folder with a profile by name (a submit command)."""
        try:
            check_submission(get_config(), body.path, body.profile, body.output_dir)
        except MediadError as e:
            raise ApiError(403 if e.reason in FORBIDDEN else 422, e.reason, str(e)) from None
        args = body.model_dump()
        command_id = command("submit", None, args=args)
        c = wait_command(command_id, wait, lambda c: True)
        if c.ok is False:
            reason, message = c.refusal()
            return _error(403 if reason in FORBIDDEN else 409, reason, message)
        return JSONResponse(_command_view(c).model_dump(), status_code=201 if c.ok else 202)

    job_command = {200: {"model": CommandView, "description": "applied"},
                   202: {"model": CommandView, "description": "asked; not applied yet"},
                   409: {"model": ErrorBody, "description": "not in a state for it"}}

    @api.post("/jobs/{job_id}/retry", response_model=CommandView, tags=["jobs"],
              responses=job_command)
    def retry(job_id: JobId, wait: Wait = 10.0) -> JSONResponse:
        """Requeue a failed job as `mediad retry` does (its source moved back from failed_dir)."""
        job = get_job(job_id)
        if job.state != JobState.FAILED:
            raise ApiError(409, Reason.NOT_FAILED, f"job {job_id}: is {job.state}; only failed "
                                                   "jobs can be retried")
        return answer(wait_command(command("retry", job_id), wait, lambda c: True))

    @api.post("/jobs/{job_id}/cancel", response_model=CommandView, tags=["jobs"],
              responses=job_command)
    def cancel(job_id: JobId, wait: Wait = 10.0) -> JSONResponse:
        """Cancel a job: a queued one never runs, a running one is stopped (source left)."""
        get_job(job_id)
        c = wait_command(command("cancel", job_id), wait,
                         lambda c: c.result != "cancelling" or get_job(job_id).state != "running")
        if c.result == "cancelling" and get_job(job_id).state == JobState.CANCELLED:
            c = Command(**{**c.__dict__, "result": "cancelled"})
        return answer(c)

    @api.post("/jobs/{job_id}/priority", response_model=CommandView, tags=["jobs"],
              responses=job_command)
    def priority(job_id: JobId, body: PriorityRequest, wait: Wait = 5.0) -> JSONResponse:
        """Reorder a queued job (higher runs first)."""
        get_job(job_id)
        return answer(wait_command(command("priority", job_id, body.priority), wait,
                                   lambda c: True))

    @api.get("/commands/{command_id}", response_model=CommandView, tags=["jobs"])
    def show_command(command_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> CommandView:
        """A command and, once the daemon applied it, its result (a submit's job)."""
        c = get_command(command_id)
        if c is None:
            raise ApiError(404, "no_command", f"command {command_id}: no such command")
        return _command_view(c)

    def profile_of(config: Config, spec: str) -> Profile:
        """A configured profile as the config loaded it, a built-in one as its file is now
        (cached); MediadError when that file went bad."""
        return configured_profile(config, spec, profile_cache.load)

    def summaries(config: Config) -> dict[str, tuple[str, Profile, ProfileSummary]]:
        """name -> (spec, profile, summary) of each profile a submit may name."""
        out: dict[str, tuple[str, Profile, ProfileSummary]] = {}
        builtins = set(builtin_names())
        for name, spec in sorted(profile_specs(config).items()):
            watches = [clean(str(w.path)) for w in config.watch if w.profile == spec]
            try:
                profile = profile_of(config, spec)
            except MediadError:  # a built-in edited into an invalid one: not offered
                continue
            out[name] = (spec, profile, ProfileSummary(
                name=name, description=profile.description, builtin=spec in builtins,
                ladder=profile.is_ladder, watches=watches))
        return out

    @api.get("/profiles", response_model=list[ProfileSummary], tags=["profiles"])
    def list_profiles() -> list[ProfileSummary]:
        """The profiles a submit may name: the configured ones and the built-in ones."""
        return [summary for _, _, summary in summaries(get_config()).values()]

    @api.get("/profiles/{name}", response_model=ProfileDetail, tags=["profiles"])
    def show_profile(name: Annotated[str, Path(max_length=255)]) -> ProfileDetail:
        """A profile's TOML and its settings as validated."""
        found = summaries(get_config()).get(name)
        if found is None:
            raise ApiError(404, Reason.BAD_PROFILE, f"unknown profile {name!r}")
        spec, profile, summary = found
        try:
            text = resolve_profile_path(spec).read_text(encoding="utf-8", errors="replace")
        except (OSError, MediadError) as e:
            text = f"# cannot read it now: {e}\n"
        return ProfileDetail(**summary.model_dump(), toml=text,
                             settings=profile.model_dump(mode="json"))

    @api.post("/profiles/validate", response_model=ValidateResult, tags=["profiles"])
    def validate_profile(body: ValidateRequest) -> ValidateResult:
        """Validate a profile's TOML: every error as `key.path: reason`."""
        source = "profile"
        try:
            parse_profile(body.toml, source, "submitted")
        except InvalidFile as e:
            return ValidateResult(valid=False, errors=[clean(x.removeprefix(f"{source}: "))
                                                       for x in e.errors])
        except MediadError as e:
            return ValidateResult(valid=False, errors=[clean(str(e).removeprefix(f"{source}: "))])
        except RecursionError:  # a TOML nested past Python's limit
            return ValidateResult(valid=False, errors=["(top level): nested too deeply"])
        return ValidateResult(valid=True, errors=[])

    @api.get("/gpus", response_model=GpuReport, tags=["machine"])
    def gpus() -> GpuReport:
        """`mediad gpus --json --no-probe` (NVML telemetry; no NVENC/NVDEC trials), cached
        for a few seconds."""
        with gpu_lock:
            cached = gpu_cache.get("report")
            if cached is None or time.time() - cached.read_at > GPU_CACHE:
                try:
                    from mediad.gpu import gpus_report

                    report = gpus_report(probe=False)
                except Exception as e:  # noqa: BLE001 - no NVML, a driver in a bad state
                    report = {"available": False, "reason": f"{type(e).__name__}: {e}",
                              "driver_version": None, "cuda_driver_version": None,
                              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                              "probed": False, "devices": [], "auto": None}
                cached = GpuReport(**json.loads(json.dumps(report, default=str)),
                                   read_at=time.time())
                gpu_cache["report"] = cached
        return cached

    @api.get("/nodes", response_model=list[NodeView], tags=["machine"])
    def nodes() -> list[NodeView]:
        """The cluster's nodes as the daemon last recorded them; empty for local workers."""
        with reading() as conn:
            return [NodeView(node=clean(n.node), alive=n.alive, declared=n.declared, used=n.used,
                             seen=n.seen) for n in read_nodes(conn)]

    @api.get("/stats", response_model=Stats, tags=["machine"])
    def stats() -> Stats:
        """Counts by state, throughput over the last 24 h, bytes saved by done jobs."""
        with reading() as conn:
            return stats_of(conn)

    def stats_of(conn: sqlite3.Connection) -> Stats:
        """What GET /stats answers, read on the caller's connection (a dashboard page's)."""
        since = time.time() - 86400
        by_state = counts(conn)
        done, frames = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(frames_done), 0) FROM jobs WHERE state = 'done' "
            "AND finished >= ?", (since,)).fetchone()
        bytes_in, bytes_out = conn.execute(
            "SELECT COALESCE(SUM(size), 0), COALESCE(SUM(out_size), 0) FROM jobs "
            "WHERE state = 'done' AND out_size > 0").fetchone()
        return Stats(counts=StateCounts(**{s: by_state.get(s, 0) for s in STATES}),
                     done_last_24h=done, frames_last_24h=frames, jobs_per_hour=round(done / 24, 3),
                     frames_per_hour=round(frames / 24, 1), bytes_in=bytes_in,
                     bytes_out=bytes_out, bytes_saved=bytes_in - bytes_out)

    def changes(conn: sqlite3.Connection, since: float) -> list[sqlite3.Row]:
        return conn.execute("SELECT id, state, frames_done, frames_total, fps, updated FROM "
                            "jobs WHERE updated > ? ORDER BY updated, id LIMIT 1000",
                            (since,)).fetchall()

    def active(conn: sqlite3.Connection) -> dict[int, str]:
        return {r[0]: r[1] for r in conn.execute(
            "SELECT id, state FROM jobs WHERE state IN ('queued', 'running')")}

    @api.get("/events", tags=["jobs"], response_class=StreamingResponse, responses={200: {
        "description": "text/event-stream: `event: state` (a job's state changed) or "
                       "`event: progress` (frames, fps), `data:` a JobEvent as JSON, `id:` to "
                       "resume from with Last-Event-ID",
        "content": {"text/event-stream": {"schema": {"type": "string"}}}}})
    async def events(request: Request, last_event_id: Annotated[
            str | None, Header(alias="Last-Event-ID", max_length=64)] = None) -> StreamingResponse:
        """Server-sent events of job state changes and progress (the store is read every
        half second)."""
        since = time.time()
        if last_event_id is not None:
            with contextlib.suppress(ValueError):
                since = min(float(last_event_id), since) if float(last_event_id) >= 0 else since

        async def stream() -> AsyncIterator[str]:
            nonlocal since
            # One read-only connection for the stream's life, not one per look: its reads
            # run on the thread pool one at a time (each to its end: no snapshot is held)
            conn = await anyio.to_thread.run_sync(
                lambda: connect(db, readonly=True, any_thread=True))
            try:
                states: dict[int, str] = await anyio.to_thread.run_sync(active, conn)
                yield "retry: 2000\n: connected\n\n"
                while not stopping.is_set() and not await request.is_disconnected():
                    for row in await anyio.to_thread.run_sync(changes, conn, since):
                        kind = "progress" if states.get(row["id"]) == row["state"] else "state"
                        states[row["id"]] = row["state"]
                        since = max(since, row["updated"])
                        data = JobEvent(job=row["id"], state=row["state"],
                                        frames_done=row["frames_done"],
                                        frames_total=row["frames_total"], fps=row["fps"],
                                        updated=row["updated"])
                        yield (f"id: {row['updated']!r}\nevent: {kind}\n"
                               f"data: {data.model_dump_json()}\n\n")
                    if len(states) > 10000:
                        states = {k: v for k, v in states.items() if v in ("queued", "running")}
                    await asyncio.sleep(POLL)
            finally:
                conn.close()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    app.include_router(api)

    from mediad.api.dashboard import Backend, install_dashboard  # jinja2: only with [api]

    install_dashboard(app, Backend(
        token=token, reading=reading, retry=retry, cancel=cancel,
        priority=lambda job_id, value, wait: priority(job_id, PriorityRequest(priority=value),
                                                      wait),
        profiles=list_profiles, profile=show_profile, gpus=gpus, nodes=nodes, stats=stats_of,
        history=gpu_history))
    return app
