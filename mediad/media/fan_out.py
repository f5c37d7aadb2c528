"""The frames of the one decode handed to every rendition's sink, in order; a ladder's marked
I at each keyframe time, so that every rendition's segments cut at the same frames."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import av

from mediad.media.gap_fill import GapFiller
from mediad.media.video_sink import VideoSink, as_they_are


class FanOut:
    """Frames to every sink (their packets muxed into the sink's output); counts them."""

    def __init__(self, sinks: list[VideoSink], keyframe_seconds: float,
                 on_frame: Callable[[int], None]) -> None:
        """`keyframe_seconds`: 0 leaves every frame type to the encoder (a single output)."""
        self.sinks = sinks
        self.key_every = Fraction(keyframe_seconds).limit_denominator(1000)
        self.gaps: GapFiller | None = None  # a segmented set's: fills the gaps in the frames
        self.on_frame = on_frame
        self.fanned = 0
        self.next_key = 0  # index of the next keyframe time
        self.first_t: Fraction | None = None  # the first frame's time: keyframe times count from it

    def __call__(self, frames: list[av.VideoFrame], end: bool = False) -> None:
        fill = self.gaps or as_they_are
        for frame in (f for decoded in [*frames, *([None] if end else [])] for f in fill(decoded)):
            frame.pict_type = av.video.frame.PictureType.NONE
            if self.key_every:
                self._mark_keyframe(frame)
            for sink in self.sinks:
                sink.out.mux(sink.put(frame))
            self.fanned += 1
            self.on_frame(self.fanned)

    def _mark_keyframe(self, frame: av.VideoFrame) -> None:
        """Keyframe times count from the first frame, in exact fractions, as FFmpeg's hls and
        dash segmenters count their cut times (n x segment length after the stream's first
        timestamp, no tolerance): the first frame at or after each time is the keyframe, so
        each cut finds one. (Counted from 0, a video starting 0.4 s after its audio, or a
        frame a hair early, moved every cut a whole keyframe interval later.)"""
        t = Fraction(frame.pts) * frame.time_base if frame.pts is not None \
            and frame.time_base is not None else Fraction(self.fanned)
        if self.first_t is None:
            self.first_t = t
        if t - self.first_t >= self.next_key * self.key_every:
            frame.pict_type = av.video.frame.PictureType.I
            self.next_key = (t - self.first_t) // self.key_every + 1

