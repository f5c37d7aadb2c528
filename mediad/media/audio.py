"""Audio channel layouts: what an encoder is given for a track's channels."""

from __future__ import annotations

import av

# Standard layout per channel count (FFmpeg's av_channel_layout_default); PyAV's "3c" means 2.1.
# 4 channels: quad, which both aac and libopus take (libopus refuses 4.0).
_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1",
                    8: "7.1"}
_LAYOUT_OK: dict[tuple[str, str], bool] = {}


def _encoder_takes_layout(encoder: str, layout: str, sample_rate: int) -> bool:
    """Whether audio `encoder` makes with `layout` decodes as that layout (PyAV does not list an
    encoder's layouts; cached). Opening is not enough: FFmpeg's aac opens with any layout and
    writes one it has no standard configuration for (5.1(side), the layout of every AC-3 5.1
    track) in a program config element decoders read as unnamed channels ("6 channels")."""
    key = (encoder, layout)
    if key not in _LAYOUT_OK:
        try:
            _LAYOUT_OK[key] = _round_trip(encoder, layout, sample_rate) == av.AudioLayout(layout).name
        except (av.FFmpegError, ValueError, IndexError, TypeError):
            _LAYOUT_OK[key] = False
    return _LAYOUT_OK[key]


def _round_trip(encoder: str, layout: str, sample_rate: int) -> str | None:
    """The layout one frame of silence from `encoder` decodes as."""
    enc = av.CodecContext.create(encoder, "w")
    enc.layout, enc.sample_rate = layout, sample_rate
    enc.format = enc.codec.audio_formats[0] if enc.codec.audio_formats else "fltp"
    enc.open()
    frame = av.AudioFrame(format=enc.format.name, layout=layout, samples=enc.frame_size or 1024)
    # Silence (numpy stays off a transcode's path). PyAV lists one plane too many for 8
    # planar channels, and writing it crashes: only the channels' own planes are touched.
    planes = av.AudioLayout(layout).nb_channels if enc.format.is_planar else 1
    for plane in frame.planes[:planes]:
        plane.update(bytes(plane.buffer_size))
    frame.sample_rate, frame.pts = sample_rate, 0
    dec = av.CodecContext.create(enc.codec.name, "r")
    dec.extradata, dec.sample_rate = enc.extradata, sample_rate
    for packet in [*enc.encode(frame), *enc.encode(None)]:
        for decoded in dec.decode(packet):
            return decoded.layout.name
    return None


def output_layout(channels: int, source: av.AudioLayout | None = None,
                  encoder: str | None = None, sample_rate: int = 48000) -> str:
    """The output layout: the source's when it has as many channels, a known channel order and
    the encoder takes it (3.0 stays 3.0, quad stays quad); else the standard one for the count."""
    if source is not None and source.nb_channels == channels and encoder \
            and "channels" not in source.name \
            and _encoder_takes_layout(encoder, source.name, sample_rate):
        return source.name
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
