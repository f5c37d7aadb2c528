"""Feeds decoded frames through the model stages in batches, overlapping with decode and encode.

The pipeline pushes decoded frames in and gets encoder-ready frames back, in order. Batches run
on a worker thread behind a bounded queue, so the model computes (torch releases the GIL) while
the main thread demuxes, decodes, encodes and muxes. Frames on the GPU stay there: CUDA frames
become RGB tensors in place (DLPack), and go back to NV12/P010 CUDA frames for NVENC.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av

from mediad.media.worker import OrderedWorker

# Decoded frame in (None: end of stream) -> frames ready to encode.
FrameTransform = Callable[[av.VideoFrame | None], list[av.VideoFrame]]


# Decoded frame in (None: the end) -> (model input tensor, the frame it is timed by) for each
# frame ready for the models (a deinterlacer answers one frame late, and the rest at the end).
Prepare = Callable[[av.VideoFrame | None], list[tuple[Any, av.VideoFrame]]]


@dataclass
class _Batch:
    tensors: list[Any]  # (3,H,W) per frame: uint8 on the host, float 0..1 on the GPU
    sources: list[av.VideoFrame]  # the frames they came from (pts, time_base, colour tags)


class StageBridge:
    """Batches frames into a StageRunner on a worker thread; returns encoder-ready frames."""

    def __init__(self, runner: Any, *, prepare: Prepare,
                 to_frames: Callable[[Any, list[av.VideoFrame]], list[av.VideoFrame]],
                 batch: int = 8, depth: int = 2,
                 end: Callable[[], list[av.VideoFrame]] | None = None) -> None:
        """`end`: the frames a conversion still holds once the last batch is back."""
        self.runner = runner
        self.prepare = prepare
        self.to_frames = to_frames
        self.end = end
        self.batch = batch
        self.pending = _Batch([], [])
        # Bounded: decode waits for the models; a failure is raised at the next call.
        self.worker: OrderedWorker[_Batch, av.VideoFrame] = OrderedWorker(
            self._work, name="mediad-stages", depth=depth)

    def _work(self, item: _Batch) -> list[av.VideoFrame]:
        import torch

        frames = torch.stack(item.tensors)
        pts = [float(f.pts * f.time_base) if f.pts is not None else 0.0 for f in item.sources]
        out = self.runner.process(frames, pts)
        return self.to_frames(out.frames, item.sources)

    def __call__(self, frame: av.VideoFrame | None) -> list[av.VideoFrame]:
        """Push one decoded frame (None: end of stream); returns the frames finished so far."""
        done: list[av.VideoFrame] = []
        for tensor, source in self.prepare(frame):
            self.pending.tensors.append(tensor)
            self.pending.sources.append(source)
            if len(self.pending.sources) >= self.batch:
                done += self._send()
        if frame is not None:
            return done
        if self.pending.sources:
            done += self._send()
        done += self.worker.finish()
        return done + (self.end() if self.end is not None else [])

    def close(self) -> None:
        """End the worker if the stream did not reach its end (the pipeline failed); idempotent.

        Without this the worker would wait for batches forever, holding the model and its
        (GPU) memory, in a daemon worker or a long-lived caller.
        """
        self.worker.close()

    def _send(self) -> list[av.VideoFrame]:
        batch, self.pending = self.pending, _Batch([], [])
        return self.worker.put(batch)


def host_bridge(runner: Any, pre: FrameTransform, post: FrameTransform | None,
                as_decoded: FrameTransform | None, batch: int) -> StageBridge:
    """Stages on host frames: turned upright, cropped and deinterlaced into RGB first (`pre`);
    the models' RGB output back through libavfilter after (`post`). Frames the models only
    looked at go on as they were decoded, through the encoder's own conversion (`as_decoded`:
    rotation, crop, deinterlacing, scaling), never through RGB and back."""
    import torch

    decoded: deque[av.VideoFrame] = deque()  # frames in, not yet out of `pre`
    originals: deque[av.VideoFrame] = deque()  # the decoded frame of each frame in a batch

    def prepare(frame: av.VideoFrame | None) -> list[tuple[Any, av.VideoFrame]]:
        if frame is not None:
            decoded.append(frame)
        ready = []
        for rgb in pre(frame):  # one out per frame in, a deinterlacer's a frame late
            originals.append(decoded.popleft())
            ready.append((torch.from_numpy(rgb.to_ndarray()).permute(2, 0, 1), rgb))
        return ready

    def to_frames(frames: Any, sources: list[av.VideoFrame]) -> list[av.VideoFrame]:
        taken = [originals.popleft() for _ in sources]
        if post is None:
            return []  # analysis only, video copied: nothing to encode
        if not runner.modifies_frames:
            assert as_decoded is not None
            return [f for s in taken for f in as_decoded(s)]
        return [f for rgb, s in zip(frames.cpu(), sources, strict=True)
                for f in post(rgb_frame(rgb, s))]

    def end() -> list[av.VideoFrame]:
        if post is None:
            return []
        return (post if runner.modifies_frames else as_decoded)(None)  # type: ignore[misc]

    return StageBridge(runner, prepare=prepare, to_frames=to_frames, batch=batch, end=end)


def rgb_frame(rgb: Any, source: av.VideoFrame) -> av.VideoFrame:
    """(3,H,W) uint8 tensor -> an rgb24 VideoFrame carrying the source's timestamp."""
    frame = av.VideoFrame.from_ndarray(rgb.permute(1, 2, 0).contiguous().numpy(), format="rgb24")
    frame.pts, frame.time_base = source.pts, source.time_base
    return frame


def gpu_bridge(runner: Any, *, size: tuple[int, int], out_format: str, nvenc: bool,
               post: FrameTransform | None, batch: int) -> StageBridge:
    """Stages on CUDA frames: NVDEC planes -> RGB in place; back to NV12/P010 for NVENC.

    Frames the stages only looked at go on as their decoded planes (resized if the plan says),
    never through RGB and back. Without NVENC the frames are downloaded once for libavfilter
    and the software encoder (`post`): decoded planes as NV12/P010, a model's output as rgb24.
    The same code runs on software frames and CPU tensors.
    """
    from mediad.media import color
    from mediad.media.gpu_frames import GpuVideoTransform, frame_to_planes, planes_to_rgb

    # NVENC: CUDA frames of the output size and layout. Software encoder: host frames as they are.
    encoder_ready = GpuVideoTransform(size=size, out_format=out_format) if nvenc else \
        GpuVideoTransform(device="cpu", out_format=None)

    def prepare(frame: av.VideoFrame | None) -> list[tuple[Any, av.VideoFrame]]:
        return [] if frame is None else [(planes_to_rgb(frame_to_planes(frame)), frame)]

    def to_frames(frames: Any, sources: list[av.VideoFrame]) -> list[av.VideoFrame]:
        if post is None and not nvenc:
            return []  # analysis only, video copied: nothing to encode
        if not runner.modifies_frames:
            ready = [encoder_ready(s) for s in sources]
        elif nvenc:
            ready = [encoder_ready.from_rgb(rgb, s) for rgb, s in zip(frames, sources, strict=True)]
        else:  # resized on the GPU first: an upscale then max_height downloads the smaller frame
            width, height = size
            ready = [rgb_frame(_to_uint8(color.resize(rgb.float(), height, width, mode="area")), s)
                     for rgb, s in zip(frames, sources, strict=True)]
        return ready if post is None else [f for r in ready for f in post(r)]

    return StageBridge(runner, prepare=prepare, to_frames=to_frames, batch=batch)


def _to_uint8(rgb: Any) -> Any:
    """float RGB 0..1 (on any device) -> uint8 on the host."""
    import torch

    return (rgb.clamp(0.0, 1.0) * 255.0).round_().to("cpu", dtype=torch.uint8)
