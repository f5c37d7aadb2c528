"""Timestamps on the way through: the output's timeline (from 0, clock jumps joined), video pts
put back in order, audio timed by samples, and how long each stream really lasts."""

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


# The ffmpeg CLI's -dts_delta_threshold: a jump of more than this in a stream whose format
# allows discontinuities (MPEG-TS/PS) is a splice or a clock reset, not a gap.
JUMP_S = Fraction(10)
# A step back of more than this is a discontinuity too (a small one is fixed at the muxer).
_BACK_S = Fraction(1, 10)


@dataclass(frozen=True)
class Jump:
    """One discontinuity of the source's clock that was joined up."""

    stream: int
    at: float  # seconds on the output's timeline
    by: float  # seconds the source's clock jumped (negative: back)


class Timeline:
    """Puts every demuxed packet on the output's timeline, before anything else sees it.

    The plan's start offset is taken off, so the output starts at 0 with the streams keeping
    their offsets to each other (A/V sync), as the ffmpeg CLI does; DVR recordings (MPEG-TS/PS)
    start hours in. In formats whose clock may jump (MPEG-TS/PS: joined recordings, splices,
    a garbled timestamp in a damaged packet), a jump of more than 10 s forward, or of any real
    size back, is joined up as ffmpeg's demuxer front-end does: every later timestamp moves by
    the jump, so the output has no hour-long hole and never runs backwards.
    """

    def __init__(self, offset_seconds: float, discontinuous: bool) -> None:
        self.offset = Fraction(offset_seconds).limit_denominator(10**9)
        self.discontinuous = discontinuous
        self.shift = Fraction(0)  # seconds added by the jumps joined so far
        self.jumps: list[Jump] = []
        self.garbled = 0  # packets whose pts was garbage (given their dts)
        self._ticks: dict[Fraction, int] = {}
        self._next: dict[int, Fraction] = {}  # per stream: where its next packet should start
        self._last: dict[int, Fraction] = {}  # per stream: its latest timestamp

    def ticks(self, time_base: Fraction) -> int:
        """The start offset in units of `time_base` (rounded to the nearest tick)."""
        if time_base not in self._ticks:
            self._ticks[time_base] = round(self.offset / time_base) if self.offset else 0
        return self._ticks[time_base]

    def packet(self, packet: av.Packet) -> None:
        """Move a packet's timestamps onto the output's timeline, in place."""
        tb = packet.time_base
        if tb is None:
            return
        if not self.discontinuous:
            off = self.ticks(tb)
            if off:
                if packet.pts is not None:
                    packet.pts -= off
                if packet.dts is not None:
                    packet.dts -= off
            return
        if packet.pts is not None and packet.dts is not None \
                and abs(packet.pts - packet.dts) * tb > JUMP_S:
            # A damaged PES header: no frame is shown 10 s after it is decoded.
            packet.pts = packet.dts
            self.garbled += 1
        ts = packet.dts if packet.dts is not None else packet.pts
        if ts is None:
            return
        index = packet.stream.index
        t = ts * tb + self.shift
        expected, last = self._next.get(index), self._last.get(index)
        if expected is not None and last is not None \
                and (abs(t - expected) > JUMP_S or t < last - _BACK_S):
            delta = t - expected
            self.shift -= delta
            self.jumps.append(Jump(index, float(expected - self.offset), float(delta)))
            t = expected
        move = self.shift - self.offset
        if move:
            ticks = round(move / tb)
            if packet.pts is not None:
                packet.pts += ticks
            if packet.dts is not None:
                packet.dts += ticks
        self._last[index] = t if last is None else max(last, t)
        self._next[index] = t + (packet.duration or 0) * tb

    def chapters(self, chapters: list[dict]) -> list[dict]:
        """The source's chapters on the output's timeline (those that end before 0 dropped)."""
        out = []
        for ch in chapters:
            off = self.ticks(ch["time_base"])
            start, end = ch["start"] - off, ch["end"] - off
            if end > 0:
                out.append({**ch, "start": max(start, 0), "end": end})
        return out

    def summary(self) -> list[str]:
        """Report lines about the jumps joined up and the timestamps repaired."""
        lines = []
        if self.jumps:
            first = self.jumps[0]
            lines.append(f"the source's clock jumped {len(self.jumps)} time(s) (first at "
                         f"{first.at:.3f}s, by {first.by:+.3f}s in stream #{first.stream}): "
                         "joined into one continuous timeline, as ffmpeg does")
        if self.garbled:
            lines.append(f"{self.garbled} packet(s) had a garbled presentation time (a damaged "
                         "header): given their decoding time")
        return lines


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
    (more than one of its ticks ahead); a late or repeated pts is never let go backwards.
    """

    def __init__(self) -> None:
        self._next: tuple[int, int] | None = None  # (sample rate, next pts in 1/rate)

    def __call__(self, frame: av.AudioFrame) -> av.AudioFrame:
        """The frame, its pts and time base rewritten."""
        rate = frame.sample_rate
        expected = None if self._next is None else self._next[1] * rate // self._next[0]
        pts = None
        if frame.pts is not None and frame.time_base:
            pts = round(frame.pts * frame.time_base * rate)
        tick = max(1, math.ceil(frame.time_base * rate)) if frame.time_base else 1
        if expected is not None and (pts is None or pts < expected + tick):
            pts = expected
        elif pts is None:
            pts = 0
        frame.pts, frame.time_base = pts, Fraction(1, rate)
        self._next = (rate, pts + frame.samples)
        return frame
