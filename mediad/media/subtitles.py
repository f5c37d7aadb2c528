"""Text subtitle conversion: decode each cue to ASS, encode it in the output's text codec.

FFmpeg's text subtitle decoders all produce ASS events, and its text encoders (mov_text,
subrip, webvtt) all take them, so each decoded set goes straight back into one encoder per
stream, as the ffmpeg command line does. Cue timing comes from the packets, not the codec, and
is carried in microseconds; the output's packets are in milliseconds, the subtitle formats' own
precision (MP4 stores durations in 32 bits of its track's tick: at 1/1000000 a gap of more than
35.8 minutes between cues wrapped around and the cues landed near 0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import av
from av.subtitles.subtitle import SubtitleSet

from mediad import log
from mediad.media.timing import from_zero

# Packets leave the converter in AV_TIME_BASE units; the muxer rescales them to its own tick.
_US = Fraction(1, 1_000_000)
_MS = Fraction(1, 1000)
_NOPTS = -(2**63)
_UNKNOWN_END = 0xFFFFFFFF  # end_display_time of a cue that lasts until the next one
# A last cue whose end is unknown (closed captions, some demuxers) is shown until the input
# ends, but no longer than this.
_LAST_CUE_US = 5_000_000
# The encoders parse styles from an ASS header; FFmpeg's text decoders always provide one, this
# is FFmpeg's default for a decoder that does not.
_DEFAULT_ASS_HEADER = (
    b"[Script Info]\n"
    b"ScriptType: v4.00+\n"
    b"PlayResX: 384\n"
    b"PlayResY: 288\n"
    b"ScaledBorderAndShadow: yes\n\n"
    b"[V4+ Styles]\n"
    b"Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, "
    b"Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, "
    b"Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n"
    b"Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,1\n\n"
    b"[Events]\n"
    b"Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
)


def codec_names(name: str) -> set[str]:
    """`name` and its canonical codec name: probe reports decoder names (srt, pgssub, dvdsub)."""
    try:
        return {name, av.codec.Codec(name, "r").canonical_name}
    except (av.FFmpegError, ValueError):  # no decoder in this FFmpeg build
        return {name}


def subtitle_kind(name: str) -> Literal["text", "bitmap", "unknown"]:
    """Text subtitles can be converted; bitmaps (PGS, VobSub, DVB) cannot become text."""
    try:
        codec = av.codec.Codec(name, "r")
    except (av.FFmpegError, ValueError):  # no decoder in this FFmpeg build
        return "unknown"
    return "text" if codec.text_sub else "bitmap" if codec.bitmap_sub else "unknown"


@dataclass
class _Cue:
    start: int  # microseconds
    duration: int | None  # microseconds; None until the next cue ends it
    subset: SubtitleSet  # as decoded: the encoders take all its ASS events at once


def _has_text(subset: SubtitleSet | None) -> bool:
    """False for an empty set (a mov_text gap sample, a clear-screen event)."""
    return subset is not None and any(rect.type == b"ass" and rect.ass for rect in subset)


class SubtitleConverter:
    """Converts one input text subtitle stream into a new output stream of another text codec."""

    def __init__(self, ist: av.subtitles.stream.SubtitleStream,
                 out: av.container.OutputContainer, codec: str, offset: float = 0.0) -> None:
        """`offset`: seconds the output's timeline starts after the source's clock."""
        self.decoder = ist.codec_context
        self.decoder.open(strict=False)  # the decoder makes its ASS header when it opens
        self.stream = out.add_stream(codec)
        enc = self.stream.codec_context
        enc.time_base = _MS
        enc.subtitle_header = self.decoder.subtitle_header or _DEFAULT_ASS_HEADER
        self.stream.disposition = ist.disposition  # keep default/forced flags
        self.input_index = ist.index
        c = ist.container
        self._input_end = (c.start_time or 0) + c.duration - round(offset * 1e6) \
            if c.duration else None
        self.skipped: list[str] = []  # why each skipped cue was skipped, for the report
        self._pending: _Cue | None = None
        self._last_start = -(2**62)
        # MP4's mov_text cannot overlap (its muxer then pushes every later cue back): each
        # cue waits for the next, which cuts it where it starts, as the ffmpeg CLI's output has it
        self._held: _Cue | None = None
        self._no_overlap = codec == "mov_text"

    def convert(self, packet: av.Packet) -> list[av.Packet]:
        """Output packets for one input packet; a cue that cannot be converted is skipped."""
        if packet.size == 0:
            return []  # the demuxer's end-of-stream marker
        start = self._packet_start(packet)
        try:
            subset = self.decoder.decode2(packet)
        except (av.FFmpegError, ValueError) as e:
            self._skip(start, f"undecodable: {e}")
            return []
        if subset is not None and subset.pts != _NOPTS:
            start = subset.pts + subset.start_display_time * 1000
        out = self._end_pending(start)
        if not _has_text(subset):
            return out  # an empty event only clears the screen
        assert subset is not None
        if start is None:
            self._skip(start, "no timestamp")
            return out
        cue = _Cue(start, self._duration(packet, subset), subset)
        if cue.duration is None:
            self._pending = cue
        else:
            out += self._encode(cue)
        return out

    def flush(self) -> list[av.Packet]:
        """Packets still held at the end of the input (a last cue without an end)."""
        cue, self._pending = self._pending, None
        if cue is None:
            return self._release(None)
        left = self._input_end - cue.start if self._input_end is not None else 0
        cue.duration = min(left, _LAST_CUE_US) if left > 0 else _LAST_CUE_US
        return self._encode(cue) + self._release(None)

    def _packet_start(self, packet: av.Packet) -> int | None:
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None or packet.time_base is None:
            return None
        return round(ts * packet.time_base / _US)

    def _duration(self, packet: av.Packet, subset: SubtitleSet) -> int | None:
        # The packet's own duration is exact; the decoder's end time is rounded to milliseconds.
        if packet.duration and packet.time_base is not None and not subset.start_display_time:
            return round(packet.duration * packet.time_base / _US)
        end = subset.end_display_time
        if end in (0, _UNKNOWN_END) or end <= subset.start_display_time:
            return None
        return (end - subset.start_display_time) * 1000

    def _end_pending(self, now: int | None) -> list[av.Packet]:
        """A held cue lasts until the next event starts."""
        cue = self._pending
        if cue is None or now is None:
            return []
        self._pending = None
        if now <= cue.start:
            return []  # replaced at once by the next event: nothing to show
        cue.duration = now - cue.start
        return self._encode(cue)

    def _encode(self, cue: _Cue) -> list[av.Packet]:
        if not self._no_overlap:
            return self._emit(cue)
        out = self._release(cue.start)
        self._held = cue
        return out

    def _release(self, next_start: int | None) -> list[av.Packet]:
        """The held cue, cut where the next one starts (None: the end, as it is)."""
        cue, self._held = self._held, None
        if cue is None:
            return []
        assert cue.duration is not None
        if next_start is not None and cue.start + cue.duration > next_start:
            if next_start <= cue.start:  # a cue starting with it takes its place
                self._skip(cue.start, "another cue starts with it (mov_text cannot overlap)")
                return []
            cue.duration = next_start - cue.start
        return self._emit(cue)

    def _emit(self, cue: _Cue) -> list[av.Packet]:
        assert cue.duration is not None
        if (shown := from_zero(cue.start, cue.duration)) is None:
            return []  # over before the output starts (a cue ahead of the picture)
        cue.start, cue.duration = shown
        if cue.start < self._last_start:  # muxers refuse timestamps that go back
            self._skip(cue.start, "out of order")
            return []
        # avcodec_encode_subtitle wants start_display_time 0; the packet carries the timing.
        sub = cue.subset
        sub.pts, sub.start_display_time, sub.end_display_time = cue.start, 0, cue.duration // 1000
        try:
            packet = self.stream.codec_context.encode_subtitle(sub)
        except (av.FFmpegError, ValueError) as e:
            self._skip(cue.start, f"encoder refused it: {e}")
            return []
        if packet.size == 0:
            return []  # nothing left to show (e.g. only ASS drawing commands)
        self._last_start = cue.start
        packet.pts = packet.dts = round(cue.start * _US / _MS)
        packet.duration = max(1, round(cue.duration * _US / _MS))
        packet.time_base, packet.stream = _MS, self.stream
        return [packet]

    def summary(self) -> str | None:
        """One report line about the cues this stream lost, or None when it lost none."""
        if not self.skipped:
            return None
        n = len(self.skipped)
        return (f"subtitle stream #{self.input_index}: {n} cue{'s' if n > 1 else ''} skipped "
                f"in the conversion to {self.stream.codec_context.name} (first: {self.skipped[0]})")

    def _skip(self, start: int | None, why: str) -> None:
        at = f"{start / 1e6:.3f}s" if start is not None else None
        self.skipped.append(f"at {at}: {why}" if at else why)
        log.event("subtitle_cue_skipped", logging.WARNING, stream=self.input_index,
                  codec=self.stream.codec_context.name,
                  at=at, reason=why)
