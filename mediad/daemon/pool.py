"""The daemon's side of worker processes: spawn, read their JSON lines, notice stalls, kill."""

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

import mediad
from mediad.daemon.notify import NOTIFY_ENV
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


@dataclass
class Worker:
    """One running worker process and what it has said so far."""

    job_id: int
    gpu: str
    nvenc_device: int | None
    proc: subprocess.Popen
    started: float = field(default_factory=time.monotonic)
    last_progress: float = field(default_factory=time.monotonic)
    frames_done: int = 0
    frames_total: int | None = None
    fps: float = 0.0
    result: Outcome | None = None
    killed_for: str | None = None  # "stalled" or "shutdown" once we killed it
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
        event = msg.get("event")
        if event == "progress":
            frames = int(msg.get("frames_done") or 0)
            if frames > self.frames_done:
                self.last_progress = time.monotonic()
            self.frames_done = frames
            self.frames_total = msg.get("frames_total")
            self.fps = float(msg.get("fps") or 0.0)
            return True
        if event == "done":
            self.result = Outcome(True, report=msg.get("report") or {})
        elif event == "error":
            self.result = Outcome(False, reason=_reason(msg.get("reason")),
                                  message=str(msg.get("message") or ""),
                                  transient=bool(msg.get("transient")))
        return False

    def signal(self, signum: int) -> None:
        """Signal the worker's whole process group (FFmpeg threads and any children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)

    def close(self) -> None:
        """Release the pipe once the process has been reaped."""
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def outcome(self) -> Outcome:
        """The result after the process exited (a silent exit is a crash)."""
        if self.result is not None:
            return self.result
        code = self.proc.returncode
        how = f"signal {-code} ({signal.Signals(-code).name})" if code and code < 0 else f"exit {code}"
        return Outcome(False, reason=Reason.WORKER_CRASHED, transient=True,
                       message=f"worker process ended without a result ({how})")


def spawn(job_id: int, spec: dict, gpu: str, nvenc_device: int | None) -> Worker:
    """Start `python -m mediad.daemon.worker` for one job and hand it the spec."""
    env = {k: v for k, v in os.environ.items() if k not in NOTIFY_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mediad.daemon.worker"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        start_new_session=True,  # its own process group: we can kill all of it, ^C does not reach it
    )
    assert proc.stdin is not None and proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    try:
        proc.stdin.write(json.dumps({**spec, "parent": os.getpid()}).encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass  # died at once: its exit is reported like any other crash
    return Worker(job_id=job_id, gpu=gpu, nvenc_device=nvenc_device, proc=proc)


def _reason(value: object) -> Reason:
    """A worker's reason as one of ours (an unknown one, from another version: error)."""
    try:
        return Reason(str(value))
    except ValueError:
        return Reason.ERROR

