"""Gaps in a source's frames filled for segmented output, as the ffmpeg CLI's constant frame
rate output does for HLS and DASH: the last frame before a gap is shown again at the frame
rate until the next real frame.

Why: an fMP4 fragment starts where the one before it ended in decode time, so a gap cannot stay
a gap in a segmented stream: the frames after it would move early (out of sync with the audio)
and the segment holding the gap would overrun its target. Ordinary variable frame rate (a phone
slowing to 15 fps in the dark) is left alone: only a gap longer than two frame intervals is
filled, and the frames that follow keep their own times.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np

GAP_INTERVALS = 2  # a gap longer than this many frame intervals is filled


def repeat(frame: av.VideoFrame, pts: int) -> av.VideoFrame:
    """`frame` again at `pts`. Host frames are copied (threaded sinks may still be reading the
    original); a CUDA frame is re-stamped in place: every consumer of GPU frames works in the
    fan-out's thread and is done with it before the next frame is handed out."""
    if frame.format.name == "cuda":
        frame.pts = pts
        return frame
    copy = av.VideoFrame(frame.width, frame.height, frame.format.name)
    for src, dst in zip(frame.planes, copy.planes, strict=True):
        rows = src.height
        n = min(src.line_size, dst.line_size)
        dst_rows = np.frombuffer(dst, np.uint8).reshape(rows, dst.line_size)
        dst_rows[:, :n] = np.frombuffer(src, np.uint8).reshape(rows, src.line_size)[:, :n]
    copy.pts, copy.time_base = pts, frame.time_base
    copy.colorspace, copy.color_range = frame.colorspace, frame.color_range
    return copy


def _kept(frame: av.VideoFrame) -> av.VideoFrame:
    """The frame to keep for a possible repeat. A CUDA frame is copied on its GPU (a few
    microseconds): holding the decoder's own frame would keep one of NVDEC's few surfaces."""
    if frame.format.name != "cuda":
        return frame
    from mediad.media.gpu_frames import alloc_planes, frame_to_planes, planes_to_frame

    p = frame_to_planes(frame)
    y, uv = alloc_planes(p.height, p.width, p.fmt, p.device)
    y.copy_(p.y)
    uv.copy_(p.uv)
    return planes_to_frame(y, uv, p.fmt, frame.pts, frame.time_base,
                           colorspace=frame.colorspace, color_range=frame.color_range)


class GapFiller:
    """Per decoded frame, the frames to hand on: the repeats that fill a gap before it, if
    there is one, then the frame itself."""

    def __init__(self, rate: Fraction) -> None:
        self.interval = 1 / rate  # seconds
        self.last: av.VideoFrame | None = None
        self.filled = 0  # frames repeated
        self.gaps = 0

    def __call__(self, frame: av.VideoFrame) -> Iterator[av.VideoFrame]:
        """Lazily: a CUDA repeat is the same frame re-stamped, so each must be handed on
        before the next is made."""
        last, self.last = self.last, _kept(frame)
        if last is not None and last.pts is not None and frame.pts is not None \
                and frame.time_base is not None:
            tb = frame.time_base
            gap = (frame.pts - last.pts) * tb
            if gap > GAP_INTERVALS * self.interval:
                self.gaps += 1
                step = self.interval / tb
                count = int(gap / self.interval - Fraction(1, 2))  # repeats before the frame
                for k in range(1, count + 1):
                    self.filled += 1
                    yield repeat(last, last.pts + round(k * step))
        yield frame

    def summary(self) -> str | None:
        """The report's word on what was filled, None when nothing was."""
        if not self.gaps:
            return None
        return (f"{self.gaps} gap(s) in the source's frames filled with {self.filled} repeated "
                "frame(s), as segmented output needs (the frames after each gap keep their times)")
