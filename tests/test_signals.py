"""A one-shot transcode stopped by a signal removes its hidden temporary output and exits 128+N."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, make_clip

# Every signal whose default action ends the process and that a process can catch. Python
# itself ignores SIGXFSZ (a file-size limit is then an EFBIG write error: see test_cli_errors).
STOPPING = [signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1,
            signal.SIGUSR2, signal.SIGALRM, signal.SIGXCPU, signal.SIGVTALRM, signal.SIGPROF,
            signal.SIGPWR, signal.SIGIO, signal.SIGRTMIN]


@pytest.fixture(scope="module")
def long_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A clip and a slow profile: seconds of encoding, wherever the test runs, to stop mid-way."""
    folder = tmp_path_factory.mktemp("job")
    profile = folder / "slowest.toml"
    profile.write_text('[video]\nspeed = "slowest"\n')
    return make_clip(folder / "long.mp4", frames=300, size=(640, 360)), profile


def _default_dispositions() -> None:
    """In the child: every stopping signal at its default action.

    A test run started in the background by a shell (`cmd &`, `nohup`, CI runners) inherits
    SIGINT, SIGQUIT and SIGHUP ignored, and mediad rightly keeps an ignored signal ignored.
    """
    for sig in STOPPING:
        signal.signal(sig, signal.SIG_DFL)


def _start(job: tuple[Path, Path], out_dir: Path, *extra: str,
           preexec_fn: Callable[[], object] | None = None) -> subprocess.Popen:
    """Start a transcode and return once it is writing its temporary output."""
    clip, profile = job

    def prepare() -> None:
        _default_dispositions()
        if preexec_fn is not None:
            preexec_fn()

    proc = subprocess.Popen([sys.executable, "-m", "mediad", "transcode", str(clip), "-p",
                             str(profile), "-o", str(out_dir / "out.mp4"), "--gpu", "none",
                             "--no-progress", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=prepare)
    deadline = time.monotonic() + 60
    while not list(out_dir.glob(".out.*.part*")):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"never started encoding: {proc.communicate()}")
        time.sleep(0.01)
    return proc


@pytest.mark.parametrize("sig", STOPPING, ids=lambda s: s.name)
def test_signal_mid_encode_leaves_nothing(sig: signal.Signals, long_job: tuple[Path, Path],
                                          tmp_path: Path) -> None:
    proc = _start(long_job, tmp_path)
    time.sleep(0.2)  # well inside the encode loop
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr and len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("mediad: interrupted"), stderr
    assert list(tmp_path.iterdir()) == []  # no .part, no output


def test_signal_with_json_prints_the_error(long_job: tuple[Path, Path], tmp_path: Path) -> None:
    proc = _start(long_job, tmp_path, "--json")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert json.loads(stdout) == {"error": "interrupted by SIGTERM", "reason": "interrupted",
                                  "file": str(long_job[0])}
    assert list(tmp_path.iterdir()) == []


def test_an_ignored_signal_stays_ignored(long_job: tuple[Path, Path], tmp_path: Path) -> None:
    """`nohup mediad transcode ...` must survive the terminal's hangup; SIGXFSZ is ignored too."""
    proc = _start(long_job, tmp_path,
                  preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    proc.send_signal(signal.SIGHUP)
    proc.send_signal(signal.SIGXFSZ)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_a_second_signal_does_not_interrupt_the_cleanup(long_job: tuple[Path, Path], tmp_path: Path) -> None:
    proc = _start(long_job, tmp_path)
    for _ in range(20):
        proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []
