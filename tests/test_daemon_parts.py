"""The daemon's parts on their own, with real files, sockets and SQLite (no daemon process)."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mediad.config import WatchConfig, load_config
from mediad.daemon.disposition import after_failure, after_success, move_file, write_json_atomic
from mediad.daemon.fingerprint import Fingerprint, fingerprint, job_key
from mediad.daemon.metrics import GpuCollector
from mediad.daemon.notify import Notifier
from mediad.daemon.partial import remove_partials
from mediad.daemon.paths import enclosing_set, output_candidates, refusal, safe_component, wanted
from mediad.daemon.queue import USER_RETRY, Queue
from mediad.daemon.retry import Requeued, retry
from mediad.daemon.settle import Settler, writer_state
from mediad.daemon.slots import Slot, choose_gpu
from mediad.daemon.status import status_report
from mediad.errors import MediadError
from mediad.gpu import DeviceTelemetry
from mediad.media.commit import (
    RECORD,
    committed_job,
    mark_job,
    remove_output,
    temp_dir_for,
    temp_path_for,
)
from mediad.media.ladder_job import default_folder
from mediad.profiles import Profile


def watch(tmp_path: Path, **kw: object) -> WatchConfig:
    (tmp_path / "in").mkdir(exist_ok=True)
    return WatchConfig.model_validate({"path": str(tmp_path / "in"), "output_dir": str(tmp_path / "out"),
                                       **kw})


@pytest.mark.parametrize(("name", "taken"), [
    ("movie.mkv", True), ("movie.mkv.part", False), ("movie.mkv.crdownload", False),
    ("movie.tmp", False), (".movie.mkv", False), ("movie.mkv~", False), ("movie.error.json", False),
    ("Movie.PART", False),
])
def test_temporary_names_wait_for_their_rename(tmp_path: Path, name: str, taken: bool) -> None:
    assert wanted(watch(tmp_path), tmp_path / "in" / name) is taken


def test_include_exclude_and_depth(tmp_path: Path) -> None:
    w = watch(tmp_path, include=["*.mkv", "shows/*"], exclude=["*sample*"], recursive=True)
    inbox = tmp_path / "in"
    assert wanted(w, inbox / "a.mkv") and not wanted(w, inbox / "a.txt")
    assert wanted(w, inbox / "shows" / "a.txt")  # a pattern with a slash matches the relative path
    assert not wanted(w, inbox / "a-sample.mkv")
    assert not wanted(w, inbox / ".hidden" / "a.mkv")
    flat = watch(tmp_path)
    assert not wanted(flat, inbox / "sub" / "a.mkv")  # not recursive: only the top folder
    assert not wanted(flat, tmp_path / "elsewhere.mkv")


def test_refusals(tmp_path: Path) -> None:
    w = watch(tmp_path, recursive=True)
    inbox = tmp_path / "in"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.mkv").write_bytes(b"x")
    (inbox / "real.mkv").write_bytes(b"x")
    (inbox / "link.mkv").symlink_to(outside / "x.mkv")
    (inbox / "inner-link.mkv").symlink_to(inbox / "real.mkv")  # even one pointing inside
    (inbox / "dir").symlink_to(outside, target_is_directory=True)
    os.mkfifo(inbox / "fifo.mkv")
    assert refusal(w, inbox / "real.mkv") is None
    assert refusal(w, inbox / "link.mkv") == "symlink"
    assert refusal(w, inbox / "inner-link.mkv") == "symlink"
    assert refusal(w, inbox / "dir" / "x.mkv") == "symlink"
    assert refusal(w, inbox / "fifo.mkv") == "not_regular"
    assert refusal(w, inbox / ".." / "outside" / "x.mkv") == "outside_watch"
    assert refusal(w, inbox / "gone.mkv") == "vanished"
    with pytest.raises(MediadError) as info:  # and fingerprinting never follows a link
        fingerprint(inbox / "link.mkv")
    assert info.value.reason == "unreadable"


@pytest.mark.parametrize(("name", "safe"), [
    ("movie", "movie"), ("..", "video"), ("...evil", "evil"), ("-rf", "rf"),
    ("a\nb\x1b[0m", "a_b_[0m"), ("tab\there", "tab_here"), ("  spaced .", "spaced"),
    ("back\\slash:colon", "back_slash_colon"), ("é" * 150, "é" * 100),
])
def test_safe_component(name: str, safe: str) -> None:
    assert safe_component(name) == safe


def test_output_paths_stay_under_output_dir(tmp_path: Path) -> None:
    w = watch(tmp_path, recursive=True)
    inbox, out = tmp_path / "in", tmp_path / "out"
    mp4 = Profile.model_validate({"container": "mp4"})
    first, second = output_candidates(w, inbox / "..hidden" / "-x\n.mkv", mp4)[:2]
    assert first == out / "hidden" / "x_.mp4" and second == out / "hidden" / "x_-2.mp4"
    # Sub-folders are mirrored; a path that leads out of the watch lands flat in output_dir.
    assert output_candidates(w, inbox / "a" / "b" / "c.mkv", mp4)[:2] == [
        out / "a" / "b" / "c.mp4", out / "a" / "b" / "c-2.mp4"]
    assert output_candidates(w, inbox / "a" / ".." / ".." / "up.mkv", mp4)[0] == out / "up.mp4"


def test_a_ladder_output_is_a_folder_named_after_the_profile(tmp_path: Path) -> None:
    """`<stem>.<profile>/` as `mediad transcode` names it, then `<stem>-2.<profile>/`...; a '%'
    (a pattern to FFmpeg's segmenters) is made safe in a ladder's path, kept in a file's."""
    w = watch(tmp_path, recursive=True)
    inbox, out = tmp_path / "in", tmp_path / "out"
    hls = Profile.model_validate({"container": "hls", "name": "small.hls"})
    assert output_candidates(w, inbox / "talk.mp4", hls)[:3] == [
        out / "talk.small.hls", out / "talk-2.small.hls", out / "talk-3.small.hls"]
    assert default_folder(inbox / "talk.mp4", hls).name == "talk.small.hls"
    assert output_candidates(w, inbox / "50%" / "100%.mkv", hls)[0] == out / "50_" / "100_.small.hls"
    mp4 = Profile.model_validate({"container": "mp4"})
    assert output_candidates(w, inbox / "50%" / "100%.mkv", mp4)[0] == out / "50%" / "100%.mp4"


def test_committed_outputs_are_known_by_their_job_key(tmp_path: Path) -> None:
    """A file by its extended attribute, a set by its record (while it is whole); a link or a
    folder of the user's own is no job's."""
    done = tmp_path / "a.mp4"
    done.write_bytes(b"video")
    if not mark_job(done, "k1"):
        pytest.skip("no user extended attributes on this filesystem")
    assert committed_job(done) == "k1"
    folder = tmp_path / "a.hls"
    (folder / "90p").mkdir(parents=True)
    (folder / "90p" / "seg0.m4s").write_bytes(b"seg")
    assert committed_job(folder) is None  # the user's own folder: no record
    record = {"job": "k2", "tracks": [{"files": ["90p/seg0.m4s"]}], "files": []}
    (folder / RECORD).write_text(json.dumps(record))
    assert committed_job(folder) == "k2"
    (tmp_path / "link.hls").symlink_to(folder)
    assert committed_job(tmp_path / "link.hls") is None
    # A file-per-rendition set written by a cluster node that mounts the storage elsewhere:
    # its files are found in the folder by name, at their sizes.
    files = tmp_path / "b.renditions"
    files.mkdir()
    (files / "b.90p.mp4").write_bytes(b"rendition")
    record = {"job": "k3", "files": [{"path": "/mnt/nas/out/b.renditions/b.90p.mp4", "size": 9}]}
    (files / RECORD).write_text(json.dumps(record))
    assert committed_job(files) == "k3"
    (files / "b.90p.mp4").write_bytes(b"changed!!!")
    assert committed_job(files) is None
    remove_output(files)
    # An output a recursive watch would mirror into the set's folder is refused.
    assert enclosing_set(tmp_path, folder / "sub" / "b.hls") == folder
    assert enclosing_set(tmp_path, tmp_path / "sub" / "b.hls") is None
    (folder / "90p" / "seg0.m4s").unlink()  # no longer whole: no longer the job's
    assert committed_job(folder) is None
    remove_output(folder)
    remove_output(done)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.hls"]


def test_fingerprint_identity(tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(os.urandom(3 << 20))
    fp = fingerprint(f)
    key = job_key(fp, "h264", tmp_path / "out")
    os.utime(f, ns=(1, 1))  # touched: new mtime, same content
    touched = fingerprint(f)
    assert touched.mtime_ns != fp.mtime_ns
    assert job_key(touched, "h264", tmp_path / "out") == key
    assert job_key(fp, "hevc", tmp_path / "out") != key  # another profile is another job
    with open(f, "r+b") as h:  # a changed tail is a changed file
        h.seek(-1, os.SEEK_END)
        h.write(b"\0" if h.read(1) != b"\0" else b"\1")
    assert fingerprint(f).digest != fp.digest


def test_writer_state_sees_an_open_writer(tmp_path: Path) -> None:
    f = tmp_path / "w.mkv"
    with open(f, "wb") as h:
        h.write(b"x")
        assert writer_state(f) == "open"
        with open(f, "rb"):
            assert writer_state(f) == "open"
    with open(f, "rb"):  # readers do not count
        assert writer_state(f) == "closed"


def test_settler_waits_for_quiet_and_close(tmp_path: Path) -> None:
    f = tmp_path / "in" / "a.mkv"
    f.parent.mkdir()
    settler = Settler()
    with open(f, "wb") as h:
        h.write(b"x")
        h.flush()
        settler.note(0, f, "write", settle=0.05, local=True)
        time.sleep(0.1)
        assert settler.tick(0.05) == []  # quiet, but still open for writing
        h.write(b"y")
    settler.note(0, f, "closed", settle=0.05, local=True)
    assert settler.tick(0.05) == []  # just changed: the quiet period starts again
    time.sleep(0.1)
    assert settler.tick(0.05) == [(0, f)]
    assert len(settler) == 0


def test_queue_states_survive_reopening(tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    fp = fingerprint(f)
    q = Queue(tmp_path)
    job = q.enqueue(key="k1", source=f, watch=tmp_path, profile="h264", output=tmp_path / "o.mp4", fp=fp)
    assert job is not None and job.state == "queued"
    assert q.enqueue(key="k1", source=f, watch=tmp_path, profile="h264", output=tmp_path / "p.mp4",
                     fp=fp) is None
    q.mark_running(job.id, "auto")
    q.close()
    q = Queue(tmp_path)  # a crash: the job was running
    assert [j.id for j in q.recover()] == [job.id]
    assert q.counts() == {"queued": 1, "running": 0, "done": 0, "failed": 0, "cancelled": 0}
    q.retry(job.id, "stalled", "no progress", time.time() + 60)
    assert q.ready(time.time()) == []  # backing off
    assert [j.id for j in q.ready(time.time() + 61)] == [job.id]
    assert q.output_taken(tmp_path / "o.mp4")
    # The scan's look-up: the job of a path seen before at exactly this stat.
    q.remember(f, fp, "k1")
    assert q.seen_job(f, f.stat()) == q.get(job.id)
    os.utime(f, ns=(1, 1))
    assert q.seen_job(f, f.stat()) is None
    # Commits by another connection (`mediad retry`) are noticed; our own are not.
    assert not q.changed_elsewhere()
    q.requeue(job.id)
    assert not q.changed_elsewhere()
    other = Queue(tmp_path)
    other.requeue(job.id)
    other.close()
    assert q.changed_elsewhere() and not q.changed_elsewhere()
    q.close()
    assert (tmp_path / "queue.sqlite3").exists()
    assert Queue(tmp_path).conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_notifier_abstract_socket_and_watchdog() -> None:
    name = f"mediad-test-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(2)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "2000000",
                      "WATCHDOG_PID": str(os.getpid())})
        assert n.watchdog_interval == 1.0
        n.ready("queued=0")
        assert server.recv(1024).decode() == f"READY=1\nSTATUS=queued=0\nMAINPID={os.getpid()}"
        n.watchdog(100.0)
        n.watchdog(100.5)  # not due yet
        n.watchdog(101.0)
        assert [server.recv(64), server.recv(64)] == [b"WATCHDOG=1", b"WATCHDOG=1"]
        n.status("queued=0")  # unchanged: not sent
        n.status("queued=1")
        assert server.recv(64) == b"STATUS=queued=1"
        n.close()
    finally:
        server.close()
    # Another process's watchdog, or no socket at all: silent no-ops.
    assert Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    Notifier({}).ready("x")


def test_remove_partials_only_touches_dead_writers_of_that_output(tmp_path: Path) -> None:
    out = tmp_path / "movie.mp4"
    # Temporary names as the engine makes them (temp_path_for), by a writer that has exited...
    child = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from mediad.media.commit import temp_path_for; "
         "[print(temp_path_for(Path(a))) for a in sys.argv[1:]]",
         str(out), str(tmp_path / "movie.b.mp4")],
        capture_output=True, text=True, check=True, timeout=60)
    dead, other = map(Path, child.stdout.split())  # other: the temp file of movie.b.mp4
    mine = temp_path_for(out)  # ...and by this live process
    for p in (dead, mine, other):
        p.write_bytes(b"x")
    assert remove_partials(out) == [dead]
    assert mine.exists() and other.exists()


def test_remove_partials_removes_a_killed_ladders_hidden_set(tmp_path: Path) -> None:
    out = tmp_path / "talk.hls"
    child = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from mediad.media.commit import temp_dir_for; print(temp_dir_for(Path(sys.argv[1])))",
         str(out)], capture_output=True, text=True, check=True, timeout=60)
    dead = Path(child.stdout.strip())
    mine = temp_dir_for(out)  # this live process's
    for folder in (dead, mine):
        (folder / "720p").mkdir(parents=True)
        (folder / "720p" / "seg00000.m4s").write_bytes(b"x")
    assert remove_partials(out) == [dead]
    assert not dead.exists() and mine.exists()


def test_status_without_a_database(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    cfg = tmp_path / "mediad.toml"
    cfg.write_text('[daemon]\nstate_dir = "state"\n[[watch]]\npath = "in"\noutput_dir = "out"\n')
    with pytest.raises(MediadError, match="no state database yet"):
        status_report(cfg)


def test_nvenc_budget() -> None:
    auto = Profile.model_validate({"video": {"encoder": "auto"}})
    required = Profile.model_validate({"video": {"encoder": "gpu"}})
    cpu = Profile.model_validate({"video": {"encoder": "cpu"}})
    assert choose_gpu(auto, [], {}, 3, "cpu") == Slot("auto")  # no GPU: the engine decides
    assert choose_gpu(cpu, [0, 1], {}, 3, "cpu") == Slot("auto")  # no NVENC session needed
    assert choose_gpu(auto, [0, 1], {0: 1}, 3, "cpu") == Slot("1", 1)  # the least busy GPU
    assert choose_gpu(auto, [0, 1], {0: 2, 1: 2}, 3, "cpu") == Slot("0", 0)
    full = {0: 3, 1: 3}
    # over budget: encode in software now, but NVDEC and model stages keep the GPU
    over = choose_gpu(auto, [0, 1], full, 3, "cpu")
    assert over is not None and (over.gpu, over.nvenc_device) == ("auto", None)
    assert over.no_nvenc == "every GPU has its 3 NVENC sessions in use (daemon.nvenc_sessions)"
    assert choose_gpu(auto, [0, 1], full, 3, "wait") is None  # over budget: wait
    assert choose_gpu(required, [0, 1], full, 3, "cpu") is None  # needs NVENC: wait
    off = choose_gpu(auto, [0], {}, 0, "wait")  # NVENC off
    assert off == Slot("auto", None, "NVENC is off (daemon.nvenc_sessions = 0)")


def test_move_file_across_file_systems_and_error_note(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in" / "a.mkv"
    src.parent.mkdir()
    src.write_bytes(b"video")
    os.chmod(src, 0o640)
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "a.mkv").write_bytes(b"older")  # taken: the move picks a free name

    def exdev(a: object, b: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "rename", exdev)  # os.replace (same folder) still works
    dest = move_file(src, tmp_path / "failed")
    assert dest == tmp_path / "failed" / "a-2.mkv" and dest.read_bytes() == b"video"
    assert not src.exists() and stat.S_IMODE(dest.stat().st_mode) == 0o640
    note = tmp_path / "failed" / "a-2.mkv.error.json"
    write_json_atomic(note, {"reason": "not_media"})
    assert json.loads(note.read_text()) == {"reason": "not_media"}
    assert stat.S_IMODE(note.stat().st_mode) == 0o644
    assert sorted(p.name for p in (tmp_path / "failed").iterdir()) == [
        "a-2.mkv", "a-2.mkv.error.json", "a.mkv"]  # no temporary file left behind


def test_gpu_collector_reads_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = DeviceTelemetry(index=0, cuda_index=0, name="GPU", uuid="GPU-0", memory_total=8 << 30,
                          memory_free=6 << 30, util_gpu=50, util_encoder=None, util_decoder=25)
    monkeypatch.setattr("mediad.gpu.read_telemetry", lambda: ([gpu], ""))
    families = {f.name: f for f in GpuCollector().collect()}
    util = {tuple(s.labels.values()): s.value for s in families["mediad_gpu_utilization_ratio"].samples}
    assert util == {("0", "sm"): 0.5, ("0", "decoder"): 0.25}  # what NVML did not say is left out
    (mem,) = families["mediad_gpu_memory_used_bytes"].samples
    assert (mem.labels, mem.value) == ({"gpu": "0"}, float(2 << 30))
    monkeypatch.setattr("mediad.gpu.read_telemetry", lambda: ([], "no GPU"))
    assert list(GpuCollector().collect()) == []


def failed_site(tmp_path: Path) -> tuple[Path, Queue]:
    """A config (watch without failed_dir) and its queue, for retry without a daemon."""
    (tmp_path / "in").mkdir()
    cfg = tmp_path / "mediad.toml"
    cfg.write_text('[daemon]\nstate_dir = "state"\n[[watch]]\npath = "in"\noutput_dir = "out"\n')
    (tmp_path / "state").mkdir()
    return cfg, Queue(tmp_path / "state")


def fail_job(cfg: Path, q: Queue, name: str, content: bytes, state: str = "failed") -> int:
    """Queue a job for in/NAME as the daemon does and end it in `state` (failed: with its note)."""
    w = load_config(cfg).watch[0]
    src = w.path / name
    src.write_bytes(content)
    fp = fingerprint(src)
    job = q.enqueue(key=job_key(fp, w.profile, w.output_dir), source=src, watch=w.path,
                    profile=w.profile, output=w.output_dir / f"{src.stem}.mp4", fp=fp)
    assert job is not None
    if state == "failed":
        q.failed(job.id, "not_media", "not a media file")
        after_failure(w, q.get(job.id), "not_media", "not a media file")  # type: ignore[arg-type]
        q.disposed(job.id)
    elif state == "done":
        q.done(job.id, {})
    return job.id


def test_retry_in_place_and_what_it_refuses(tmp_path: Path) -> None:
    cfg, q = failed_site(tmp_path)
    inbox = tmp_path / "in"
    a = fail_job(cfg, q, "a.mkv", b"broken")
    note = inbox / "a.mkv.error.json"
    assert json.loads(note.read_text())["moved_to"] is None  # no failed_dir: left in place
    (inbox / "a.mkv").write_bytes(b"fixed in place")
    (r,) = retry(cfg, [str(a)])
    assert r == Requeued(a, inbox / "a.mkv", None)
    assert r.line() == f"job {a}: requeued {inbox / 'a.mkv'}"
    job = q.get(a)
    assert job is not None and (job.state, job.attempts, job.reason, job.disposed) == ("queued", 0, USER_RETRY, 0)
    assert job.digest == fingerprint(inbox / "a.mkv").digest  # the file as it is now
    assert not note.exists()
    assert q.seen_job(inbox / "a.mkv", (inbox / "a.mkv").stat()) == job

    (again,) = retry(cfg, [str(inbox / "a.mkv")])  # by path: the job, in its state
    assert isinstance(again, MediadError) and str(again) == (
        f"job {a}: is queued; only failed jobs can be retried")
    q.mark_running(a, "auto")
    assert "is running;" in str(retry(cfg, [str(a)])[0])

    # The fixed content is already another job's: refused, nothing changed.
    done = fail_job(cfg, q, "b.mkv", b"good", state="done")
    c = fail_job(cfg, q, "c.mkv", b"bad")
    (inbox / "c.mkv").write_bytes(b"good")
    before = q.get(c)
    (dup,) = retry(cfg, [str(c)])
    assert str(dup) == f"job {c}: {inbox / 'c.mkv'} has the same content as job {done} (done)"
    assert q.get(c) == before and (inbox / "c.mkv.error.json").exists()

    # Gone source, unknown id or path, an output in the way: one error each, in order.
    d = fail_job(cfg, q, "d.mkv", b"bad d")
    (inbox / "d.mkv").unlink()
    e = fail_job(cfg, q, "e.mkv", b"bad e")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "e.mp4").write_bytes(b"someone's")
    results = retry(cfg, [str(d), "999", str(tmp_path / "nope.mkv"), str(e)])
    assert [str(x) for x in results] == [
        f"job {d}: its source is gone ({inbox / 'd.mkv'} does not exist)",
        "job 999: no such job",
        f"{tmp_path / 'nope.mkv'}: no job has this source, and no error note names it",
        f"job {e}: its output {tmp_path / 'out' / 'e.mp4'} exists; move it away first",
    ]
    assert [j.id for j in q.failed_jobs()] == [c, d, e]
    q.close()


def test_disposition_acts_only_on_the_file_the_job_fingerprinted(tmp_path: Path) -> None:
    w = watch(tmp_path, on_success="delete", failed_dir=str(tmp_path / "failed"))
    (tmp_path / "state").mkdir()
    q = Queue(tmp_path / "state")
    src = w.path / "a.mkv"
    src.write_bytes(b"the file the job ran on")
    fp = fingerprint(src)
    job = q.enqueue(key="k", source=src, watch=w.path, profile=w.profile,
                    output=w.output_dir / "a.mp4", fp=fp)
    assert job is not None
    other = tmp_path / "other.mkv"
    other.write_bytes(b"a different file")
    os.rename(other, src)  # replaced while its job ran
    after_success(w, job)
    assert src.read_bytes() == b"a different file"
    after_failure(w, job, "corrupt", "bad")
    assert src.read_bytes() == b"a different file"  # not moved to failed_dir either
    assert (tmp_path / "failed" / "a.mkv.error.json").exists()
    assert not (tmp_path / "failed" / "a.mkv").exists()
    # Touched (same inode and content, another mtime): telling a touch from a rewrite would
    # mean reading all of it in the daemon's loop, so it is kept: never lost untranscoded.
    src.write_bytes(b"the file the job ran on")
    os.utime(src, ns=(1, 1))
    after_success(w, q.get(job.id))  # type: ignore[union-attr, arg-type]
    assert src.read_bytes() == b"the file the job ran on"
    q.close()


def test_status_escapes_odd_names_and_retry_takes_any_id(tmp_path: Path) -> None:
    cfg, q = failed_site(tmp_path)
    odd = "new\nline \x1b[31mred\x07.mkv"
    fail_job(cfg, q, odd, b"broken")
    q.close()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    status = subprocess.run([sys.executable, "-m", "mediad", "status", "--config", str(cfg)],
                            capture_output=True, text=True, env=env, timeout=60)
    assert status.returncode == 0, status.stderr
    assert "\x1b" not in status.stdout and "\x07" not in status.stdout
    (row,) = [ln for ln in status.stdout.splitlines() if "failed " in ln and "not_media" in ln]
    assert "new\\nline \\x1b[31mred\\x07.mkv ->" in row
    big = "99999999999999999999999"
    res = subprocess.run([sys.executable, "-m", "mediad", "retry", "--config", str(cfg), big],
                         capture_output=True, text=True, env=env, timeout=60)
    assert (res.returncode, res.stdout) == (1, "")
    assert res.stderr.splitlines() == [f"mediad: error: job {big}: no such job"]


def test_a_state_database_from_before_moved_to_upgrades_in_place(tmp_path: Path) -> None:
    import sqlite3

    from mediad.daemon import queue as queue_module
    from mediad.daemon import schema

    old_schema = schema._SCHEMA_V1  # as databases were made before schema versions
    assert "moved_to" not in old_schema
    conn = sqlite3.connect(tmp_path / queue_module.DB_NAME)
    conn.executescript(old_schema)
    conn.execute("INSERT INTO jobs (key, source, watch, profile, output, state, size, mtime_ns, "
                 "inode, digest, created, updated) VALUES ('k', '/in/a.mp4', '/in', 'fast', "
                 "'/out/a.mp4', 'failed', 1, 1, 1, 'd', 0, 0)")
    conn.commit()
    conn.close()
    q = Queue(tmp_path)
    assert q.conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    job = q.get(1)
    assert job is not None and job.moved_to is None and job.source == "/in/a.mp4"
    latin1 = Path(os.fsdecode(b"/failed/caf\xe9.mp4"))
    q.disposed(1, latin1)  # a name that is not UTF-8 goes in and comes back the same
    job = q.get(1)
    assert job is not None and job.disposed == 1 and job.moved_to == str(latin1)
    q.close()
    # A database of a newer mediad is refused in one line, not downgraded or misread.
    conn = sqlite3.connect(tmp_path / queue_module.DB_NAME)
    conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(MediadError, match="made by a newer mediad"):
        Queue(tmp_path)


def test_the_nodes_record_is_written_only_when_it_changed_or_is_due_for_confirming(
        tmp_path: Path) -> None:
    from mediad.daemon.queue import NODES_SEEN_EVERY, NodeView, read_nodes

    q = Queue(tmp_path)

    def nodes(at: float, used: float = 0.0, alive: bool = True) -> list[NodeView]:
        return [NodeView("10.0.0.2", alive, {"CPU": 4.0, "nvenc_h264": 2.0},
                         {"nvenc_h264": used} if used else {}, at),
                NodeView("10.0.0.3", True, {"CPU": 2.0}, {}, at)]

    def writes() -> int:
        return q.conn.total_changes

    statements: list[str] = []
    q.conn.set_trace_callback(statements.append)
    assert q.set_nodes([]) is False  # no cluster, nothing recorded: nothing to write
    assert q.set_nodes(nodes(100.0)) is True
    assert read_nodes(q.conn) == nodes(100.0)
    before, statements[:] = writes(), []
    assert q.set_nodes(nodes(104.0)) is False  # unchanged: not written again
    assert q.set_nodes(nodes(100.0 + NODES_SEEN_EVERY - 1)) is False
    assert statements == []  # nor read back: the record as written is kept in memory
    assert writes() == before and read_nodes(q.conn) == nodes(100.0)
    assert q.set_nodes(nodes(100.0 + NODES_SEEN_EVERY)) is True  # confirmed: `seen` moves on
    assert [n.seen for n in read_nodes(q.conn)] == [100.0 + NODES_SEEN_EVERY] * 2
    assert q.set_nodes(nodes(131.0, used=1.0)) is True  # a job took a session there
    assert read_nodes(q.conn)[0].used == {"nvenc_h264": 1.0}
    assert q.set_nodes(nodes(132.0, used=1.0, alive=False)) is True  # the node was lost
    assert read_nodes(q.conn)[0].alive is False
    assert q.set_nodes(nodes(133.0)) is True
    q.close()
    # A daemon started again compares with what the one before it recorded
    q = Queue(tmp_path)
    assert q.set_nodes(nodes(134.0)) is False
    assert q.set_nodes([]) is True and read_nodes(q.conn) == []
    q.close()


def test_a_full_state_disk_gives_the_log_back_once_an_episode(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The daemon's loop hits the full disk at every write it tries (files, starts, progress):
    the log's checkpoint and the line saying so come once, at the first, until a write goes
    through again."""
    from mediad.daemon.fingerprint import Identified
    from mediad.daemon.state_room import STATE_FULL_RETRY, StateRoom

    class Loop(StateRoom):  # its own state, as Daemon.__init__ sets it
        def __init__(self, queue: Queue) -> None:
            self.queue, self.state_dir = queue, tmp_path
            self.unrecorded, self.next_unrecorded, self.state_full = {}, 0.0, False

    loop = Loop(Queue(tmp_path))
    statements: list[str] = []
    loop.queue.conn.set_trace_callback(statements.append)

    def checkpoints() -> int:
        return sum("wal_checkpoint" in s for s in statements)

    files = [Identified(0, tmp_path / f"v{i}.mp4", Fingerprint(i, i, i, "d")) for i in range(3)]
    for item in files:
        loop._state_full(item)
    for _ in range(3):  # the files tried again, still no room; a start, a progress write
        waited = loop._unrecorded_due(time.monotonic() + STATE_FULL_RETRY)
        assert waited == files
        for item in waited:
            loop._state_full(item)
        loop._state_full(None)
    assert checkpoints() == 1 and loop.state_full
    assert caplog.text.count("event=state_full") == 1
    loop._state_room()  # the files recorded: room again
    loop._state_full(None)  # a new episode
    assert checkpoints() == 2 and caplog.text.count("event=state_full") == 2
    loop.queue.close()


def test_a_v6_database_gets_each_done_jobs_output_size_and_done_records_it(tmp_path: Path) -> None:
    import sqlite3

    from mediad.daemon import queue as queue_module
    from mediad.daemon import schema

    conn = sqlite3.connect(tmp_path / queue_module.DB_NAME, isolation_level=None)
    conn.row_factory = sqlite3.Row
    schema.migrate(conn, to=6)  # a database of schema v6: no out_size column
    # Report text -> the size the upgrade records: only well-formed outputs' whole sizes count
    cases = {'{"outputs": [{"size": 3}, {"size": 4}, "x", {"size": -2}, {"size": 1.5}]}': 7,
             '{"outputs": [{"name": "720p", "size": 1000}, {"name": "360p", "size": 250}]}': 1250,
             '{"outputs": [{"size": 1': None, "garbage": None, '{"outputs": ["x"]}': 0,
             '{"outputs": 5}': None, '{"outputs": [{"size": 99999999999999999999999}]}': 0,
             '{"outputs": [{"size": 281474976710656}, {"size": 281474976710656}]}': 2**49,
             '{"a": ' * 5000 + "1" + "}" * 5000: None, "": None, None: None, b"\xff": None}
    for i, text in enumerate(cases):
        conn.execute("INSERT INTO jobs (key, source, watch, profile, output, state, size, "
                     "mtime_ns, inode, digest, created, updated, report) VALUES (?, ?, '/in', "
                     "'fast', ?, 'done', 9, 1, 1, 'd', 0, 0, ?)",
                     (f"k{i}", f"/in/{i}.mp4", f"/out/{i}.mp4", text))
    conn.execute("INSERT INTO jobs (key, source, watch, profile, output, state, size, mtime_ns, "
                 "inode, digest, created, updated, report) VALUES ('f', '/in/f.mp4', '/in', "
                 "'fast', '/out/f.mp4', 'failed', 9, 1, 1, 'd', 0, 0, '{\"outputs\": [{\"size\": 5}]}')")
    conn.close()
    q = Queue(tmp_path)
    assert q.conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    got = [r[0] for r in q.conn.execute("SELECT out_size FROM jobs ORDER BY id")]
    assert got == [*cases.values(), None]  # only done jobs have one
    assert q.get(2).out_size == 1250  # type: ignore[union-attr]
    # A job done now has its size recorded with its report
    job = q.enqueue(key="new", source=Path("/in/new.mp4"), watch=Path("/in"), profile="fast",
                    output=Path("/out/new.mp4"), fp=Fingerprint(9, 1, 1, "d"))
    assert job is not None and job.out_size is None
    q.mark_running(job.id, "0")
    q.done(job.id, {"outputs": [{"path": "/out/new.mp4", "size": 4321}], "elapsed": 1.0})
    assert q.get(job.id).out_size == 4321  # type: ignore[union-attr]
    q.close()


def test_a_v4_command_channel_upgrades_to_submit_and_retry_kinds(tmp_path: Path) -> None:
    import sqlite3

    from mediad.daemon import queue as queue_module
    from mediad.daemon import schema

    conn = sqlite3.connect(tmp_path / queue_module.DB_NAME, isolation_level=None)
    conn.row_factory = sqlite3.Row
    schema.migrate(conn, to=4)  # a database of schema v4
    conn.execute("INSERT INTO commands (kind, job, value, created, applied, result) VALUES "
                 "('priority', 3, 5, 1.0, 2.0, 'priority 5')")
    with pytest.raises(sqlite3.IntegrityError):  # v4 knows only cancel and priority
        conn.execute("INSERT INTO commands (kind, job, created) VALUES ('retry', 3, 1.0)")
    conn.close()
    q = Queue(tmp_path)
    assert q.conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    old = q.command(1)
    assert old is not None and (old.kind, old.job, old.value, old.result, old.args) == \
        ("priority", 3, 5, "priority 5", None) and old.ok
    submit = q.add_command("submit", None, args={"path": "/in/a.mp4", "profile": "fast"})
    assert [c.id for c in q.pending_commands()] == [submit]
    pending = q.command(submit)
    assert pending is not None and pending.job is None and pending.ok is None
    assert json.loads(pending.args or "") == {"path": "/in/a.mp4", "profile": "fast"}
    q.command_applied(submit, "queued", 7)
    done = q.command(submit)
    assert done is not None and (done.job, done.result, done.ok) == (7, "queued", True)
    q.command_applied(q.add_command("retry", 7), "refused: not_failed: job 7: is done")
    assert q.command(3).ok is False  # type: ignore[union-attr]
    with pytest.raises(sqlite3.IntegrityError):
        q.add_command("reboot", 1)
    # A submit's own output folder is the job's (its key and a renamed output go there)
    fp = Fingerprint(1, 1, 1, "d")
    job = q.enqueue(key="k", source=Path("/in/a.mp4"), watch=Path("/in"), profile="fast",
                    output=Path("/out/mine/a.mp4"), fp=fp, output_dir=Path("/out/mine"))
    assert job is not None and job.output_dir == "/out/mine"
    plain = q.enqueue(key="k2", source=Path("/in/b.mp4"), watch=Path("/in"), profile="fast",
                      output=Path("/out/b.mp4"), fp=fp)
    assert plain is not None and plain.output_dir is None
    q.close()
