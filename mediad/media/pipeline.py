"""Runs a Plan: demux -> decode -> (transform, stages) -> encode -> mux into one output file.

The pipeline knows nothing of folders, queues or commits: it writes the file it is given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.codec.hwaccel import HWAccel

from mediad import log
from mediad.errors import MediadError, io_error, is_storage_error
from mediad.media import color
from mediad.media.audio_sink import AudioSink, add_encoded_audio, mux_audio
from mediad.media.health import DecodeHealth
from mediad.media.plan import Plan, StreamPlan, VideoPlan
from mediad.media.probe import KEPT_DISPOSITIONS, open_input
from mediad.media.progress import ProgressCallback, ProgressReporter
from mediad.media.stages import FrameTransform
from mediad.media.subtitles import SubtitleConverter
from mediad.media.timing import Span, Timeline, VideoTimer
from mediad.media.transform import VideoTransform, encoder_colour, tag_colour
from mediad.media.worker import OrderedWorker
from mediad.realtime import undo_realtime

# Container-level tags the muxer writes itself; copying them would lie about the output.
_OWN_TAGS = {"encoder", "major_brand", "minor_version", "compatible_brands", "handler_name"}
_STREAM_TAGS = ("language", "title")
# The stream flags carried onto the output (default/forced tracks, accessibility flags).
_KEPT_FLAGS = 0
for _name in KEPT_DISPOSITIONS:
    _KEPT_FLAGS |= av.stream.Disposition[_name].value


class EncoderRefused(Exception):
    """The hardware video encoder would not open or failed (no engine, session limit); re-plan
    with a software encoder."""


class DecoderRefused(Exception):
    """NVDEC could not be set up, failed, or FFmpeg left this stream to software; re-plan with
    the software decoder (a corrupt file then fails there, with its real error)."""


# What PyAV raises besides FFmpegError when a CUDA device, frames context or hw config is missing.
HW_SETUP_ERRORS = (av.FFmpegError, NotImplementedError, MemoryError, RuntimeError)
# Frame layouts NVDEC gives (libavcodec/nvdec.c): in GPU memory, or as downloaded by PyAV;
# the 4:2:2 ones come from newer FFmpeg on GPUs that decode 4:2:2. FFmpeg's software
# H.264/HEVC/AV1 decoders give planar yuv4xxp* instead.
_NVDEC_FORMATS = {"cuda", "nv12", "p010le", "p016le", "yuv444p", "yuv444p16le", "nv16",
                  "p210le", "p216le"}
# Frame threads each hold one more NVDEC surface; past 32 surfaces NVDEC may refuse to start.
_NVDEC_MAX_THREADS = 8


@dataclass
class RunResult:
    """What one run produced, for the report."""

    frames_written: int = 0
    analysis: Any = None  # the stages' AnalysisResult, when the profile has stages
    stages: list[dict] = field(default_factory=list)  # StageRunner.describe()
    warnings: list[str] = field(default_factory=list)  # what went wrong but did not fail the job
    # What the source's packets span, per source stream (its header may promise more).
    source_spans: dict[int, Span] = field(default_factory=dict)
    # What went into the output's video stream: frames encoded, or packets copied.
    video_span: Span | None = None


def _copy_tags(src: dict[str, str], dst: dict[str, str], keys: tuple[str, ...] | None = None) -> None:
    for k, v in src.items():
        if (keys is None and k.lower() not in _OWN_TAGS) or (keys is not None and k in keys):
            dst[k] = v


def _copy_stream_info(ist: av.stream.Stream, ost: av.stream.Stream) -> None:
    """Language and title tags and the default/forced/... flags of a kept stream."""
    _copy_tags(ist.metadata, ost.metadata, _STREAM_TAGS)
    ost.disposition = ist.disposition.value & _KEPT_FLAGS


def _first_packet(plan: Plan, stream: av.stream.Stream) -> bytes:
    """The bytes of a stream's first packet (an attached picture), from a second reader."""
    with open_input(Path(plan.input)) as c:
        for packet in c.demux(c.streams[stream.index]):
            if packet.size:
                return bytes(packet)
    return b""


def _sar(vp: VideoPlan) -> Fraction | None:
    """The plan's sample aspect ratio, None when it is not a usable one."""
    num, _, den = vp.sample_aspect_ratio.partition("/")
    if int(num or 0) > 0 and int(den or 1) > 0:
        return Fraction(int(num), int(den or 1))
    return None


def _gpu_layout(vp: VideoPlan) -> str:
    """Layout of the CUDA frames NVENC takes for this plan: P010 for 10-bit, else NV12."""
    return "p010le" if vp.pix_fmt == "p010le" else "nv12"


class _Runner:
    def __init__(self, plan: Plan, dest: Path, on_progress: ProgressCallback | None,
                 frames_total: int | None, stages: Sequence[Any]) -> None:
        self.plan = plan
        self.stage_configs = stages
        self.runner: Any = None  # mediad.models.runner.StageRunner
        self.bridge: Any = None  # mediad.media.stages.StageBridge, when there are stages
        self.dest = dest
        self.result = RunResult()
        self.progress = ProgressReporter(on_progress, frames_total)
        self.copy: dict[int, av.stream.Stream] = {}
        self.audio_sinks: dict[int, AudioSink] = {}  # re-encoded tracks, each on its thread
        self.video_sink: OrderedWorker[av.VideoFrame | None, av.Packet] | None = None
        self.convert_subs: dict[int, SubtitleConverter] = {}
        self.video_in: av.video.stream.VideoStream | None = None
        self.video_out: av.video.stream.VideoStream | None = None
        self.transform: FrameTransform | None = None
        self._next_pts = 0
        self._nvdec_checked = False
        # Output colour decided from the source (see transform.encoder_colour).
        self.full_range = False
        self.matrix: str | None = None
        self.timeline = Timeline(plan.start_offset, plan.discontinuous)
        self.health = DecodeHealth(plan.input, plan.on_decode_error,
                                   video_index=plan.decode.stream)
        # Per copied stream: the last dts muxed (see _monotonic).
        self._last_dts: dict[int, int] = {}
        # NVDEC frames are not held for reordering: its surface pool is small.
        self.video_timer = VideoTimer(hold=0) if plan.decode.hardware else VideoTimer()
        self.video_bsf: av.BitStreamFilterContext | None = None
        self.interlaced_frames = 0  # decoded frames flagged interlaced

    # -- set-up ------------------------------------------------------------------------------
    def _tag_hevc(self, ost: av.video.stream.VideoStream, codec: str) -> None:
        if codec == "hevc" and self.plan.container in ("mp4", "mov"):
            ost.codec_tag = "hvc1"  # Apple players refuse the default hev1 tag

    def _add_video(self, src: av.container.InputContainer, out: av.container.OutputContainer) -> None:
        vp = self.plan.video
        ist = src.streams[self.plan.decode.stream]
        ist.codec_context.thread_type = "AUTO"  # frame + slice threads, as the ffmpeg CLI does
        if self.plan.decode.hardware:
            ist.codec_context.thread_count = min(os.cpu_count() or 1, _NVDEC_MAX_THREADS)
        if vp.action == "copy":
            # opaque: take the template's codec as it is. Otherwise PyAV looks for an encoder
            # named after the decoder (libdav1d for AV1), which does not exist; a copy needs
            # only the codec id.
            ost = out.add_stream_from_template(ist, opaque=True)
            self._tag_hevc(ost, vp.codec)
            _copy_stream_info(ist, ost)
            # The container's aspect (MKV DisplayWidth, MP4 pasp) goes into the new container
            # too, as with `ffmpeg -c copy`; the template carries only the codec's.
            if (sar := _sar(vp)) is not None:
                ost.codec_context.sample_aspect_ratio = sar
            if vp.bitstream_filter:
                self.video_bsf = av.BitStreamFilterContext(vp.bitstream_filter, ist, ost)
            self.copy[ist.index] = ost
            self.result.video_span = Span()
            if self.stage_configs:  # analysis stages look at the frames of the copied video
                self.video_in = ist
                self.transform = self._stage_path(ist, vp, encode=False)
            return
        try:
            ost = self._add_encoder(ist, vp, out)
        except HW_SETUP_ERRORS as e:  # e.g. no CUDA device for NVENC's frames context
            if vp.hardware:
                raise EncoderRefused(f"{vp.encoder} cannot be set up: {e}") from None
            raise
        ost.width, ost.height = vp.width, vp.height
        # Keep the source's time base so frame timestamps pass through untouched (VFR-safe).
        ost.time_base = ist.time_base
        ost.codec_context.time_base = ist.time_base
        if (sar := _sar(vp)) is not None:
            ost.codec_context.sample_aspect_ratio = sar
        occ = ost.codec_context
        self.full_range, self.matrix = encoder_colour(ist.codec_context, vp.height)
        tag_colour(ist.codec_context, occ, self.full_range, self.matrix)
        if vp.bit_rate:
            ost.bit_rate = vp.bit_rate
        self._tag_hevc(ost, vp.codec)
        _copy_stream_info(ist, ost)
        try:
            occ.open()  # open now, so an NVENC refusal happens before anything is written
            undo_realtime()  # SVT-AV1 as root made this thread and its own real-time
        except HW_SETUP_ERRORS as e:
            if vp.hardware:
                raise EncoderRefused(f"{vp.encoder} refused to open: {e}") from None
            if not isinstance(e, av.FFmpegError):
                raise
            raise MediadError(f"{self.plan.input}: {vp.encoder} cannot encode this video: {e}",
                              reason="unsupported") from None
        self.video_in, self.video_out = ist, ost
        self.result.video_span = Span()
        if self.stage_configs:
            self.transform = self._stage_path(ist, vp, encode=True)
        else:
            self.transform = self._make_transform(vp, ist.time_base)
            if not self.plan.frames_on_gpu:  # host frames: scale and encode on their own thread
                self.video_sink = OrderedWorker(self._video_work, name="mediad-video", depth=2)

    def _add_encoder(self, ist: av.video.stream.VideoStream, vp: VideoPlan,
                     out: av.container.OutputContainer) -> av.video.stream.VideoStream:
        rate = ist.average_rate or ist.guessed_rate or Fraction(25)
        if self.plan.frames_on_gpu and vp.hardware:
            # NVENC fed CUDA frames through a frames context on the same device; the device comes
            # from the hwaccel, and pix_fmt names the layout of the GPU frames.
            from mediad.gpu import cuda_hwaccel

            options = {k: v for k, v in vp.options.items() if k != "gpu"}
            ost = out.add_stream(vp.encoder, rate=rate, options=options,
                                 hwaccel=cuda_hwaccel(self.plan.decode.device))
            ost.pix_fmt = _gpu_layout(vp)
        else:  # a software encoder takes host frames, also when stages ran on the GPU
            ost = out.add_stream(vp.encoder, rate=rate, options=dict(vp.options))
            ost.pix_fmt = vp.pix_fmt
        # As the ffmpeg CLI: FFmpeg's default frame+slice threads, auto count. PyAV's default,
        # slice only, makes libx264 run sliced_threads=1: same CPU time, less parallel.
        ost.codec_context.thread_type, ost.codec_context.thread_count = "AUTO", 0
        return ost

    def _stage_path(self, ist: av.video.stream.VideoStream, vp: VideoPlan,
                    encode: bool) -> FrameTransform:
        """Decoded frames -> model stages (batched, on their own thread) -> encoder-ready frames."""
        from mediad.media import stages as bridge
        from mediad.models.runner import StageRunner

        fps = ist.average_rate or ist.guessed_rate
        self.runner = StageRunner.from_profile(self.stage_configs, gpu=self.plan.gpu.device,
                                               fps_hint=float(fps) if fps else None)
        batch = 8
        if self.plan.frames_on_gpu:
            post = VideoTransform(replace(vp, rotate=0, crop=None, deinterlace="off"), ist.time_base,
                                  self.full_range, self.matrix) \
                if encode and not vp.hardware else None
            self.bridge = bridge.gpu_bridge(self.runner, size=(vp.width, vp.height),
                                            out_format=_gpu_layout(vp),
                                            nvenc=encode and vp.hardware, post=post, batch=batch)
            return self.bridge
        # Host frames: rotate/crop into RGB for the models, then scale/convert for the encoder.
        cc = ist.codec_context
        w0, h0 = (cc.height, cc.width) if vp.rotate % 180 else (cc.width, cc.height)
        if vp.crop:
            w0, h0 = vp.crop
        pre = VideoTransform(replace(vp, width=w0, height=h0, pix_fmt="rgb24"), ist.time_base)
        # The models' RGB goes back into YUV in the source's matrix (the tag copied onto the
        # encoder), or the output matrix chosen for an RGB source.
        matrix = self.matrix or (color.matrix_for(cc.colorspace, cc.height)
                                 if cc.colorspace not in (None, 0, 2) else None)
        post = VideoTransform(replace(vp, rotate=0, crop=None, deinterlace="off"), ist.time_base,
                              self.full_range, matrix) if encode else None
        self.bridge = bridge.host_bridge(self.runner, pre, post, batch)
        return self.bridge

    def _make_transform(self, vp: VideoPlan, time_base: Fraction) -> FrameTransform:
        if not self.plan.frames_on_gpu:
            return VideoTransform(vp, time_base, self.full_range, self.matrix)
        from mediad.media.gpu_frames import GpuVideoTransform

        gpu = GpuVideoTransform(size=(vp.width, vp.height), out_format=_gpu_layout(vp))
        return lambda frame: [] if frame is None else [gpu(frame)]

    def _decoder_hwaccel(self) -> HWAccel | None:
        decode = self.plan.decode
        if not decode.hardware:
            return None
        if self.plan.frames_on_gpu:
            from mediad.gpu import cuda_hwaccel

            return cuda_hwaccel(decode.device)  # frames stay in GPU memory, shared with torch
        # NVDEC with frames downloaded once (for libavfilter and the software encoder).
        return HWAccel("cuda", device=decode.device, allow_software_fallback=True)

    def _add_audio(self, sp: StreamPlan, src: av.container.InputContainer,
                   out: av.container.OutputContainer) -> None:
        ist = src.streams[sp.index]
        if sp.action == "copy":
            ost = out.add_stream_from_template(ist)
            self.copy[ist.index] = ost
        else:
            ost = add_encoded_audio(out, sp, ist)
            self.audio_sinks[ist.index] = AudioSink(ist.index, ost)
        _copy_stream_info(ist, ost)

    def _add_subtitle(self, sp: StreamPlan, src: av.container.InputContainer,
                      out: av.container.OutputContainer) -> None:
        ist = src.streams[sp.index]
        if sp.action == "convert":
            assert sp.codec
            converter = SubtitleConverter(ist, out, sp.codec, self.plan.start_offset)
            self.convert_subs[ist.index] = converter
            ost = converter.stream
        else:
            ost = out.add_stream_from_template(ist)
            self.copy[ist.index] = ost
        _copy_stream_info(ist, ost)

    def _add_extras(self, src: av.container.InputContainer,
                    out: av.container.OutputContainer) -> None:
        """Cover art and attachments such as the fonts of ASS subtitles.

        MP4 holds cover art as a one-packet attached-picture stream; Matroska holds it as an
        attachment (its muxer would write such a stream as a one-frame video track), so the
        picture is read ahead from a second look at the source.
        """
        for sp in self.plan.cover_art:
            if sp.action != "copy":
                continue
            ist = src.streams[sp.index]
            if self.plan.container == "mkv":
                ext, mime = ("png", "image/png") if sp.source_codec == "png" \
                    else ("jpg", "image/jpeg")
                out.add_attachment(ist.metadata.get("filename") or f"cover.{ext}",
                                   ist.metadata.get("mimetype") or mime,
                                   _first_packet(self.plan, ist))
                continue
            ost = out.add_stream_from_template(ist, opaque=True)
            ost.disposition = av.stream.Disposition.attached_pic.value
            _copy_tags(ist.metadata, ost.metadata, _STREAM_TAGS)
            self.copy[ist.index] = ost
        for sp in self.plan.attachments:
            if sp.action == "copy":
                ist = src.streams[sp.index]
                out.add_attachment(ist.name or f"attachment{ist.index}",
                                   ist.mimetype or "application/octet-stream", ist.data)

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> RunResult:
        try:
            return self._run()
        finally:
            if self.bridge is not None:
                self.bridge.close()  # a failure mid-stream must not leave the model thread waiting
            for sink in self.audio_sinks.values():
                sink.close()
            if self.video_sink is not None:
                self.video_sink.close()

    def _run(self) -> RunResult:
        plan = self.plan
        mux_options = {"movflags": "+faststart"} if plan.faststart else {}
        with self._open_source() as src, \
                av.open(str(self.dest), "w", format=plan.format, options=mux_options) as out:
            _copy_tags(src.metadata, out.metadata)
            self._add_video(src, out)
            for sp in plan.audio:
                if sp.action != "drop":
                    self._add_audio(sp, src, out)
            for sp in plan.subtitles:
                if sp.action in ("copy", "convert"):
                    self._add_subtitle(sp, src, out)
            self._add_extras(src, out)
            chapters = self.timeline.chapters(src.chapters())
            if chapters:
                out.set_chapters(chapters)
            rate = self.video_in.average_rate or self.video_in.guessed_rate \
                if self.video_in is not None else None
            self.health.frame_duration = 1 / Fraction(rate) if rate else None
            # Header written and every encoder opened here, on this thread, before the audio
            # sinks' threads use their encoders (the first mux would do it, beside them).
            out.start_encoding()
            # Every stream is read, kept or not: what each really holds is measured against
            # what the header promises (a truncated download), like with like.
            for packet in src.demux([s for s in src.streams if s.type != "attachment"]):
                self._packet(packet, out)
            for frame in self.video_timer(None):
                self._encode_video(frame, out)
            self._encode_video(None, out)
            for sink in self.audio_sinks.values():
                mux_audio(self.health, sink.finish(), out.mux)
                if change := sink.convert.change:
                    self.result.warnings.append(change)
            for converter in self.convert_subs.values():
                out.mux(converter.flush())
                if summary := converter.summary():
                    self.result.warnings.append(summary)
            self.result.warnings += self.timeline.summary()
            if warning := self._combed_warning():
                self.result.warnings.append(warning)
            self.result.warnings += self.health.finish(
                self.result.source_spans.get(plan.decode.stream))
            if self.runner is not None:
                self.result.analysis = self.runner.finish()
                self.result.stages = self.runner.describe()
                shot_chapters = self.result.analysis.chapters()
                if shot_chapters:  # the profile asked for shots as chapters: they replace the source's
                    out.set_chapters(shot_chapters)
        self.progress(self.result.frames_written, force=True)
        return self.result

    def _combed_warning(self) -> str | None:
        """Say so when frames flagged interlaced were encoded as they are, unless the plan
        already did (a source the probe saw interlaced, under deinterlace = off)."""
        vp = self.plan.video
        if not self.interlaced_frames or vp.action != "encode" or (
                vp.deinterlace != "off" and not self.plan.frames_on_gpu):
            return None
        if vp.deinterlace == "off" and vp.source_interlaced:
            return None
        why = "deinterlace = off" if vp.deinterlace == "off" else \
            "the frames stayed on the GPU, where there is no deinterlacer"
        return (f"{self.interlaced_frames} frame(s) flagged interlaced were encoded without "
                f"deinterlacing ({why})")

    def _open_source(self) -> av.container.InputContainer:
        hw = self._decoder_hwaccel()
        if hw is None:
            return open_input(Path(self.plan.input))
        try:  # the probe opened this file without a hwaccel: a failure here is NVDEC's
            return open_input(Path(self.plan.input), hwaccel=hw)
        except (MediadError, *HW_SETUP_ERRORS) as e:
            raise DecoderRefused(f"NVDEC cannot be set up: {e}") from None

    def _decode(self, packet: av.Packet) -> list[av.Frame]:
        """The frames of one packet. A software decode error is counted and the packet skipped,
        as the ffmpeg CLI does; with NVDEC, proof that NVDEC really made the frames."""
        if not self.plan.decode.hardware or packet.stream.index != self.plan.decode.stream:
            try:
                return packet.decode()
            except av.FFmpegError as e:
                self.health.error(packet, e)
                return []
        try:
            frames = packet.decode()
        except av.FFmpegError as e:
            raise DecoderRefused(f"NVDEC failed: {e}") from None
        if frames and not self._nvdec_checked:
            # FFmpeg quietly decodes in software what NVDEC cannot (4:2:2, 10-bit H.264, ...);
            # the frames' layout tells: NVDEC's are CUDA, or semi-planar/4:4:4 once downloaded.
            fmt = frames[0].format.name
            if fmt not in _NVDEC_FORMATS:
                raise DecoderRefused(f"NVDEC does not decode this {self.plan.decode.codec} stream: "
                                     f"FFmpeg fell back to its software decoder ({fmt} frames)")
            self._nvdec_checked = True
        return frames

    def _packet(self, packet: av.Packet, out: av.container.OutputContainer) -> None:
        index = packet.stream.index
        if packet.size:
            self.timeline.packet(packet)  # before anything else: decoders, muxers, measures
        if packet.size and packet.pts is not None:
            span = self.result.source_spans.get(index)
            if span is None:
                span = self.result.source_spans[index] = Span()
            span.add(packet.pts, packet.duration, packet.time_base)
        if index not in self.copy and index not in self.audio_sinks \
                and index not in self.convert_subs and index != self.plan.decode.stream:
            return  # not kept: measured only
        self.health.packet(packet)
        if index == self.plan.decode.stream and self.video_in is not None:
            frames = self._decode(packet)
            for f in frames:
                self.health.video_frame(f)
                self.interlaced_frames += f.interlaced_frame
            for frame in self.video_timer(frames):
                self._encode_video(frame, out)
            if self.video_out is not None:
                return
        if index in self.audio_sinks:
            mux_audio(self.health, self.audio_sinks[index].put(packet), out.mux)
            return
        if index in self.convert_subs:
            out.mux(self.convert_subs[index].convert(packet))
            return
        if packet.dts is None and packet.size == 0:
            return  # the demuxer's end-of-stream marker (it flushed the decoders above)
        if packet.pts is None and packet.dts is not None:
            packet.pts = packet.dts  # MPEG PES may omit it; Matroska cannot store that
        ost = self.copy[index]
        packet.stream = ost
        if index == self.plan.decode.stream:
            assert self.result.video_span is not None
            self.result.video_span.add(packet.pts, packet.duration, packet.time_base)
            self.result.frames_written += 1
            self.progress(self.result.frames_written)
            if self.video_bsf is not None:
                for filtered in self.video_bsf.filter(packet):
                    filtered.stream = ost
                    out.mux(filtered)
                return
        self._monotonic(packet, index, out)
        # Read first: muxing takes the packet's contents. The demuxer flags the packet it saw
        # damaged, not always the next ones of the same broken PES.
        damaged = packet.is_corrupt or self.health.damaged
        try:
            out.mux(packet)
        except av.InvalidDataError as e:
            if not damaged:
                raise
            # A damaged packet the muxer cannot take (no ADTS header left): the ffmpeg CLI
            # stops the whole output here; it is dropped and counted instead.
            self.health.error(packet, e, "copy")

    def _monotonic(self, packet: av.Packet, index: int, out: av.container.OutputContainer) -> None:
        """Keep a copied stream's dts increasing, as the ffmpeg CLI's muxer front-end does.

        Joined recordings overlap by a few packets (an HLS or DVR segment join steps back by
        tens of ms) and muxers refuse dts that go back. Such a packet is moved to just after
        the one before it, and counted.
        """
        if packet.dts is None:
            return
        last = self._last_dts.get(index)
        strict = not out.format.flags & av.format.Flags.ts_nonstrict.value
        least = None if last is None else last + (1 if strict else 0)
        if least is not None and packet.dts < least:
            if packet.pts is not None and packet.pts >= packet.dts:
                packet.pts = max(packet.pts, least)
            packet.dts = least
            self.health.moved[index] += 1
        self._last_dts[index] = packet.dts

    def _encode_video(self, frame: av.VideoFrame | None, out: av.container.OutputContainer) -> None:
        """One decoded frame (None: the end) to the encoder. Host frames without stages are
        converted and encoded on the video sink's thread, beside the demuxing and decoding
        here, as the ffmpeg CLI runs its filters and encoder; the packets are muxed here."""
        if self.transform is None:
            return
        if self.video_sink is None:  # stages (their own thread) or frames on the GPU
            out.mux(self._video_work(frame))
        else:
            out.mux(self.video_sink.put(frame) if frame is not None else
                    self.video_sink.put(None) + self.video_sink.finish())
        self.progress(self.result.frames_written)

    def _video_work(self, frame: av.VideoFrame | None) -> list[av.Packet]:
        frames = self.transform(frame)  # type: ignore[misc]
        if self.video_out is None:
            return []  # analysis only: the video packets are copied
        packets: list[av.Packet] = []
        for f in frames:
            if f.pts is None:  # a few raw formats carry no timestamps: number the frames
                f.pts, f.time_base = self._next_pts, self.video_in.time_base
            self._next_pts = f.pts + 1
            f.pict_type = av.video.frame.PictureType.NONE  # let the encoder choose frame types
            assert self.result.video_span is not None
            self.result.video_span.add(f.pts, f.duration or 1, f.time_base)
            packets += self._encode(f)
            self.result.frames_written += 1
        if frame is None:
            packets += self._encode(None)
        return packets

    def _encode(self, frame: av.VideoFrame | None) -> list[av.Packet]:
        assert self.video_out is not None
        try:
            return self.video_out.encode(frame)
        except av.FFmpegError as e:
            # NVENC registers and maps its input inside encode(): a first failure shows here.
            if self.plan.video.hardware:
                raise EncoderRefused(f"{self.plan.video.encoder} failed while encoding: {e}") from None
            raise


def run_plan(plan: Plan, dest: Path, on_progress: ProgressCallback | None = None,
             frames_total: int | None = None, stages: Sequence[Any] = ()) -> RunResult:
    """Write the output `plan` describes to `dest` (a temporary path; the caller commits it).

    `stages` are the profile's [[stages]] configs; the plan holds only their decisions.
    """
    try:
        return _Runner(plan, dest, on_progress, frames_total, stages).run()
    except (EncoderRefused, MediadError):
        raise
    except av.FFmpegError as e:
        log.event("pipeline_error", input=plan.input, error=str(e))
        if is_storage_error(e):  # a full disk, quota, failing disk: not the source's fault
            raise io_error(plan.output, e) from None
        raise MediadError(f"{plan.input}: transcode failed: {e}", reason="corrupt") from None

