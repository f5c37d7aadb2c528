"""The REST API, end to end: the real daemon as a subprocess with [api], real HTTP over loopback
(httpx), real files, outputs read back by the independent ffmpeg; schemathesis over the live
OpenAPI schema."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from api_site import ApiSite, api_client, api_in_process, api_site, serving  # noqa: E402
from conftest import packet_times  # noqa: E402
from test_daemon import REPO, Site, make_video, wait_for  # noqa: E402

pytestmark = pytest.mark.slow
# Examples per operation for schemathesis: small by default (well under a minute); raise it for a
# longer hunt, e.g. MEDIAD_API_FUZZ_EXAMPLES=200
FUZZ_EXAMPLES = int(os.environ.get("MEDIAD_API_FUZZ_EXAMPLES", "12"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiSite]:
    s = api_site(tmp_path_factory.mktemp("api"))
    (s.inbox / "api").mkdir()  # under the watch's root, not taken by its (flat) intake
    with serving(s):
        yield s


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A job of the slow profile runs for many seconds (it is cancelled long before its end)."""
    return make_video(tmp_path_factory.mktemp("media") / "long.mkv", frames=1500, size=(320, 240))


@pytest.fixture(scope="module")
def client(site: ApiSite) -> Iterator[httpx.Client]:
    with api_client(site) as c:
        yield c


def submit(client: httpx.Client, path: Path, profile: str = "fast", **more: object) -> dict:
    res = client.post("/api/v1/jobs", json={"path": str(path), "profile": profile, **more})
    assert res.status_code in (201, 202), res.text
    command = res.json()
    command = wait_for(lambda: (c := client.get(f"/api/v1/commands/{command['id']}").json())
                       ["applied"] and c, 30, "the submit to be applied")
    assert command["ok"], command
    return command


def wait_job(client: httpx.Client, job_id: int, state: str, timeout: float = 60) -> dict:
    return wait_for(lambda: (j := client.get(f"/api/v1/jobs/{job_id}").json())["state"] == state
                    and j, timeout, f"job {job_id} {state}")  # type: ignore[return-value]


# ----- health, auth, the token ------------------------------------------------------------

def test_health_ready_and_auth(site: ApiSite) -> None:
    assert httpx.get(f"{site.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{site.url}/readyz")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "problems": []}
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": site.token},
                    {"Authorization": f"Basic {site.token}"}):
        res = httpx.get(f"{site.url}/api/v1/jobs", headers=headers)
        assert res.status_code == 401, (headers, res.text)
        assert res.json()["reason"] == "unauthorized" and set(res.json()) == {"error", "reason"}
        assert res.headers["www-authenticate"] == "Bearer"
    ok = httpx.get(f"{site.url}/api/v1/jobs", headers={"Authorization": f"Bearer {site.token}"})
    assert ok.status_code == 200 and ok.json()["jobs"] == []
    assert httpx.get(f"{site.url}/openapi.json").json()["info"]["title"] == "mediad"


def test_api_token_command_prints_the_0600_file(site: ApiSite) -> None:
    path = site.root / "state" / "api-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    res = subprocess.run([sys.executable, "-m", "mediad", "api", "token", "--config", str(site.config)],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr
    assert res.stdout == path.read_text() and len(res.stdout.strip()) >= 40
    (site.root / "other").mkdir()
    cfg = site.root / "other" / "mediad.toml"
    cfg.write_text('[daemon]\nstate_dir = "state"\n[[watch]]\npath = "."\noutput_dir = "/tmp"\n')
    res = subprocess.run([sys.executable, "-m", "mediad", "api", "token", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 1 and res.stdout == ""
    assert "no API token yet" in res.stderr


# ----- submit --------------------------------------------------------------------------------

def test_submit_runs_to_done(site: ApiSite, client: httpx.Client, tmp_path: Path) -> None:
    source = make_video(site.inbox / "api" / "clip.mp4", frames=12, seed=3)
    command = submit(client, source)
    assert command["kind"] == "submit" and command["result"] == "queued"
    job = wait_job(client, command["job"], "done")
    out = site.out / "api" / "clip.mp4"
    assert job["output"] == str(out) and job["source"] == str(source)
    assert job["profile"].endswith("fast.toml") and job["frames_done"] == 12
    assert job["report"]["outputs"][0]["size"] == out.stat().st_size
    assert job["plan"] is not None and job["plan"]["outputs"][0]["video"]
    assert len(packet_times(out, "0:v:0")) == 12  # the independent ffmpeg reads every frame
    # The same content with the same profile: the job it has already
    again = client.post("/api/v1/jobs", json={"path": str(source), "profile": "fast"})
    assert again.status_code == 201 and again.json()["result"].startswith(f"exists: job {job['id']}")
    # Another profile, a sub-folder of the output_dir: a job of its own
    other = submit(client, source, "h264", output_dir=str(site.out / "h264"))
    done = wait_job(client, other["job"], "done")
    assert done["output"] == str(site.out / "h264" / "api" / "clip.mp4")
    assert done["output_dir"] == str(site.out / "h264") and job["output_dir"] is None
    assert len(packet_times(Path(done["output"]), "0:v:0")) == 12


def test_submits_outside_the_roots_or_malformed_are_refused(site: ApiSite, client: httpx.Client,
                                                           tmp_path: Path) -> None:
    outside = make_video(tmp_path / "outside.mp4")
    link = site.inbox / "api" / "link.mp4"
    link.symlink_to(outside)
    good = make_video(site.inbox / "api" / "good.mp4", seed=9)
    cases = [
        ({"path": str(outside), "profile": "fast"}, 403, "outside_watch"),
        ({"path": str(site.inbox / "api" / ".." / ".." / outside.name), "profile": "fast"}, 403,
         "outside_watch"),
        ({"path": str(link), "profile": "fast"}, 403, "symlink"),
        ({"path": str(good), "profile": "fast", "output_dir": str(tmp_path)}, 403, "outside_watch"),
        ({"path": str(good), "profile": "fast", "output_dir": str(site.inbox)}, 403, "outside_watch"),
        ({"path": str(good), "profile": "no-such-profile"}, 422, "bad_profile"),
        ({"path": str(good), "profile": str(site.root / "slow.toml")}, 422, "bad_profile"),
        ({"path": "in/api/good.mp4", "profile": "fast"}, 422, "bad_request"),
        ({"path": str(site.inbox / "api" / "missing.mp4"), "profile": "fast"}, 422, "missing_input"),
        ({"path": str(good)}, 422, "bad_request"),
        ({"path": str(good), "profile": "fast", "extra": 1}, 422, "bad_request"),
        ({"path": str(good) + "\0", "profile": "fast"}, 422, "bad_request"),
    ]
    for body, status, reason in cases:
        res = client.post("/api/v1/jobs", json=body)
        assert (res.status_code, res.json()["reason"]) == (status, reason), (body, res.text)
        assert res.json()["error"]
    res = client.post("/api/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert res.status_code == 422 and res.json()["reason"] == "bad_request"
    assert client.get("/api/v1/jobs/999999").status_code == 404
    assert client.get("/api/v1/jobs/0").status_code == 422
    assert client.get(f"/api/v1/jobs/{2**70}").status_code == 422
    assert client.post("/api/v1/jobs/999999/cancel").json()["reason"] == "no_job"
    assert client.get("/api/v1/commands/999999").status_code == 404
    assert client.get("/api/v1/nothing-here").json()["reason"] == "not_found"
    assert not any(j["source"] == str(good) for j in client.get("/api/v1/jobs").json()["jobs"])


# ----- retry, cancel, priority --------------------------------------------------------------

def test_retry_a_failed_job_once_its_file_is_fixed(site: ApiSite, client: httpx.Client,
                                                   tmp_path: Path) -> None:
    source = site.inbox / "api" / "broken.mp4"
    source.write_text("not a video\n")
    mine = str(site.out / "mine")  # an output folder of its own: kept through the retry
    job = wait_job(client, submit(client, source, output_dir=mine)["job"], "failed")
    assert job["reason"] and job["error"]
    moved = Path(wait_for(lambda: client.get(f"/api/v1/jobs/{job['id']}").json()["moved_to"], 15,
                          "the failed source to be moved to failed_dir"))  # type: ignore[arg-type]
    assert moved.parent == site.root / "failed" and not source.exists()
    # Retry of a job that is not failed: refused
    assert client.post("/api/v1/jobs/1/retry").json()["reason"] == "not_failed"
    os.replace(make_video(tmp_path / "fixed.mp4", seed=21), moved)  # fixed where it lies
    res = client.post(f"/api/v1/jobs/{job['id']}/retry")
    assert res.status_code == 200, res.text
    assert res.json()["result"] == f"requeued (moved back from {moved})" and res.json()["ok"]
    done = wait_job(client, job["id"], "done")
    assert done["attempts"] == 0 and source.exists() and not moved.exists()
    assert done["output"] == str(site.out / "mine" / "api" / "broken.mp4")
    assert len(packet_times(Path(done["output"]), "0:v:0")) == 12
    # Its whole story, as the store recorded it: failed, moved aside, requeued by the retry, done
    events = wait_for(lambda: (e := client.get(f"/api/v1/jobs/{job['id']}").json()["events"])
                      and e[-1]["kind"] == "disposed" and e, 15, "the done job's disposal")
    assert [e["kind"] for e in events] == ["queued", "started", "failed", "disposed", "requeued",
                                           "started", "done", "disposed"], events
    assert events[2]["detail"].startswith(job["reason"] + ": ")
    assert events[3]["path"] == str(moved) and events[6]["path"] == done["output"]
    assert events[4]["detail"] == "user_retry: requeued by mediad retry"
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    # Its key is the fixed content's with its profile and folder: submitted again, the same job
    again = client.post("/api/v1/jobs", json={"path": str(source), "profile": "fast",
                                              "output_dir": mine})
    assert again.json()["result"] == f"exists: job {job['id']} (done)", again.text


def test_cancel_a_running_job_and_reorder_a_queued_one(site: ApiSite, client: httpx.Client,
                                                       long_video: Path) -> None:
    slow = Path(shutil.copy(long_video, site.inbox / "api" / "long.mkv"))
    queued_src = make_video(site.inbox / "api" / "waiting.mp4", seed=31)
    running = submit(client, slow, "slow")["job"]
    wait_for(lambda: (client.get(f"/api/v1/jobs/{running}").json()["frames_done"] or 0) > 0, 60,
             "the slow job to make progress")
    waiting = submit(client, queued_src)["job"]  # one worker: it waits
    assert client.get(f"/api/v1/jobs/{waiting}").json()["state"] == "queued"
    listed = client.get("/api/v1/jobs", params={"state": "queued"}).json()
    assert [j["id"] for j in listed["jobs"]] == [waiting]

    res = client.post(f"/api/v1/jobs/{waiting}/priority", json={"priority": 7})
    assert res.status_code == 200 and res.json()["result"] == "priority 7", res.text
    assert client.get(f"/api/v1/jobs/{waiting}").json()["priority"] == 7
    assert client.post(f"/api/v1/jobs/{running}/priority", json={"priority": 1}).status_code == 409
    assert client.post(f"/api/v1/jobs/{waiting}/priority", json={"priority": "x"}).status_code == 422

    res = client.post(f"/api/v1/jobs/{running}/cancel")
    assert res.status_code == 200 and res.json()["result"] == "cancelled", res.text
    job = client.get(f"/api/v1/jobs/{running}").json()
    assert job["state"] == "cancelled" and slow.exists()  # the source left where it is
    assert not Path(job["output"]).exists()
    assert not [p for p in (site.out / "api").iterdir() if p.name.startswith(".long.")]
    done = wait_job(client, waiting, "done")  # the worker freed takes the queued one
    assert len(packet_times(Path(done["output"]), "0:v:0")) == 12
    assert not [p for p in (site.out / "api").iterdir() if p.name.startswith(".")]  # no partials
    again = client.post(f"/api/v1/jobs/{running}/cancel")
    assert again.status_code == 409 and again.json()["error"].startswith("is cancelled")


# ----- events ---------------------------------------------------------------------------------

def test_events_stream_progress_and_state_changes(site: ApiSite, client: httpx.Client) -> None:
    events: list[tuple[str, str, dict]] = []
    ready = threading.Event()
    stop = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{site.url}/api/v1/events", timeout=60,
                          headers={"Authorization": f"Bearer {site.token}"}) as res:
            assert res.headers["content-type"].startswith("text/event-stream")
            block: dict[str, str] = {}
            for line in res.iter_lines():
                ready.set()
                if line.startswith(("id:", "event:", "data:")):
                    key, _, value = line.partition(":")
                    block[key] = value.strip()
                elif not line and "data" in block:
                    events.append((block["id"], block["event"], json.loads(block["data"])))
                    block = {}
                if stop.is_set():
                    return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert ready.wait(10)
    # content of its own (a copy of the cancelled job's would be that job: `exists`)
    # long enough (seconds, even on fast cores) for progress rows after the one with `running`
    source = make_video(site.inbox / "api" / "watched.mkv", frames=600, size=(320, 240), seed=5)
    job_id = submit(client, source, "slow")["job"]
    wait_for(lambda: any(e[2]["job"] == job_id and e[2]["state"] == "done" for e in events), 90,
             "the done event")
    stop.set()
    mine = [e for e in events if e[2]["job"] == job_id]
    states = [e[2]["state"] for e in mine if e[1] == "state"]
    assert states[0] in ("queued", "running") and states[-1] == "done" and "running" in states
    progress = [e[2]["frames_done"] for e in mine if e[1] == "progress"]
    assert progress and progress == sorted(progress) and 0 < progress[0] <= 600, mine
    ids = [float(e[0]) for e in mine]
    assert ids == sorted(ids)
    # Resumed from an id: the events after it again
    with httpx.stream("GET", f"{site.url}/api/v1/events", timeout=10, headers={
            "Authorization": f"Bearer {site.token}", "Last-Event-ID": mine[0][0]}) as res:
        for line in res.iter_lines():
            if line.startswith("data:") and json.loads(line[5:])["job"] == job_id:
                break


def test_an_event_stream_reads_on_one_connection_closed_when_it_ends(tmp_path: Path) -> None:
    """The API served in this process (so its SQLite connections can be counted; the daemon's
    open files cannot tell: SQLite keeps a closed connection's file open for the next one)."""
    import gc
    import sqlite3

    def open_connections() -> int:
        found = 0
        for obj in gc.get_objects():
            if isinstance(obj, sqlite3.Connection):
                with contextlib.suppress(sqlite3.ProgrammingError):  # closed
                    obj.in_transaction  # noqa: B018 - raises once closed
                    found += 1
        return found

    with api_in_process(tmp_path) as (url, token, _config):
        assert open_connections() == 0
        with httpx.stream("GET", f"{url}/api/v1/events", timeout=10,
                          headers={"Authorization": f"Bearer {token}"}) as res:
            lines = res.iter_lines()
            assert next(lines) == "retry: 2000"
            seen = []
            for _ in range(12):  # 3 s: six of the stream's looks at the store
                seen.append(open_connections())
                time.sleep(0.25)
            assert seen == [1] * 12, seen
        wait_for(lambda: open_connections() == 0, 10, "the stream's connection to be closed")


# ----- profiles, machine, stats, listing -----------------------------------------------------

def test_profiles_list_show_validate(client: httpx.Client) -> None:
    listed = {p["name"]: p for p in client.get("/api/v1/profiles").json()}
    assert listed["fast"]["builtin"] is False and listed["fast"]["watches"]
    assert listed["h264"]["builtin"] is True and listed["hls"]["ladder"] is True
    fast = client.get("/api/v1/profiles/fast").json()
    assert 'speed = "fastest"' in fast["toml"] and fast["settings"]["video"]["codec"] == "h264"
    assert client.get("/api/v1/profiles/nope").status_code == 404
    assert client.get("/api/v1/profiles/..%2Fslow.toml").status_code == 404
    ok = client.post("/api/v1/profiles/validate", json={"toml": '[video]\ncodec = "hevc"\n'})
    assert ok.json() == {"valid": True, "errors": []}
    bad = client.post("/api/v1/profiles/validate", json={
        "toml": 'container = "avi"\n[video]\nquality = 99\ncolour = 1\n'}).json()
    assert bad["valid"] is False
    assert any(e.startswith("container: ") for e in bad["errors"])
    assert "video.colour: unknown key" in bad["errors"]
    assert any(e.startswith("video.quality: ") for e in bad["errors"])
    syntax = client.post("/api/v1/profiles/validate", json={"toml": "[video\n"}).json()
    assert syntax["valid"] is False and "not valid TOML" in syntax["errors"][0]


def test_a_profile_file_is_parsed_again_only_when_it_changes(tmp_path: Path) -> None:
    from mediad.api.profile_cache import ProfileCache
    from mediad.errors import MediadError

    path = tmp_path / "mine.toml"
    path.write_text('description = "first"\n[video]\ncodec = "h264"\n')
    cache = ProfileCache()
    first = cache.load(str(path))
    assert first.description == "first" and first.name == "mine"
    assert cache.load(str(path)) is first  # unchanged: the very same, not parsed again
    path.write_text('description = "second, longer"\n[video]\ncodec = "hevc"\n')
    edited = cache.load(str(path))
    assert (edited.description, edited.video.codec) == ("second, longer", "hevc")
    assert cache.load("h264") is cache.load("h264")  # a built-in, by name
    path.write_text('description = "broken"\n[video]\ncodec = "mpeg2"\n')
    with pytest.raises(MediadError):
        cache.load(str(path))
    path.unlink()
    with pytest.raises(MediadError, match="not found"):
        cache.load(str(path))


def test_an_edited_configured_profile_is_listed_once_the_daemon_reloads(site: ApiSite,
                                                                        client: httpx.Client) -> None:
    """A configured profile is listed as the daemon runs it: as its config loaded it, until a
    reload (SIGHUP); its edit then shows at the next request, in the list and in detail."""
    profile = site.root / "slow.toml"
    before = {p["name"]: p for p in client.get("/api/v1/profiles").json()}
    profile.write_text('description = "edited for the listing"\n' + profile.read_text())
    assert client.get("/api/v1/profiles").json() == list(before.values())
    reloads = site.log().count("event=config_reloaded")
    site.signal(signal.SIGHUP)
    site.wait_log("event=config_reloaded", count=reloads + 1)
    after = {p["name"]: p for p in client.get("/api/v1/profiles").json()}
    assert after["slow"]["description"] == "edited for the listing"
    assert {k: v for k, v in after.items() if k != "slow"} == \
        {k: v for k, v in before.items() if k != "slow"}
    detail = client.get("/api/v1/profiles/slow").json()
    assert detail["description"] == "edited for the listing"
    assert detail["toml"].startswith('description = "edited')
    assert detail["settings"]["description"] == "edited for the listing"


def test_gpus_nodes_stats_and_listing(client: httpx.Client) -> None:
    gpus = client.get("/api/v1/gpus")
    assert gpus.status_code == 200 and gpus.json()["probed"] is False
    if not gpus.json()["available"]:
        assert gpus.json()["devices"] == [] and gpus.json()["reason"]
    assert client.get("/api/v1/nodes").json() == []
    stats = client.get("/api/v1/stats").json()
    page = client.get("/api/v1/jobs", params={"limit": 500}).json()
    by_state = {s: sum(j["state"] == s for j in page["jobs"]) for s in stats["counts"]}
    assert stats["counts"] == by_state and page["total"] == len(page["jobs"])
    assert stats["done_last_24h"] == by_state["done"] and stats["frames_last_24h"] > 0
    assert stats["bytes_in"] > 0 and stats["bytes_saved"] == stats["bytes_in"] - stats["bytes_out"]
    # bytes_out: each done job's output size, recorded by the daemon when it was done
    reports = [client.get(f"/api/v1/jobs/{j['id']}").json()["report"] for j in page["jobs"]
               if j["state"] == "done"]
    assert stats["bytes_out"] == sum(o["size"] for r in reports for o in r["outputs"]) > 0
    ids = [j["id"] for j in page["jobs"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    walked, cursor = [], None
    while True:  # by cursor, two at a time
        params = {"limit": 2, **({"before": cursor} if cursor else {})}
        chunk = client.get("/api/v1/jobs", params=params).json()
        walked += [j["id"] for j in chunk["jobs"]]
        if (cursor := chunk["next_cursor"]) is None:
            break
    assert walked == ids
    assert [j["id"] for j in client.get("/api/v1/jobs", params={"limit": 2, "offset": 1})
            .json()["jobs"]] == ids[1:3]
    done = client.get("/api/v1/jobs", params={"state": "done", "profile": "h264"}).json()
    assert done["jobs"] and all(j["state"] == "done" and j["profile"] == "h264" for j in done["jobs"])
    assert client.get("/api/v1/jobs", params={"state": "lost"}).status_code == 422
    assert client.get("/api/v1/jobs", params={"limit": 0}).status_code == 422


# ----- the schema, fuzzed (last: it may cancel or reorder jobs) ----------------------------------

def test_openapi_schema_holds_under_fuzzing(site: ApiSite) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(f"{site.url}/openapi.json")
    auth = {"Authorization": f"Bearer {site.token}"}
    checks = [not_a_server_error, response_schema_conformance, status_code_conformance,
              content_type_conformance]
    started = time.monotonic()
    tried = 0
    operations = [r.ok() for r in schema.exclude(path="/api/v1/events").get_all_operations()]
    for operation, mode in itertools.product(operations, GenerationMode):
        # positive: requests the schema allows; negative: ones it does not (each must be a 4xx)

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            # the submit/commands waits cut short: a fuzzed request must not hold the test
            case.call_and_validate(headers=auth, checks=checks, timeout=15)

        try:
            run()
        except Unsatisfiable:  # negative, and nothing to make invalid (no parameters, no body)
            assert mode is GenerationMode.NEGATIVE
        tried += 1
    assert tried >= 2 * 14
    assert time.monotonic() - started < 120 or FUZZ_EXAMPLES > 12
    assert httpx.get(f"{site.url}/healthz").status_code == 200


def test_a_daemon_without_api_never_imports_the_web_stack(tmp_path: Path) -> None:
    plain = Site(tmp_path)
    plain.env["PYTHONPROFILEIMPORTTIME"] = "1"  # every import, in the log (stderr)
    plain.start()
    make_video(plain.inbox / "a.mp4", seed=41)
    plain.wait_jobs("done", 1, timeout=30)
    assert plain.stop() == 0
    imported = plain.log()
    assert "import time:" in imported and "mediad.daemon.service" in imported
    for module in ("fastapi", "uvicorn", "starlette", "jinja2", "mediad.api.app",
                   "mediad.api.dashboard"):
        assert f" {module}\n" not in imported and f" {module}." not in imported, module
