"""Timestamps on the way through: the output's timeline (from 0, clock jumps joined), video pts
put back in order, audio timed by samples, and how long each stream really lasts."""

from __future__ import annotations

import heapq
from collections import Counter, deque
from dataclasses import dataclass
from fractions import Fraction

import av

# Decoded video frames held back to put scrambled timestamps back in order (VideoTimer):
# AVI stores no pts, so H.264 with B-frames decodes with guessed, out-of-order ones.
_REORDER_FRAMES = 4


# The ffmpeg CLI's -dts_delta_threshold: a jump of more than this in a stream whose format
# allows discontinuities (MPEG-TS/PS) is a splice or a clock reset, not a gap.
JUMP_S = 10.0
# A step back of more than this is a discontinuity too (a small one is fixed at the muxer).
_BACK_S = 0.1
# MPEG-TS/PS timestamps: 33 bits of a 90 kHz clock, which libavformat unwraps (a step back
# of B seconds reads as a step forward of the wrap less B).
_MPEG_CLOCK = Fraction(1, 90000)
_MPEG_WRAP = Fraction(2**33, 90000)  # seconds, 26.5 hours
MPEG_WRAP_S = float(_MPEG_WRAP)


@dataclass(frozen=True)
class Jump:
    """One discontinuity of the source's clock that was joined up."""

    stream: int
    at: float  # seconds on the output's timeline
    by: float  # seconds the source's clock jumped (negative: back)


def _as_jumped(delta: Fraction, time_base: Fraction) -> float:
    """How far the source's clock jumped, for the report: a 90 kHz clock (MPEG-TS/PS) is 33
    bits, and libavformat reads a step back as a step forward by the rest of the wrap (a
    splice an hour back read as +25.5 hours); such a step is reported as the one back."""
    if time_base == _MPEG_CLOCK and delta > _MPEG_WRAP / 2:
        delta -= _MPEG_WRAP
    return float(delta)


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
        self._shift_s = 0.0
        self.jumps: list[Jump] = []
        self._before: Fraction | None = None  # the shift before the latest jump
        # The streams that have had a packet on the current clock since the latest jump: only
        # the others can still have a straggler of the recording before it.
        self._on_clock: set[int] = set()
        self.garbled = 0  # packets whose pts was garbage (given their dts)
        # Per time base: ticks to add (the shift less the offset).
        self._move: dict[Fraction, int] = {}
        # Per stream, in seconds on the shifted clock (floats: this runs for every packet, and
        # a jump is 10 s): where its next packet should start, and its latest timestamp.
        self._next: dict[int, float] = {}
        self._last: dict[int, float] = {}

    def ticks(self, time_base: Fraction) -> int:
        """What to add to a timestamp in units of `time_base` (rounded to the nearest tick)."""
        move = self._move.get(time_base)
        if move is None:
            move = self._move[time_base] = round((self.shift - self.offset) / time_base)
        return move

    def packet(self, packet: av.Packet) -> None:
        """Move a packet's timestamps onto the output's timeline, in place."""
        tb = packet.time_base
        if tb is None:
            return
        move = None
        if self.discontinuous and (earlier := self._join_jumps(packet, tb)) is not None:
            move = round((earlier - self.offset) / tb)
        if move is None:
            move = self.ticks(tb)
        if move:
            if packet.pts is not None:
                packet.pts += move
            if packet.dts is not None:
                packet.dts += move

    def _join_jumps(self, packet: av.Packet, tb: Fraction) -> Fraction | None:
        """Join up a jump at this packet. Returns the shift before the latest jump when this
        packet is a straggler of the recording before that splice (the muxer interleaved its
        last audio after the next recording's first video: a stream that has had no packet
        on the new clock yet, and fits the old one), which keeps that clock instead of making
        two jumps that would move everything between them; None for the current shift."""
        seconds = float(tb)
        if packet.pts is not None and packet.dts is not None \
                and abs(packet.pts - packet.dts) * seconds > JUMP_S:
            # A damaged PES header: no frame is shown 10 s after it is decoded.
            packet.pts = packet.dts
            self.garbled += 1
        ts = packet.dts if packet.dts is not None else packet.pts
        if ts is None:
            return None
        index = packet.stream.index
        t = ts * seconds + self._shift_s
        expected, last = self._next.get(index), self._last.get(index)
        if expected is not None and last is not None \
                and (abs(t - expected) > JUMP_S or t < last - _BACK_S):
            if self._before is not None and index not in self._on_clock:
                t0 = ts * seconds + float(self._before)
                if abs(t0 - expected) <= JUMP_S and t0 >= last - _BACK_S:
                    self._last[index] = max(last, t0)
                    self._next[index] = t0 + (packet.duration or 0) * seconds
                    return self._before
            self._before = self.shift
            self._on_clock = set()
            delta = Fraction(t - expected).limit_denominator(10**6)
            self.shift -= delta
            self._shift_s = float(self.shift)
            self._move.clear()  # every time base's ticks change with the shift
            self.jumps.append(Jump(index, expected - float(self.offset), _as_jumped(delta, tb)))
            t = expected
        self._last[index] = t if last is None else max(last, t)
        self._next[index] = t + (packet.duration or 0) * seconds
        self._on_clock.add(index)
        return None

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


def from_zero(start: int, duration: int) -> tuple[int, int] | None:
    """A subtitle cue on the output's timeline, which starts at 0: None when it is over before
    0 (a cue ahead of the picture, which muxers would move everything late for); one that
    started before 0 starts there, with what is left of it."""
    if start >= 0:
        return start, duration
    return (0, start + duration) if start + duration > 0 else None


def cue_from_zero(packet: av.Packet) -> bool:
    """A copied subtitle packet through `from_zero`, in place: False when it is left out."""
    if packet.pts is None:
        return True
    cue = from_zero(packet.pts, packet.duration or 0)
    if cue is not None and cue[0] != packet.pts:
        packet.pts, packet.dts, packet.duration = 0, 0, cue[1]
    return cue is not None


class Span:
    """First timestamp and end seen on one stream: where the last frame shown ends (the largest
    pts, plus its duration), or the last one added (in decode order) if it ends later.

    Not the largest pts + duration: an MP4's durations are its decode times' steps, so with
    B-frames across a gap in the pictures (a damaged recording, a dropout) a frame shown after
    the gap but decoded before it carries the gap's seconds, and the video seemed to last past
    its end. The last one decoded carries the stream's real end (a last picture held for
    seconds: its duration is the track's last step). Kept in ticks of the first time base it
    is given (integer maths: it runs for every packet); a frame in another time base (bwdif
    halves it) is converted exactly.
    """

    __slots__ = ("time_base", "first", "last", "shown_end", "recent")

    def __init__(self) -> None:
        self.time_base: Fraction | None = None
        self.first: int | Fraction | None = None
        self.last: int | Fraction | None = None  # the largest pts
        self.shown_end: int | Fraction | None = None  # where the frame at `last` ends
        # Where the last few added end, the last one last. The furthest of them reaches: frames decoded from an MP4 carry its
        # decode-time steps, so a held last picture may sit on a frame shown a reorder or two
        # before the last (only the last few: mid-stream, a frame shown after a gap but decoded
        # before it carries the gap's seconds, which are no hold).
        self.recent: deque[int | Fraction] = deque(maxlen=_REORDER_FRAMES)

    def add(self, pts: int | None, duration: int | None, time_base: Fraction | None) -> None:
        """Widen the span by one packet or frame."""
        if pts is None or time_base is None:
            return
        if self.time_base is None:
            self.time_base = time_base
        start: int | Fraction = pts
        stop: int | Fraction = pts + (duration or 0)
        if time_base != self.time_base:
            scale = time_base / self.time_base
            start, stop = start * scale, stop * scale
        if self.first is None or start < self.first:
            self.first = start
        if self.last is None or start > self.last:
            self.last, self.shown_end = start, stop
        elif start == self.last and stop > self.shown_end:  # type: ignore[operator]
            self.shown_end = stop
        self.recent.append(stop)

    @property
    def end(self) -> int | Fraction | None:
        """The end, in ticks: the later of the last shown frame's and the last one added's."""
        if self.shown_end is None:
            return None
        return max(self.shown_end, self.recent[-1])  # the last one added ends there

    @property
    def start_seconds(self) -> float | None:
        """The first timestamp in seconds."""
        return None if self.first is None else float(self.first * self.time_base)

    @property
    def end_seconds(self) -> float | None:
        """The end in seconds."""
        return None if self.end is None else float(self.end * self.time_base)

    @property
    def starts_seconds(self) -> float | None:
        """First timestamp to the last frame's start: what a container cannot change (a last
        frame's duration is its own to write)."""
        if self.first is None or self.last is None:
            return None
        return float((self.last - self.first) * self.time_base)

    @property
    def seconds(self) -> float | None:
        """How long the stream lasts, first timestamp to end."""
        if self.first is None or self.end is None:
            return None
        return float((self.end - self.first) * self.time_base)

    @property
    def reach_seconds(self) -> float | None:
        """First timestamp to the furthest end of the last few added, at least `seconds`: the
        most a container may show of what went in (an MP4 keeps a hold on the sample decoded
        last, which need not be the one shown last)."""
        if self.first is None or self.end is None:
            return None
        return float((max(*self.recent, self.end) - self.first) * self.time_base)


class VideoTimer:
    """Decoded frames in, frames with increasing pts out, a few frames behind the decoder.

    The decoder gives frames in display order, but their pts are only what the container said:
    AVI keeps none, so B-frames come out with guessed pts out of order (1 4 3 5 2 ...) and the
    encoder's dts then went backwards. The frames' own timestamps are right as a set: each
    frame takes the smallest one still waiting. In-order pts pass unchanged. A repeated one (or
    one less than half a frame after the one before) is moved one frame on where that time is
    free; where the frames after it hold it (recordings
    joined with an overlap: the clock steps back a few frames and goes on from there), the frame
    is dropped: moved on, every frame after the join went late, and stayed out of sync with
    audio by the overlap. (ffmpeg's vfr drops all but the last and moves that one on: one
    frame late from there.) `hold` is 0 for NVDEC frames (its surface pool is
    small): they only get the last step, and a repeated one is dropped (nothing to look ahead).
    """

    def __init__(self, hold: int = _REORDER_FRAMES) -> None:
        self.hold = hold
        self._queue: deque[av.VideoFrame] = deque()
        self._pts: list[int] = []
        self._last: int | None = None
        self._last_step = 0  # the last frame's duration
        self.dropped = 0  # frames whose time the frames after them held

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
            # A frame's step: the shorter of its duration and the one before's (a frame
            # before a dropout lasts until the next one, seconds).
            step = min((d for d in (int(f.duration or 0), self._last_step) if d), default=0)
            # Repeated: the same time, or (segments joined at a rounded offset) a few ticks
            # after it, less than half a step; its time free: no frame waits within half a
            # step of it
            near = max(1, step // 2)
            if self._last is not None and f.pts < self._last + near:
                moved = self._last + max(1, step)
                if (self._pts[0] < moved + near) if self._pts else frames is not None:
                    self.dropped += 1
                    continue
                f.pts = moved
            self._last, self._last_step = f.pts, int(f.duration or 0)
            ready.append(f)
        return ready


class AudioTimer:
    """Decoded audio frames timed in 1/sample_rate, continuous with the frames before them.

    Demuxers time audio coarsely (AVI: one tick per MP3 frame of 1152 samples) or not at all;
    the encoder's resampler cuts frames to the encoder's frame size and must time each piece to
    the sample, which a coarse time base cannot: pieces got equal pts and the muxer refused
    them. As the ffmpeg CLI does, count samples and trust the source's pts only for a real gap
    (more than one of its ticks, and more than its largest frame, ahead: Ogg Vorbis is timed a
    short block late at each long-to-short switch, then early again; taken as a gap, the frames
    after it were dropped as an overlap, 9 % of the audio, drifting out of sync); a late or
    repeated pts is never let go backwards. A
    frame wholly within the time already written (recordings joined with an overlap: the clock
    steps back, then goes on) is dropped, as VideoTimer drops the video's repeated frames:
    counted on, everything after the join went late by the overlap.
    """

    def __init__(self) -> None:
        self._next: tuple[int, int] | None = None  # (sample rate, next pts in 1/rate)
        self._time_base: Fraction | None = None
        self.dropped = 0  # frames the time before them already covered
        self._largest = 0  # samples in the largest frame so far: less than that is jitter

    def __call__(self, frame: av.AudioFrame) -> av.AudioFrame | None:
        """The frame, its pts and time base rewritten (integer maths: it runs for every frame);
        None when it is dropped."""
        rate = frame.sample_rate
        expected = None if self._next is None else self._next[1] * rate // self._next[0]
        pts, tb, tick = None, frame.time_base, 1
        if tb:
            num, den = tb.numerator * rate, tb.denominator  # one source tick in samples
            tick = max(1, -(-num // den))
            if frame.pts is not None:
                pts = (2 * frame.pts * num + den) // (2 * den)  # rounded to the sample
        if expected is not None and pts is not None and pts + frame.samples + tick <= expected:
            self.dropped += 1
            return None
        self._largest = max(self._largest, frame.samples)
        if expected is not None and (pts is None or pts < expected + max(tick, self._largest)):
            pts = expected
        elif pts is None:
            pts = 0
        if self._time_base is None or self._time_base.denominator != rate:
            self._time_base = Fraction(1, rate)
        frame.pts, frame.time_base = pts, self._time_base
        self._next = (rate, pts + frame.samples)
        return frame


class Monotonic:
    """Keep each copied stream's dts increasing, as the ffmpeg CLI's muxer front-end does.

    Joined recordings overlap by a few packets (an HLS or DVR segment join steps back by tens
    of ms) and muxers refuse dts that go back. Such a packet is moved to just after the one
    before it, and counted in `moved` (per source stream). Packets come in the time base of
    the output stream they go to (`PacketCopier` rescales them first, as ffmpeg fixes them
    after rescaling), so "just after" is a tick the muxer still tells apart.
    """

    def __init__(self, moved: Counter[int], strict: bool = True) -> None:
        """`strict`: the muxer wants dts strictly increasing (Matroska's takes equal ones)."""
        self.moved = moved
        self.strict = strict
        self._last: dict[int, int] = {}  # per source stream: the last dts muxed

    def __call__(self, packet: av.Packet, index: int) -> None:
        """Fix `packet` of source stream `index` in place."""
        if packet.dts is None:
            return
        last = self._last.get(index)
        least = None if last is None else last + (1 if self.strict else 0)
        if least is not None and packet.dts < least:
            if packet.pts is not None and packet.pts >= packet.dts:
                packet.pts = max(packet.pts, least)
            packet.dts = least
            self.moved[index] += 1
        self._last[index] = packet.dts
