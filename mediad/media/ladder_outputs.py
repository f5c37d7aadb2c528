"""The outputs of a ladder run and the tracks written to every one of them: a source audio or
text track is copied, or encoded (converted) once, and its packets go to each output."""

from __future__ import annotations

from dataclasses import dataclass, field

import av

from mediad.media.audio_sink import AudioSink
from mediad.media.subtitles import SubtitleConverter


@dataclass
class Output:
    """One output container: the HLS/DASH muxer, or one rendition's file."""

    container: av.container.OutputContainer
    covers: dict[int, av.stream.Stream] = field(default_factory=dict)  # MP4 cover art, by source index


@dataclass
class AudioTrack:
    """One source audio track and its stream in every output (copied, or encoded once)."""

    streams: list[av.stream.Stream]  # per output, in the runner's outputs' order
    sink: AudioSink | None = None  # encodes it; None: copied
    bsf: av.BitStreamFilterContext | None = None  # ADTS -> raw AAC for fMP4 segments


@dataclass
class SubtitleTrack:
    """One source text subtitle track and its stream in every output (copied, or converted
    once into the first output's stream, the others' streams made from it)."""

    streams: list[av.stream.Stream]  # per output, in the runner's outputs' order
    converter: SubtitleConverter | None = None


def clone(packet: av.Packet, stream: av.stream.Stream) -> av.Packet:
    """A copy of an encoded packet for another output (muxing takes the packet's contents)."""
    copy = av.Packet(bytes(packet))
    copy.pts, copy.dts, copy.duration = packet.pts, packet.dts, packet.duration
    copy.time_base, copy.is_keyframe = packet.time_base, packet.is_keyframe
    copy.stream = stream
    return copy


def mux_to_all(outputs: list[Output], streams: list[av.stream.Stream],
               packets: list[av.Packet]) -> None:
    """Packets of one track into every output, `streams` its stream in each (copies first:
    muxing takes the contents)."""
    for packet in packets:
        for o, stream in zip(outputs[1:], streams[1:], strict=True):
            o.container.mux(clone(packet, stream))
        packet.stream = streams[0]
        outputs[0].container.mux(packet)
