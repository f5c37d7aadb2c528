"""The video of a segmented (HLS/DASH) output timed as players need it, as the ffmpeg CLI's
constant-rate output for those formats does.

- Each frame lasts until the next one (its duration goes with its packet): a segmenter ends a
  fragment by its last packet's duration and starts the next one there, so a duration of one
  nominal interval after a longer step moved every later fragment early.
- A gap longer than 2.5 frame intervals (a signal dropout) is filled by showing the frame
  before it again at the frame rate: otherwise no keyframe falls at the segment times inside
  the gap and the segment holding it overruns its target. Ordinary variable frame rate (a
  phone at 15 fps in the dark, a dropped frame) is left as it is.
- Video that starts a frame interval or more after the audio shows its first frame from 0,
  so that the segments (and a DASH timeline) start with the audio. (Less is a phase:
  an MPEG-TS's video 21 ms after its audio keeps it, and so do the frames after a filled lead.)
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import av

GAP_INTERVALS = Fraction(5, 2)  # a gap longer than this many frame intervals is filled
MAX_RATE = 240  # frames/s: a "rate" above it is a time base
COMMON_RATES = tuple(Fraction(r) for r in ("24000/1001", "24", "25", "30000/1001", "30", "50",
                                           "60000/1001", "60", "120"))


def repeat(frame: av.VideoFrame, pts: int) -> av.VideoFrame:
    """`frame` again at `pts`. Host frames are copied (threaded sinks may still be reading the
    original); a CUDA frame is re-stamped in place: every consumer of GPU frames works in the
    fan-out's thread and is done with it before the next frame is handed out."""
    if frame.format.name == "cuda":
        frame.pts = pts
        return frame
    import numpy as np  # only when a gap is filled

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


def fill_rate(nominal: Fraction | float | None, average: Fraction | float | None,
              interlaced: bool = False) -> Fraction | None:
    """The rate gaps are filled at, and the one a set's encoders budget for: the stream's
    nominal rate (its densest), unless that is no frame rate but a time base (far above the
    average: 1000 for a Matroska VFR stream) or an interlaced source's field rate (twice the
    average; a source with gaps has a lower average too, so only interlacing tells); None when
    neither is a plausible rate."""
    nom = Fraction(nominal).limit_denominator(1001) if nominal else None
    avg = Fraction(average).limit_denominator(1001) if average else None
    if interlaced and nom and avg and nom >= Fraction(19, 10) * avg:
        return avg
    if nom and nom <= MAX_RATE and (avg is None or nom <= 3 * avg):
        return nom
    return avg if avg and avg <= MAX_RATE else None


class GapFiller:
    """Per decoded frame, the frames to hand on, each with its duration (the time to the next
    one: a segmenter cuts a fragment after a frame and starts the next where that frame's
    duration ends), and the repeats that fill a gap. So each frame is handed on when the next
    arrives (None: the end). The output starts at 0 (the timeline rebased it to the earliest
    kept stream): video that starts later shows its first frame from 0, as the ffmpeg CLI's
    constant-rate output does, so that every rendition's segments and a DASH timeline start
    together with the audio."""

    def __init__(self, rate: Fraction) -> None:
        self.rate = rate
        self.interval = 1 / rate  # seconds
        self.min_step: Fraction | None = None  # the shortest time between two frames handed on
        self.pending: av.VideoFrame | None = None  # the last frame, not handed on yet
        self.started = False
        self.filled = 0  # frames repeated
        self.gaps = 0
        self.lead: Fraction | None = None  # seconds the video started after 0, filled

    def __call__(self, frame: av.VideoFrame | None) -> Iterator[av.VideoFrame]:
        """Lazily: a CUDA repeat is the same frame re-stamped, so each must be handed on
        before the next is made."""
        last = self.pending
        if frame is None:  # the end: the last frame lasts one interval
            self.pending = None
            if last is not None and last.time_base is not None:
                last.duration = max(1, round(self.interval / last.time_base))
                yield last
            return
        self.pending = _kept(frame)
        if frame.pts is None or frame.time_base is None:
            self.pending = None
            if last is not None:
                yield last
            yield frame
            return
        tb = frame.time_base
        if not self.started:  # the first frame: from 0 when it starts later
            self.started = True
            if frame.pts * tb >= self.interval:  # a frame's worth or more (less: a phase)
                self.lead = frame.pts * tb
                yield from self._repeats(self.pending, 0, 0, frame.pts, tb)
                self.pending.pts = frame.pts  # a CUDA repeat re-stamped it
            return
        if last is None or last.pts is None:
            return
        last_pts = last.pts
        gap = (frame.pts - last_pts) * tb > GAP_INTERVALS * self.interval
        step = self.interval / tb
        last.duration = round(step) if gap else max(1, frame.pts - last_pts)
        self._stepped(last.duration * tb)
        yield last
        if gap:
            yield from self._repeats(last, last_pts, 1, frame.pts, tb)

    def _repeats(self, picture: av.VideoFrame, base: int, k: int, until: int,
                 tb: Fraction) -> Iterator[av.VideoFrame]:
        """`picture` at base + k, k + 1, ... frame intervals, up to half an interval before
        `until` (all in `tb`), each lasting to the next."""
        self.gaps += 1
        step = self.interval / tb
        while base + k * step < until - step / 2:
            self.filled += 1
            pts = base + round(k * step)
            nxt = base + round((k + 1) * step)
            copy = repeat(picture, pts)
            copy.duration = max(1, (nxt if nxt < until - step / 2 else until) - pts)
            self._stepped(copy.duration * tb)
            yield copy
            k += 1

    def _stepped(self, seconds: Fraction) -> None:
        if self.min_step is None or seconds < self.min_step:
            self.min_step = seconds

    def max_rate(self) -> Fraction | None:
        """The set's highest frame rate (HLS FRAME-RATE, DASH frameRate), from the shortest
        time between two frames, snapped to the fill rate or a common rate within 2% (time
        bases round the steps: 33 and 34 ms at 29.97 fps; a field rate's 25 frames a second
        at a nominal 50 step 614 and 615 ticks of 1/15360)."""
        if self.min_step is None:
            return None
        measured = 1 / self.min_step
        for rate in (self.rate, self.rate / 2):
            if abs(measured - rate) <= rate / 50:
                return rate
        near = min(COMMON_RATES, key=lambda r: abs(measured - r))  # 30, not 29.97, for 30
        if abs(measured - near) <= near / 50:
            return near
        return min(measured, self.rate).limit_denominator(1001)

    def summary(self) -> str | None:
        """The report's word on what was filled, None when nothing was."""
        if not self.gaps:
            return None
        lead = f"; the video starts {float(self.lead):.3f}s after the audio: its first frame " \
            "is shown from 0" if self.lead is not None else ""
        return (f"{self.gaps} gap(s) in the source's frames filled with {self.filled} repeated "
                "frame(s), as segmented output needs (the frames after each gap keep their "
                f"times){lead}")
