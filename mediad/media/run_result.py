"""What one run of the engine produced: per output, the frames and the span of what went into
its video; per source stream, what its packets span and what went into each audio track; the
warnings and figures for the report. The contract between media.engine and the jobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from mediad.media.timing import Span


@dataclass
class RunResult:
    """What one run produced, for the verification and the report."""

    frames: dict[str, int] = field(default_factory=dict)  # per rendition: encoded or copied
    video_spans: dict[str, Span] = field(default_factory=dict)  # what went into each video
    # What the source's packets span, per source stream (its header may promise more).
    source_spans: dict[int, Span] = field(default_factory=dict)
    # What went into each kept audio track, by source stream: its encoder's frames (the
    # decoder leaves out an MP4 edit list's pre-roll), or the source's packets, copied.
    audio_spans: dict[int, Span] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # what went wrong but did not fail the job
    loudness: list[dict] = field(default_factory=list)  # per normalised track: loudnorm's figures
    analysis: Any = None  # the stages' AnalysisResult, when the profile has stages
    stages: list[dict] = field(default_factory=list)  # StageRunner.describe()
    frame_rate: Fraction | None = None  # a segmented set's highest rate (gap_fill), measured

    def wrote(self, output: str, frames: int, span: Span) -> None:
        """What went into `output`'s video."""
        self.frames[output], self.video_spans[output] = frames, span

    @property
    def frames_written(self) -> int:
        """A single output's video frames."""
        return next(iter(self.frames.values()), 0)

    @property
    def video_span(self) -> Span | None:
        """What went into a single output's video."""
        return next(iter(self.video_spans.values()), None)
