"""Audio channel layouts: what an encoder is given for a track's channels."""

from __future__ import annotations

import av

# Standard layout per channel count (FFmpeg's av_channel_layout_default); PyAV's "3c" means 2.1.
# 4 channels: quad, which both aac and libopus take (libopus refuses 4.0).
_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1",
                    8: "7.1"}
_LAYOUT_OK: dict[tuple[str, str], bool] = {}
# Layouts FFmpeg's AAC encoder opens with but does not list, and the one of its own the ffmpeg
# CLI converts each to: written as they are, a program config element decoders read as
# unnamed channels (AC-3 5.1(side), every DVD/Blu-ray/broadcast 5.1 track, came back as "6
# channels"). It lists the back variants.
_AAC_LAYOUTS = {"5.0(side)": "5.0", "5.1(side)": "5.1"}


def _encoder_takes_layout(encoder: str, layout: str, sample_rate: int) -> bool:
    """Whether `encoder` opens with `layout` (PyAV does not list an encoder's layouts; cached)."""
    key = (encoder, layout)
    if key not in _LAYOUT_OK:
        try:
            cc = av.CodecContext.create(encoder, "w")
            cc.layout, cc.sample_rate = layout, sample_rate
            cc.format = cc.codec.audio_formats[0] if cc.codec.audio_formats else "fltp"
            cc.open()
            _LAYOUT_OK[key] = True
        except (av.FFmpegError, ValueError):
            _LAYOUT_OK[key] = False
    return _LAYOUT_OK[key]


def output_layout(channels: int, source: av.AudioLayout | None = None,
                  encoder: str | None = None, sample_rate: int = 48000) -> str:
    """The output layout: the source's when it has as many channels, a known channel order and
    the encoder takes it (3.0 stays 3.0, quad stays quad; for AAC, the one the ffmpeg CLI
    converts it to); else the standard one for the count."""
    if source is not None and source.nb_channels == channels and encoder \
            and "channels" not in source.name:
        layout = _AAC_LAYOUTS.get(source.name, source.name) if encoder == "aac" else source.name
        if _encoder_takes_layout(encoder, layout, sample_rate):
            return layout
    return _DEFAULT_LAYOUTS.get(channels, f"{channels}c")


class AudioConverter:
    """Decoded audio frames, kept in the format, layout and rate of the stream's first frame.

    PyAV's encoder sets its resampler up from the first frame and refuses any other (a DVB
    programme going from stereo to 5.1, a damaged frame decoding at another rate); the ffmpeg
    CLI reconfigures its filters instead. Frames like the first pass as they are; each other
    setup gets a resampler of its own into the first one, and the change is reported.
    """

    def __init__(self, index: int) -> None:
        self.index = index
        self._first: tuple[str, str, int] | None = None
        self._resamplers: dict[tuple[str, str, int], av.AudioResampler] = {}
        self.change: str | None = None  # the first change, for the report

    def __call__(self, frame: av.AudioFrame) -> list[av.AudioFrame]:
        """`frame` in the first frame's setup (a resampler may hold samples back)."""
        setup = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._first is None:
            self._first = setup
        if setup == self._first:
            return [frame]
        if setup not in self._resamplers:
            fmt, layout, rate = self._first
            self._resamplers[setup] = av.AudioResampler(format=fmt, layout=layout, rate=rate)
            if self.change is None:
                at = f" at {float(frame.pts * frame.time_base):.3f}s" \
                    if frame.pts is not None and frame.time_base else ""
                self.change = (f"audio stream #{self.index} changed from {self._first[1]} "
                               f"{self._first[2]} Hz to {setup[1]} {setup[2]} Hz{at}: converted "
                               "to the first")
        return self._resamplers[setup].resample(frame)

    def flush(self) -> list[av.AudioFrame]:
        """What the resamplers still hold, at the end of the stream."""
        return [f for r in self._resamplers.values() for f in r.resample(None)]
