"""The daemon's side of worker processes: a pool of warm ones (started ahead, the engine already
imported, each running jobs one after another), their JSON lines, stalls, kills.

A process that crashed, was killed (a stall, a stop) or ran MAX_JOBS jobs is not used again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import mediad
from mediad.daemon.notify import NOTIFY_ENV
from mediad.daemon.protocol import Done, Failed, JobSpec, Progress, Started, read_event
from mediad.errors import Reason

# The worker must run the same mediad as the daemon, installed or not.
_PACKAGE_ROOT = str(Path(mediad.__file__).resolve().parent.parent)


@dataclass
class Outcome:
    """How a worker ended: done with a report, or an error (transient or not)."""

    ok: bool
    report: dict | None = None
    reason: Reason = Reason.ERROR
    message: str = ""
    transient: bool = False


MAX_JOBS = 100  # jobs per worker process, then a fresh one: whatever leaks is bounded


class JobProcess(Protocol):
    """What runs one job, as the daemon's loop sees it: a subprocess.Popen here, a task on a
    cluster node (ray_executor.RayTask) there."""

    pid: int
    returncode: int | None
    stdout: IO[bytes] | None

    def poll(self) -> int | None: ...
    def send_signal(self, sig: int) -> None: ...


@dataclass
class Worker:
    """One job running in a worker process, and what it has said so far."""

    job_id: int
    gpu: str
    nvenc_device: int | None
    proc: JobProcess
    node: str | None = None  # the cluster node it runs on, once it said so
    placed: bool = True  # False while a cluster job waits for a node (no stall clock then)
    started: float = field(default_factory=time.monotonic)
    last_progress: float = field(default_factory=time.monotonic)
    frames_done: int = 0
    frames_total: int | None = None
    fps: float = 0.0
    result: Outcome | None = None
    killed_for: str | None = None  # "stalled", "shutdown" or "cancel" once we stopped it
    kill_deadline: float | None = None
    eof: bool = False
    _buffer: bytes = b""

    @property
    def fd(self) -> int:
        """The stdout pipe to select on."""
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def read(self) -> tuple[list[dict], bool]:
        """Read what the pipe holds: (complete JSON messages, end of file reached)."""
        if self.eof:
            return [], True
        data = b""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
                break
            data += chunk
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        messages = []
        for line in lines:
            try:
                msg = json.loads(line)
            except ValueError:
                continue  # not ours: the worker sends everything else to stderr, but be safe
            if isinstance(msg, dict):
                messages.append(msg)
        return messages, self.eof

    def handle(self, msg: dict) -> bool:
        """Apply one message; True when it was progress (for metrics and the stall clock)."""
        event = read_event(msg)
        if isinstance(event, Started):
            self.node = event.node
            if not self.placed:
                self.placed = True
                self.last_progress = time.monotonic()
        elif isinstance(event, Progress):
            if event.frames_done > self.frames_done:
                self.last_progress = time.monotonic()
            self.frames_done = event.frames_done
            self.frames_total = event.frames_total
            self.fps = event.fps
            return True
        if isinstance(event, Done):
            self.result = Outcome(True, report=event.report)
        elif isinstance(event, Failed):
            self.result = Outcome(False, reason=event.reason, message=event.message,
                                  transient=event.transient)
        elif event is None and msg.get("event") == "error":  # an error line we cannot read
            self.result = Outcome(False, reason=Reason.ERROR, message=str(msg.get("message")),
                                  transient=True)
        return False

    def signal(self, signum: int) -> None:
        """Signal the worker's whole process group (FFmpeg threads and any children); a task
        elsewhere is stopped as its executor does it."""
        if not isinstance(self.proc, subprocess.Popen):
            self.proc.send_signal(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)

    @property
    def ended(self) -> bool:
        """The job said how it ended (done or error); its process may run another."""
        return self.result is not None

    def outcome(self) -> Outcome:
        """The result after the process exited (a silent exit is a crash)."""
        if self.result is not None:
            return self.result
        code = self.proc.returncode
        how = f"signal {-code} ({signal.Signals(-code).name})" if code and code < 0 else f"exit {code}"
        return Outcome(False, reason=Reason.WORKER_CRASHED, transient=True,
                       message=f"worker process ended without a result ({how})")


def start_worker_process() -> subprocess.Popen:
    """A worker process (`python -m mediad.daemon.worker`) reading job specs on its stdin and
    writing events on its stdout, in a process group of its own."""
    env = {k: v for k, v in os.environ.items() if k not in NOTIFY_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "mediad.daemon.worker"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        start_new_session=True,  # its own process group: all of it can be killed; ^C misses it
    )


class Pool:
    """Warm worker processes: idle ones wait, the engine imported, for their next job."""

    def __init__(self, warm: int = 1) -> None:
        self.warm = warm  # idle processes kept ready
        self.idle: list[subprocess.Popen] = []
        self.jobs_run: dict[int, int] = {}  # per process id

    @staticmethod
    def _start() -> subprocess.Popen:
        proc = start_worker_process()
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)  # read by the daemon's select loop
        return proc

    def fill(self) -> None:
        """Start idle processes up to `warm` (their start-up overlaps the running jobs)."""
        self.idle = [p for p in self.idle if p.poll() is None]
        while len(self.idle) < self.warm:
            self.idle.append(self._start())

    def run(self, job_id: int, spec: JobSpec, gpu: str, nvenc_device: int | None) -> Worker:
        """Hand `spec` to an idle process (a new one when none is ready)."""
        # The most recently used first: its caches are warm, and the spare stays spare
        proc = next((p for p in reversed(self.idle) if p.poll() is None), None)
        if proc is not None:
            self.idle.remove(proc)
        else:
            proc = self._start()
        assert proc.stdin is not None
        try:
            proc.stdin.write(spec.line().encode() + b"\n")
            proc.stdin.flush()
        except BrokenPipeError:
            pass  # died meanwhile: its exit is reported like any other crash
        self.jobs_run[proc.pid] = self.jobs_run.get(proc.pid, 0) + 1
        return Worker(job_id=job_id, gpu=gpu, nvenc_device=nvenc_device, proc=proc)

    def release(self, worker: Worker) -> None:
        """The job ended: its process goes back to the idle ones if it can run another,
        else it is ended and reaped."""
        proc = worker.proc
        assert isinstance(proc, subprocess.Popen)  # this pool's own
        reuse = worker.ended and worker.killed_for is None and proc.poll() is None \
            and not worker.eof and self.jobs_run.get(proc.pid, 0) < MAX_JOBS \
            and len(self.idle) < max(self.warm, 1) + 1
        if reuse:
            self.idle.append(proc)
            return
        self._end(proc)

    def _end(self, proc: subprocess.Popen) -> None:
        self.jobs_run.pop(proc.pid, None)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # an idle worker exits at the end of its input
        if proc.poll() is None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def close(self) -> None:
        """End the idle processes (the daemon is stopping)."""
        for proc in self.idle:
            self._end(proc)
        self.idle = []
