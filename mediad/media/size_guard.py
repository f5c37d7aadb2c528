"""Never bigger than the source ([video] max_size_ratio): the output growing past the source's
size times the ratio ends the job as skipped_larger as soon as that shows, from the bytes the
muxer has written against the share of frames done, instead of after the whole encode.
"""

from __future__ import annotations

from pathlib import Path

from mediad.errors import MediadError, Reason
from mediad.media.progress import Progress, ProgressCallback

# A projection from a part of the file is only a guess (a quiet start, a busy end): trusted
# once a quarter of the frames are done, and only when it passes the limit by a clear margin.
PROJECT_AFTER = 0.25
PROJECT_MARGIN = 1.25


def _mb(size: float) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


class SizeGuard:
    """A progress callback (wrapping the job's own) that stops a job whose output outgrows its
    source: at once when the bytes written pass the limit, early when the projection does."""

    def __init__(self, source_size: int, written: Path, output: Path, ratio: float,
                 inner: ProgressCallback | None) -> None:
        self.source_size = source_size  # as the probe found it
        self.limit = self.source_size * ratio
        self.ratio = ratio
        self.written = written  # the temporary file the muxer writes
        self.output = output  # its name once committed, for the message
        self.inner = inner

    def _skip(self, why: str) -> MediadError:
        return MediadError(f"{self.output}: skipped: {why}; the source ({_mb(self.source_size)}) "
                           f"is left as it is (max_size_ratio = {self.ratio:g})",
                           reason=Reason.SKIPPED_LARGER)

    def __call__(self, p: Progress) -> None:
        if self.inner is not None:
            self.inner(p)
        try:
            written = self.written.stat().st_size
        except OSError:
            return  # not created yet
        share = p.frames_done / p.frames_total if p.frames_total else None
        if written > self.limit:
            done = f" at {share:.0%} of the frames" if share is not None and share < 1 else ""
            raise self._skip(f"the output passed {_mb(self.limit)} ({_mb(written)} written{done})")
        if share is not None and PROJECT_AFTER <= share < 1:
            projected = written / share
            if projected > self.limit * PROJECT_MARGIN:
                raise self._skip(f"the output would be about {_mb(projected)} against a limit of "
                                 f"{_mb(self.limit)} ({_mb(written)} written at {share:.0%} of "
                                 "the frames)")

    def check_final(self) -> None:
        """The finished output against the limit (a projection may have erred low)."""
        written = self.written.stat().st_size
        if written > self.limit:
            raise self._skip(f"the output is {_mb(written)}, over {_mb(self.limit)}")
