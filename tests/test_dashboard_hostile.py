"""The dashboard and the API against hostile input, end to end: the real daemon as a subprocess
with [api], real HTTP (httpx, and raw sockets where a client would tidy the request up). File
names that are not UTF-8 or hold control characters, reports damaged in the state database,
odd query values and ids, oversized or overfull forms, odd Authorization headers and HEAD:
each answers a page or a 4xx, never a 500, and leaves no traceback in the daemon's log."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("jinja2")

from api_site import ApiSite, api_client, api_site, serving, session_client  # noqa: E402
from test_daemon import make_video, wait_for  # noqa: E402

pytestmark = pytest.mark.slow

LATIN1 = b"caf\xe9.mp4"  # a name from an SMB share: Latin-1, not UTF-8
CONTROL = b"ctl\x1b[31m\x07.mp4"  # ESC and BEL in a name


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiSite]:
    with serving(api_site(tmp_path_factory.mktemp("hostile"), slow_watch=False)) as s:
        yield s


@pytest.fixture(scope="module")
def odd_jobs(site: ApiSite, tmp_path_factory: pytest.TempPathFactory) -> dict[bytes, dict]:
    """Done jobs of files whose names are not UTF-8 or hold control characters."""
    tmp = tmp_path_factory.mktemp("media")
    for i, name in enumerate((LATIN1, CONTROL)):
        video = make_video(tmp / f"v{i}.mp4", frames=25, size=(160, 90), seed=40 + i)
        os.rename(bytes(video), os.path.join(bytes(site.inbox), name))
    # As the list API gives them: the byte that is not UTF-8 escaped, the rest as it is
    shown = {LATIN1: "caf\\xe9.mp4", CONTROL: "ctl\x1b[31m\x07.mp4"}
    with api_client(site) as client:
        def done() -> dict[bytes, dict] | None:
            jobs = client.get("/api/v1/jobs", params={"state": "done"}).json()["jobs"]
            found = {raw: next((j for j in jobs if j["source"].endswith("/" + text)), None)
                     for raw, text in shown.items()}
            return found if all(found.values()) else None

        return wait_for(done, 90, "both odd names to be done")  # type: ignore[return-value]


def _no_surrogate_or_control(text: str) -> None:
    assert not re.search(r"[\ud800-\udfff]", text)
    assert "\x1b" not in text and "\x07" not in text


def test_names_that_are_not_utf8_are_shown_escaped(site: ApiSite, odd_jobs: dict) -> None:
    latin1, control = odd_jobs[LATIN1], odd_jobs[CONTROL]
    with session_client(site) as client:
        queue = client.get("/")
        assert queue.status_code == 200, queue.text
        assert "caf\\xe9.mp4" in queue.text
        assert "ctl\\x1b[31m\\x07.mp4" in queue.text  # control characters escaped on a page
        _no_surrogate_or_control(queue.text)
        for job in (latin1, control):
            page = client.get(f"/jobs/{job['id']}")
            assert page.status_code == 200, page.text
            _no_surrogate_or_control(page.text)
        page = client.get(f"/jobs/{latin1['id']}")
        assert f"{site.inbox}/caf\\xe9.mp4" in page.text  # the source
        assert "caf\\xe9" in page.text.split('id="h-events"')[1]  # the event log's paths
        # The picture is taken from the real file, not from its escaped name
        picture = client.get(f"/jobs/{latin1['id']}/picture.jpg")
        assert picture.status_code == 200 and picture.headers["content-type"] == "image/jpeg"
        assert picture.content[:2] == b"\xff\xd8"
    with api_client(site) as client:
        res = client.get(f"/api/v1/jobs/{latin1['id']}")
        assert res.status_code == 200, res.text
        detail = res.json()
        assert detail["source"] == f"{site.inbox}/caf\\xe9.mp4"
        assert "\\xe9" in json.dumps(detail["report"])  # the output's path, escaped
        assert any("caf\\xe9" in (e["path"] or "") for e in detail["events"])
        assert "\\udce9" not in res.text  # no lone surrogate escaped as such


# ----- reports damaged in the state database ----------------------------------------------------

CORRUPT_REPORTS = {
    "truncated JSON": '{"outputs": [{"size": 1', "not JSON": "garbage", "a JSON list": "[1, 2]",
    "outputs: 5": '{"outputs": 5}', 'outputs: ["x"]': '{"outputs": ["x"]}',
    "outputs: {}": '{"outputs": {"a": 1}}', 'plan.renditions: ["x"]': '{"plan": {"renditions": ["x"]}}',
    "plan.renditions odd": '{"plan": {"renditions": [{"name": 1, "video": 5, "max_bit_rate": "x"},'
                           ' {"video": {"bit_rate": "fast", "width": [], "quality": {}}}]}}',
    "plan.outputs odd": '{"plan": {"package": 3, "outputs": [{"name": "video", "video": []},'
                        ' 7, {"name": {}, "video": {"width": -1}}]}}',
    'plan.outputs: "x"': '{"plan": {"outputs": "x", "package": "hls"}}',
    "plan reasons odd": '{"plan": {"video": {"reasons": 5, "bit_rate": "x", "reason": "r"},'
                        ' "notes": 7, "skipped": "x", "fallbacks": [{"a": 1}]}}',
    "fallbacks: 7": '{"fallbacks": 7, "warnings": {"a": 1}}', "plan a list": '{"plan": [1]}',
    "output size a string": '{"outputs": [{"size": "big"}]}',
    "output size fractional": '{"outputs": [{"size": 1.5}]}',
    "output size huge": '{"outputs": [{"size": 1e400}, {"size": 99999999999999999999999}]}',
    "elapsed a string": '{"outputs": [{"size": 1}], "elapsed": "x", "fps": "y"}',
    "duration a string": '{"outputs": [{"size": 1, "duration": "x", "width": "w", "frames": {}}]}',
    "NaN and Infinity": '{"outputs": [{"size": NaN, "duration": Infinity}], "elapsed": -Infinity}',
    "nested too deep": '{"a": ' * 5000 + "1" + "}" * 5000,
    "a surrogate key": '{"\\udce9": "\\udce9", "outputs": [{"path": "/x/\\udce9.mp4", "size": 3}]}',
}


def test_a_corrupt_report_leaves_every_page_readable(site: ApiSite, odd_jobs: dict) -> None:
    job = odd_jobs[CONTROL]
    db = sqlite3.connect(site.root / "state" / "queue.sqlite3", timeout=30)
    original = db.execute("SELECT report FROM jobs WHERE id = ?", (job["id"],)).fetchone()[0]
    failures = []
    try:
        with session_client(site) as page, api_client(site) as api:
            for label, report in CORRUPT_REPORTS.items():
                with db:
                    db.execute("UPDATE jobs SET report = ? WHERE id = ?", (report, job["id"]))
                for client, path in ((page, "/"), (page, f"/jobs/{job['id']}"), (page, "/history"),
                                     (api, f"/api/v1/jobs/{job['id']}"), (api, "/api/v1/stats")):
                    res = client.get(path)
                    if res.status_code != 200:
                        failures.append(f"{label}: {path} {res.status_code}")
                        continue
                    if path.startswith("/api/v1/jobs/"):
                        report_back = res.json()["report"]
                        assert report_back is None or isinstance(report_back, dict), label
                        assert "\\udc" not in res.text, label
                    if path == "/api/v1/stats":
                        assert isinstance(res.json()["bytes_out"], int), label
            with db:
                db.execute("UPDATE jobs SET report = ? WHERE id = ?", ("garbage", job["id"]))
            assert "cannot be read" in page.get(f"/jobs/{job['id']}").text
    finally:
        with db:
            db.execute("UPDATE jobs SET report = ? WHERE id = ?", (original, job["id"]))
        db.close()
    assert not failures, failures


# ----- odd query values, ids and forms ----------------------------------------------------------

def _csrf(client: httpx.Client, path: str = "/") -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', client.get(path).text)
    assert found
    return found[1]


def test_odd_query_values_and_ids_are_refused_not_500(site: ApiSite, odd_jobs: dict) -> None:
    job = odd_jobs[LATIN1]["id"]
    with session_client(site) as client:
        for query in ("command=%C2%B2", "command=%D9%A1", "refused=no_job&job=%C2%B2",
                      "command=" + "9" * 30):
            res = client.get(f"/jobs/{job}?{query}")
            assert res.status_code == 200, (query, res.text)
            assert 'role="status"' not in res.text and 'class="notice' not in res.text, query
        csrf = _csrf(client)
        for path, data in ((f"/jobs/{2**64}/cancel", {}), (f"/jobs/{2**63}/retry", {}),
                           (f"/jobs/{2**63}/priority", {"priority": "1"}), ("/jobs/-1/cancel", {}),
                           ("/jobs/0/retry", {})):
            res = client.post(path, data={"csrf": csrf, **data})
            assert res.status_code == 303, (path, res.status_code, res.text)
            assert "refused=no_job" in res.headers["location"], path
        res = client.post(f"/jobs/{job}/priority", data={"csrf": csrf, "priority": "9" * 5000})
        assert res.status_code == 303 and "refused=bad_request" in res.headers["location"]
        # A frame of the job's output (its real, non-UTF-8 path) for the page's pictures; odd
        # queries are a 404, never a 500 or a file outside the job
        res = client.get(f"/jobs/{job}/frame.jpg?at=0.5&of=output&w=640")
        assert res.status_code == 200 and res.content[:2] == b"\xff\xd8", res.status_code
        for query in ("at=abc", "at=-1", "at=1e9", "at=%C2%B2", "of=../../etc/passwd", "of=",
                      "w=99999", "w=0", "at=" + "9" * 40):
            res = client.get(f"/jobs/{job}/frame.jpg?{query}")
            assert res.status_code == 404, (query, res.status_code)
        assert client.get(f"/jobs/{2**63}/frame.jpg").status_code == 404


def test_forms_with_too_many_fields_are_a_400(site: ApiSite) -> None:
    many = "&".join(f"f{i}=1" for i in range(21))
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    res = httpx.post(f"{site.url}/login", content=many, headers=form)
    assert res.status_code == 400 and "Bad request" in res.text, res.text
    with session_client(site) as client:
        csrf = _csrf(client)
        res = client.post("/jobs/1/cancel", content=f"csrf={csrf}&{many}", headers=form)
        assert res.status_code == 400, res.text
        res = client.post("/logout", content=f"csrf={csrf}&{many}", headers=form)
        assert res.status_code == 400, res.text


def _raw(site: ApiSite, head: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", site.api_port), timeout=10)
    sock.sendall(head.encode())
    return sock


def _status_of(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]) if data else 0


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_form_body_is_refused_before_it_is_read(site: ApiSite) -> None:
    # A Content-Length over the limit: answered 413 from the headers alone, no body sent
    sock = _raw(site, f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{site.api_port}\r\n"
                      "Content-Type: application/x-www-form-urlencoded\r\n"
                      "Content-Length: 200000000\r\n\r\n")
    with sock:
        assert _status_of(sock) == 413
    # Chunked, no length: read only up to the limit, whatever follows (32 MB here)
    assert site.proc is not None
    pid = site.proc.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak RSS starts again from now
    before = _peak_rss_kb(pid)
    sock = _raw(site, f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{site.api_port}\r\n"
                      "Content-Type: application/x-www-form-urlencoded\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b"a" * (1 << 20))

    def send() -> None:
        try:
            for _ in range(32):
                sock.sendall(chunk)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the daemon answered and closed: what is wanted

    sender = threading.Thread(target=send)
    sender.start()
    with sock:
        status = _status_of(sock)
        sender.join(30)
    grown = _peak_rss_kb(pid) - before
    assert status == 413
    assert grown < 16 * 1024, f"the daemon's peak RSS grew by {grown} kB for a refused form"
    with session_client(site) as client:  # and it still answers
        assert client.get("/").status_code == 200


# ----- Authorization headers and HEAD -----------------------------------------------------------

def test_any_authorization_but_a_good_bearer_is_401_even_with_a_cookie(site: ApiSite) -> None:
    with session_client(site) as client:
        assert client.get("/api/v1/stats").status_code == 200  # the cookie reads
        for header in ("Basic eDp5", "Token x", "Bearer", "Bearer wrong", "",
                       f"Basic {site.token}", f"Bearer {site.token} x"):
            res = client.get("/api/v1/stats", headers={"Authorization": header})
            assert res.status_code == 401, (header, res.status_code)
            assert res.headers["www-authenticate"] == "Bearer"
    ok = httpx.get(f"{site.url}/api/v1/stats", headers={"Authorization": f"Bearer {site.token}"})
    assert ok.status_code == 200


def test_head_answers_as_get_without_a_body(site: ApiSite, odd_jobs: dict) -> None:
    job = odd_jobs[LATIN1]["id"]
    with api_client(site) as client:
        for path in ("/api/v1/stats", f"/api/v1/jobs/{job}", "/healthz"):
            res = client.head(path)
            assert res.status_code == 200 and res.content == b"", (path, res.status_code)
            assert int(res.headers["content-length"]) == len(client.get(path).content), path
        assert client.head("/api/v1/jobs/99999").status_code == 404
    with session_client(site) as client:
        for path in ("/api/v1/stats", "/", f"/jobs/{job}", "/history", f"/jobs/{job}/picture.jpg"):
            res = client.head(path)
            assert res.status_code == 200 and res.content == b"", (path, res.status_code)
        assert client.head("/jobs/1/cancel").status_code == 405  # a form's route: POST only
        assert client.get("/").status_code == 200  # the connection is still good
    assert httpx.head(f"{site.url}/api/v1/stats").status_code == 401
    assert httpx.head(f"{site.url}/").status_code == 303


def test_none_of_the_probes_left_a_traceback_in_the_daemon_log(site: ApiSite) -> None:
    time.sleep(0.5)  # the last request's log lines
    log = site.log()
    for bad in ("Traceback", "Exception in ASGI application", "api_internal_error"):
        assert bad not in log, log[log.find(bad) - 2000:log.find(bad) + 2000]
