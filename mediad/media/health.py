"""Decode health: corrupt packets and frames, decode errors and missing video, counted on the way.

The ffmpeg CLI goes on after a decode error and prints it; mediad goes on too (profile
`on_decode_error = "warn"`) and says so in the report, or stops at the first problem ("fail"),
as a health check would. Missing video is measured by time, not by counting packets (fields of
PAFF H.264 come as two packets, packed AVI frames as none): the decoded frames' span against
the packets' span, and jumps in the frames' timestamps where the stream had errors.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import av

from mediad.errors import MediadError, Reason
from mediad.media.timing import Span

# A timestamp jump of more than this many frame durations counts as frames missing.
_GAP_FRAMES = 1.5
# A hole between audio packets longer than 1/this seconds is audio lost (a frame is 21-32 ms).
_AUDIO_HOLE_PER_S = 10


@dataclass
class DecodeHealth:
    """What went wrong while demuxing and decoding one source."""

    source: str
    policy: Literal["warn", "fail"]
    video_index: int | None = None
    frame_duration: Fraction | None = None  # seconds per frame from the stream's nominal rate
    corrupt_packets: Counter[int] = field(default_factory=Counter)
    corrupt_frames: int = 0
    errors: Counter[int] = field(default_factory=Counter)
    first_skip: str = ""  # what the first skipped packet's decoder or muxer said
    gap_frames: int = 0  # frames missing inside the stream, from timestamp jumps
    audio_gaps: Counter[int] = field(default_factory=Counter)  # ms of audio missing, per stream
    moved: Counter[int] = field(default_factory=Counter)  # copied packets whose dts went back
    lost_syncs: int = 0  # damaged stretches the demuxer read on past (media.reading)
    frames: Span | None = None  # decoded video frames' span
    _last_pts: int | None = None
    _audio_end: dict[int, int] = field(default_factory=dict)  # in the stream's ticks

    def _problem(self, what: str) -> None:
        if self.policy == "fail":
            raise MediadError(f"{self.source}: {what} (on_decode_error = \"fail\")",
                              reason=Reason.CORRUPT)

    def packet(self, packet: av.Packet) -> None:
        """A demuxed packet: the demuxer flags the ones it knows are damaged (TS continuity);
        audio is continuous, so a hole between its packets is audio lost."""
        index = packet.stream.index
        if packet.is_corrupt:
            self.corrupt_packets[index] += 1
            self._problem(f"corrupt packet in stream #{index}"
                          f"{self._at(packet.pts, packet.time_base)}")
        if packet.stream.type == "audio" and packet.pts is not None and packet.time_base:
            # In the stream's own ticks: this runs for every audio packet.
            start, end, tb = packet.pts, self._audio_end.get(index), packet.time_base
            gap = 0 if end is None else start - end
            if gap > 0 and gap * tb.numerator * _AUDIO_HOLE_PER_S > tb.denominator:
                self.audio_gaps[index] += round(gap * tb * 1000)
            stop = start + (packet.duration or 0)
            self._audio_end[index] = stop if end is None else max(end, stop)

    def lost_sync(self) -> None:
        """The demuxer lost its sync in damaged data and reads on past it (any stream: the
        damage is in the file, and seen even where nothing is decoded, a copied video)."""
        self.lost_syncs += 1
        self._problem("the demuxer lost its sync in damaged data")

    def error(self, packet: av.Packet, error: Exception, what: str = "decode") -> None:
        """A packet its decoder (or, copied, the muxer) refused; the job goes on without it."""
        self.errors[packet.stream.index] += 1
        problem = f"{what} error in stream #{packet.stream.index}" \
                  f"{self._at(packet.pts, packet.time_base)}: {error}"
        self.first_skip = self.first_skip or problem
        self._problem(problem)

    def video_frame(self, frame: av.VideoFrame) -> None:
        """A decoded video frame, before any rebasing: corrupt flag and timestamp jumps."""
        if frame.is_corrupt:
            self.corrupt_frames += 1
            self._problem(f"corrupt video frame{self._at(frame.pts, frame.time_base)}")
        if frame.pts is None or frame.time_base is None:
            return
        if self.frames is None:
            self.frames = Span()
        self.frames.add(frame.pts, frame.duration, frame.time_base)
        last, self._last_pts = self._last_pts, frame.pts
        if last is not None and self.frame_duration and frame.pts > last:
            step = (frame.pts - last) * frame.time_base / self.frame_duration
            if step > _GAP_FRAMES:
                self.gap_frames += round(step) - 1

    @property
    def damaged(self) -> bool:
        """True when the source showed damage (a jump in timestamps alone may be VFR)."""
        return bool(self.corrupt_packets or self.corrupt_frames or self.errors or self.lost_syncs)

    def lost_video(self, packets: Span | None) -> tuple[float, float]:
        """Seconds of video at the start and at the end whose packets gave no frame."""
        if packets is None or self.frames is None or packets.first is None \
                or self.frames.first is None:
            return 0.0, 0.0
        lead = (self.frames.start_seconds or 0.0) - (packets.start_seconds or 0.0)
        # The frames' reach: an MP4's hold may sit on a frame shown before the last.
        shown = (self.frames.start_seconds or 0.0) + (self.frames.reach_seconds or 0.0)
        tail = (packets.end_seconds or 0.0) - shown
        least = float(self.frame_duration or 0) * _GAP_FRAMES
        return (lead if lead > least else 0.0), (tail if tail > least else 0.0)

    def finish(self, packets: Span | None) -> list[str]:
        """The report's warnings, after the last packet; fails now under policy "fail"."""
        notes = []
        if self.lost_syncs:
            notes.append(f"the demuxer lost its sync {self.lost_syncs} time(s) in damaged data "
                         "and read on past it, as ffmpeg does")
        if self.corrupt_packets:
            streams = ", ".join(f"#{i}: {n}" for i, n in sorted(self.corrupt_packets.items()))
            notes.append(f"{sum(self.corrupt_packets.values())} corrupt packet(s) in the source "
                         f"(stream {streams})")
        if self.errors:
            streams = ", ".join(f"#{i}: {n}" for i, n in sorted(self.errors.items()))
            notes.append(f"{sum(self.errors.values())} damaged packet(s) could not be decoded "
                         f"or copied and were skipped (stream {streams}); the first: "
                         f"{self.first_skip}")
        if self.corrupt_frames:
            notes.append(f"{self.corrupt_frames} video frame(s) decoded with errors concealed")
        if self.gap_frames and self.damaged:
            notes.append(f"about {self.gap_frames} video frame(s) missing (jumps in the "
                         "timestamps where the source is damaged)")
        if self.audio_gaps and self.damaged:
            streams = ", ".join(f"#{i}: {ms / 1000:.3f}s" for i, ms in sorted(self.audio_gaps.items()))
            notes.append(f"audio missing where the source is damaged (stream {streams})")

        lead, tail = self.lost_video(packets)
        fps = 1 / float(self.frame_duration) if self.frame_duration else None
        for seconds, where, why in ((lead, "first", "the source starts between keyframes, "
                                     "or its start is damaged"),
                                    (tail, "last", "the end of the source is damaged")):
            if seconds:
                frames = f" (~{round(seconds * fps)} frames)" if fps else ""
                notes.append(f"the {where} {seconds:.3f}s of video{frames} did not decode: {why}")
        if notes and self.policy == "fail":
            raise MediadError(f"{self.source}: {notes[0]} (on_decode_error = \"fail\")",
                              reason=Reason.CORRUPT)
        if self.moved:  # a timestamp fix, not damage: no reason to fail
            streams = ", ".join(f"#{i}: {n}" for i, n in sorted(self.moved.items()))
            notes.append(f"{sum(self.moved.values())} copied packet(s) whose timestamps went "
                         f"back were moved forward (stream {streams}), as ffmpeg does")
        return notes

    def _at(self, pts: int | None, time_base: Fraction | None) -> str:
        if pts is None or time_base is None:
            return ""
        return f" at {float(pts * time_base):.3f}s"
