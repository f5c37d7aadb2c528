"""The outputs of a run and the tracks written to every one of them: a source audio or text
track is copied, or encoded (converted) once, and its packets go to each output. One output
for a single transcode or an HLS/DASH set (the segmenter), one per rendition for a folder of
files."""

from __future__ import annotations

from dataclasses import dataclass, field

import av

from mediad.media.audio_sink import AudioSink, add_encoded_audio
from mediad.media.carry_over import copy_stream_info
from mediad.media.health import DecodeHealth
from mediad.media.loudness import Normalizer
from mediad.media.plan_records import VideoPlan
from mediad.media.plan_streams import StreamPlan
from mediad.media.probe import frame_rate
from mediad.media.subtitles import SubtitleConverter
from mediad.media.timing import Monotonic
from mediad.media.video_sink import sar_of


@dataclass
class Output:
    """One output container: a file, or the HLS/DASH muxer."""

    container: av.container.OutputContainer
    covers: dict[int, av.stream.Stream] = field(default_factory=dict)  # MP4 cover art, by source index


@dataclass
class AudioTrack:
    """One source audio track and its stream in every output (copied, or encoded once)."""

    streams: list[av.stream.Stream]  # per output, in the runner's outputs' order
    sink: AudioSink | None = None  # encodes it; None: copied
    bsf: av.BitStreamFilterContext | None = None  # ADTS -> raw AAC for fMP4 segments
    # Copied: the latest packet an MP4 edit list marks discard, held until one it presents
    # comes (see engine._copy_audio)
    preroll: av.Packet | None = None


@dataclass
class SubtitleTrack:
    """One source text subtitle track and its stream in every output (copied, or converted
    once into the first output's stream, the others' streams made from it)."""

    streams: list[av.stream.Stream]  # per output, in the runner's outputs' order
    converter: SubtitleConverter | None = None


def add_audio_track(outputs: list[Output], a: StreamPlan, ist: av.audio.stream.AudioStream,
                    normalizer: Normalizer | None, segmented: bool) -> AudioTrack:
    """The track in every output: copied, or encoded once (into the first output's stream,
    the others' streams made from it) and its packets written to each."""
    if a.action == "copy":
        streams = [o.container.add_stream_from_template(ist) for o in outputs]
        track = AudioTrack(streams)
        if a.source_codec == "aac" and segmented:
            # ADTS (TS, raw .aac) into fMP4 segments: the segmenter's inner MP4 muxer wants
            # raw AAC and converts nothing itself (a file's MP4 muxer does, as for a copy).
            track.bsf = av.BitStreamFilterContext("aac_adtstoasc", ist, streams[0])
            streams[0].codec_tag = "mp4a"  # not the TS's stream type (0x0F) the filter kept
        return track
    # Encoded once, by the first output's encoder. Each other output's stream gets an encoder
    # of its own set up alike and never fed: its parameters are the first's (AAC's config,
    # the start-up padding a muxer marks to skip), which a stream copied from a template
    # lacked (its Matroska file played the padding: its audio 21 ms early).
    streams = [add_encoded_audio(o.container, a, ist) for o in outputs]
    return AudioTrack(streams, sink=AudioSink(ist.index, streams[0], normalizer))


def add_subtitle_track(outputs: list[Output], s: StreamPlan,
                       ist: av.subtitles.stream.SubtitleStream, start_offset: float) -> SubtitleTrack:
    """The text track in every output: copied, or converted once (into the first output's
    stream, the others' made from it) and its packets written to each."""
    if s.action == "copy":
        return SubtitleTrack([o.container.add_stream_from_template(ist) for o in outputs])
    assert s.codec is not None
    converter = SubtitleConverter(ist, outputs[0].container, s.codec, start_offset)
    streams = [converter.stream]
    for o in outputs[1:]:
        copy = o.container.add_stream_from_template(converter.stream)
        copy.codec_context.subtitle_header = converter.stream.codec_context.subtitle_header
        streams.append(copy)
    return SubtitleTrack(streams, converter)


def add_copied_video(out: av.container.OutputContainer, ist: av.video.stream.VideoStream,
                     vp: VideoPlan, container: str) -> tuple[av.stream.Stream,
                                                             av.BitStreamFilterContext | None]:
    """The video stream of a copy, and the bitstream filter its packets go through (if any)."""
    # opaque: take the template's codec as it is. Otherwise PyAV looks for an encoder named
    # after the decoder (libdav1d for AV1), which does not exist; a copy needs only the codec id.
    ost = out.add_stream_from_template(ist, opaque=True)
    if vp.codec == "hevc" and container in ("mp4", "mov"):
        ost.codec_tag = "hvc1"  # Apple players refuse the default hev1 tag
    copy_stream_info(ist, ost)
    # The source's frame rate, as `ffmpeg -c copy` gives it: Matroska's muxer takes its
    # default block duration from it and writes any other (a VFR recording's held last
    # picture) on the block; with none, the last block lost its duration, and the hold.
    if (rate := frame_rate(ist)) is not None:
        ost.codec_context.framerate = rate
    # The container's aspect (MKV DisplayWidth, MP4 pasp) goes into the new container too, as
    # with `ffmpeg -c copy`; the template carries only the codec's.
    if (sar := sar_of(vp)) is not None:
        ost.codec_context.sample_aspect_ratio = sar
    return ost, av.BitStreamFilterContext(vp.bitstream_filter, ist, ost) \
        if vp.bitstream_filter else None


def stream_info(ist: av.stream.Stream, streams: list[av.stream.Stream], segmented: bool) -> None:
    """A file takes the track's language, title and default/forced flags; a segmented set's
    playlists name the language (its players' menus)."""
    for stream in streams:
        if not segmented:
            copy_stream_info(ist, stream)
        elif lang := ist.metadata.get("language"):
            stream.metadata["language"] = lang


def clone(packet: av.Packet, stream: av.stream.Stream) -> av.Packet:
    """A copy of an encoded packet for another output (muxing takes the packet's contents),
    its side data too: an encoder's start-up padding to skip, a new extradata."""
    copy = av.Packet(bytes(packet))
    copy.pts, copy.dts, copy.duration = packet.pts, packet.dts, packet.duration
    copy.time_base, copy.is_keyframe = packet.time_base, packet.is_keyframe
    for side_data in packet.iter_sidedata():
        copy.set_sidedata(side_data)
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


def with_pts(packet: av.Packet) -> av.Packet:
    """`packet` with its pts: MPEG PES may omit it (then it is the dts); Matroska needs it."""
    if packet.pts is None and packet.dts is not None:
        packet.pts = packet.dts
    return packet


class PacketCopier:
    """Packets of copied tracks into every output, as `ffmpeg -c copy` writes them."""

    def __init__(self, outputs: list[Output], monotonic: Monotonic, health: DecodeHealth) -> None:
        self.outputs = outputs
        self.monotonic = monotonic  # dts kept increasing (joined recordings overlap)
        self.health = health

    def __call__(self, packet: av.Packet, streams: list[av.stream.Stream],
                 bsf: av.BitStreamFilterContext | None = None) -> None:
        """`packet` into every output (`streams`: its stream in each), through `bsf` if any."""
        if packet.dts is None and packet.size == 0:
            return  # the demuxer's end-of-stream marker (it flushed the decoders)
        with_pts(packet)
        # Kept increasing in the output stream's time base, as ffmpeg's muxer front-end does
        # (rescaled, then fixed): a packet moved one tick of the source's 1/90000 after the one
        # before became the same tick of an MP4's 1/48000 audio, which its muxer refuses.
        out_tb = streams[0].time_base
        if out_tb and packet.time_base and packet.time_base != out_tb:
            packet.rescale_ts(av.AVRational(out_tb))
        self.monotonic(packet, packet.stream.index)
        # Read first: muxing takes the packet's contents. The demuxer flags the packet it saw
        # damaged, not always the next ones of the same broken PES.
        damaged = packet.is_corrupt or self.health.damaged
        try:
            mux_to_all(self.outputs, streams, list(bsf.filter(packet)) if bsf else [packet])
        except av.InvalidDataError as e:
            if not damaged:
                raise
            # A damaged packet the muxer cannot take (no ADTS header left): the ffmpeg CLI
            # stops the whole output here; it is dropped and counted instead.
            self.health.error(packet, e, "copy")
