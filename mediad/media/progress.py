"""Progress of a running job: a small record, and a rich progress bar for terminals."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """How far a job is: frames done of (estimated) total, speed, time so far."""

    frames_done: int
    frames_total: int | None
    fps: float
    elapsed: float

    @property
    def eta(self) -> float | None:
        """Seconds left at the current speed, when the total is known."""
        if not self.frames_total or self.fps <= 0:
            return None
        return max(0.0, (self.frames_total - self.frames_done) / self.fps)


ProgressCallback = Callable[[Progress], None]
_EVERY_S = 0.25  # a running job reports at most this often


class ProgressReporter:
    """Calls a job's progress callback at most every quarter second (and once more at the end)."""

    def __init__(self, on_progress: ProgressCallback | None, frames_total: int | None) -> None:
        self.on_progress = on_progress
        self.frames_total = frames_total
        self.started = time.monotonic()
        self.last = 0.0

    def __call__(self, frames_done: int, force: bool = False) -> None:
        # Nothing done yet is nothing to say: the first report goes out with the first frame
        # (the encoder thread may not have one yet), not 0.25 s later.
        if self.on_progress is None or (frames_done == 0 and not force):
            return
        now = time.monotonic()
        if not force and now - self.last < _EVERY_S:
            return
        self.last = now
        elapsed = now - self.started
        self.on_progress(Progress(frames_done, self.frames_total,
                                  frames_done / elapsed if elapsed > 0 else 0.0, elapsed))


@contextlib.contextmanager
def progress_reporter(enabled: bool = True) -> Iterator[ProgressCallback | None]:
    """A callback drawing a progress bar (frames, fps, ETA) on stderr when it is a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar

    bar = Bar(TextColumn("transcoding"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
              TextColumn("{task.fields[fps]:.1f} fps"), TimeRemainingColumn(),
              console=Console(stderr=True), transient=True)
    task = bar.add_task("transcode", total=None, fps=0.0)

    def update(p: Progress) -> None:
        bar.update(task, completed=p.frames_done, total=p.frames_total, fps=p.fps)

    with bar:
        yield update
