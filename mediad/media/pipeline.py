"""Runs a Plan: demux -> decode -> (transform, stages) -> encode -> mux into one output file.

The pipeline knows nothing of folders, queues or commits: it writes the file it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import av

from mediad import log
from mediad.errors import MediadError, Reason, io_error, is_storage_error
from mediad.media.audio_sink import AudioSink, add_encoded_audio, mux_audio
from mediad.media.carry_over import add_attachments, add_cover_art, copy_stream_info, copy_tags
from mediad.media.loudness import Normalizer, normalizers
from mediad.media.plan import Plan, StreamPlan, VideoPlan
from mediad.media.plan_streams import loudness_targets
from mediad.media.progress import ProgressCallback, ProgressReporter
from mediad.media.source import Source
from mediad.media.stages import FrameTransform
from mediad.media.subtitles import SubtitleConverter
from mediad.media.timing import Monotonic, Span
from mediad.media.transform import VideoTransform
from mediad.media.video_sink import (
    EncoderRefused,
    OpenedEncoder,
    VideoSink,
    after_stages_work,
    as_they_are,
    gpu_layout,
    gpu_nvenc_work,
    host_work,
    open_video_encoder,
    sar_of,
    stage_input_work,
)


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
    loudness: list[dict] = field(default_factory=list)  # per normalised track: loudnorm's figures


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
        self.source = Source(plan)
        self.health = self.source.health
        self.copy: dict[int, av.stream.Stream] = {}
        self.audio_sinks: dict[int, AudioSink] = {}  # re-encoded tracks, each on its thread
        self._loudness: dict[int, Normalizer] | None = None  # set up at the first such track
        self.video_sink: VideoSink | None = None  # the encoded video
        self.convert_subs: dict[int, SubtitleConverter] = {}
        self.video_in: av.video.stream.VideoStream | None = None
        self.transform: FrameTransform | None = None  # analysis of copied video: the stages
        self.monotonic = Monotonic(self.health.moved)  # copied streams' dts kept increasing
        self.video_bsf: av.BitStreamFilterContext | None = None

    # -- set-up ------------------------------------------------------------------------------
    def _add_video(self, src: av.container.InputContainer, out: av.container.OutputContainer) -> None:
        vp = self.plan.video
        ist = src.streams[self.plan.decode.stream]
        if vp.action == "copy":
            # opaque: take the template's codec as it is. Otherwise PyAV looks for an encoder
            # named after the decoder (libdav1d for AV1), which does not exist; a copy needs
            # only the codec id.
            ost = out.add_stream_from_template(ist, opaque=True)
            if vp.codec == "hevc" and self.plan.container in ("mp4", "mov"):
                ost.codec_tag = "hvc1"  # Apple players refuse the default hev1 tag
            copy_stream_info(ist, ost)
            # The container's aspect (MKV DisplayWidth, MP4 pasp) goes into the new container
            # too, as with `ffmpeg -c copy`; the template carries only the codec's.
            if (sar := sar_of(vp)) is not None:
                ost.codec_context.sample_aspect_ratio = sar
            if vp.bitstream_filter:
                self.video_bsf = av.BitStreamFilterContext(vp.bitstream_filter, ist, ost)
            self.copy[ist.index] = ost
            self.result.video_span = Span()
            if self.stage_configs:  # analysis stages look at the frames of the copied video
                self.video_in = ist
                self.transform = self._stage_path(ist, vp, None)
            return
        gpu_frames = self.plan.frames_on_gpu
        encoder = open_video_encoder(out, ist, vp, self.plan.container, input_name=self.plan.input,
                                     cuda_device=self.plan.decode.device if gpu_frames else None)
        copy_stream_info(ist, encoder.stream)
        self.video_in = ist
        before = None
        if self.stage_configs:  # the stages have their own thread
            work, threaded = self._stage_path(ist, vp, encoder), False
        elif gpu_frames and vp.hardware:  # CUDA frames to NVENC, in this thread
            work, threaded = gpu_nvenc_work(vp), False
        elif gpu_frames:  # tone-mapped on the GPU here, encoded from host frames on a thread
            from mediad.media.gpu_host import gpu_host_work

            work, threaded, before = as_they_are, True, gpu_host_work(vp)
        else:  # host frames: scaled (tone-mapped) and encoded on their own thread
            work, threaded = host_work(vp, ist, encoder), True
        self.video_sink = VideoSink(encoder, vp, work, out, threaded=threaded, before=before)

    def _stage_path(self, ist: av.video.stream.VideoStream, vp: VideoPlan,
                    encoder: OpenedEncoder | None) -> FrameTransform:
        """Decoded frames -> model stages (batched, on their own thread) -> encoder-ready frames."""
        from mediad.media import stages as bridge
        from mediad.models.runner import StageRunner

        fps = ist.average_rate or ist.guessed_rate
        self.runner = StageRunner.from_profile(self.stage_configs, gpu=self.plan.gpu.device,
                                               fps_hint=float(fps) if fps else None)
        batch = 8
        encode = encoder is not None
        full_range, matrix = (encoder.full_range, encoder.matrix) if encoder else (False, None)
        if self.plan.frames_on_gpu:
            post = VideoTransform(replace(vp, rotate=0, crop=None, deinterlace="off"), ist.time_base,
                                  full_range, matrix) \
                if encode and not vp.hardware else None
            self.bridge = bridge.gpu_bridge(self.runner, size=(vp.width, vp.height),
                                            out_format=gpu_layout(vp),
                                            nvenc=encode and vp.hardware, post=post, batch=batch)
            return self.bridge
        # Host frames: rotate/crop into RGB for the models, then scale/convert for the encoder.
        post = after_stages_work(vp, ist, encoder) if encoder is not None else None
        as_decoded = host_work(vp, ist, encoder) if encoder is not None else None
        self.bridge = bridge.host_bridge(self.runner, stage_input_work(vp, ist), post,
                                         as_decoded, batch)
        return self.bridge

    def _add_audio(self, sp: StreamPlan, src: av.container.InputContainer,
                   out: av.container.OutputContainer) -> None:
        ist = src.streams[sp.index]
        if sp.action == "copy":
            ost = out.add_stream_from_template(ist)
            self.copy[ist.index] = ost
        else:
            ost = add_encoded_audio(out, sp, ist)
            self.audio_sinks[ist.index] = AudioSink(ist.index, ost, self._normalizer(sp))
        copy_stream_info(ist, ost)

    def _normalizer(self, sp: StreamPlan) -> Normalizer | None:
        """Loudness normalisation of a track; the first pass (measuring every such track, in
        one read of the source) runs at the first one."""
        if sp.loudness is None:
            return None
        if self._loudness is None:
            self._loudness, silent = normalizers(Path(self.plan.input),
                                                 loudness_targets(self.plan.audio))
            self.result.warnings += silent
        return self._loudness.get(sp.index)

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
        copy_stream_info(ist, ost)

    def _add_extras(self, src: av.container.InputContainer,
                    out: av.container.OutputContainer) -> None:
        """Cover art and attachments such as the fonts of ASS subtitles."""
        self.copy.update(add_cover_art(self.plan.cover_art, src, out, self.plan.container,
                                       self.plan.input))
        add_attachments(self.plan.attachments, src, out)

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
        with self.source.open() as src, \
                av.open(str(self.dest), "w", format=plan.format, options=mux_options) as out:
            copy_tags(src.metadata, out.metadata)
            self.monotonic.strict = not out.format.flags & av.format.Flags.ts_nonstrict.value
            self._add_video(src, out)
            for sp in plan.audio:
                if sp.action != "drop":
                    self._add_audio(sp, src, out)
            for sp in plan.subtitles:
                if sp.action in ("copy", "convert"):
                    self._add_subtitle(sp, src, out)
            self._add_extras(src, out)
            chapters = self.source.timeline.chapters(src.chapters())
            if chapters:
                out.set_chapters(chapters)
            # Header written and every encoder opened here, on this thread, before the audio
            # sinks' threads use their encoders (the first mux would do it, beside them).
            out.start_encoding()
            # Every stream is read, kept or not: what each really holds is measured against
            # what the header promises (a truncated download), like with like.
            for packet in src.demux([s for s in src.streams if s.type != "attachment"]):
                self._packet(packet, out)
            for frame in self.source.flush():
                self._encode_video(frame, out)
            self._encode_video(None, out)
            for sink in self.audio_sinks.values():
                mux_audio(self.health, sink.finish(), out.mux)
                if change := sink.convert.change:
                    self.result.warnings.append(change)
                if (figures := sink.loudness()) is not None:
                    self.result.loudness.append(figures)
            for converter in self.convert_subs.values():
                out.mux(converter.flush())
                if summary := converter.summary():
                    self.result.warnings.append(summary)
            self.result.warnings += self.source.finish()
            if warning := self._combed_warning():
                self.result.warnings.append(warning)
            self.result.source_spans = self.source.spans
            if self.video_sink is not None:
                self.result.video_span = self.video_sink.span
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
        if not self.source.interlaced_frames or vp.action != "encode" or (
                vp.deinterlace != "off" and not self.plan.frames_on_gpu):
            return None
        if vp.deinterlace == "off" and vp.source_interlaced:
            return None
        why = "deinterlace = off" if vp.deinterlace == "off" else \
            "the frames stayed on the GPU, where there is no deinterlacer"
        return (f"{self.source.interlaced_frames} frame(s) flagged interlaced were encoded without "
                f"deinterlacing ({why})")

    def _packet(self, packet: av.Packet, out: av.container.OutputContainer) -> None:
        index = packet.stream.index
        self.source.seen(packet)
        if index not in self.copy and index not in self.audio_sinks \
                and index not in self.convert_subs and index != self.plan.decode.stream:
            return  # not kept: measured only
        self.health.packet(packet)
        if index == self.plan.decode.stream and self.video_in is not None:
            for frame in self.source.video(packet):
                self._encode_video(frame, out)
            if self.video_sink is not None:
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
        self.monotonic(packet, index)
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

    def _encode_video(self, frame: av.VideoFrame | None, out: av.container.OutputContainer) -> None:
        """One decoded frame (None: the end) to the video sink; its packets are muxed here."""
        sink = self.video_sink
        if sink is None:
            if self.transform is not None:  # copied video: the analysis stages see the frames
                self.transform(frame)
            return
        if frame is None:
            out.mux(sink.finish())
        else:
            frame.pict_type = av.video.frame.PictureType.NONE  # the encoder chooses frame types
            out.mux(sink.put(frame))
        self.result.frames_written = sink.frames
        self.progress(sink.frames)


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
        raise MediadError(f"{plan.input}: transcode failed: {e}", reason=Reason.CORRUPT) from None

