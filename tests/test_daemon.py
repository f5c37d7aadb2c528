"""The watch-folder daemon, end to end: the real daemon as a subprocess, real folders, real signals,
real SQLite, real watchdog observers and real (tiny) media files made with PyAV."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from mediad.daemon.state_room import STATE_FULL_RETRY

REPO = Path(__file__).resolve().parents[1]
SETTLE = 0.3

FAST_PROFILE = """
container = "mp4"
[video]
codec = "h264"
encoder = "cpu"
speed = "fastest"
[audio]
codec = "none"
"""
# Slow enough (x264 "medium" on 250 frames of 320x240) that a job is reliably still running a
# couple of seconds after its first progress report, which is when the tests send their signals.
SLOW_PROFILE = FAST_PROFILE.replace('"fastest"', '"medium"')


# ----- media ----------------------------------------------------------------------------------

def make_video(path: Path, frames: int = 12, size: tuple[int, int] = (64, 64), seed: int = 0) -> Path:
    """A small H.264 file whose pixels depend on `seed`, so every seed is distinct content."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    container = "matroska" if path.suffix == ".mkv" else "mp4"
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            img = np.stack([(x * 2 + i * 3 + seed * 17) % 256, (y * 3 + i * 5 + seed * 29) % 256,
                            ((x ^ y) + i * 7 + seed) % 256], -1).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def count_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("media") / "long.mkv", frames=250, size=(320, 240))


@pytest.fixture(scope="module")
def small_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("media") / "small.mp4", frames=12)


# ----- the daemon -----------------------------------------------------------------------------

def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Site:
    """A tmp folder with a config, watched/output folders and a way to run the daemon on it."""

    def __init__(self, root: Path, **daemon: object) -> None:
        self.root = root
        self.inbox, self.out = root / "in", root / "out"
        self.inbox.mkdir()
        (root / "fast.toml").write_text(FAST_PROFILE)
        (root / "slow.toml").write_text(SLOW_PROFILE)
        self.port = free_port()
        self.daemon_settings = {"state_dir": "state", "workers": 2, "settle_seconds": SETTLE,
                                "stall_timeout_seconds": 60, "retry_backoff_seconds": 0.2,
                                "stop_grace_seconds": 10, "log_level": "DEBUG", **daemon}
        self.watches = [{"path": "in", "output_dir": "out", "profile": "fast.toml"}]
        self.config = root / "mediad.toml"
        self.proc: subprocess.Popen | None = None
        self.runs = 0
        self.env: dict[str, str] = {}
        self.prefix: list[str] = []  # a command the daemon runs under (setpriv ...)

    def write_config(self) -> None:
        def value(v: object) -> str:
            if isinstance(v, bool):
                return str(v).lower()
            if isinstance(v, str):
                return f'"{v}"'
            if isinstance(v, list):
                return "[" + ", ".join(value(x) for x in v) + "]"
            return str(v)

        lines = ["[daemon]"] + [f"{k} = {value(v)}" for k, v in self.daemon_settings.items()]
        for w in self.watches:
            lines += ["", "[[watch]]"] + [f"{k} = {value(v)}" for k, v in w.items()]
        lines += ["", "[metrics]", f'listen = "127.0.0.1:{self.port}"']
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def log_path(self) -> Path:
        return self.root / f"daemon-{self.runs}.log"

    def start(self, wait_ready: bool = True) -> subprocess.Popen:
        if not self.config.exists():
            self.write_config()
        self.runs += 1
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.env}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "mediad", "daemon", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root)
        if wait_ready:
            self.wait_log("event=daemon_ready", timeout=30)
        return self.proc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, pattern: str, timeout: float = 30, count: int = 1) -> list[str]:
        regex = re.compile(pattern)

        def found() -> list[str]:
            if self.proc is not None and self.proc.poll() is not None and self.proc.returncode != 0:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            lines = [ln for ln in self.log().splitlines() if regex.search(ln)]
            return lines if len(lines) >= count else []

        try:
            return wait_for(found, timeout, f"log line /{pattern}/ x{count}")  # type: ignore[return-value]
        except AssertionError:
            raise AssertionError(f"no /{pattern}/ x{count} in the daemon log:\n{self.log()}") from None

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        return code

    def jobs(self, table: str = "jobs") -> list[dict]:
        """The rows of the state database's `table` (jobs, commands), by id."""
        db = self.root / "state" / "queue.sqlite3"
        if not db.exists():
            return []
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY id")]
        except sqlite3.OperationalError:
            return []  # not created yet
        finally:
            conn.close()

    def wait_jobs(self, state: str, count: int, timeout: float = 60) -> list[dict]:
        def ready() -> list[dict]:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            jobs = [j for j in self.jobs() if j["state"] == state]
            return jobs if len(jobs) >= count else []

        try:
            return wait_for(ready, timeout, f"{count} {state} jobs")  # type: ignore[return-value]
        except AssertionError:
            raise AssertionError(f"wanted {count} {state} jobs, have {self.jobs()}\n{self.log()}") from None

    def drop(self, src: Path, name: str, folder: Path | None = None) -> Path:
        """Copy a file in the way a careful uploader does: temporary name, then rename."""
        dest = (folder or self.inbox) / name
        tmp = dest.with_name(dest.name + ".part")
        shutil.copyfile(src, tmp)
        os.rename(tmp, dest)
        return dest

    def outputs(self) -> list[Path]:
        return sorted(p for p in self.out.rglob("*") if p.is_file()) if self.out.exists() else []


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    if s.proc is not None and s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait(timeout=10)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has stopped running, which is what matters here.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def worker_pid(site: Site, job_id: int) -> int:
    line = site.wait_log(rf"event=job_started job={job_id} .*pid=\d+")[-1]
    return int(re.search(r"pid=(\d+)", line).group(1))  # type: ignore[union-attr]


def wait_encoding(site: Site, job_id: int = 1) -> dict:
    """Wait until the job is running and its worker has reported encoded frames."""
    def encoding() -> dict | None:
        job = next((j for j in site.jobs() if j["id"] == job_id), None)
        return job if job and job["state"] == "running" and (job["frames_done"] or 0) > 0 else None

    return wait_for(encoding, 60, "the job to be encoding")  # type: ignore[return-value]


def partials(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".part" in p.name] if folder.exists() else []


# ----- tests ----------------------------------------------------------------------------------

def test_dropped_files_are_transcoded_once(site: Site, small_video: Path, tmp_path: Path) -> None:
    site.start()
    sources = [site.drop(make_video(tmp_path / f"v{i}.mp4", seed=i), f"clip {i}.mp4") for i in range(3)]
    done = site.wait_jobs("done", 3)
    assert sorted(Path(j["output"]).name for j in done) == ["clip 0.mp4", "clip 1.mp4", "clip 2.mp4"]
    assert [p.name for p in site.outputs()] == ["clip 0.mp4", "clip 1.mp4", "clip 2.mp4"]
    assert all(count_frames(p) == 12 for p in site.outputs())
    assert all(j["attempts"] == 0 for j in done)
    assert all(s.exists() for s in sources)  # on_success = "keep"

    # Touched unchanged, or copied under another name: the same content is not done twice.
    os.utime(sources[0])
    shutil.copyfile(sources[1], site.inbox / "copy of clip 1.mp4")
    site.wait_log(r'event=file_duplicate path=.*copy of clip 1\.mp4"? job=\d+ state=done')
    time.sleep(SETTLE * 4)
    assert len(site.jobs()) == 3

    # `mediad status` reads the same database.
    status = subprocess.run([sys.executable, "-m", "mediad", "status", "--config", str(site.config),
                             "--json"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert status.returncode == 0, status.stderr
    import json
    report = json.loads(status.stdout)
    assert report["counts"] == {"queued": 0, "running": 0, "done": 3, "failed": 0, "cancelled": 0}
    assert report["daemon_pid"] == site.proc.pid  # type: ignore[union-attr]
    assert {j["source"] for j in report["recent"]} == {str(s) for s in sources}

    assert site.stop() == 0
    # After a restart the start-up scan finds the same files: nothing is queued again.
    site.start()
    time.sleep(SETTLE * 4)
    assert len(site.jobs()) == 3 and len(site.outputs()) == 3
    # ...but a file that arrived while it was stopped is picked up.
    assert site.stop() == 0
    make_video(site.inbox / "late.mp4", seed=9)
    site.start()
    site.wait_jobs("done", 4)
    assert len(site.outputs()) == 4
    assert site.stop() == 0


def test_a_warm_worker_process_runs_job_after_job(site: Site, tmp_path: Path) -> None:
    """Worker processes start ahead with the engine imported and run jobs one after another
    (a small job does not pay Python's start-up); one that was killed is never used again."""
    site.daemon_settings["workers"] = 1
    site.start()
    for i in range(3):
        site.drop(make_video(tmp_path / f"w{i}.mp4", seed=200 + i), f"w{i}.mp4")
    site.wait_jobs("done", 3)
    pids = {int(m) for m in re.findall(r"event=job_started job=\d+ .*pid=(\d+)", site.log())}
    assert len(pids) == 1, site.log()  # one process ran all three
    os.kill(pids.pop(), signal.SIGKILL)  # killed while idle: the next job gets a fresh one
    site.drop(make_video(tmp_path / "w3.mp4", seed=203), "w3.mp4")
    site.wait_jobs("done", 4)
    assert all(count_frames(site.out / f"w{i}.mp4") == 12 for i in range(4))
    assert site.stop() == 0


def test_one_daemon_per_state_dir(site: Site) -> None:
    site.start()
    second = subprocess.run([sys.executable, "-m", "mediad", "daemon", "--config", str(site.config)],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert second.returncode == 1
    assert f"another mediad daemon is using this state_dir (pid {site.proc.pid})" in second.stderr  # type: ignore[union-attr]
    assert site.proc.poll() is None  # type: ignore[union-attr]
    assert site.stop() == 0


def test_a_redrop_of_a_deleted_source_is_never_deleted(site: Site, tmp_path: Path) -> None:
    site.watches[0]["on_success"] = "delete"
    site.start()
    src = make_video(tmp_path / "d.mp4", seed=12)
    first = site.drop(src, "gone.mp4")
    site.wait_jobs("done", 1)
    wait_for(lambda: not first.exists(), 10, "gone.mp4 deleted after its output was committed")
    assert (site.out / "gone.mp4").exists()
    # The same content dropped again (the file system may even reuse the inode number):
    # a duplicate, reported and left alone.
    again = site.drop(src, "gone.mp4")
    site.wait_log(r"event=file_duplicate path=\S*/in/gone\.mp4 job=1 state=done")
    assert site.stop() == 0
    site.start()  # and the start-up scan leaves it alone too
    time.sleep(SETTLE * 4)
    assert again.exists() and len(site.jobs()) == 1
    assert site.stop() == 0


def test_polling_observer(site: Site, small_video: Path) -> None:
    site.watches[0].update(polling=True, poll_interval_seconds=0.2)
    site.start()
    site.drop(small_video, "polled.mp4")
    site.wait_jobs("done", 1)
    assert "observer=polling" in site.log()
    assert [p.name for p in site.outputs()] == ["polled.mp4"]
    assert site.stop() == 0


def test_a_file_moved_in_by_another_user_is_taken_after_settling(site: Site, tmp_path: Path) -> None:
    """As under the hardened unit: no CAP_LEASE, so no lease on another user's file, and a move
    from outside the folder has no close event. A rename into the folder is a complete file:
    it is taken once settled, not after the 60 s an unclosed write waits."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run the daemon without CAP_LEASE")
    site.prefix = ["setpriv", "--bounding-set=-lease", "--inh-caps=-lease"]
    site.start()
    staging = tmp_path / "staging"
    staging.mkdir()
    clip = make_video(staging / "theirs.mp4", seed=51)
    os.chown(clip, 65534, 65534)  # another user's file
    moved = time.monotonic()
    os.rename(clip, site.inbox / "theirs.mp4")
    site.wait_jobs("done", 1, timeout=60)
    assert time.monotonic() - moved < 15, "waited as for an unclosed write"
    assert site.stop() == 0


def test_slow_writer_is_not_taken_half_written(site: Site, tmp_path: Path) -> None:
    src = make_video(tmp_path / "whole.mp4", frames=25, seed=3).read_bytes()
    site.start()
    target = site.inbox / "slow.mp4"
    seen_early: list[list[dict]] = []
    chunks = [src[i:i + len(src) // 5 + 1] for i in range(0, len(src), len(src) // 5 + 1)]
    with open(target, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
            f.flush()
            # Quiet for much longer than settle_seconds, but still open: must not be taken.
            time.sleep(SETTLE * 2.5)
            seen_early.append(site.jobs())
    assert seen_early == [[]] * len(chunks)
    (job,) = site.wait_jobs("done", 1)
    assert job["size"] == len(src)
    assert count_frames(Path(job["output"])) == 25
    assert site.stop() == 0


@pytest.mark.slow
def test_fifty_files_at_once_each_exactly_once(site: Site, tmp_path: Path) -> None:
    site.daemon_settings["workers"] = 3
    made = [make_video(tmp_path / f"m{i}.mp4", frames=6, size=(32, 32), seed=i) for i in range(50)]
    site.start()
    for i, path in enumerate(made):  # written in place, not renamed: the settle logic must cope
        shutil.copyfile(path, site.inbox / f"file{i:02d}.mp4")
    done = site.wait_jobs("done", 50, timeout=120)
    jobs = site.jobs()
    assert len(jobs) == 50 and len(done) == 50
    assert sorted(j["source"] for j in jobs) == sorted(str(site.inbox / f"file{i:02d}.mp4") for i in range(50))
    assert all(j["attempts"] == 0 for j in jobs)
    assert len(site.outputs()) == 50
    assert len(site.wait_log("event=job_started", count=50)) == 50
    assert site.stop() == 0


def test_kill_9_mid_job_then_restart_completes(site: Site, long_video: Path) -> None:
    site.watches[0]["profile"] = "slow.toml"
    site.start()
    site.drop(long_video, "long.mkv")
    wait_encoding(site)
    pid = worker_pid(site, 1)
    site.proc.kill()  # type: ignore[union-attr]  # SIGKILL: no clean-up of any kind
    site.proc.wait(timeout=10)  # type: ignore[union-attr]
    # The worker dies with the daemon (PR_SET_PDEATHSIG) rather than writing on alone.
    wait_for(lambda: not pid_alive(pid), 10, "the orphaned worker to die")
    assert not (site.out / "long.mp4").exists()
    assert [j["state"] for j in site.jobs()] == ["running"]

    site.start()
    site.wait_log("event=job_recovered job=1")
    (job,) = site.wait_jobs("done", 1, timeout=90)
    assert job["attempts"] == 0  # the daemon's crash is not the file's fault
    assert count_frames(site.out / "long.mp4") == 250
    assert partials(site.out) == [], "a killed worker's temporary output was left behind"
    assert site.stop() == 0


def sigterm_while_encoding(site: Site, long_video: Path, grace: float) -> int:
    """Start the daemon with `grace` seconds of stop grace, SIGTERM it once the job encodes;
    return its exit status."""
    site.watches[0]["profile"] = "slow.toml"
    site.daemon_settings["stop_grace_seconds"] = grace
    site.start()
    site.drop(long_video, "long.mkv")
    wait_encoding(site)
    site.signal(signal.SIGTERM)
    return site.proc.wait(timeout=grace + 30)  # type: ignore[union-attr]


def test_sigterm_mid_job_requeues_and_finishes_after_restart(site: Site, long_video: Path) -> None:
    assert sigterm_while_encoding(site, long_video, grace=0.2) == 0
    assert "event=job_requeued job=1" in site.log()
    (job,) = site.jobs()
    assert (job["state"], job["attempts"]) == ("queued", 0)
    assert site.outputs() == [] and partials(site.out) == []

    site.start()
    site.wait_jobs("done", 1, timeout=90)
    assert count_frames(site.out / "long.mp4") == 250
    assert site.stop() == 0


def test_sigterm_lets_a_running_job_finish_within_grace(site: Site, long_video: Path) -> None:
    assert sigterm_while_encoding(site, long_video, grace=60) == 0
    assert [j["state"] for j in site.jobs()] == ["done"]
    assert "event=job_requeued" not in site.log()  # finished in the grace, not stopped
    assert count_frames(site.out / "long.mp4") == 250


def test_bad_files_fail_with_reasons_good_ones_succeed(site: Site, tmp_path: Path) -> None:
    site.watches[0].update(failed_dir="failed", on_success="move", done_dir="done")
    site.start()
    good = make_video(tmp_path / "good.mp4", frames=12, seed=1)
    whole = make_video(tmp_path / "whole.mkv", frames=50, size=(128, 96), seed=2).read_bytes()
    dropped = time.monotonic()
    (site.inbox / "notes.mp4").write_text("these are not the frames you are looking for\n")
    (site.inbox / "empty.mkv").write_bytes(b"")
    (site.inbox / "truncated.mkv").write_bytes(whole[: len(whole) // 2])
    site.drop(good, "good.mp4")

    failed_dir = site.root / "failed"
    wait_for(lambda: (failed_dir / "notes.mp4.error.json").exists(), 10, "notes.mp4 to fail")
    assert time.monotonic() - dropped < 10  # plainly not media: fails at once, no retries
    import json
    note = json.loads((failed_dir / "notes.mp4.error.json").read_text())
    assert note["reason"] == "not_media" and note["attempts"] == 1
    assert note["source"] == str(site.inbox / "notes.mp4")
    assert (failed_dir / "notes.mp4").read_text().startswith("these are not")

    site.wait_jobs("failed", 3)
    site.wait_jobs("done", 1)
    states = {Path(j["source"]).name: (j["state"], j["reason"]) for j in site.jobs()}
    assert states["good.mp4"] == ("done", None)
    assert states["notes.mp4"] == ("failed", "not_media")
    assert states["empty.mkv"] == ("failed", "not_media")
    assert states["truncated.mkv"][0] == "failed"
    assert states["truncated.mkv"][1] in ("corrupt", "not_media")
    for name in ("empty.mkv", "truncated.mkv"):
        # Dispositions run on their own thread: the job is recorded failed first, then moved
        wait_for((failed_dir / f"{name}.error.json").exists, 10, f"{name}'s note")
        assert (failed_dir / name).exists()
        assert json.loads((failed_dir / f"{name}.error.json").read_text())["reason"] == states[name][1]
    # The good file: output committed, then the source moved to done_dir.
    assert [p.name for p in site.outputs()] == ["good.mp4"]
    wait_for(lambda: (site.root / "done" / "good.mp4").exists(), 10, "good.mp4 to move to done")
    assert sorted(p.name for p in site.inbox.iterdir()) == []
    assert partials(site.out) == []
    assert site.stop() == 0


@pytest.mark.slow
def test_worker_crash_and_stall_are_retried(site: Site, long_video: Path, tmp_path: Path) -> None:
    site.watches[0]["profile"] = "slow.toml"
    site.daemon_settings.update(stall_timeout_seconds=3, max_attempts=3, workers=1)
    site.start()
    site.drop(long_video, "long.mkv")

    # A segfault inside FFmpeg looks like this from the outside.
    wait_encoding(site)
    os.kill(worker_pid(site, 1), signal.SIGSEGV)
    site.wait_log(r"event=job_retry job=1 .*reason=worker_crashed attempt=1 .*SIGSEGV")

    # A hang: the worker stops making progress (SIGSTOP) and is killed after the stall timeout.
    site.wait_log(r"event=job_started job=1 .*attempt=2")
    wait_encoding(site)
    os.kill(worker_pid(site, 1), signal.SIGSTOP)
    site.wait_log(r"event=job_stalled job=1")
    site.wait_log(r"event=job_retry job=1 .*reason=stalled attempt=2")

    (job,) = site.wait_jobs("done", 1, timeout=90)
    assert job["attempts"] == 2
    assert count_frames(site.out / "long.mp4") == 250
    assert partials(site.out) == []
    assert site.stop() == 0


def test_sighup_rejects_a_broken_config_and_applies_a_good_one(site: Site, small_video: Path,
                                                               tmp_path: Path) -> None:
    site.start()
    good_config = site.config.read_text()
    site.config.write_text(good_config + "\n[[watch]\n")  # not TOML
    site.signal(signal.SIGHUP)
    site.wait_log(r"event=config_rejected .*not valid TOML")
    site.config.write_text(good_config.replace('profile = "fast.toml"', 'profile = "nope"'))
    site.signal(signal.SIGHUP)
    site.wait_log(r"event=config_rejected .*watch\.0\.profile: unknown profile", count=1)
    site.config.write_bytes(good_config.encode() + b"# caf\xe9\n")  # not UTF-8
    site.signal(signal.SIGHUP)
    site.wait_log(r"event=config_rejected .*not UTF-8 text \(byte 0xe9")
    assert len(site.wait_log("event=config_rejected", count=3)) == 3
    # The old config still runs.
    site.drop(small_video, "still.mp4")
    site.wait_jobs("done", 1)

    second = site.root / "in2"
    second.mkdir()
    site.watches.append({"path": "in2", "output_dir": "out2", "profile": "fast.toml"})
    site.write_config()
    site.signal(signal.SIGHUP)
    site.wait_log("event=config_reloaded")
    site.drop(make_video(tmp_path / "other.mp4", seed=5), "new.mp4", folder=second)
    site.wait_jobs("done", 2)
    assert (site.root / "out2" / "new.mp4").exists()
    assert site.proc.poll() is None  # type: ignore[union-attr]
    assert site.stop() == 0


def test_symlinks_and_escapes_are_refused(site: Site, small_video: Path, tmp_path: Path) -> None:
    site.watches[0]["recursive"] = True
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = make_video(outside / "secret.mp4", seed=4)
    (site.inbox / "link.mp4").symlink_to(secret)  # present at start-up
    site.start()
    (site.inbox / "sub").symlink_to(outside, target_is_directory=True)
    (site.inbox / "later-link.mp4").symlink_to(secret)
    # An odd name: control characters and leading dots must not make an odd output path.
    odd = "-rf \x1b[31mred\n..mp4"
    site.drop(make_video(tmp_path / "odd.mp4", seed=6), odd)
    (site.inbox / "real").mkdir()
    site.drop(small_video, "ok.mp4", folder=site.inbox / "real")

    site.wait_log(r"event=file_refused path=\S*/in/link\.mp4 reason=symlink")
    site.wait_log(r"event=file_refused path=\S*/in/later-link\.mp4 reason=symlink")
    done = site.wait_jobs("done", 2)
    assert sorted(j["source"] for j in done) == sorted([str(site.inbox / odd),
                                                       str(site.inbox / "real" / "ok.mp4")])
    outputs = site.outputs()
    assert sorted(str(p.relative_to(site.out)) for p in outputs) == ["real/ok.mp4", "rf _[31mred_.mp4"]
    assert not any("secret" in j["source"] for j in site.jobs())
    assert site.stop() == 0


def test_hard_links_and_other_refusals_get_an_error_note(site: Site, small_video: Path,
                                                         tmp_path: Path) -> None:
    """A hard link into the watched folder may name a file from anywhere the daemon can read:
    refused unless the watch allows them; every refused entry gets an error note, as failed
    files do (the file itself is left where it is)."""
    site.watches[0]["failed_dir"] = "failed"
    site.start()
    outside = make_video(tmp_path / "private.mp4", seed=31)
    os.link(outside, site.inbox / "linked.mp4")
    (site.inbox / "pipe.mp4").parent.mkdir(exist_ok=True)
    os.mkfifo(site.inbox / "pipe.mp4")
    (site.inbox / "sym.mp4").symlink_to(outside)
    site.drop(make_video(tmp_path / "ok.mp4", seed=32), "ok.mp4")
    site.wait_jobs("done", 1)
    failed = site.root / "failed"
    for name, reason in (("linked.mp4", "hard_link"), ("pipe.mp4", "not_regular"),
                         ("sym.mp4", "symlink")):
        site.wait_log(rf"event=file_refused path=\S*/in/{re.escape(name)} reason={reason}")
        note = failed / f"{name}.error.json"
        wait_for(note.exists, 10, f"{name}'s note")
        data = json.loads(note.read_text())
        assert (data["reason"], data["source"], data["job"]) == (reason, str(site.inbox / name),
                                                                  None)
    assert (site.inbox / "linked.mp4").exists() and outside.exists()
    assert [Path(j["source"]).name for j in site.jobs()] == ["ok.mp4"]
    assert site.stop() == 0

    # The same folder, hard links allowed: the linked file is transcoded.
    site.watches[0]["allow_hard_links"] = True
    site.write_config()
    site.start()
    site.wait_jobs("done", 2)
    assert sorted(p.name for p in site.outputs()) == ["linked.mp4", "ok.mp4"]
    assert site.stop() == 0


def test_notify_protocol(site: Site, small_video: Path, tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    messages: list[str] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                continue

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    shutil.copyfile(small_video, site.inbox / "early.mp4")  # there before the start-up scan
    site.env = {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"}
    try:
        site.start()
        wait_for(lambda: any("READY=1" in m for m in messages), 10, "READY=1")
        ready = next(m for m in messages if "READY=1" in m)
        assert f"MAINPID={site.proc.pid}" in ready  # type: ignore[union-attr]
        assert re.search(r"STATUS=queued=\d+ running=\d+ done=\d+ failed=\d+", ready)
        assert re.search(r"event=daemon_ready .*pending=1", site.log())  # the scan came first
        site.wait_jobs("done", 1)
        wait_for(lambda: any("STATUS=queued=0 running=0 done=1 failed=0" in m for m in messages),
                 10, "STATUS with the done job")
        wait_for(lambda: sum(m == "WATCHDOG=1" for m in messages) >= 3, 10, "WATCHDOG=1 pings")

        site.signal(signal.SIGHUP)
        wait_for(lambda: any(m.startswith("RELOADING=1\nMONOTONIC_USEC=") for m in messages), 10,
                 "RELOADING=1")
        wait_for(lambda: sum("READY=1" in m for m in messages) >= 2, 10, "READY=1 after reload")
        assert site.stop() == 0
        wait_for(lambda: any(m.startswith("STOPPING=1") for m in messages), 5, "STOPPING=1")
    finally:
        stop.set()
        reader.join(timeout=2)
        sock.close()


def test_metrics_endpoint(site: Site, small_video: Path) -> None:
    site.start()
    site.drop(small_video, "m.mp4")
    (site.inbox / "bad.mp4").write_text("nope")
    site.wait_jobs("done", 1)
    site.wait_jobs("failed", 1)

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{site.port}/metrics", timeout=5) as r:
            return r.read().decode()

    def scraped_failure() -> str:
        text = scrape()
        return text if 'mediad_jobs{state="failed"} 1.0' in text else ""

    text = wait_for(scraped_failure, 10, "metrics to show the failure")
    assert 'mediad_jobs{state="done"} 1.0' in text
    assert "mediad_queue_depth 0.0" in text
    assert 'mediad_job_duration_seconds_count{outcome="done"} 1.0' in text
    assert 'mediad_job_failures_total{final="true",reason="not_media"} 1.0' in text
    frames = float(re.search(r"^mediad_frames_total (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert frames == 12
    assert "mediad_fps " in text
    from mediad.gpu import cuda_device_count
    has_gpu = cuda_device_count()[0] > 0
    assert ("mediad_gpu_utilization_ratio{" in text) == has_gpu
    assert site.stop() == 0


# ----- mediad retry ---------------------------------------------------------------------------

def retry_cli(site: Site, *args: str) -> subprocess.CompletedProcess:
    """`mediad retry` as a real CLI process against the site's config."""
    return subprocess.run([sys.executable, "-m", "mediad", "retry", "--config", str(site.config), *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def fail_one(site: Site, name: str) -> tuple[Path, Path, Path]:
    """Drop a file that is not media and wait until it is in failed_dir with its note;
    returns (original path, failed copy, note)."""
    source = site.inbox / name
    source.write_text("not a video\n")
    failed = site.root / "failed" / name
    note = failed.with_name(name + ".error.json")
    wait_for(note.exists, 15, f"{name} to fail into failed_dir")
    return source, failed, note


def test_retry_failed_runs_the_fixed_file_in_the_running_daemon(site: Site, tmp_path: Path) -> None:
    site.watches[0]["failed_dir"] = "failed"
    site.start()
    source, failed, note = fail_one(site, "broken.mp4")
    (job,) = site.jobs()
    assert (job["state"], job["attempts"]) == ("failed", 1) and not source.exists()

    # Fixed where it lies: the copy in failed_dir replaced by a good clip.
    os.replace(make_video(tmp_path / "fixed.mp4", seed=21), failed)
    res = retry_cli(site, "--failed")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"job {job['id']}: requeued {source} (moved back from {failed})"]
    assert not failed.exists() and not note.exists()
    # Through the command channel: the running daemon moved the file back, not the CLI.
    assert [(c["kind"], c["job"], c["result"]) for c in site.jobs("commands")] == [
        ("retry", job["id"], f"requeued (moved back from {failed})")]

    (done,) = site.wait_jobs("done", 1, timeout=30)  # no restart: the running daemon takes it
    assert (done["id"], done["attempts"], done["reason"]) == (job["id"], 0, None)
    first, again = site.wait_log(rf"event=job_started job={job['id']} ", count=2)
    assert "after=" not in first and re.search(r"attempt=1 .*after=mediad_retry", again)
    assert count_frames(site.out / "broken.mp4") == 12
    assert source.exists()  # on_success = "keep"
    time.sleep(SETTLE * 4)  # the watcher saw the file come back: known as this job, not a new one
    assert len(site.jobs()) == 1

    # Only failed jobs can be retried.
    for arg, message in ((str(job["id"]), f"job {job['id']}: is done; only failed jobs can be retried"),
                         ("99", "job 99: no such job")):
        res = retry_cli(site, arg)
        assert (res.returncode, res.stdout) == (1, "")
        assert res.stderr.splitlines() == [f"mediad: error: {message}"]
    assert [j["state"] for j in site.jobs()] == ["done"]
    assert site.stop() == 0


def test_retry_never_overwrites_and_works_while_the_daemon_is_stopped(site: Site,
                                                                      tmp_path: Path) -> None:
    site.watches[0]["failed_dir"] = "failed"
    site.start()
    source, failed, note = fail_one(site, "clip.mp4")
    assert site.stop() == 0
    os.replace(make_video(tmp_path / "fixed.mp4", seed=22), failed)
    fixed = failed.read_bytes()

    # Something new took the original name meanwhile: refused, both files left as they are.
    source.write_bytes(b"someone else's file")
    res = retry_cli(site, str(failed))  # named by its place in failed_dir
    assert (res.returncode, res.stdout) == (1, "")
    assert res.stderr.splitlines() == [f"mediad: error: job 1: {source} exists; not moving "
                                       f"{failed} back over it"]
    assert source.read_bytes() == b"someone else's file" and failed.read_bytes() == fixed
    assert note.exists()
    assert [(j["state"], j["attempts"]) for j in site.jobs()] == [("failed", 1)]

    # Path free again, daemon still stopped: queued now, run at the next start.
    source.unlink()
    res = retry_cli(site, str(source))  # named by its original path
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"job 1: requeued {source} (moved back from {failed})"]
    assert [(j["state"], j["attempts"], j["reason"], j["error"]) for j in site.jobs()] == [
        ("queued", 0, "user_retry", "requeued by mediad retry")]
    assert source.read_bytes() == fixed and not failed.exists() and not note.exists()

    site.start()
    (done,) = site.wait_jobs("done", 1, timeout=30)
    assert done["id"] == 1 and count_frames(site.out / "clip.mp4") == 12
    site.wait_log(r"event=job_started job=1 .*after=mediad_retry")
    assert len(site.jobs()) == 1
    assert site.stop() == 0


def test_retry_trusts_the_state_database_not_a_forged_note(site: Site, tmp_path: Path) -> None:
    """Error notes are for people: a note rewritten to name another file (here one outside
    failed_dir) must not make `mediad retry` move that file into the watched folder."""
    site.watches[0]["failed_dir"] = "failed"
    site.start()
    source, failed, note = fail_one(site, "clip.mp4")
    assert site.stop() == 0
    victim = tmp_path / "private" / "payroll.mp4"
    victim.parent.mkdir()
    victim.write_bytes(b"someone's private file")
    failed.unlink()  # the failed copy gone, the note forged to name the victim instead
    forged = json.loads(note.read_text())
    forged["moved_to"] = str(victim)
    note.write_text(json.dumps(forged))
    res = retry_cli(site, "1")
    assert res.returncode == 1 and not source.exists(), res.stdout
    assert victim.read_bytes() == b"someone's private file"
    assert res.stderr.splitlines() == [f"mediad: error: job 1: its source is gone (neither "
                                       f"{source} nor {failed} exists)"]
    # The failed copy back in failed_dir: retried from where the daemon recorded it.
    make_video(failed, seed=23)
    res = retry_cli(site, "1")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"job 1: requeued {source} (moved back from {failed})"]
    assert victim.read_bytes() == b"someone's private file" and source.exists()


def kill_as_each_output_appears(site: Site, names: list[str],
                                make: Callable[[int, str], Path],
                                output_name: Callable[[str], str]) -> int:
    """Per source name: start the daemon, drop the source (`make(i, name)`), SIGKILL the daemon
    (its worker with it) the moment its output (`output_name(name)` in out/) appears. Returns
    how many of the kills fell between a commit and its record."""
    unrecorded = 0
    for i, name in enumerate(names):
        site.start()
        site.drop(make(i, name), name)
        wait_for((site.out / output_name(name)).exists, 30, f"{name}'s output", interval=0.001)
        assert site.proc is not None
        site.proc.kill()
        site.proc.wait(timeout=10)
        job = next(j for j in site.jobs() if Path(j["source"]).name == name)
        unrecorded += job["state"] != "done"
    print(f"kills between a commit and its record: {unrecorded} of {len(names)}")
    return unrecorded


@pytest.mark.slow
def test_kill_9_as_each_output_appears_never_duplicates_or_loses(site: Site,
                                                                 tmp_path: Path) -> None:
    """Exactly-once: the daemon is killed (SIGKILL, its worker with it) the moment each output
    appears, before it can record the job done, ten times; restarted, it finds the committed
    output carries the job's key: one output per source, none twice (it made -2, -3, ...)."""
    names = [f"clip{i}.mp4" for i in range(10)]
    unrecorded = kill_as_each_output_appears(
        site, names, lambda i, name: make_video(tmp_path / name, seed=100 + i), lambda name: name)
    assert unrecorded >= 3, "the kills should fall between a commit and its record"
    site.start()
    site.wait_jobs("done", len(names))
    assert [p.name for p in site.outputs()] == sorted(names)  # no clipN-2.mp4
    assert all(count_frames(site.out / name) == 12 for name in names)
    assert len(site.jobs()) == len(names)
    assert site.stop() == 0


def test_a_lost_state_database_does_not_transcode_again(site: Site, small_video: Path) -> None:
    """A second daemon on the same folders with a fresh state dir (or the first one's deleted)
    finds the outputs it would write already committed for the same job."""
    site.start()
    site.drop(small_video, "clip.mp4")
    site.wait_jobs("done", 1)
    assert site.stop() == 0
    shutil.rmtree(site.root / "state")
    site.start()
    site.wait_jobs("done", 1)
    site.wait_log(r"event=job_done job=1 .*already_done=")
    assert [p.name for p in site.outputs()] == ["clip.mp4"]
    assert "event=job_started" not in site.log()
    assert site.stop() == 0


def test_a_damaged_or_read_only_state_dir_is_one_line_and_exit_78(site: Site,
                                                                  small_video: Path) -> None:
    """EX_CONFIG (78): systemd's RestartPreventExitStatus keeps a daemon that cannot work from
    restarting in a loop; one line says what is wrong, no traceback."""
    site.start()
    site.drop(small_video, "clip.mp4")
    site.wait_jobs("done", 1)
    assert site.stop() == 0
    state = site.root / "state"
    db = state / "queue.sqlite3"
    # Read-only: immutable even for root (CI runs as root, so a chmod would not stop it).
    if subprocess.run(["chattr", "+i", str(state)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here")
    try:
        site.start(wait_ready=False)
        assert site.proc is not None and site.proc.wait(timeout=30) == 78, site.log()
        lines = site.log().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"mediad: error: {state}"), lines
    finally:
        subprocess.run(["chattr", "-i", str(state)], check=True)
    # Damaged inside a page (the header intact): found at start, not at the first query.
    data = bytearray(db.read_bytes())
    assert len(data) >= 3 * 4096
    data[4096 + 100:2 * 4096] = b"\xff" * (4096 - 100)
    db.write_bytes(bytes(data))
    site.start(wait_ready=False)
    assert site.proc is not None and site.proc.wait(timeout=30) == 78, site.log()
    lines = site.log().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mediad: error: {db}: the state database is "
                                                    "damaged"), lines


def test_a_state_dir_deleted_under_the_daemon_is_noticed(site: Site, small_video: Path,
                                                          tmp_path: Path) -> None:
    """Deleted while running, the state dir took the database and the pid lock with it: the
    daemon says so, takes no more jobs and stops (exit 1: systemd starts it afresh)."""
    site.start()
    site.drop(small_video, "clip.mp4")
    site.wait_jobs("done", 1)
    shutil.rmtree(site.root / "state")
    site.wait_log(r"level=ERROR event=state_lost .*no more jobs are taken")
    site.drop(make_video(tmp_path / "late.mp4", seed=41), "late.mp4")
    assert site.proc is not None and site.proc.wait(timeout=30) == 1
    assert [p.name for p in site.outputs()] == ["clip.mp4"]  # the late file was not taken
    assert "Traceback" not in site.log()
    site.start()  # afresh: the late file is transcoded, the first one recognised as done
    site.wait_jobs("done", 2)
    assert sorted(p.name for p in site.outputs()) == ["clip.mp4", "late.mp4"]
    assert site.stop() == 0


@contextlib.contextmanager
def tmpfs(site: Site, folder: Path, size: str) -> Iterator[Path]:
    """`folder` as a small tmpfs of its own (a disk that fills up, another filesystem), for
    the test's daemon; skipped where mounting needs a root this is not. Unmounted after the
    daemon is gone."""
    folder.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield folder
    finally:
        if site.proc is not None and site.proc.poll() is None:
            site.proc.kill()
            site.proc.wait(timeout=10)
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_full_output_disk_is_waited_out_not_failed(site: Site, long_video: Path) -> None:
    """No space left on the output's disk is not the source's fault: the job waits (retried
    with backoff, the attempt not counted, however long it takes), the source stays where it
    is, and the job runs once there is room (it failed as corrupt and moved the good source
    to failed_dir)."""
    site.watches[0].update(failed_dir="failed")
    site.daemon_settings.update(max_attempts=2)
    with tmpfs(site, site.out, "64k"):
        site.start()
        site.drop(long_video, "big.mkv")
        site.wait_log(r"event=job_retry job=1 .*reason=disk_full", count=3)
        (job,) = site.jobs()
        assert job["state"] in ("queued", "running") and job["attempts"] == 0, job
        assert (site.inbox / "big.mkv").exists() and not (site.root / "failed").exists()
        subprocess.run(["mount", "-o", "remount,size=64m", str(site.out)], check=True)
        site.wait_jobs("done", 1, timeout=120)
        assert count_frames(site.out / "big.mp4") == 250
        assert site.stop() == 0


def test_a_move_cut_off_mid_copy_leaves_nothing_behind(site: Site, tmp_path: Path) -> None:
    """done_dir on another filesystem: the move copies (on the disposer's thread, not in the
    main loop). A kill -9 mid-copy left the hidden copy there forever; the next start removes
    it and moves the source again: one file in done_dir, whole, and none in the inbox."""
    site.watches[0].update(on_success="move", done_dir="done")
    done = site.root / "done"
    with tmpfs(site, done, "1g"):
        big = make_video(tmp_path / "big.mkv", seed=81)
        with open(big, "ab") as f:  # padding after the Matroska segment: a slow copy
            f.truncate(big.stat().st_size + (400 << 20))
        size = big.stat().st_size
        site.start()
        site.drop(big, "big.mkv")
        wait_for(lambda: any(p.name.startswith(".mediad-move.") for p in done.iterdir()), 120,
                 "the copy to done_dir to start", interval=0.001)
        assert site.proc is not None
        site.proc.kill()
        site.proc.wait(timeout=10)
        assert any(p.name.startswith(".mediad-move.") for p in done.iterdir())  # cut off
        site.start()
        wait_for(lambda: not (site.inbox / "big.mkv").exists(), 60, "the source moved")
        assert [p.name for p in done.iterdir()] == ["big.mkv"]
        assert (done / "big.mkv").stat().st_size == size
        assert "event=partial_removed" in site.log()
        assert site.stop() == 0


def fill_disk(filler: Path) -> None:
    """The rest of `filler`'s disk taken by something else. It may be full already: then
    even creating the file fails, as CI once saw."""
    with contextlib.suppress(OSError), open(filler, "ab") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()


def test_a_full_state_dir_refuses_files_until_space_returns(site: Site, tmp_path: Path) -> None:
    """The state database cannot grow (its disk is full): files are not lost or half-queued,
    the daemon keeps running, and once there is room again they are queued without a
    restart."""
    state = site.root / "state"
    with tmpfs(site, state, "2m"):
        site.start()  # rescans 5 minutes apart: no rescan picks the files up
        filler = state / "filler"
        fill_disk(filler)
        for i in range(20):
            site.drop(make_video(tmp_path / f"v{i}.mp4", seed=90 + i), f"v{i}.mp4")
        site.wait_log(r"level=ERROR event=state_full", timeout=30)
        time.sleep(STATE_FULL_RETRY + 1)  # the files tried again, still no room
        assert site.proc is not None and site.proc.poll() is None, site.log()
        assert "internal_error" not in site.log()
        assert site.log().count("event=state_full") == 1  # one episode, said once
        filler.unlink()  # room again
        site.wait_jobs("done", 20, timeout=120)
        assert sorted(p.name for p in site.outputs()) == sorted(f"v{i}.mp4" for i in range(20))
        # Full again: once the room the log reuses is taken, a new episode, said again
        fill_disk(filler)
        more = 0
        while site.log().count("event=state_full") < 2:
            assert more < 100 and "internal_error" not in site.log(), site.log()
            site.drop(make_video(tmp_path / f"w{more}.mp4", seed=200 + more), f"w{more}.mp4")
            more += 1
            time.sleep(0.2)
        filler.unlink(missing_ok=True)  # none when the state's own log had filled the disk
        site.wait_jobs("done", 20 + more, timeout=120)
        assert site.stop() == 0


def test_a_job_that_ends_while_the_state_disk_is_full_is_recorded_once_there_is_room(
        site: Site, tmp_path: Path, long_video: Path) -> None:
    """A job's output was committed while the state disk had no room to record its end (CI
    caught it): the job stayed `running` until the daemon's next start. Once there is room
    it is recorded done, without a restart, and not run again."""
    site.watches[0].update(profile="slow.toml", on_success="delete")
    state = site.root / "state"
    with tmpfs(site, state, "2m"):
        site.start()
        site.drop(long_video, "long.mkv")
        wait_encoding(site)
        filler = state / "filler"
        fill_disk(filler)
        more = 0
        while "event=state_full" not in site.log():  # no room to queue a file: the disk is full
            assert more < 100 and "internal_error" not in site.log(), site.log()
            site.drop(make_video(tmp_path / f"w{more}.mp4", seed=300 + more), f"w{more}.mp4")
            more += 1
            time.sleep(0.2)
        fill_disk(filler)  # and what the log's truncation gave back
        site.wait_log(r"event=transcoded input=\S*long\.mkv", timeout=120)
        time.sleep(1)
        assert site.jobs()[0]["state"] == "running", "its end was recorded: nothing tested"
        # Nothing can be asked of the daemon meanwhile: one line, not a traceback (QA)
        cancel = mediad_cli(site, "cancel", "1")
        assert cancel.returncode == 1 and "disk is full" in cancel.stderr, cancel.stderr
        assert "Traceback" not in cancel.stderr, cancel.stderr
        filler.unlink()  # room again
        # Within the retry's few seconds, not by the stall timeout's kill (60 s here): QA saw
        # the worker's end message dropped with the progress write before it that failed
        site.wait_jobs("done", 1 + more, timeout=STATE_FULL_RETRY + 15)
        assert sorted(p.name for p in site.outputs()) == sorted(
            ["long.mp4"] + [f"w{i}.mp4" for i in range(more)])
        assert site.log().count("event=job_started job=1 ") == 1
        assert "job_stalled" not in site.log() and site.jobs()[0]["attempts"] == 0
        assert not (site.inbox / "long.mkv").exists()  # disposed of, as a done job's source
        assert site.stop() == 0


def mediad_cli(site: Site, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mediad", *args, "--config", str(site.config)],
                          capture_output=True, text=True, timeout=90,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_cancel_and_priority_through_the_command_channel(site: Site, tmp_path: Path) -> None:
    """`mediad cancel` stops a running job (its temporary output removed, its source left in
    place) and drops a queued one; `mediad priority` moves a queued job ahead. The daemon
    applies them from its state database; the commands wait for its answer."""
    site.watches[0]["profile"] = "slow.toml"
    site.daemon_settings["workers"] = 1
    longer = make_video(tmp_path / "longer.mkv", frames=1500, size=(320, 240), seed=299)
    site.start()
    site.drop(longer, "long.mkv")  # x264 medium: a minute on these cores, cancelled in seconds
    wait_encoding(site, 1)
    for i in range(3):
        site.drop(make_video(tmp_path / f"q{i}.mp4", seed=300 + i), f"q{i}.mp4")
    wait_for(lambda: len(site.jobs()) == 4, 30, "three more jobs queued")
    res = mediad_cli(site, "priority", "4", "10")  # the last queued runs next
    assert (res.returncode, res.stdout) == (0, "job 4: priority 10\n"), res.stderr
    # A queued one and the running one, in this order: job 4 (12 frames, a warm worker) can end
    # before the second cancel arrives, and would let job 2 start if the running one went first
    res = mediad_cli(site, "cancel", "2", "1")
    assert (res.returncode, res.stdout) == (0, "job 2: cancelled\njob 1: cancelled\n"), res.stderr
    site.wait_jobs("done", 2)
    states = {j["id"]: j["state"] for j in site.jobs()}
    assert states == {1: "cancelled", 2: "cancelled", 3: "done", 4: "done"}
    started = [int(m) for m in re.findall(r"event=job_started job=(\d+)", site.log())]
    assert started == [1, 4, 3]  # 4 (priority 10) before 3; 2 never ran
    assert (site.inbox / "long.mkv").exists() and (site.inbox / "q0.mp4").exists()
    assert sorted(p.name for p in site.outputs()) == ["q1.mp4", "q2.mp4"] and not partials(site.out)
    res = mediad_cli(site, "cancel", "3")
    assert res.returncode == 1 and res.stderr == "mediad: error: job 3: is done: nothing to cancel\n"
    assert site.stop() == 0
    res = mediad_cli(site, "status")
    assert "cancelled=2" in res.stdout, res.stdout


# ----- files that change under a job ----------------------------------------------------------

def test_a_file_whose_middle_changed_is_new_content(site: Site, tmp_path: Path) -> None:
    """Same size, same first and last MiB, other bytes in the middle (a torrent's pieces filled
    in, a tag rewritten in place): new content, a job of its own, not a duplicate."""
    site.start()
    clip = make_video(tmp_path / "clip.mp4", frames=300, size=(640, 480), seed=71)
    data = bytearray(clip.read_bytes())
    assert len(data) > 3 << 20, len(data)  # more than the first and last MiB
    source = site.drop(clip, "clip.mp4")
    site.wait_jobs("done", 1)
    mid = len(data) // 2
    with open(source, "r+b") as f:  # in place: same inode, same size
        f.seek(mid)
        f.write(bytes(b ^ 0x55 for b in data[mid:mid + 64]))
    wait_for(lambda: len(site.jobs()) == 2, 30, "a second job for the changed content")
    assert "event=file_duplicate" not in site.log()
    assert site.stop() == 0


def test_a_recording_appended_to_after_a_pause_is_never_taken_half(site: Site, long_video: Path,
                                                                   tmp_path: Path) -> None:
    """A writer that closes the file between appends and pauses longer than settle_seconds:
    the half file is taken, then grows during its job. The job's output is discarded, the
    source kept (on_success = delete must not delete it), and the whole file is transcoded."""
    from conftest import ffmpeg

    site.watches[0].update(profile="slow.toml", on_success="delete")
    site.start()
    whole = tmp_path / "whole.ts"
    ffmpeg("-i", str(long_video), "-c", "copy", "-f", "mpegts", str(whole))
    data = whole.read_bytes()
    half = len(data) // 2 // 188 * 188  # whole TS packets: a valid, shorter recording
    rec = site.inbox / "rec.ts"
    rec.write_bytes(data[:half])
    wait_encoding(site, 1)
    with open(rec, "ab") as f:  # the writer comes back while the half file is encoding
        f.write(data[half:])
    wait_for(lambda: any(j["state"] == "done" for j in site.jobs()), 120, "a job done")
    wait_for(lambda: not rec.exists(), 30, "the source deleted after its whole transcode")
    assert [p.name for p in site.outputs()] == ["rec.mp4"]
    assert count_frames(site.out / "rec.mp4") == 250
    assert site.stop() == 0


def test_a_source_replaced_during_its_job_is_left_for_its_own_job(site: Site, long_video: Path,
                                                                   tmp_path: Path) -> None:
    site.watches[0].update(profile="slow.toml", on_success="delete")
    site.daemon_settings["workers"] = 1  # the new file's job waits until the first has ended
    site.start()
    source = site.drop(long_video, "long.mkv")
    wait_encoding(site)
    # Another video renamed over the source while the source is being transcoded.
    os.rename(make_video(tmp_path / "other.mkv", seed=31), source)
    site.wait_log(r"event=source_kept job=1 .*reason=\"replaced by another file\"")
    done = site.wait_jobs("done", 2, timeout=90)
    assert [(Path(j["output"]).name, j["state"]) for j in done] == [("long.mp4", "done"),
                                                                  ("long-2.mp4", "done")]
    assert count_frames(site.out / "long.mp4") == 250
    assert count_frames(site.out / "long-2.mp4") == 12  # the new file got its own job
    wait_for(lambda: not source.exists(), 10, "the new file deleted after its own job")
    assert "event=job_failed" not in site.log()
    assert site.stop() == 0


def test_a_file_at_the_reserved_output_name_is_never_replaced(site: Site, long_video: Path,
                                                              small_video: Path) -> None:
    site.watches[0]["profile"] = "slow.toml"
    site.daemon_settings["workers"] = 1
    site.start()
    site.drop(long_video, "long.mkv")
    site.drop(small_video, "a.mp4")
    wait_for(lambda: len(site.jobs()) == 2, 30, "both files queued")
    wait_encoding(site)
    site.out.mkdir(exist_ok=True)
    # One appears while its job runs (the engine's commit refuses), one before its job starts.
    (site.out / "long.mp4").write_text("the user's own file\n")
    (site.out / "a.mp4").write_text("another file of the user's\n")
    done = site.wait_jobs("done", 2, timeout=90)
    assert sorted(Path(j["output"]).name for j in done) == ["a-2.mp4", "long-2.mp4"]
    assert (site.out / "long.mp4").read_text() == "the user's own file\n"
    assert (site.out / "a.mp4").read_text() == "another file of the user's\n"
    assert count_frames(site.out / "long-2.mp4") == 250 and count_frames(site.out / "a-2.mp4") == 12
    site.wait_log(r"event=output_renamed job=1 .*when=during_job")
    site.wait_log(r"event=output_renamed job=2 .*when=before_start")
    assert all(j["attempts"] == 0 for j in done)
    assert partials(site.out) == []
    assert site.stop() == 0


def test_a_queued_file_renamed_or_moved_out_and_back_is_still_transcoded(
        site: Site, long_video: Path, tmp_path: Path) -> None:
    site.watches[0].update(profile="slow.toml", failed_dir="failed")
    site.daemon_settings["workers"] = 1
    site.start()
    site.drop(long_video, "long.mkv")
    a = site.drop(make_video(tmp_path / "a.mp4", seed=41), "a.mp4")
    c = site.drop(make_video(tmp_path / "c.mp4", seed=42), "c.mp4")
    wait_for(lambda: len(site.jobs()) == 3, 30, "three files queued")
    wait_encoding(site)
    os.rename(a, site.inbox / "b.mp4")  # renamed while its job waits: the job follows it
    site.wait_log(r"event=job_followed job=2 source=\S*/in/b\.mp4 was=\S*/in/a\.mp4 "
                  r"state=queued output=\S*/out/b\.mp4")
    away = tmp_path / "away.mp4"
    os.rename(c, away)  # moved out while its job waits: it fails when its turn comes...
    (failed,) = site.wait_jobs("failed", 1, timeout=90)
    assert (failed["id"], failed["reason"]) == (3, "missing_input")
    note = site.root / "failed" / "c.mp4.error.json"  # in failed_dir, like any failure's
    wait_for(note.exists, 10, "the error note in failed_dir")
    assert not (site.inbox / "c.mp4.error.json").exists()
    shutil.copyfile(away, tmp_path / "c.part")
    os.rename(tmp_path / "c.part", c)  # ...and is queued again when it is back
    site.wait_log(r"event=job_followed job=3 .*state=failed")
    done = site.wait_jobs("done", 3, timeout=60)
    assert {j["id"]: Path(j["source"]).name for j in done} == {1: "long.mkv", 2: "b.mp4", 3: "c.mp4"}
    assert [p.name for p in site.outputs()] == ["b.mp4", "c.mp4", "long.mp4"]
    assert not note.exists()  # the stale note went with the failure
    assert "event=file_duplicate" not in site.log()
    assert site.stop() == 0


def test_a_non_utf8_file_name_is_transcoded_and_never_stops_the_service(
        site: Site, small_video: Path, tmp_path: Path) -> None:
    """A Latin-1 name (from an SMB share or an old archive) is a file like any other: it is
    transcoded under the same bytes, logged escaped, and a rescan or a restart takes it as
    seen (it took the service down at every start: a crash loop under Restart=on-failure)."""
    site.daemon_settings["rescan_seconds"] = 1
    site.watches[0].update(failed_dir="failed", on_success="move", done_dir="done")
    site.start()
    name = b"caf\xe9 cr\xe8me.mp4"  # Latin-1: not UTF-8
    bad = os.path.join(os.fsencode(site.inbox), b"r\xe9sum\xe9.mp4")
    with open(bad, "wb") as f:
        f.write(b"not a video\n")
    tmp = os.path.join(os.fsencode(site.inbox), b"upload.part")
    shutil.copyfile(small_video, tmp)
    os.rename(tmp, os.path.join(os.fsencode(site.inbox), name))
    site.drop(make_video(tmp_path / "plain.mp4", seed=7), "plain.mp4")
    site.drop(make_video(tmp_path / "ctl.mp4", seed=9), "tab\there\x1b[2J\r.mp4")
    site.wait_jobs("done", 3)
    site.wait_jobs("failed", 1)
    outputs = sorted(os.listdir(os.fsencode(site.out)))
    # The control characters are made safe in the output's name (as before this fix)
    assert outputs == sorted([name, b"plain.mp4", b"tab_here_[2J_.mp4"])
    failed = os.fsencode(site.root / "failed")
    wait_for(lambda: os.path.exists(os.path.join(failed, b"r\xe9sum\xe9.mp4.error.json")), 10,
             "the bad file's note")
    import json
    with open(os.path.join(failed, b"r\xe9sum\xe9.mp4.error.json"), encoding="utf-8") as f:
        assert json.load(f)["reason"] == "not_media"
    wait_for(lambda: os.path.exists(os.path.join(os.fsencode(site.root / "done"), name)), 10,
             "the source to move to done_dir")
    assert count_frames(Path(os.fsdecode(os.path.join(os.fsencode(site.out), name)))) == 12
    time.sleep(2.5)  # rescans see both files again: known, nothing queued twice
    first_log = site.log()
    assert 'source="' + str(site.inbox) + '/caf\\xe9 cr\\xe8me.mp4"' in first_log, first_log
    # One event, one line; no raw ESC or CR from a name reaches the journal's reader
    assert "\x1b" not in first_log and "\r" not in first_log
    assert 'source="' + str(site.inbox) + '/tab\\there\\x1b[2J\\r.mp4"' in first_log
    assert site.stop() == 0
    site.start()  # a restart scans the folder: the service comes up and stays up
    site.drop(make_video(tmp_path / "after.mp4", seed=8), "after.mp4")
    site.wait_jobs("done", 4)
    assert len(site.jobs()) == 5
    assert "Traceback" not in first_log + site.log()
    status = subprocess.run([sys.executable, "-m", "mediad", "status", "--config",
                             str(site.config)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert status.returncode == 0 and "caf\\xe9 cr\\xe8me.mp4" in status.stdout, status


def test_the_worker_reads_the_file_the_daemon_checked_not_a_symlink_swapped_in(
        site: Site, tmp_path: Path) -> None:
    """The daemon checks the source (no symlink, inside the folder), then its worker opens it:
    a symlink renamed over the name in between must not be followed. The worker, as the daemon
    starts it, opens the name once with O_NOFOLLOW and checks that descriptor."""
    from mediad.daemon.fingerprint import fingerprint
    from mediad.profiles import load_profile

    site.inbox.joinpath("clip.mp4").write_bytes(make_video(tmp_path / "c.mp4", seed=61).read_bytes())
    fp = fingerprint(site.inbox / "clip.mp4")  # what the daemon recorded when it queued it
    private = make_video(tmp_path / "private.mp4", seed=62)
    swap = site.inbox / ".swap"
    swap.symlink_to(private)
    os.rename(swap, site.inbox / "clip.mp4")  # after the daemon's checks, before the worker's open
    profile = load_profile(str(site.root / "fast.toml"))
    out = site.root / "out.mp4"
    spec = {"input": str(site.inbox / "clip.mp4"), "output": str(out), "gpu": "none",
            "profile": profile.model_dump(mode="json"), "profile_name": profile.name,
            "source": {"watch": str(site.inbox), "inode": fp.inode, "size": fp.size}}
    res = subprocess.run([sys.executable, "-m", "mediad.daemon.worker"], input=json.dumps(spec),
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    events = [json.loads(x) for x in res.stdout.splitlines()]
    assert events[-1]["event"] == "error" and events[-1]["reason"] == "symlink", events
    assert not out.exists()

    # A real file, but another one renamed over the name: not the job's file (its inode).
    os.unlink(site.inbox / "clip.mp4")
    site.inbox.joinpath("clip.mp4").write_bytes(private.read_bytes())
    res = subprocess.run([sys.executable, "-m", "mediad.daemon.worker"], input=json.dumps(spec),
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    events = [json.loads(x) for x in res.stdout.splitlines()]
    assert (events[-1]["reason"], events[-1]["transient"]) == ("source_changed", True), events
    assert not out.exists()

    # The file it checked: transcoded, read through the descriptor (probe, decode, checks).
    fp = fingerprint(site.inbox / "clip.mp4")
    spec["source"].update(inode=fp.inode, size=fp.size)
    res = subprocess.run([sys.executable, "-m", "mediad.daemon.worker"], input=json.dumps(spec),
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    events = [json.loads(x) for x in res.stdout.splitlines()]
    assert events[-1]["event"] == "done", (events, res.stderr)
    assert events[-1]["report"]["input"]["path"] == str(site.inbox / "clip.mp4")
    assert count_frames(out) == 12


# ----- ladders: a folder of renditions per source -------------------------------------------

# Two small HLS renditions of a 128x96 source, no audio: fast on two cores.
LADDER_PROFILE = """
container = "hls"
[video]
codec = "h264"
encoder = "cpu"
speed = "fastest"
[[renditions]]
height = 96
bitrate = "200k"
[[renditions]]
height = 64
bitrate = "100k"
[audio]
codec = "none"
[package]
segment_seconds = 1
keyframe_seconds = 0.5
"""
# Of the 320x240 long_video: slow enough (x264 "slow", 250 frames: about 2 s here) to be
# killed mid-job.
SLOW_LADDER_PROFILE = LADDER_PROFILE.replace('"fastest"', '"slow"').replace(
    "height = 96", "height = 240").replace("height = 64", "height = 120")
LADDER = "small-hls"  # the profile's name: a set's folder is <stem>.small-hls/


def use_ladder(site: Site, text: str = LADDER_PROFILE) -> None:
    (site.root / f"{LADDER}.toml").write_text(text)
    site.watches[0]["profile"] = f"{LADDER}.toml"


def ladder_source(tmp_path: Path, name: str, seed: int, frames: int = 25) -> Path:
    return make_video(tmp_path / name, frames=frames, size=(128, 96), seed=seed)


def check_set(folder: Path, frames: int, heights: tuple[int, ...] = (96, 64)) -> None:
    """The set as a player sees it, read by the independent ffmpeg: the master playlist lists
    each rendition, and each one decodes cleanly to every frame."""
    from conftest import ffmpeg

    master = (folder / "master.m3u8").read_text()
    playlists = [ln for ln in master.splitlines() if ln and not ln.startswith("#")]
    assert sorted(playlists) == sorted(f"{h}p/index.m3u8" for h in heights), master
    for playlist in playlists:
        res = ffmpeg("-v", "error", "-i", str(folder / playlist), "-map", "0:v:0", "-f",
                     "framecrc", "-")
        assert res.stderr == "", f"{playlist}: {res.stderr}"
        assert sum(1 for ln in res.stdout.splitlines() if not ln.startswith("#")) == frames


def hidden(folder: Path) -> list[Path]:
    """What is in `folder` that is not a set in view: a writer's hidden temporary set."""
    return sorted(p for p in folder.iterdir() if p.name.startswith(".")) if folder.exists() else []


def all_logs(site: Site) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(site.root.glob("daemon-*.log")))


def test_a_ladder_watch_writes_a_folder_per_source_never_into_one_that_exists(
        site: Site, tmp_path: Path) -> None:
    """A watch with a ladder profile: each source becomes `<stem>.<profile>/` (master.m3u8 and
    a folder per rendition), committed whole; a folder already at that name, or a second
    source of the same stem, gets `<stem>-2.<profile>/`; the existing folder is left alone."""
    use_ladder(site)
    site.watches[0].update(on_success="move", done_dir="done")
    own = site.out / f"a.{LADDER}"
    own.mkdir(parents=True)
    (own / "notes.txt").write_text("the user's own folder\n")
    site.start()
    site.drop(ladder_source(tmp_path, "a.mp4", seed=1), "a.mp4")
    site.drop(ladder_source(tmp_path, "b.mp4", seed=2), "b.mp4")
    site.wait_jobs("done", 2)
    site.drop(ladder_source(tmp_path, "b.mkv", seed=3, frames=30), "b.mkv")  # b's stem again
    done = site.wait_jobs("done", 3)
    outputs = {Path(j["source"]).name: Path(j["output"]) for j in done}
    assert {k: v.name for k, v in outputs.items()} == {
        "a.mp4": f"a-2.{LADDER}", "b.mp4": f"b.{LADDER}", "b.mkv": f"b-2.{LADDER}"}
    assert sorted(p.name for p in site.out.iterdir()) == sorted(
        [f"a.{LADDER}", f"a-2.{LADDER}", f"b.{LADDER}", f"b-2.{LADDER}"])  # nothing hidden left
    assert [p.name for p in own.iterdir()] == ["notes.txt"]
    assert (own / "notes.txt").read_text() == "the user's own folder\n"
    for source, frames in (("a.mp4", 25), ("b.mp4", 25), ("b.mkv", 30)):
        check_set(outputs[source], frames)
    assert all(j["attempts"] == 0 for j in done)
    # The record of each job: the folder, its manifest, each rendition's size.
    report = json.loads(next(j for j in done if j["source"].endswith("b.mkv"))["report"])
    assert report["output"] == str(outputs["b.mkv"])
    assert report["manifest"] == str(outputs["b.mkv"] / "master.m3u8")
    assert {o["name"]: o["frames"] for o in report["outputs"]} == {"96p": 30, "64p": 30}
    assert all(o["size"] > 0 for o in report["outputs"])
    # on_success = "move": each source went to done_dir once its set was committed.
    wait_for(lambda: sorted(p.name for p in (site.root / "done").glob("*")) ==
             ["a.mp4", "b.mkv", "b.mp4"], 30, "the sources moved to done_dir")
    assert list(site.inbox.iterdir()) == []
    # `mediad status` shows a folder as one.
    status = subprocess.run([sys.executable, "-m", "mediad", "status", "--config", str(site.config)],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert status.returncode == 0, status.stderr
    assert f"{outputs['a.mp4']}/" in status.stdout, status.stdout
    assert site.stop() == 0


def test_a_folder_at_a_ladders_reserved_name_is_never_replaced_or_written_into(
        site: Site, long_video: Path, tmp_path: Path) -> None:
    """A folder appears at the reserved name while the ladder runs (its set is renamed into
    place without replacing anything: the job runs again as `-2`, the attempt not counted), or
    before its job starts (it starts as `-2`)."""
    use_ladder(site, SLOW_LADDER_PROFILE)
    site.daemon_settings["workers"] = 1
    site.start()
    site.drop(long_video, "long.mkv")
    site.drop(make_video(tmp_path / "a.mp4", frames=25, size=(320, 240), seed=5), "a.mp4")
    wait_for(lambda: len(site.jobs()) == 2, 30, "both files queued")
    wait_encoding(site)
    mine = [site.out / f"long.{LADDER}", site.out / f"a.{LADDER}"]
    for folder in mine:
        folder.mkdir()
        (folder / "index.html").write_text("the user's own\n")
    done = site.wait_jobs("done", 2, timeout=90)
    assert sorted(Path(j["output"]).name for j in done) == [f"a-2.{LADDER}", f"long-2.{LADDER}"]
    assert all(j["attempts"] == 0 for j in done)
    site.wait_log(r"event=output_renamed job=1 .*when=during_job")
    site.wait_log(r"event=output_renamed job=2 .*when=before_start")
    for folder in mine:
        assert [p.name for p in folder.iterdir()] == ["index.html"]
    assert hidden(site.out) == []
    check_set(site.out / f"long-2.{LADDER}", 250, heights=(240, 120))
    check_set(site.out / f"a-2.{LADDER}", 25, heights=(240, 120))
    assert site.stop() == 0


def test_kill_9_mid_ladder_leaves_no_temporary_set_and_one_complete_folder(
        site: Site, long_video: Path) -> None:
    """A ladder worker killed outright (its hidden set half written), then the daemon killed
    with its next worker: the hidden sets are removed and the job ends with one complete
    folder, no `-2`, nothing hidden."""
    use_ladder(site, SLOW_LADDER_PROFILE)
    site.daemon_settings["retry_backoff_seconds"] = 3.0  # time to look between the attempts
    site.start()
    site.drop(long_video, "long.mkv")
    wait_encoding(site)
    assert len(hidden(site.out)) == 1  # the set being written, out of sight
    os.kill(worker_pid(site, 1), signal.SIGKILL)
    site.wait_log(r"event=job_retry job=1 ")
    site.wait_log(r"event=partial_removed path=.*\.long\.small-hls\.\d+-[0-9a-f]{8}\.part")
    assert hidden(site.out) == [] and not (site.out / f"long.{LADDER}").exists()

    site.wait_log(r"event=job_started job=1 .*attempt=2")
    wait_encoding(site)
    pid = worker_pid(site, 1)
    site.proc.kill()  # type: ignore[union-attr]
    site.proc.wait(timeout=10)  # type: ignore[union-attr]
    wait_for(lambda: not pid_alive(pid), 10, "the orphaned worker to die")
    assert len(hidden(site.out)) == 1 and not (site.out / f"long.{LADDER}").exists()

    site.start()
    site.wait_log("event=job_recovered job=1")
    (job,) = site.wait_jobs("done", 1, timeout=120)
    assert job["attempts"] == 1  # the worker's crash counted, the daemon's not
    assert sorted(p.name for p in site.out.iterdir()) == [f"long.{LADDER}"]
    check_set(site.out / f"long.{LADDER}", 250, heights=(240, 120))
    assert site.stop() == 0


def test_kill_9_as_each_ladder_folder_appears_never_redoes_it(site: Site, tmp_path: Path) -> None:
    """Exactly-once for sets: the daemon is killed (its worker with it) the moment each folder
    appears, before it can record the job done; restarted, it finds the committed set carries
    the job's key: done, never started again (no `-2` folder). A lost state database too."""
    use_ladder(site)
    names = [f"clip{i}" for i in range(5)]
    unrecorded = kill_as_each_output_appears(
        site, [f"{n}.mp4" for n in names],
        lambda i, name: ladder_source(tmp_path, name, seed=100 + i),
        lambda name: f"{Path(name).stem}.{LADDER}")
    assert unrecorded >= 1, "a kill should fall between a commit and its record"
    site.start()
    done = site.wait_jobs("done", len(names))
    assert sorted(p.name for p in site.out.iterdir()) == [f"{n}.{LADDER}" for n in names]
    logs = all_logs(site)
    for job in done:  # each set made once: never a second start, however many restarts
        assert len(re.findall(rf"event=job_started job={job['id']} ", logs)) == 1, logs
    assert len(re.findall(r"event=job_done job=\d+ .*already_done=", logs)) == unrecorded
    for name in names:
        check_set(site.out / f"{name}.{LADDER}", 25)
    assert site.stop() == 0

    # A fresh state database (the old one lost): every set is found committed for its job.
    shutil.rmtree(site.root / "state")
    site.start()
    site.wait_jobs("done", len(names))
    assert "event=job_started" not in site.log()
    assert sorted(p.name for p in site.out.iterdir()) == [f"{n}.{LADDER}" for n in names]
    assert site.stop() == 0
