"""Stopping signals: inside a job they wait for its next safe point (a handler that raises can
leave a lock held: CI's hung SIGTERM'd transcode); outside one, and a second time, they stop
at once; once stopping, more are ignored so the clean-up ends. Real signals to this process."""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SAMPLES

from mediad import stopping
from mediad.cli import STOPPING_SIGNALS, _stopping_raises


@pytest.fixture(autouse=True)
def default_handlers() -> Iterator[None]:
    """The signals as a fresh program has them: tests before these (in one pytest process)
    may have left handlers of their own, which _stopping_raises keeps, as it keeps nohup's."""
    saved = {sig: signal.signal(sig, signal.SIG_DFL) for sig in STOPPING_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        stopping.reset()


def _signal_self(signum: int = signal.SIGTERM) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # Python runs the handler at the main thread's next instructions


def test_inside_a_job_a_signal_waits_for_the_safe_point() -> None:
    with _stopping_raises(), stopping.deferred():
        _signal_self()  # noted, not raised here
        with pytest.raises(stopping.Stopped) as stopped:
            stopping.check()
        assert stopped.value.signum == signal.SIGTERM
        stopping.check()  # stopping now: the clean-up's own checks pass
        _signal_self(signal.SIGHUP)  # ignored: the clean-up runs to its end


def test_outside_a_job_a_signal_stops_at_once() -> None:
    with _stopping_raises(), pytest.raises(stopping.Stopped) as stopped:
        _signal_self(signal.SIGHUP)
    assert stopped.value.signum == signal.SIGHUP


def test_a_second_signal_while_the_first_waits_stops_at_once() -> None:
    with _stopping_raises(), stopping.deferred():
        _signal_self(signal.SIGTERM)
        with pytest.raises(stopping.Stopped) as stopped:
            _signal_self(signal.SIGINT)  # the user insists: no safe point is waited for
        assert stopped.value.signum == signal.SIGTERM  # the first one's number: 128+15


def test_a_job_stopped_mid_queue_traffic_leaves_no_lock_held() -> None:
    """What CI's hang was: the main thread hands items to a worker thread through a queue while
    a signal arrives; it stops at a check between items, never inside the queue's lock."""
    q: queue.Queue[int | None] = queue.Queue(maxsize=4)
    taker = threading.Thread(target=lambda: [None for _ in iter(q.get, None)], daemon=True)
    taker.start()
    sender = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM))
    with _stopping_raises(), stopping.deferred(), pytest.raises(stopping.Stopped):
        sender.start()
        for i in range(10_000_000):
            stopping.check()
            q.put(i)
    assert q.mutex.acquire(timeout=1), "the queue's lock was left held"
    q.mutex.release()
    q.put(None)
    taker.join(timeout=5)
    assert not taker.is_alive()


def test_a_signal_during_the_commit_lets_it_finish_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """QA: SIGTERM arriving while the output is committed (past the job's last safe point) was
    silently ignored. The commit finishes (the output is whole) and the command says so."""
    import mediad.media.job as job
    from mediad.cli import main

    real_commit = job.commit

    def commit(*args: object, **kwargs: object) -> object:
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal, as the commit starts
        time.sleep(0.05)
        return real_commit(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(job, "commit", commit)
    out = tmp_path / "out.mkv"
    code = main(["transcode", str(SAMPLES / "h264_aac.mp4"), "-p", "h264", "-o", str(out),
                 "--gpu", "none", "--no-progress"])
    assert code == 0 and out.exists()
    assert "mediad: SIGTERM came as the job ended: its output is complete" in capsys.readouterr().err
    assert stopping.noted() is None  # forgotten: a later job in this process is not stopped
