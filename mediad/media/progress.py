"""Progress of a running job: a small record, and a rich progress bar for terminals."""

from __future__ import annotations

import contextlib
import sys
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
