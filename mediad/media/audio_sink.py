"""One re-encoded audio track on its own thread: decode, convert, time, encode.

Audio encoders have no threads of their own (aac, libopus, ac3), so in an audio-only job
(video copied) encoding on the reader's thread made the whole job as slow as the sum of its
parts; the ffmpeg CLI runs each encoder on its own thread. The encoded packets come back to
the reader's thread, which alone writes the output container.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import av

from mediad.media.audio import AudioConverter, output_layout
from mediad.media.health import DecodeHealth
from mediad.media.loudness import Normalizer
from mediad.media.timing import AudioTimer, Span
from mediad.media.worker import OrderedWorker

if TYPE_CHECKING:
    from mediad.media.plan_streams import StreamPlan


@dataclass(frozen=True)
class DecodeFailure:
    """A packet the decoder refused: skipped, as the ffmpeg CLI does; the caller counts it."""

    packet: av.Packet
    error: av.FFmpegError


AudioOut = av.Packet | DecodeFailure


class AudioSink:
    """Source packets of one audio track in (size 0: its end), encoded packets out, in order.

    The output container must have started encoding (header written, encoders open) before
    the first packet: opening happens on the caller's thread, never beside the worker.
    """

    def __init__(self, index: int, ost: av.audio.stream.AudioStream,
                 normalize: Normalizer | None = None) -> None:
        self.ost = ost
        self.index = index  # the source stream
        self.convert = AudioConverter(index)
        self.normalize = normalize  # loudness, after the conversion to one setup
        self.timer = AudioTimer()
        self.span = Span()  # what went into the encoder (an edit list's pre-roll is not in it)
        self.worker: OrderedWorker[av.Packet | None, AudioOut] = OrderedWorker(
            self._work, name=f"mediad-audio-{index}")

    def loudness(self) -> dict | None:
        """The report's loudness figures of the track, once it is finished; None when it was
        not normalised."""
        if self.normalize is None or self.normalize.result is None:
            return None
        return {"stream": self.index, **self.normalize.result.to_dict()}

    def _work(self, packet: av.Packet | None) -> list[AudioOut]:
        if packet is None:
            return list(self.ost.encode(None))
        try:
            decoded = packet.decode()
        except av.FFmpegError as e:
            return [DecodeFailure(packet, e)]
        frames = [f for frame in decoded for f in self.convert(frame)]
        if packet.size == 0:  # the demuxer's end marker: what the converter still holds
            frames += self.convert.flush()
        if self.normalize is not None:
            frames = [f for frame in frames for f in self.normalize(frame)]
            if packet.size == 0:
                frames += self.normalize.flush()
        timed = [t for frame in frames if (t := self.timer(frame)) is not None]
        for frame in timed:
            self.span.add(frame.pts, frame.samples, frame.time_base)
        return [p for frame in timed for p in self.ost.encode(frame)]

    def put(self, packet: av.Packet) -> list[AudioOut]:
        """Queue a source packet; returns what is encoded so far."""
        return self.worker.put(packet)

    def finish(self) -> list[AudioOut]:
        """Drain the encoder; returns the rest."""
        done = self.worker.put(None)
        return done + self.worker.finish()

    def close(self) -> None:
        self.worker.close()


def mux_audio(health: DecodeHealth, encoded: list[AudioOut],
              write: Callable[[av.Packet], object]) -> None:
    """Write a sink's packets (`write`: an output's mux); count the packets its decoder refused."""
    for item in encoded:
        if isinstance(item, DecodeFailure):
            health.error(item.packet, item.error)
        else:
            write(item)


def add_encoded_audio(out: av.container.OutputContainer, sp: StreamPlan,
                      ist: av.audio.stream.AudioStream) -> av.audio.stream.AudioStream:
    """An output stream for a track the plan re-encodes: its encoder, rate, layout, bit rate."""
    assert sp.encoder and sp.sample_rate and sp.channels
    ost = out.add_stream(sp.encoder, rate=sp.sample_rate)
    ost.layout = output_layout(sp.channels, ist.codec_context.layout, sp.encoder, sp.sample_rate)
    if sp.bit_rate:
        ost.bit_rate = sp.bit_rate
    return ost
