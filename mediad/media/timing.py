"""Timestamps on the way through: rebasing to 0, putting video pts in order, timing audio by
samples, and measuring how long each stream really lasts."""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from fractions import Fraction

import av

# Decoded video frames held back to put scrambled timestamps back in order (VideoTimer):
# AVI stores no pts, so H.264 with B-frames decodes with guessed, out-of-order ones.
_REORDER_FRAMES = 4


class Rebase:
    """Subtracts the plan's start offset from every timestamp, per stream in its own ticks.

    DVR recordings (MPEG-TS/PS) start hours in, MKVs can start late: like the ffmpeg CLI, the
    output starts at 0 and the streams keep their offsets to each other (A/V sync).
    """

    def __init__(self, offset_seconds: float) -> None:
        self.offset = Fraction(offset_seconds).limit_denominator(10**9)
        self._ticks: dict[Fraction, int] = {}

    def ticks(self, time_base: Fraction) -> int:
        """The offset in units of `time_base` (rounded to the nearest tick)."""
        if time_base not in self._ticks:
            self._ticks[time_base] = round(self.offset / time_base) if self.offset else 0
        return self._ticks[time_base]

    def packet(self, packet: av.Packet) -> None:
        """Shift a packet that is copied (or converted) as it is."""
        off = self.ticks(packet.time_base)
        if off:
            if packet.pts is not None:
                packet.pts -= off
            if packet.dts is not None:
                packet.dts -= off

    def frame(self, frame: av.Frame) -> None:
        """Shift a decoded frame before it is transformed or encoded."""
        if frame.pts is not None and frame.time_base:
            frame.pts -= self.ticks(frame.time_base)

    def chapters(self, chapters: list[dict]) -> list[dict]:
        """The source's chapters on the output's timeline (those that end before 0 dropped)."""
        out = []
        for ch in chapters:
            off = self.ticks(ch["time_base"])
            start, end = ch["start"] - off, ch["end"] - off
            if end > 0:
                out.append({**ch, "start": max(start, 0), "end": end})
        return out


@dataclass
class Span:
    """First timestamp and end (last pts + duration) seen on one stream, in exact seconds.

    Seconds, not ticks: frames out of a filter graph (bwdif halves the time base) and packets
    of one stream need not share a time base.
    """

    first: Fraction | None = None
    end: Fraction | None = None

    def add(self, pts: int | None, duration: int | None, time_base: Fraction | None) -> None:
        """Widen the span by one packet or frame."""
        if pts is None or time_base is None:
            return
        start = pts * time_base
        stop = start + (duration or 0) * time_base
        self.first = start if self.first is None else min(self.first, start)
        self.end = stop if self.end is None else max(self.end, stop)

    @property
    def start_seconds(self) -> float | None:
        """The first timestamp in seconds."""
        return None if self.first is None else float(self.first)

    @property
    def end_seconds(self) -> float | None:
        """The end in seconds."""
        return None if self.end is None else float(self.end)

    @property
    def seconds(self) -> float | None:
        """How long the stream lasts, first timestamp to end."""
        if self.first is None or self.end is None:
            return None
        return float(self.end - self.first)


class VideoTimer:
    """Decoded frames in, frames with increasing pts out, a few frames behind the decoder.

    The decoder gives frames in display order, but their pts are only what the container said:
    AVI keeps none, so B-frames come out with guessed pts out of order (1 4 3 5 2 ...) and the
    encoder's dts then went backwards. The frames' own timestamps are right as a set: each
    frame takes the smallest one still waiting. In-order pts pass unchanged; a repeated one is
    moved one frame on. `hold` is 0 for NVDEC frames (its surface pool is small): they only get
    the last step.
    """

    def __init__(self, hold: int = _REORDER_FRAMES) -> None:
        self.hold = hold
        self._queue: deque[av.VideoFrame] = deque()
        self._pts: list[int] = []
        self._last: int | None = None

    def __call__(self, frames: list[av.VideoFrame] | None) -> list[av.VideoFrame]:
        """Frames ready in order; None flushes what is held."""
        hold = 0 if frames is None else self.hold
        for f in frames or []:
            self._queue.append(f)
            if f.pts is not None:
                heapq.heappush(self._pts, f.pts)
        ready = []
        while len(self._queue) > hold:
            f = self._queue.popleft()
            if f.pts is None:
                ready.append(f)  # numbered by the encoder side
                continue
            f.pts = heapq.heappop(self._pts)
            if self._last is not None and f.pts <= self._last:
                f.pts = self._last + max(1, int(f.duration or 0))
            self._last = f.pts
            ready.append(f)
        return ready


class AudioTimer:
    """Decoded audio frames timed in 1/sample_rate, continuous with the frames before them.

    Demuxers time audio coarsely (AVI: one tick per MP3 frame of 1152 samples) or not at all;
    the encoder's resampler cuts frames to the encoder's frame size and must time each piece to
    the sample, which a coarse time base cannot: pieces got equal pts and the muxer refused
    them. As the ffmpeg CLI does, count samples and trust the source's pts only for a real gap
    (more than one of its ticks ahead); a late or repeated pts is never let go backwards. The
    rebase offset is taken off here, in seconds, since the frames leave in a new time base.
    """

    def __init__(self, offset: Fraction) -> None:
        self.offset = offset
        self._next: tuple[int, int] | None = None  # (sample rate, next pts in 1/rate)

    def __call__(self, frame: av.AudioFrame) -> av.AudioFrame:
        """The frame, its pts and time base rewritten."""
        rate = frame.sample_rate
        expected = None if self._next is None else self._next[1] * rate // self._next[0]
        pts = None
        if frame.pts is not None and frame.time_base:
            pts = round((frame.pts * frame.time_base - self.offset) * rate)
        tick = max(1, math.ceil(frame.time_base * rate)) if frame.time_base else 1
        if expected is not None and (pts is None or pts < expected + tick):
            pts = expected
        elif pts is None:
            pts = 0
        frame.pts, frame.time_base = pts, Fraction(1, rate)
        self._next = (rate, pts + frame.samples)
        return frame
