"""VMAF (Netflix's vmaf_v0.6.1 model) of a distorted video against its reference, in PyTorch.

The features and the SVM are vmaf-torch's (the `mediad[ml]` extra; its model's numbers are in
its code, nothing is downloaded). vmaf-torch scores a batch of frames as if it were the whole
video, so its motion feature would restart at every batch: here every batch is scored with the
frame before it and the frame after it as context, which gives libvmaf's per-frame motion.

Frames are the Y (luma) plane as stored, in 8-bit code values: limited-range video is *not*
stretched to 0..255 (what libvmaf reads), 10-bit samples are divided by 4. torch is imported
when a meter is made, never at import time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from mediad import stopping

MODEL = "vmaf_v0.6.1"
# Frames per batch on CUDA: 8 at 1080p, more for smaller frames (memory grows with pixels).
# On the CPU bigger batches are slower: their buffers are allocated and faulted in afresh each
# time (at 640x360, 32 frames a batch spent more time in the kernel than in the maths).
_BATCH_PIXELS = 8 * 1920 * 1080
_MAX_BATCH = 32
_CPU_BATCH = 2


@dataclass(frozen=True)
class VmafScore:
    """VMAF of each frame compared, and their mean (the usual pooling, libvmaf's default)."""

    mean: float
    frames: tuple[float, ...]
    device: str

    @property
    def minimum(self) -> float:
        """The worst frame's score."""
        return min(self.frames) if self.frames else 0.0

    def to_dict(self) -> dict:
        """For reports (without the per-frame list)."""
        return {"mean": round(self.mean, 3), "min": round(self.minimum, 3),
                "frames": len(self.frames), "device": self.device, "model": MODEL}


def vmaf_device(gpu: int | None) -> str:
    """Where to compute: CUDA device `gpu` when torch can use it, else the CPU."""
    if gpu is None:
        return "cpu"
    import torch

    return f"cuda:{gpu}" if torch.cuda.is_available() else "cpu"


def luma_codes(frame: av.VideoFrame) -> tuple[np.ndarray, int]:
    """The frame's Y plane as stored: its code values (uint8, or uint16 with the bits at the
    bottom) and their bit depth."""
    fmt = frame.format
    if fmt.is_rgb or fmt.has_palette or fmt.is_bayer or not fmt.name.startswith(
            ("yuv", "nv", "p0", "p2", "gray")):
        frame = frame.reformat(format="yuv420p")
        fmt = frame.format
    plane = frame.planes[0]
    bits = fmt.components[0].bits
    dtype = np.uint8 if bits <= 8 else np.dtype("<u2")
    itemsize = np.dtype(dtype).itemsize
    rows = np.frombuffer(plane, dtype=dtype).reshape(plane.height, plane.line_size // itemsize)
    y = rows[:, :frame.width]
    if bits <= 8:
        return y.copy(), bits
    # p010/p016 keep their bits at the top of each 16-bit word; planar yuv*p10 at the bottom.
    shift = 16 - bits if fmt.name.startswith("p0") or fmt.name.startswith("p2") else 0
    return (y >> shift).astype(np.uint16, copy=False), bits


def eight_bit(codes: np.ndarray, bits: int) -> np.ndarray:
    """Y code values in 8-bit units, as VMAF takes them: 8-bit ones as they are (uint8), deeper
    ones divided down (float32)."""
    return codes if bits <= 8 else codes.astype(np.float32) / float(1 << (bits - 8))


def luma(frame: av.VideoFrame) -> np.ndarray:
    """The frame's Y plane as stored, in 8-bit code values (uint8, or float32 for deeper video)."""
    return eight_bit(*luma_codes(frame))


def luma_planes(path: Path, stream: int | None = None) -> Iterator[np.ndarray]:
    """Every decoded frame's Y plane (see `luma`), in order, read with PyAV."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0] if stream is None else c.streams[stream]
        vs.thread_type = "AUTO"
        for frame in c.decode(vs):
            stopping.check()
            yield luma(frame)


# The motion feature of each batch of one reference, by (first frame, frames, whether the frame
# after was known): it depends on the reference frames alone.
Motion = dict[tuple[int, int, bool], Any]


class VmafMeter:
    """Scores frame pairs as they come: (reference Y, distorted Y) in, VMAF per frame out.

    `motion`, shared by the meters that score the same reference frames against other distorted
    ones (the VMAF search's trials), keeps the motion feature the first computed for the rest.
    """

    def __init__(self, device: str = "cpu", batch: int | None = None,
                 motion: Motion | None = None) -> None:
        import torch
        from vmaf_torch import VMAF

        self.torch = torch
        self.device = device
        self.model: Any = VMAF(clip_score=True).to(device).eval()
        self.batch = batch
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._before: Any = None  # the last reference frame already scored (motion context)
        self._scores: list[float] = []
        self._motion = motion

    def _tensor(self, planes: list[np.ndarray]) -> Any:
        arr = np.stack(planes).astype(np.float32, copy=False)
        return self.torch.from_numpy(arr)[:, None].to(self.device)

    def add(self, reference: np.ndarray, distorted: np.ndarray) -> None:
        """One frame pair (same size); scored once the batch after it has begun."""
        if reference.shape != distorted.shape:
            raise ValueError(f"frame sizes differ: reference {reference.shape[1]}x"
                             f"{reference.shape[0]}, distorted {distorted.shape[1]}x"
                             f"{distorted.shape[0]}")
        if self.batch is None:
            h, w = reference.shape
            self.batch = _CPU_BATCH if self.device == "cpu" else \
                max(1, min(_MAX_BATCH, _BATCH_PIXELS // (w * h)))
        self._pending.append((reference, distorted))
        if len(self._pending) > self.batch:  # the frame after the batch is known: score it
            self._score(self._pending[:self.batch], self._pending[self.batch][0])
            del self._pending[:self.batch]

    def _score(self, pairs: list[tuple[np.ndarray, np.ndarray]], after: np.ndarray | None) -> None:
        refs = [r for r, _ in pairs]
        context = ([self._before] if self._before is not None else []) + refs \
            + ([after] if after is not None else [])
        first = 1 if self._before is not None else 0
        with self.torch.inference_mode():
            ctx = self._tensor(context)  # the references with their neighbours, uploaded once
            key = (len(self._scores), len(refs), after is not None)
            motion = self._motion.get(key) if self._motion is not None else None
            if motion is None:
                motion = self.model.compute_motion2(ctx)[first:first + len(refs)]
                if self._motion is not None:
                    self._motion[key] = motion
            ref, dist = ctx[first:first + len(refs)], self._tensor([d for _, d in pairs])
            adm = self.model.compute_adm_score(ref, dist)
            vif = self.model.compute_vif_features(ref, dist)
            scores = self.model.predict(adm, motion, vif)
        self._scores += [float(s) for s in scores.reshape(-1).cpu()]
        self._before = refs[-1]

    def finish(self) -> VmafScore:
        """Score what is left; the mean and every frame's VMAF."""
        if self._pending:
            self._score(self._pending, None)
            self._pending = []
        scores = tuple(self._scores)
        mean = float(np.mean(scores)) if scores else 0.0
        return VmafScore(mean, scores, self.device)


def vmaf_of(reference: Iterable[np.ndarray], distorted: Iterable[np.ndarray],
            device: str = "cpu", motion: Motion | None = None) -> tuple[VmafScore, int, int]:
    """VMAF of paired frames (in order); also how many reference and distorted frames there
    were (only as many pairs as the shorter side has are scored). `motion`: see VmafMeter."""
    meter = VmafMeter(device, motion=motion)
    refs = dists = 0
    ref_it, dist_it = iter(reference), iter(distorted)
    while True:
        r = next(ref_it, None)
        d = next(dist_it, None)
        refs += r is not None
        dists += d is not None
        if r is None or d is None:
            break
        meter.add(r, d)
    refs += sum(1 for _ in ref_it) if r is not None else 0
    dists += sum(1 for _ in dist_it) if d is not None else 0
    return meter.finish(), refs, dists


def vmaf_files(reference: Path, distorted: Path, device: str = "cpu") -> VmafScore:
    """VMAF of two files of the same frame size, frame by frame in decode order."""
    score, _, _ = vmaf_of(luma_planes(reference), luma_planes(distorted), device)
    return score
