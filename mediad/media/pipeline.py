"""Runs a Plan: demux -> decode -> (transform, stages) -> encode -> mux into one output file.

The pipeline knows nothing of folders, queues or commits: it writes the file it is given.
"""

from __future__ import annotations

import heapq
import math
import os
import time
from collections import deque
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
from mediad.media.plan import Plan, StreamPlan, VideoPlan
from mediad.media.probe import open_input
from mediad.media.progress import Progress, ProgressCallback
from mediad.media.stages import FrameTransform
from mediad.media.subtitles import SubtitleConverter

# Container-level tags the muxer writes itself; copying them would lie about the output.
_OWN_TAGS = {"encoder", "major_brand", "minor_version", "compatible_brands", "handler_name"}
_STREAM_TAGS = ("language", "title")
_PROGRESS_EVERY_S = 0.25
# Decoded video frames held back to put scrambled timestamps back in order (_timed_video):
# AVI stores no pts, so H.264 with B-frames decodes with guessed, out-of-order ones.
_REORDER_FRAMES = 4
# Standard layout per channel count (FFmpeg's av_channel_layout_default); PyAV's "3c" means 2.1.
# 4 channels: quad, which both aac and libopus take (libopus refuses 4.0).
_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1",
                    8: "7.1"}


class EncoderRefused(Exception):
    """The hardware video encoder would not open or failed (no engine, session limit); re-plan
    with a software encoder."""


class DecoderRefused(Exception):
    """NVDEC could not be set up, failed, or FFmpeg left this stream to software; re-plan with
    the software decoder (a corrupt file then fails there, with its real error)."""


# What PyAV raises besides FFmpegError when a CUDA device, frames context or hw config is missing.
_HW_SETUP_ERRORS = (av.FFmpegError, NotImplementedError, MemoryError, RuntimeError)
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


class VideoTransform:
    """Rotation, crop-to-even, scaling and pixel-format conversion of decoded frames.

    Uses one libavfilter graph (the same code as the ffmpeg command line), built on the first
    frame; frames that need nothing pass straight through.
    """

    def __init__(self, plan: VideoPlan, time_base: Fraction, full_range: bool | None = None,
                 matrix: str | None = None) -> None:
        """`full_range`: the YUV range to write (the encoder is tagged with it; None leaves it to
        libavfilter, for RGB output); `matrix`: the YUV matrix for RGB input (bt601/bt709/...)."""
        self.plan = plan
        self.time_base = time_base
        self.full_range = None if _is_rgb(plan.pix_fmt) else full_range
        self.matrix = matrix
        self.graph: av.filter.Graph | None = None
        self._key: tuple | None = None

    def _needs_graph(self, frame: av.VideoFrame) -> bool:
        p = self.plan
        return bool(p.rotate or p.crop or frame.width != p.width or frame.height != p.height
                    or frame.format.name != p.pix_fmt
                    or (self.full_range is not None
                        and color.is_full_range(frame.color_range, frame.format.name)
                        != self.full_range))

    def _build(self, frame: av.VideoFrame) -> None:
        p = self.plan
        g = av.filter.Graph()
        # Declare the frame's range and matrix so swscale reads the samples as they really are.
        src_colour = {}
        if frame.color_range:
            src_colour["range"] = str(int(frame.color_range))
        if frame.colorspace not in (None, 2):  # 2: unspecified
            src_colour["colorspace"] = str(int(frame.colorspace))
        chain = [g.add("buffer", video_size=f"{frame.width}x{frame.height}",
                       pix_fmt=str(int(frame.format)), time_base=str(self.time_base),
                       pixel_aspect="1/1", **src_colour)]
        # FFmpeg reports display rotation counter-clockwise; turn the pixels the same way.
        if p.rotate == 90:
            chain.append(g.add("transpose", "cclock"))
        elif p.rotate == 180:
            chain += [g.add("hflip"), g.add("vflip")]
        elif p.rotate == 270:
            chain.append(g.add("transpose", "clock"))
        if p.crop:
            chain.append(g.add("crop", f"{p.crop[0]}:{p.crop[1]}:0:0"))
        scale = f"{p.width}:{p.height}:flags=bicubic"
        # Without an explicit out_range swscale writes limited range from RGB whatever the source
        # says, and the encoder's range tag would not match the samples.
        if self.full_range is not None:
            scale += f":out_range={'full' if self.full_range else 'limited'}"
        if self.matrix and _is_rgb(frame.format.name) and not _is_rgb(p.pix_fmt):
            scale += f":out_color_matrix={self.matrix}"
        chain.append(g.add("scale", scale))
        chain.append(g.add("format", p.pix_fmt))
        chain.append(g.add("buffersink"))
        g.link_nodes(*chain).configure()
        self.graph = g
        self._key = self._frame_key(frame)

    @staticmethod
    def _frame_key(frame: av.VideoFrame) -> tuple:
        return frame.width, frame.height, frame.format.name, frame.color_range, frame.colorspace

    def __call__(self, frame: av.VideoFrame | None) -> list[av.VideoFrame]:
        """Transform one frame (None flushes); returns the frames ready to encode."""
        if frame is None:
            return self._drain(flush=True) if self.graph else []
        if self.graph is None and not self._needs_graph(frame):
            return [frame]
        if self.graph is None or self._key != self._frame_key(frame):
            pending = self._drain(flush=True) if self.graph else []
            self._build(frame)
            assert self.graph is not None
            self.graph.push(frame)
            return pending + self._drain()
        self.graph.push(frame)
        return self._drain()

    def _drain(self, flush: bool = False) -> list[av.VideoFrame]:
        assert self.graph is not None
        if flush:
            self.graph.push(None)
        out = []
        while True:
            try:
                frame = self.graph.pull()
            except (av.BlockingIOError, av.EOFError):
                return out
            if self.full_range is not None:  # buffersink may leave the range unspecified
                frame.color_range = color.AVCOL_RANGE_JPEG if self.full_range \
                    else color.AVCOL_RANGE_MPEG
            out.append(frame)


def _copy_tags(src: dict[str, str], dst: dict[str, str], keys: tuple[str, ...] | None = None) -> None:
    for k, v in src.items():
        if (keys is None and k.lower() not in _OWN_TAGS) or (keys is not None and k in keys):
            dst[k] = v


def _gpu_layout(vp: VideoPlan) -> str:
    """Layout of the CUDA frames NVENC takes for this plan: P010 for 10-bit, else NV12."""
    return "p010le" if vp.pix_fmt == "p010le" else "nv12"


def _is_rgb(pix_fmt: str | None) -> bool:
    """Whether a pixel format holds RGB (or palette/Bayer) samples rather than YUV."""
    try:
        fmt = av.VideoFormat(pix_fmt)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False
    return bool(fmt.is_rgb or fmt.has_palette or fmt.is_bayer)


_LAYOUT_OK: dict[tuple[str, str], bool] = {}


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


def _layout(channels: int, source: av.AudioLayout | None = None, encoder: str | None = None,
            sample_rate: int = 48000) -> str:
    """The output layout: the source's when it has as many channels, a known channel order and
    the encoder takes it (3.0 stays 3.0, quad stays quad); else the standard one for the count."""
    if source is not None and source.nb_channels == channels and encoder \
            and "channels" not in source.name \
            and _encoder_takes_layout(encoder, source.name, sample_rate):
        return source.name
    return _DEFAULT_LAYOUTS.get(channels, f"{channels}c")


class _Runner:
    def __init__(self, plan: Plan, dest: Path, on_progress: ProgressCallback | None,
                 frames_total: int | None, stages: Sequence[Any]) -> None:
        self.plan = plan
        self.stage_configs = stages
        self.runner: Any = None  # mediad.models.runner.StageRunner
        self.bridge: Any = None  # mediad.media.stages.StageBridge, when there are stages
        self.dest = dest
        self.on_progress = on_progress
        self.frames_total = frames_total
        self.result = RunResult()
        self.started = time.monotonic()
        self.last_progress = 0.0
        self.copy: dict[int, av.stream.Stream] = {}
        self.encode_audio: dict[int, av.audio.stream.AudioStream] = {}
        self.convert_subs: dict[int, SubtitleConverter] = {}
        self.video_in: av.video.stream.VideoStream | None = None
        self.video_out: av.video.stream.VideoStream | None = None
        self.transform: FrameTransform | None = None
        self._next_pts = 0
        self._nvdec_checked = False
        # Output colour decided from the source (see _output_colour).
        self.full_range = False
        self.matrix: str | None = None
        # Per encoded audio stream: (sample rate, next pts in 1/rate), see _audio_timed.
        self._audio_next: dict[int, tuple[int, int]] = {}
        # Decoded video frames and their timestamps, waiting in _timed_video.
        self._video_queue: deque[av.VideoFrame] = deque()
        self._video_pts: list[int] = []
        self._last_video_pts: int | None = None

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
            _copy_tags(ist.metadata, ost.metadata, _STREAM_TAGS)
            self.copy[ist.index] = ost
            if self.stage_configs:  # analysis stages look at the frames of the copied video
                self.video_in = ist
                self.transform = self._stage_path(ist, vp, encode=False)
            return
        try:
            ost = self._add_encoder(ist, vp, out)
        except _HW_SETUP_ERRORS as e:  # e.g. no CUDA device for NVENC's frames context
            if vp.hardware:
                raise EncoderRefused(f"{vp.encoder} cannot be set up: {e}") from None
            raise
        ost.width, ost.height = vp.width, vp.height
        # Keep the source's time base so frame timestamps pass through untouched (VFR-safe).
        ost.time_base = ist.time_base
        ost.codec_context.time_base = ist.time_base
        num, _, den = vp.sample_aspect_ratio.partition("/")
        if int(num or 0) > 0 and int(den or 1) > 0:
            ost.codec_context.sample_aspect_ratio = Fraction(int(num), int(den or 1))
        icc, occ = ist.codec_context, ost.codec_context
        self._output_colour(icc, vp)
        for attr in ("colorspace", "color_primaries", "color_trc"):
            value = getattr(icc, attr, None)
            if value:  # 0 is RGB for colorspace, reserved otherwise: nothing to copy
                setattr(occ, attr, value)
        # The tag must say what the transform writes, which is not always the source's range.
        occ.color_range = color.AVCOL_RANGE_JPEG if self.full_range else color.AVCOL_RANGE_MPEG
        if self.matrix is not None:  # an RGB source: tag the matrix it was converted with
            occ.colorspace = color.AVCOL_SPC_OF[self.matrix]
        if vp.bit_rate:
            ost.bit_rate = vp.bit_rate
        self._tag_hevc(ost, vp.codec)
        _copy_tags(ist.metadata, ost.metadata, _STREAM_TAGS)
        try:
            occ.open()  # open now, so an NVENC refusal happens before anything is written
        except _HW_SETUP_ERRORS as e:
            if vp.hardware:
                raise EncoderRefused(f"{vp.encoder} refused to open: {e}") from None
            if not isinstance(e, av.FFmpegError):
                raise
            raise MediadError(f"{self.plan.input}: {vp.encoder} cannot encode this video: {e}",
                              reason="unsupported") from None
        self.video_in, self.video_out = ist, ost
        if self.stage_configs:
            self.transform = self._stage_path(ist, vp, encode=True)
        else:
            self.transform = self._make_transform(vp, ist.time_base)

    def _output_colour(self, icc: av.video.codeccontext.VideoCodecContext, vp: VideoPlan) -> None:
        """Decide the range and matrix of the encoded samples.

        YUV sources keep their range (full-range camera/JPEG video stays full, as FFmpeg's range
        negotiation does for encoders that take both; NVDEC frames kept on the GPU are never
        rescaled either). RGB has no YUV range: it becomes limited range, the video norm, in the
        matrix players assume for the output size, tagged so nobody has to guess.
        """
        if _is_rgb(icc.pix_fmt):
            self.full_range = False
            self.matrix = color.matrix_for(None, vp.height)
        else:
            self.full_range = color.is_full_range(icc.color_range, icc.pix_fmt)
            self.matrix = None

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
        return ost

    def _stage_path(self, ist: av.video.stream.VideoStream, vp: VideoPlan,
                    encode: bool) -> FrameTransform:
        """Decoded frames -> model stages (batched, on their own thread) -> encoder-ready frames."""
        from mediad.media import stages as bridge
        from mediad.models.runner import StageRunner

        fps = ist.average_rate or ist.guessed_rate
        self.runner = StageRunner.from_profile(self.stage_configs, gpu=self.plan.gpu["device"],
                                               fps_hint=float(fps) if fps else None)
        batch = 8
        if self.plan.frames_on_gpu:
            post = VideoTransform(replace(vp, rotate=0, crop=None), ist.time_base,
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
        post = VideoTransform(replace(vp, rotate=0, crop=None), ist.time_base, self.full_range,
                              matrix) if encode else None
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
            assert sp.encoder and sp.sample_rate and sp.channels
            ost = out.add_stream(sp.encoder, rate=sp.sample_rate)
            ost.layout = _layout(sp.channels, ist.codec_context.layout, sp.encoder, sp.sample_rate)
            if sp.bit_rate:
                ost.bit_rate = sp.bit_rate
            self.encode_audio[ist.index] = ost
        _copy_tags(ist.metadata, ost.metadata, _STREAM_TAGS)

    def _add_subtitle(self, sp: StreamPlan, src: av.container.InputContainer,
                      out: av.container.OutputContainer) -> None:
        ist = src.streams[sp.index]
        if sp.action == "convert":
            assert sp.codec
            converter = SubtitleConverter(ist, out, sp.codec)
            self.convert_subs[ist.index] = converter
            ost = converter.stream
        else:
            ost = out.add_stream_from_template(ist)
            self.copy[ist.index] = ost
        _copy_tags(ist.metadata, ost.metadata, _STREAM_TAGS)

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> RunResult:
        try:
            return self._run()
        finally:
            if self.bridge is not None:
                self.bridge.close()  # a failure mid-stream must not leave the model thread waiting

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
            chapters = src.chapters()
            if chapters:
                out.set_chapters(chapters)
            wanted = [src.streams[i] for i in [plan.decode.stream, *self.copy, *self.encode_audio,
                                               *self.convert_subs]]
            for packet in src.demux(list(dict.fromkeys(wanted))):
                self._packet(packet, out)
            for frame in self._timed_video(None):
                self._encode_video(frame, out)
            self._encode_video(None, out)
            for ost in self.encode_audio.values():
                out.mux(ost.encode(None))
            for converter in self.convert_subs.values():
                out.mux(converter.flush())
                if summary := converter.summary():
                    self.result.warnings.append(summary)
            if self.runner is not None:
                self.result.analysis = self.runner.finish()
                self.result.stages = self.runner.describe()
                shot_chapters = self.result.analysis.chapters()
                if shot_chapters:  # the profile asked for shots as chapters: they replace the source's
                    out.set_chapters(shot_chapters)
        self._report_progress(force=True)
        return self.result

    def _open_source(self) -> av.container.InputContainer:
        hw = self._decoder_hwaccel()
        if hw is None:
            return open_input(Path(self.plan.input))
        try:  # the probe opened this file without a hwaccel: a failure here is NVDEC's
            return open_input(Path(self.plan.input), hwaccel=hw)
        except (MediadError, *_HW_SETUP_ERRORS) as e:
            raise DecoderRefused(f"NVDEC cannot be set up: {e}") from None

    def _decode(self, packet: av.Packet) -> list[av.VideoFrame]:
        """The video frames of one packet; with NVDEC, proof that NVDEC really made them."""
        if not self.plan.decode.hardware:
            return packet.decode()
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
        if index == self.plan.decode.stream and self.video_in is not None:
            # decoded before a copy below rebases the packet
            for frame in self._timed_video(self._decode(packet)):
                self._encode_video(frame, out)
            if self.video_out is not None:
                return
        if index in self.encode_audio:
            ost = self.encode_audio[index]
            for frame in packet.decode():
                out.mux(ost.encode(self._audio_timed(index, frame)))
            return
        if index in self.convert_subs:
            out.mux(self.convert_subs[index].convert(packet))
            return
        if packet.dts is None and packet.size == 0:
            return  # the demuxer's end-of-stream marker: nothing to copy
        ost = self.copy[index]
        packet.stream = ost
        if index == self.plan.decode.stream:
            self.result.frames_written += 1
            self._report_progress()
        out.mux(packet)

    def _timed_video(self, frames: list[av.VideoFrame] | None) -> list[av.VideoFrame]:
        """Decoded frames (None: the end) with increasing pts, a few frames behind the decoder.

        The decoder gives frames in display order, but their pts are only what the container
        said: AVI keeps none, so B-frames come out with guessed pts out of order (1 4 3 5 2 ...)
        and the encoder's dts then went backwards. The frames' own timestamps are right as a
        set: each frame takes the smallest one still waiting. In-order pts pass unchanged; a
        repeated one is moved one frame on. NVDEC frames are not held (its surface pool is
        small), so they only get the last step.
        """
        hold = 0 if frames is None or self.plan.decode.hardware else _REORDER_FRAMES
        for f in frames or []:
            self._video_queue.append(f)
            if f.pts is not None:
                heapq.heappush(self._video_pts, f.pts)
        ready = []
        while len(self._video_queue) > hold:
            f = self._video_queue.popleft()
            if f.pts is None:
                ready.append(f)  # numbered in _encode_video
                continue
            f.pts = heapq.heappop(self._video_pts)
            last = self._last_video_pts
            if last is not None and f.pts <= last:
                f.pts = last + max(1, int(f.duration or 0))
            self._last_video_pts = f.pts
            ready.append(f)
        return ready

    def _audio_timed(self, index: int, frame: av.AudioFrame) -> av.AudioFrame:
        """The frame with its pts in 1/sample_rate, continuous with the frames before it.

        Demuxers time audio coarsely (AVI: one tick per MP3 frame of 1152 samples) or not at
        all; the encoder's resampler cuts frames to the encoder's frame size and must time each
        piece to the sample, which a coarse time base cannot: pieces got equal pts and the muxer
        refused them. As the ffmpeg CLI does, count samples and trust the source's pts only for
        a real gap (more than one of its ticks ahead); a late or repeated pts is never let go
        backwards.
        """
        rate = frame.sample_rate
        state = self._audio_next.get(index)
        expected = None if state is None else state[1] * rate // state[0]
        pts = None
        if frame.pts is not None and frame.time_base:
            pts = round(frame.pts * frame.time_base * rate)
        tick = max(1, math.ceil(frame.time_base * rate)) if frame.time_base else 1
        if expected is not None and (pts is None or pts < expected + tick):
            pts = expected
        elif pts is None:
            pts = 0
        frame.pts, frame.time_base = pts, Fraction(1, rate)
        self._audio_next[index] = (rate, pts + frame.samples)
        return frame

    def _encode_video(self, frame: av.VideoFrame | None, out: av.container.OutputContainer) -> None:
        if self.transform is None:
            return
        frames = self.transform(frame)
        if self.video_out is None:
            return  # analysis only: the video packets are copied
        for f in frames:
            if f.pts is None:  # a few raw formats carry no timestamps: number the frames
                f.pts, f.time_base = self._next_pts, self.video_in.time_base
            self._next_pts = f.pts + 1
            f.pict_type = av.video.frame.PictureType.NONE  # let the encoder choose frame types
            out.mux(self._encode(f))
            self.result.frames_written += 1
            self._report_progress()
        if frame is None:
            out.mux(self._encode(None))

    def _encode(self, frame: av.VideoFrame | None) -> list[av.Packet]:
        assert self.video_out is not None
        try:
            return self.video_out.encode(frame)
        except av.FFmpegError as e:
            # NVENC registers and maps its input inside encode(): a first failure shows here.
            if self.plan.video.hardware:
                raise EncoderRefused(f"{self.plan.video.encoder} failed while encoding: {e}") from None
            raise

    def _report_progress(self, force: bool = False) -> None:
        if self.on_progress is None:
            return
        now = time.monotonic()
        if not force and now - self.last_progress < _PROGRESS_EVERY_S:
            return
        self.last_progress = now
        elapsed = now - self.started
        done = self.result.frames_written
        self.on_progress(Progress(done, self.frames_total, done / elapsed if elapsed > 0 else 0.0,
                                  elapsed))


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

