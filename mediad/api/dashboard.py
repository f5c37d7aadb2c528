"""The web dashboard (docs/api.md, Dashboard): server-rendered pages at `/` on the API's app.

Pages need the session cookie that /login sets for the API token; forms carry a CSRF token
(session.py) and a cross-site Origin is refused. Reads use their own read-only connections on
the server's thread pool; writes call the very REST handlers (commands the daemon's loop
applies), so the dashboard can do nothing the API cannot.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import jinja2
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from markupsafe import Markup
from starlette.templating import Jinja2Templates

from mediad.api import charts, thumbs, views
from mediad.api.contracts import ApiError, _job_view
from mediad.api.forms import Forbidden, Refused, read_fields
from mediad.api.reports import outputs, timing
from mediad.api.session import (
    COOKIE,
    SESSION_SECONDS,
    csrf_token,
    csrf_valid,
    new_session,
    session_valid,
)
from mediad.api.text import shown
from mediad.api.token import token_matches
from mediad.daemon.job_events import read as read_events
from mediad.daemon.queue import MAX_ID, read_command, read_job
from mediad.gpu.history import TelemetryHistory

HERE = Path(__file__).parent
ID = re.compile(r"[0-9]{1,18}")  # a query's id (ASCII digits, below 2**63)
NEXT = re.compile(r"/(jobs/[0-9]{1,19})?\Z")  # where a form may send the browser back to
REASON = re.compile(r"[a-z_]{1,40}\Z")
SECONDS = re.compile(r"[0-9]{1,6}(\.[0-9]{1,3})?")  # a frame's time in a picture's query
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Backend:
    """What the dashboard uses of the API's app: its token, its reads and its REST handlers."""

    token: str
    reading: Callable[[], AbstractContextManager[sqlite3.Connection]]
    retry: Callable[[int, float], Response]
    cancel: Callable[[int, float], Response]
    priority: Callable[[int, int, float], Response]
    profiles: Callable[[], list[Any]]
    profile: Callable[[str], Any]  # ProfileDetail; raises ApiError 404
    gpus: Callable[[], Any]
    nodes: Callable[[], list[Any]]
    stats: Callable[[sqlite3.Connection], Any]  # Stats, read on the page's connection
    history: TelemetryHistory


class LoginNeeded(Exception):
    """A page asked for without a valid session: the browser goes to /login."""


# ----- formatting (Jinja filters) ---------------------------------------------------------------

def human_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    sign, n = ("-" if n < 0 else ""), abs(float(n))
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.1f} {unit}"
        n /= 1000
    return f"{sign}{n:.1f} TB"


def human_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 10:
        return f"{s:.1f}s"
    s = int(round(s))
    return f"{s}s" if s < 60 else f"{s // 60}m {s % 60:02d}s" if s < 3600 else \
        f"{s // 3600}h {s % 3600 // 60:02d}m"


def when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "–"


def basename(path: str | None) -> str:
    return (path or "").rstrip("/").rsplit("/", 1)[-1]


def _shown(value: Any) -> Any:
    """Every {{ value }} of a page: a string clean (a name that is not UTF-8 escaped, as the
    API gives it) with its control characters escaped; markup made here (charts) as it is."""
    return shown(value) if isinstance(value, str) and not isinstance(value, Markup) else value


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, finalize=_shown)
    env.filters.update(bytes=human_bytes, seconds=human_seconds, when=when, basename=basename)
    return Jinja2Templates(env=env)


# ----- the routes ---------------------------------------------------------------------------------

def install_dashboard(app: FastAPI, backend: Backend) -> None:
    """Add the dashboard's pages, forms and static files to the API's app."""
    templates = _templates()
    token = backend.token
    router = APIRouter(include_in_schema=False)

    @app.exception_handler(LoginNeeded)
    async def _login(request: Request, _e: LoginNeeded) -> Response:
        return RedirectResponse("/login", status_code=303, headers=SECURITY_HEADERS)

    @app.exception_handler(Refused)
    async def _refused(request: Request, e: Refused) -> Response:
        return page(request, "error.html", None, status=e.status, title=e.title, message=str(e))

    def session_of(request: Request) -> str:
        value = request.cookies.get(COOKIE)
        if not session_valid(value, token):
            raise LoginNeeded()
        return value  # type: ignore[return-value]

    def page(request: Request, name: str, session: str | None, status: int = 200,
             **context: Any) -> HTMLResponse:
        context.setdefault("title", "")
        context.update(request=request, nav=request.url.path,
                       csrf=csrf_token(session, token) if session else "")
        return templates.TemplateResponse(request, name, context, status_code=status,
                                          headers=SECURITY_HEADERS)

    async def form_of(request: Request, session: str | None) -> dict[str, str]:
        """The posted form, after the Origin and (with a session) CSRF checks."""
        fields = await read_fields(request)
        if session is not None and not csrf_valid(fields.get("csrf"), session, token):
            raise Forbidden("This form has no valid CSRF token: reload the page and try again.")
        return fields

    def secure(request: Request) -> bool:
        return request.url.scheme == "https" or \
            request.headers.get("x-forwarded-proto", "").lower() == "https"

    @router.get("/login")
    def login_form(request: Request) -> Response:
        if session_valid(request.cookies.get(COOKIE), token):
            return RedirectResponse("/", status_code=303)
        return page(request, "login.html", None, title="Log in", error="")

    @router.post("/login")
    async def login(request: Request) -> Response:
        fields = await form_of(request, None)
        if not token_matches(fields.get("token", "").strip(), token):
            return page(request, "login.html", None, status=401, title="Log in",
                        error="That is not the daemon's API token.")
        res = RedirectResponse("/", status_code=303, headers=SECURITY_HEADERS)
        res.set_cookie(COOKIE, new_session(token), max_age=SESSION_SECONDS, httponly=True,
                       samesite="strict", secure=secure(request), path="/")
        return res

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        await form_of(request, session_of(request))
        res = RedirectResponse("/login", status_code=303, headers=SECURITY_HEADERS)
        res.delete_cookie(COOKIE, httponly=True, samesite="strict", secure=secure(request),
                          path="/")
        return res

    def notice(request: Request, conn: sqlite3.Connection) -> dict[str, str] | None:
        """What the last form did, from ?command=ID (the daemon's answer) or ?refused=REASON."""
        q = request.query_params
        if ID.fullmatch(cid := q.get("command", "")):
            c = read_command(conn, int(cid))
            if c is not None:
                return {"kind": "error" if c.ok is False else "ok",
                        "text": f"job {c.job}: {c.kind}: "
                                f"{c.result or 'asked; the daemon has not answered yet'}"}
        if REASON.match(q.get("refused", "")) and ID.fullmatch(job := q.get("job", "")):
            return {"kind": "error", "text": f"job {job}: refused ({q['refused']})"}
        return None

    @router.get("/")
    def queue(request: Request) -> Response:
        session = session_of(request)
        with backend.reading() as conn:
            view = views.queue_view(conn)
            stats = backend.stats(conn)
            told = notice(request, conn)
        return page(request, "queue.html", session, title="Queue", view=view, live="all",
                    notice=told, stats=stats)

    @router.get("/jobs/{job_id}")
    def job_page(request: Request, job_id: int) -> Response:
        session = session_of(request)
        # One read of the job, on one connection, for everything the page shows
        with backend.reading() as conn:
            # `real`: its paths as they are; the view's (`job`) are made safe to show
            real = read_job(conn, job_id) if 1 <= job_id <= MAX_ID else None
            if real is not None:
                job = _job_view(real, detail=True)
                events = views.job_events(conn, real, read_events(conn, job_id), job.report)
                told = notice(request, conn)
        if real is None:
            return page(request, "error.html", session, status=404, title="No such job",
                        message=f"job {job_id}: no such job")
        elapsed, fps = timing(job.report)
        return page(request, "job.html", session, title=f"Job {job_id}", job=job,
                    picture=thumbs.picture_source(real.output, real.source) is not None,
                    pictures=views.pictures(job.plan, real.output) if job.state == "done"
                    else None,
                    decisions=views.decisions(job.plan),
                    renditions=views.renditions(job.plan, job.report), events=events,
                    live=str(job_id) if job.state in ("queued", "running") else "",
                    notice=told, outputs=outputs(job.report), elapsed=elapsed, fps=fps,
                    unreadable=bool(real.report) and job.report is None,
                    out_size=real.out_size)

    @router.get("/jobs/{job_id}/picture.jpg")
    def picture(request: Request, job_id: int) -> Response:
        session_of(request)
        job = None
        if 1 <= job_id <= MAX_ID:
            with backend.reading() as conn:
                job = read_job(conn, job_id)
        path = thumbs.picture_source(job.output, job.source) if job else None
        data = thumbs.thumbnail(path) if path else None
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=60",
                                 "X-Content-Type-Options": "nosniff"})

    @router.get("/jobs/{job_id}/frame.jpg")
    def frame(request: Request, job_id: int, at: str = "", of: str = "output",
              w: str = "320") -> Response:
        """A frame `at` seconds into the job's output or source (no `at`: a tenth of the way
        in), `w` (320 or 640) pixels wide: the shots' contact sheet, an upscale's before/after."""
        session_of(request)
        job = None
        if 1 <= job_id <= MAX_ID and (at == "" or SECONDS.fullmatch(at)) \
                and of in ("output", "source") and w in ("320", "640"):
            with backend.reading() as conn:
                job = read_job(conn, job_id)
        path = (job.output if of == "output" else job.source) if job else None
        data = thumbs.thumbnail(path, int(w), float(at) if at else None) \
            if path and os.path.isfile(path) else None
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=60",
                                 "X-Content-Type-Options": "nosniff"})

    async def act(request: Request, job_id: int, call: Callable[[dict[str, str]], Response]
                  ) -> Response:
        fields = await form_of(request, session_of(request))
        back = fields.get("next", "/")
        back = back if NEXT.match(back) else "/"
        if not 1 <= job_id <= MAX_ID:  # no job has such an id (SQLite's are 64-bit)
            return RedirectResponse(f"{back}?refused=no_job&job={job_id}", status_code=303)
        try:
            res = await anyio.to_thread.run_sync(call, fields)
        except ApiError as e:
            return RedirectResponse(f"{back}?refused={e.reason}&job={job_id}", status_code=303)
        except ValueError:
            return RedirectResponse(f"{back}?refused=bad_request&job={job_id}", status_code=303)
        body = json.loads(bytes(res.body))
        if "id" in body:
            return RedirectResponse(f"{back}?command={body['id']}", status_code=303)
        return RedirectResponse(f"{back}?refused={body.get('reason', 'conflict')}&job={job_id}",
                                status_code=303)

    @router.post("/jobs/{job_id}/retry")
    async def retry(request: Request, job_id: int) -> Response:
        return await act(request, job_id, lambda f: backend.retry(job_id, 10.0))

    @router.post("/jobs/{job_id}/cancel")
    async def cancel(request: Request, job_id: int) -> Response:
        return await act(request, job_id, lambda f: backend.cancel(job_id, 10.0))

    @router.post("/jobs/{job_id}/priority")
    async def priority(request: Request, job_id: int) -> Response:
        def call(f: dict[str, str]) -> Response:
            value = int(f.get("priority", ""))
            if abs(value) > 1_000_000_000:
                raise ValueError(value)
            return backend.priority(job_id, value, 5.0)

        return await act(request, job_id, call)

    @router.get("/gpus")
    def gpus(request: Request) -> Response:
        session = session_of(request)
        report = backend.gpus()
        now = time.time()
        plots = []
        for index, samples in backend.history.snapshot().items():
            name = backend.history.names.get(index, f"GPU {index}")
            series = []
            for key, label in (("sm", "SM"), ("encoder", "NVENC"), ("decoder", "NVDEC")):
                pts = [(s.at, getattr(s, key)) for s in samples]
                last = next((v for _, v in reversed(pts) if v is not None), None)
                series.append((label, last, charts.sparkline(
                    pts, start=now - 3600, end=now,
                    label=f"{name} {label} utilisation over the last hour")))
            mem = [(s.at, None if s.memory_used is None or not s.memory_total
                    else 100.0 * s.memory_used / s.memory_total) for s in samples]
            last_mem = next((v for _, v in reversed(mem) if v is not None), None)
            series.append(("memory", last_mem, charts.sparkline(
                mem, start=now - 3600, end=now,
                label=f"{name} memory in use over the last hour, percent")))
            plots.append({"index": index, "name": name, "series": series,
                          "samples": len(samples)})
        return page(request, "gpus.html", session, title="GPUs and nodes", report=report,
                    plots=plots, nodes=backend.nodes(), interval=backend.history.interval)

    @router.get("/history")
    def history(request: Request) -> Response:
        session = session_of(request)
        with backend.reading() as conn:
            days = views.history(conn)
            stats = backend.stats(conn)
        short = [d.day[5:] for d in days]
        return page(request, "history.html", session, title="History", days=days,
                    stats=stats,
                    done_chart=charts.bars([(s, d.done) for s, d in zip(short, days, strict=True)],
                                           label="jobs done per day", unit=" jobs"),
                    saved_chart=charts.bars(
                        [(s, d.saved / 1e6) for s, d in zip(short, days, strict=True)],
                        label="megabytes saved per day", unit=" MB"),
                    frames_chart=charts.bars(
                        [(s, d.frames) for s, d in zip(short, days, strict=True)],
                        label="frames transcoded per day", unit=" frames"))

    @router.get("/profiles")
    def profiles(request: Request) -> Response:
        session = session_of(request)
        return page(request, "profiles.html", session, title="Profiles",
                    profiles=backend.profiles())

    @router.get("/profiles/{name}")
    def profile(request: Request, name: str) -> Response:
        session = session_of(request)
        try:
            found = backend.profile(name)
        except ApiError as e:
            return page(request, "error.html", session, status=e.status, title="No such profile",
                        message=e.message)
        return page(request, "profile.html", session, title=f"Profile {name}", profile=found)

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
