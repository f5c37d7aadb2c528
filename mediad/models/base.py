"""The stage contract: what a frame stage receives, what it returns, and the analysis results.

A stage gets a batch of RGB frames (N,3,H,W) on the device it runs on, with their timestamps, and
returns frames (the same ones, or new ones, possibly resized) plus optional per-frame data.
Batching, device placement, precision and memory limits belong to the StageRunner, which hands
each stage a StageContext; stages never pick a device or a batch size themselves.

torch is imported lazily (type hints only) so that this module loads without it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

CHAPTER_TIME_BASE = Fraction(1, 1000)  # chapters are written in milliseconds


@dataclass(frozen=True)
class StageContext:
    """What the runner decided for one stage: where it runs, how precise, how much at once."""

    index: int
    device: torch.device
    dtype: torch.dtype
    channels_last: bool
    compile: bool
    memory_budget: int  # bytes of working memory this stage may use for one call
    batch_size: int | None  # fixed by the profile, else None (the runner sizes it from memory)
    reasons: tuple[str, ...] = ()  # why device/precision ended up as they did (for the plan)


@dataclass
class FrameBatch:
    """Consecutive decoded frames: (N,3,H,W) RGB, uint8 0..255 or float 0..1, with pts in seconds."""

    frames: torch.Tensor
    pts: list[float]
    first_index: int  # index of frames[0] in the whole stream (0-based)

    def __len__(self) -> int:
        return len(self.pts)


@dataclass
class StageOutput:
    """A stage's answer: new frames (None: unchanged) and optional per-frame data (None: none)."""

    frames: torch.Tensor | None = None
    data: list[dict[str, Any] | None] | None = None


class FrameStage(ABC):
    """One model step on decoded frames; subclasses implement `process` (and maybe `finish`)."""

    kind: ClassVar[str]
    modifies_frames: ClassVar[bool] = False

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx

    @property
    def name(self) -> str:
        """A short identifier (the stage kind), used as the key of its per-frame data."""
        return self.kind

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """Frame size this stage returns for a given input size (default: unchanged)."""
        return width, height

    def bytes_per_frame(self, width: int, height: int) -> int:
        """Working memory one frame of this size needs inside `process` (for batch sizing)."""
        return 3 * width * height * 4

    def max_batch(self) -> int:
        """Upper bound on frames per call, whatever the memory (keeps latency bounded)."""
        return 64 if self.ctx.device.type == "cuda" else 16

    def describe(self) -> dict[str, Any]:
        """Stage settings for the plan, the report and the sidecar."""
        return {"kind": self.kind}

    @abstractmethod
    def process(self, batch: FrameBatch) -> StageOutput:
        """Run on one batch of frames (already on ctx.device)."""

    def finish(self) -> dict[str, Any]:
        """Called once after the last frame: flush buffers, return stage results."""
        return {}


@dataclass(frozen=True)
class Shot:
    """One shot: frames start_frame..end_frame inclusive; start/end in seconds (end exclusive)."""

    index: int
    start: float
    end: float
    start_frame: int
    end_frame: int

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {"index": self.index, "start": round(self.start, 6), "end": round(self.end, 6),
                "start_frame": self.start_frame, "end_frame": self.end_frame}


@dataclass(frozen=True)
class Label:
    """A class label with its score (a probability, 0..1)."""

    label: str
    index: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {"label": self.label, "index": self.index, "score": round(self.score, 6)}


@dataclass(frozen=True)
class FrameLabels:
    """Top-k labels of one sampled frame."""

    frame: int
    pts: float
    top: tuple[Label, ...]
    shot: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {"frame": self.frame, "pts": round(self.pts, 6), "shot": self.shot,
                "top": [t.to_dict() for t in self.top]}


@dataclass(frozen=True)
class SegmentLabels:
    """Top-k labels of a shot (or of the whole video when there is no shots stage)."""

    shot: int | None
    start: float
    end: float
    samples: int
    top: tuple[Label, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {"shot": self.shot, "start": round(self.start, 6), "end": round(self.end, 6),
                "samples": self.samples, "top": [t.to_dict() for t in self.top]}


@dataclass
class AnalysisResult:
    """What the analysis stages found over the whole stream (StageRunner.finish())."""

    frames: int = 0
    duration: float = 0.0
    shots: list[Shot] = field(default_factory=list)
    classifications: list[SegmentLabels] = field(default_factory=list)
    samples: list[FrameLabels] = field(default_factory=list)
    chapters_enabled: bool = False

    def chapters(self, time_base: Fraction = CHAPTER_TIME_BASE) -> list[dict[str, Any]]:
        """Shots as PyAV chapter dicts (OutputContainer.set_chapters), or [] unless asked for.

        Chapters tile the timeline: each runs from its shot's start to the next shot's start.
        Titles are "Shot N", plus the shot's top label when a classify stage ran.
        """
        if not self.chapters_enabled or not self.shots:
            return []
        top = {c.shot: c.top[0].label for c in self.classifications if c.shot is not None and c.top}
        out = []
        for i, shot in enumerate(self.shots):
            end = self.shots[i + 1].start if i + 1 < len(self.shots) else shot.end
            title = f"Shot {shot.index + 1}" + (f": {top[shot.index]}" if shot.index in top else "")
            out.append({"id": i + 1, "start": round(shot.start / time_base),
                        "end": round(end / time_base), "time_base": time_base,
                        "metadata": {"title": title}})
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (chapters with times in seconds)."""
        return {
            "frames": self.frames,
            "duration": round(self.duration, 6),
            "shots": [s.to_dict() for s in self.shots],
            "classifications": [c.to_dict() for c in self.classifications],
            "samples": [s.to_dict() for s in self.samples],
            "chapters": [{"title": c["metadata"]["title"],
                          "start": float(c["start"] * c["time_base"]),
                          "end": float(c["end"] * c["time_base"])} for c in self.chapters()],
        }


def unit_float(frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 0..255 or float 0..1 frames -> float `dtype` in 0..1 (on the same device)."""
    if frames.is_floating_point():
        return frames.to(dtype)
    return frames.to(dtype).div_(255.0)


_MAX_SHRINK = 64  # per side, left to the antialiased resize; CUDA's kernel fails past ~90


def shrink(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear downscale of float (N,C,H,W) frames to `size` (h, w), any factor.

    CUDA's antialiased kernel keeps its filter in shared memory and refuses shrink factors past
    about 90 (a 5K or 8K frame, or an upscaled 4K one, down to TransNetV2's 48x27). Past a factor
    of 64, an area average to 64x the target comes first (within 0.02 of a level of one resize);
    it runs on every device alike, so CPU and GPU results agree, and smaller frames (1080p for
    TransNetV2, any frame for the classifier) skip it.
    """
    import torch.nn.functional as F

    h, w = size
    src_h, src_w = frames.shape[-2:]
    if src_h > _MAX_SHRINK * h or src_w > _MAX_SHRINK * w:
        frames = F.adaptive_avg_pool2d(frames, (min(src_h, _MAX_SHRINK * h),
                                                min(src_w, _MAX_SHRINK * w)))
    return F.interpolate(frames, size=size, mode="bilinear", antialias=True, align_corners=False)
