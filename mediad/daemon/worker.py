"""A worker process: runs jobs with mediad.media.job.transcode (or, for a ladder profile,
mediad.media.ladder_job.transcode_ladder), one at a time, reporting JSON lines on stdout.

Started by the daemon as `python -m mediad.daemon.worker`, ahead of need: it imports the engine
first, then reads job specs from stdin, one JSON line each, until stdin closes; a small job so
does not pay Python's start-up and imports (most of its time). Lines out: {"event":
"started"|"progress"|"done"|"error", ...}, a job ending with its done or error line. Whatever
else writes to stdout (a library, FFmpeg) is sent to stderr, so it cannot corrupt the protocol.
A crash or hang in here costs the job it was running: the daemon sees the process end (or
stall) and decides about a retry; the process is not used again.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import IO, Any

from mediad import log, stopping
from mediad.daemon.protocol import Done, Failed, JobSpec, Progress, Started
from mediad.errors import MediadError, Reason

PROGRESS_EVERY = 0.25  # seconds between progress lines (the last one always goes out)
PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    # If the daemon is killed (kill -9, OOM), this worker must not go on writing on its own.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class Channel:
    """JSON lines to the daemon on the real stdout."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._last = 0.0
        self._unsent: Any = None

    def emit(self, event: Started | Progress | Done | Failed) -> None:
        """Write one event as a line and flush it."""
        self.stream.write(event.line() + "\n")
        self.stream.flush()

    def progress(self, p: Any) -> None:
        """on_progress callback for transcode(), throttled."""
        now = time.monotonic()
        if now - self._last < PROGRESS_EVERY:
            self._unsent = p
            return
        self._last = now
        self._unsent = None
        self.emit(Progress(frames_done=p.frames_done, frames_total=p.frames_total,
                           fps=round(p.fps, 3), elapsed=round(p.elapsed, 3)))

    def flush(self) -> None:
        """Send the last progress the throttle held back (the final frame count)."""
        if self._unsent is not None:
            self._last = 0.0
            self.progress(self._unsent)


def _private_stdout() -> IO[str]:
    fd = os.dup(1)
    os.dup2(2, 1)  # fd 1 now goes to stderr: stray prints and C libraries cannot break lines
    sys.stdout = sys.stderr
    return os.fdopen(fd, "w", encoding="utf-8", buffering=1)


def run(spec: JobSpec, channel: Channel) -> int:
    """Run the job described by `spec`; report the result on `channel`."""
    from mediad.daemon.paths import open_checked_source
    from mediad.media.job import transcode
    from mediad.media.ladder_job import transcode_ladder
    from mediad.media.pinned import pin
    from mediad.profiles import Profile

    profile = Profile.model_validate({**spec.profile, "name": spec.profile_name})
    if (check := spec.source) is not None:  # read only the file the daemon checked, whatever
        source = Path(spec.input)  # the name becomes meanwhile (a symlink swapped in after)
        pin(source, open_checked_source(source, Path(check.watch), inode=check.inode,
                                        size=check.size, allow_hard_links=check.allow_hard_links))
    # Never overwrite: the daemon reserved a free name, so a file (or, for a ladder, a folder)
    # there now is someone else's. The engine then fails with reason output_exists (also when
    # one appears just before the commit, which links or renames without replacing) and the
    # daemon picks the next free name.
    run_job = transcode_ladder if profile.is_ladder else transcode  # a folder, or one file
    report = run_job(Path(spec.input), profile, Path(spec.output), gpu=spec.gpu,
                     no_nvenc=spec.no_nvenc, overwrite=False, on_progress=channel.progress,
                     job_key=spec.job_key)
    channel.flush()
    channel.emit(Done(report=report.to_dict()))  # its paths are written as strings by line()
    return 0


def main() -> int:
    """Entry point of `python -m mediad.daemon.worker`: jobs from stdin until it closes."""
    channel = Channel(_private_stdout())
    _die_with_parent(os.getppid())

    def on_term(signum: int, _frame: object) -> None:
        # Unwind through the engine's cleanup (temporary outputs removed), then exit: at
        # once when idle, at the job's next safe point when one runs (see mediad.stopping).
        stopping.on_signal(signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides, not a terminal's ^C
    import mediad.media.job  # noqa: F401 - warm: the engine loaded before the first job
    import mediad.media.ladder_job  # noqa: F401
    from mediad.media.pinned import release

    code = 0
    try:
        while line := sys.stdin.readline():  # blocks until the daemon sends a job, "" at the end
            if not line.strip():
                continue
            spec = JobSpec.model_validate(json.loads(line))
            log.setup(spec.log_level)
            try:
                with stopping.deferred():  # its started/done lines are written whole
                    code = run_one(spec, channel)
            finally:
                release()  # the source descriptors this job pinned
            stopping.check()  # told to stop as the job ended: its outcome sent, now stop
    except stopping.Stopped as e:
        return 128 + e.signum
    return code


def run_one(spec: JobSpec, channel: Channel) -> int:
    """One job: its started line, then done or error."""
    channel.emit(Started(pid=os.getpid()))
    try:
        return run(spec, channel)
    except MediadError as e:
        channel.emit(Failed(message=str(e), reason=e.reason, transient=e.transient))
        return 2
    except OSError as e:
        # Disk full, a network mount gone: worth another try later.
        channel.emit(Failed(message=f"{e.filename or ''}: {e.strerror or e}".lstrip(": "),
                            reason=Reason.IO_ERROR, transient=True))
        return 2
    except Exception as e:  # a bug must fail this job (bounded retries), not hide in silence
        traceback.print_exc(file=sys.stderr)
        channel.emit(Failed(message=f"{type(e).__name__}: {e}", reason=Reason.INTERNAL_ERROR,
                            transient=True))
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
