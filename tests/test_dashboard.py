"""The web dashboard, end to end: the real daemon as a subprocess with [api], real files dropped
into its watched folders, a real browser (the system's Chromium driven by Playwright) and plain
HTTP (httpx). Screenshots of every page go to tests/artifacts/dashboard/."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("jinja2")

from api_site import ApiSite, api_in_process, api_site, serving, session_client  # noqa: E402
from api_site import api_client as api  # noqa: E402
from test_daemon import make_video, wait_for  # noqa: E402

from mediad.api.dashboard import human_bytes  # noqa: E402

CHROMIUM = os.environ.get("MEDIAD_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
SHOTS = Path(__file__).resolve().parent / "artifacts" / "dashboard"
PAGES = ("/", "/jobs/1", "/gpus", "/history", "/profiles", "/profiles/fast")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiSite]:
    with serving(api_site(tmp_path_factory.mktemp("dash"))) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, site: ApiSite) -> Iterator[object]:  # type: ignore[no-untyped-def]
    context = browser.new_context(base_url=site.url, viewport={"width": 1200, "height": 900})
    context.set_default_timeout(20_000)
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    context.close()
    assert not errors, errors  # no script error on any page


def login(page, site: ApiSite) -> None:  # type: ignore[no-untyped-def]
    page.goto("/login")
    page.get_by_label("API token").fill(site.token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{site.url}/")


# ----- without a browser ------------------------------------------------------------------------

def test_pages_without_the_cookie_redirect_to_login(site: ApiSite) -> None:
    for path in PAGES:
        res = httpx.get(f"{site.url}{path}")
        assert res.status_code == 303 and res.headers["location"] == "/login", path
    for path in ("/jobs/1/retry", "/jobs/1/cancel", "/logout"):
        assert httpx.post(f"{site.url}{path}").headers.get("location") == "/login", path
    forged = httpx.get(f"{site.url}/", cookies={"mediad_session": "1.x.deadbeef"})
    assert forged.status_code == 303
    login_page = httpx.get(f"{site.url}/login")
    assert login_page.status_code == 200 and 'name="token"' in login_page.text
    assert "frame-ancestors 'none'" in login_page.headers["content-security-policy"]
    assert httpx.get(f"{site.url}/static/dashboard.js").status_code == 200
    wrong = httpx.post(f"{site.url}/login", data={"token": "not-the-token"})
    assert wrong.status_code == 401 and "mediad_session" not in wrong.cookies


def test_the_queue_and_history_pages_read_on_one_connection_and_count_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each page reads the store on one connection and counts the jobs by state once (the
    queue page counted them for its view and again for its stats, on a second connection)."""
    from mediad.api import app as api_app
    from mediad.daemon.fingerprint import Fingerprint
    from mediad.daemon.queue import Queue, connect

    opened: list[sqlite3.Connection] = []
    statements: list[str] = []

    def traced(path: Path, **kw: bool) -> sqlite3.Connection:
        conn = connect(path, **kw)
        opened.append(conn)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(api_app, "connect", traced)
    with api_in_process(tmp_path) as (url, token, config):
        q = Queue(config.daemon.state_dir)
        for i in range(3):
            q.enqueue(key=f"k{i}", source=tmp_path / "in" / f"v{i}.mp4", watch=tmp_path / "in",
                      profile="h264", output=tmp_path / "out" / f"v{i}.mp4",
                      fp=Fingerprint(1000 + i, i, i, f"d{i}"))
        q.mark_running(1, "cpu")
        q.close()
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.post("/login", data={"token": token}).status_code == 303
            for path in ("/", "/history"):
                opened.clear()
                statements.clear()
                res = client.get(path)
                assert res.status_code == 200, res.text
                assert len(opened) == 1, path
                assert sum("GROUP BY state" in s for s in statements) == 1, (path, statements)
            queue = client.get("/").text
            assert '<span class="n">1</span> running' in queue
            assert '<span class="n">2</span> queued' in queue


def test_the_cookie_reads_the_api_but_never_writes(site: ApiSite) -> None:
    with session_client(site) as client:
        assert client.get("/").status_code == 200
        assert client.get("/api/v1/jobs").status_code == 200  # the page's script reads
        for path in ("/api/v1/jobs/1/retry", "/api/v1/jobs/1/cancel"):
            res = client.post(path)
            assert res.status_code == 401 and res.json()["reason"] == "unauthorized", path
        res = client.post("/api/v1/jobs", json={"path": str(site.inbox / "x.mp4"),
                                                "profile": "fast"})
        assert res.status_code == 401


def test_forms_without_the_csrf_token_or_from_another_site_are_refused(site: ApiSite,
                                                                       tmp_path: Path) -> None:
    source = site.inbox / "csrf.mp4"
    source.write_text("not a video\n")
    with api(site) as client:
        job = wait_for(lambda: next((j for j in client.get("/api/v1/jobs?state=failed").json()
                                     ["jobs"] if j["source"] == str(source)), None), 60,
                       "the broken file to fail")
    with session_client(site) as client:
        html = client.get(f"/jobs/{job['id']}").text
        csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
        assert csrf, html
        for data, headers in (({}, {}), ({"csrf": "0" * 64}, {}),
                              ({"csrf": csrf[1]}, {"Origin": "https://evil.example"})):
            res = client.post(f"/jobs/{job['id']}/retry", data=data, headers=headers)
            assert res.status_code == 403, (data, headers, res.text)
            assert "Forbidden" in res.text
        assert client.post("/logout", data={}).status_code == 403  # still logged in after
        with api(site) as a:  # nothing was asked of the daemon
            assert a.get(f"/api/v1/jobs/{job['id']}").json()["state"] == "failed"
        ok = client.post("/logout", data={"csrf": csrf[1]},
                         headers={"Origin": site.url})
        assert ok.status_code == 303 and ok.headers["location"] == "/login"


# ----- in the browser ---------------------------------------------------------------------------

@pytest.mark.browser
def test_login_refuses_a_wrong_token_and_sets_a_strict_cookie(page, site: ApiSite) -> None:  # type: ignore[no-untyped-def]
    page.goto("/")
    assert page.url == f"{site.url}/login"
    page.get_by_label("API token").fill("wrong-token-wrong-token")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text() == "That is not the daemon's API token."
    assert page.context.cookies() == []
    page.screenshot(path=str(SHOTS / "login.png"))
    login(page, site)
    [cookie] = page.context.cookies()
    assert cookie["name"] == "mediad_session" and cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict" and cookie["secure"] is False  # plain http here
    assert page.get_by_role("heading", level=1).inner_text() == "Queue"
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{site.url}/login")
    page.goto("/gpus")
    assert page.url == f"{site.url}/login"


@pytest.mark.browser
def test_a_dropped_file_runs_to_done_before_your_eyes(page, site: ApiSite,  # type: ignore[no-untyped-def]
                                                      tmp_path: Path) -> None:
    login(page, site)
    video = make_video(tmp_path / "talk.mkv", frames=400, size=(320, 240), seed=7)
    shutil.copy(video, site.root / "slow-in" / "talk.mkv")
    # The page is not reloaded: the event stream moves the bar, then a state change brings the
    # row to Done
    row = page.locator("section[aria-labelledby=h-running] tr", has_text="talk.mkv")
    row.wait_for()
    bar = row.locator("progress")
    wait_for(lambda: float(bar.get_attribute("value") or 0) > 0, 60, "the bar to move")
    first = float(bar.get_attribute("value") or 0)
    wait_for(lambda: (v := bar.get_attribute("value")) is None or float(v) > first, 60,
             "the bar to move on")
    if row.count():
        page.screenshot(path=str(SHOTS / "queue-running.png"))
    done = page.locator("section[aria-labelledby=h-done] tr", has_text="talk.mkv")
    done.wait_for(timeout=90_000)
    cells = done.locator("td").all_inner_texts()
    with api(site) as client:
        job = next(j for j in client.get("/api/v1/jobs?state=done").json()["jobs"]
                   if j["source"].endswith("talk.mkv"))
        detail = client.get(f"/api/v1/jobs/{job['id']}").json()
    out = Path(detail["output"]).stat().st_size
    assert out == detail["report"]["outputs"][0]["size"]
    assert cells[0] == f"#{job['id']}"
    assert cells[2:5] == [human_bytes(job["size"]), human_bytes(out),
                          f"{human_bytes(job['size'] - out)} ({round(100 * (job['size'] - out) / job['size'])}%)"]
    page.screenshot(path=str(SHOTS / "queue.png"), full_page=True)

    done.get_by_role("link").click()
    page.wait_for_url(f"{site.url}/jobs/{job['id']}")
    assert "done" in page.get_by_role("heading", level=1).inner_text()
    decisions = page.locator("table.decisions")
    text = decisions.inner_text()
    plan = detail["plan"]
    for reason in (plan["outputs"][0]["video"]["reason"], plan["decode"]["reason"], plan["gpu"]["reason"]):
        assert reason and reason in text, (reason, text)
    assert decisions.locator("th", has_text="video").count() >= 1
    assert page.locator("ol.events").inner_text().count("\n") >= 2  # queued, started, done
    assert "started" in page.locator("ol.events").inner_text()
    picture = page.get_by_role("img", name=re.compile("A frame .* output"))
    wait_for(lambda: picture.evaluate("i => i.complete && i.naturalWidth") == 320, 20,
             "the output's picture (a JPEG PyAV made) to load")
    page.screenshot(path=str(SHOTS / "job.png"), full_page=True)


@pytest.mark.browser
def test_a_failed_job_is_retried_from_its_button(page, site: ApiSite, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    login(page, site)
    source = site.inbox / "broken.mp4"
    source.write_text("this is no video\n")
    row = page.locator("section[aria-labelledby=h-failed] tr", has_text="broken.mp4")
    row.wait_for(timeout=60_000)  # the event stream brings it in, no reload
    with api(site) as client:
        job = next(j for j in client.get("/api/v1/jobs?state=failed").json()["jobs"]
                   if j["source"] == str(source))
        moved = wait_for(lambda: client.get(f"/api/v1/jobs/{job['id']}").json()["moved_to"], 15,
                         "the source moved to failed_dir")
    assert job["reason"] in row.inner_text()
    page.screenshot(path=str(SHOTS / "queue-failed.png"), full_page=True)
    os.replace(make_video(tmp_path / "fixed.mp4", seed=99), moved)  # fixed where it lies
    button = row.get_by_role("button", name=f"Retry job {job['id']}")
    button.focus()
    page.keyboard.press("Enter")  # keyboard-usable
    status = page.get_by_role("status")
    status.wait_for()
    assert f"job {job['id']}: retry: requeued (moved back from {moved})" == status.inner_text()
    with api(site) as client:
        done = wait_for(lambda: (j := client.get(f"/api/v1/jobs/{job['id']}").json())["state"]
                        == "done" and j, 60, "the retried job to be done")
    assert Path(done["output"]).exists() and source.exists()
    # A retry of a job that is not failed: refused, and said
    page.goto(f"/jobs/{job['id']}")
    assert page.get_by_role("button", name=re.compile("Retry")).count() == 0


@pytest.mark.browser
def test_gpus_history_profiles_and_a_phone(page, site: ApiSite) -> None:  # type: ignore[no-untyped-def]
    login(page, site)
    with api(site) as client:
        gpus = client.get("/api/v1/gpus").json()
    page.goto("/gpus")
    text = page.locator("main").inner_text()
    if gpus["available"] or gpus["devices"]:
        assert "over the last hour" in text and page.locator("svg.spark").count() >= 4
    else:
        assert f"No NVIDIA GPU: {gpus['reason']}" in text
    assert "No cluster" in text
    page.screenshot(path=str(SHOTS / "gpus.png"), full_page=True)
    page.goto("/history")
    assert page.locator("svg.bars").count() == 3
    assert page.locator("svg.bars rect.bar").count() == 3 * 14
    page.screenshot(path=str(SHOTS / "history.png"), full_page=True)
    page.goto("/profiles")
    page.get_by_role("link", name="slow", exact=True).click()
    assert 'speed = "medium"' in page.locator("pre").first.inner_text()
    page.screenshot(path=str(SHOTS / "profile.png"), full_page=True)
    page.goto("/profiles/no-such")
    assert "unknown profile" in page.get_by_role("alert").inner_text()
    # A phone: nothing wider than the screen but the tables' own scrolling boxes
    page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/", "/jobs/1", "/gpus", "/history"):
        page.goto(path)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), path
    page.goto("/")
    page.screenshot(path=str(SHOTS / "queue-phone.png"), full_page=True)
