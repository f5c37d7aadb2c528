"""The one runner of every job: demux and decode once, run the model stages once, fan the
frames out to one video sink per rendition (scaled and encoded on its own thread), and write
each output: a single transcode's file (`single_output`: one rendition, or the video copied as
it is), one file per rendition, or FFmpeg's HLS or DASH segmenter. It writes what it is given
(a temporary file or folder); the caller verifies and commits.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from mediad import log, stopping
from mediad.errors import MediadError, Reason, io_error, is_storage_error
from mediad.media.audio_sink import mux_audio
from mediad.media.carry_over import carry_over, copy_stream_info
from mediad.media.fan_out import FanOut
from mediad.media.gap_fill import GapFiller, fill_rate
from mediad.media.job_plan import JobPlan, OutputPlan
from mediad.media.loudness import normalizers
from mediad.media.outputs import (
    AudioTrack,
    Output,
    PacketCopier,
    SubtitleTrack,
    add_audio_track,
    add_copied_video,
    add_subtitle_track,
    mux_to_all,
    stream_info,
    with_pts,
)
from mediad.media.packaging import muxer_setup
from mediad.media.plan_streams import loudness_targets
from mediad.media.probe import frame_rate
from mediad.media.progress import ProgressCallback, ProgressReporter
from mediad.media.reading import read_packets
from mediad.media.run_result import RunResult
from mediad.media.source import DecoderRefused, Source
from mediad.media.timing import Monotonic, Span, cue_from_zero
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
    stage_input_work,
)


@dataclass
class _CopiedVideo:
    """A single output's video copied as it is (no decode unless analysis stages look)."""

    stream: av.stream.Stream
    bsf: av.BitStreamFilterContext | None
    edit_list: bool  # the output hides an MP4 edit list's pre-roll too (MP4, MOV; not Matroska)
    span: Span = field(default_factory=Span)
    frames: int = 0  # shown (an edit list's pre-roll is copied, not counted where it is hidden)
    keyed: bool = False  # the first packet the source marks a keyframe came
    before_key: Span = field(default_factory=Span)  # the packets before it
    unkeyed: int = 0
    # Packets an MP4 edit list leaves out after what it shows, held until a shown one follows
    # (it may need them); those left at the end are not written (below).
    past_end: list[av.Packet] = field(default_factory=list)
    next_ts: int = 0  # a raw stream's packets have no timestamps: each follows the one before

    def warning(self) -> str | None:
        if not self.unkeyed:
            return None
        return (f"the first {self.unkeyed} video packet(s) ({self.before_key.seconds or 0:.3f}s) "
                "come before the first keyframe the source marks (a recording cut mid-GOP): "
                "copied as they are, players may show the video from that keyframe on")


class _Runner:
    def __init__(self, plan: JobPlan, target: Path, on_progress: ProgressCallback | None,
                 frames_total: int | None, stages: Sequence[Any]) -> None:
        self.plan = plan
        self.base = plan.base
        self.target = target  # the file (a single output), else the folder
        self.segmented = plan.package in ("hls", "dash")
        self.stage_configs = stages
        self.runner: Any = None  # mediad.models.runner.StageRunner, when there are stages
        self.bridge: Any = None  # mediad.media.stages.StageBridge: decoded -> staged frames
        self.source = Source(plan.base)
        self.health = self.source.health
        self.monotonic = Monotonic(self.health.moved)  # copied tracks' dts kept increasing
        self.sinks: list[VideoSink] = []
        self.encoders: list[OpenedEncoder] = []
        self.copied: _CopiedVideo | None = None
        self.chapters: list[dict] = []  # the source's, for files
        # Shots asked for as chapters replace the source's: none go into a file's header then
        # (a muxer keeps what its header had); the shots, or else the source's, at the end
        self.shot_chapters = any(c.kind == "shots" and c.chapters for c in stages)
        self.outputs: list[Output] = []
        self.audio: dict[int, AudioTrack] = {}  # by source stream index
        self.subtitles: dict[int, SubtitleTrack] = {}  # by source stream index
        self.copy = PacketCopier(self.outputs, self.monotonic, self.health)
        self.result = RunResult()
        self.progress = ProgressReporter(on_progress, frames_total)
        self.fan_out = FanOut(self.sinks, plan.keyframe_seconds, self.progress)

    def _stop_workers(self) -> None:
        """End the model, video and audio threads (idempotent): a failure or a signal mid-stream
        must not leave one waiting, nor encoding while its output container is closed."""
        if self.bridge is not None:
            self.bridge.close()
        for sink in self.sinks:
            sink.close()
        for track in self.audio.values():
            if track.sink is not None:
                track.sink.close()

    # -- set-up ------------------------------------------------------------------------------
    def _open_outputs(self, stack: contextlib.ExitStack) -> None:
        plan, base = self.plan, self.base
        if self.segmented:
            path, fmt, options = muxer_setup(plan, self.target)
            self.outputs.append(Output(stack.enter_context(
                av.open(str(path), "w", format=fmt, options=options))))
            return
        options = {"movflags": "+faststart"} if base.faststart else {}
        paths = [self.target] if plan.package == "file" else \
            [self.target / r.file for r in plan.outputs if r.file is not None]
        for path in paths:
            self.outputs.append(Output(stack.enter_context(
                av.open(str(path), "w", format=base.format, options=options))))
        assert len(self.outputs) == len(plan.outputs)
        nonstrict = av.format.Flags.ts_nonstrict.value
        self.monotonic.strict = any(not o.container.format.flags & nonstrict for o in self.outputs)

    def _set_up(self, src: av.container.InputContainer, vin: av.video.stream.VideoStream) -> None:
        plan = self.plan
        if self.stage_configs:
            self._add_runner(vin)
        if self.segmented:  # gaps in the frames filled (gap_fill)
            rate = fill_rate(vin.base_rate, vin.average_rate, self.base.video.source_interlaced)
            self.fan_out.gaps = GapFiller(rate or Fraction(25))
        # Loudness: every normalised track measured first, in one read of the source
        normalize, silent = normalizers(Path(self.base.input), loudness_targets(plan.audio))
        self.result.warnings += silent
        # Files: video first, as players have it. HLS/DASH: audio first, streams 0..A-1
        # (muxer_setup's stream indices count on it).
        if self.segmented:
            self._add_audio(src, normalize)
        for i, r in enumerate(plan.outputs):
            self._add_rendition(r, vin, self.outputs[0 if self.segmented else i].container)
        if not self.segmented:
            self._add_audio(src, normalize)
        if self.base.timecode:  # the muxer writes it as a tmcd track or a TIMECODE tag
            for o in self.outputs:
                o.container.streams.video[0].metadata["timecode"] = self.base.timecode
        for s in plan.subtitles:
            ist = src.streams[s.index]
            track = add_subtitle_track(self.outputs, s, ist, self.base.start_offset)
            stream_info(ist, track.streams, self.segmented)
            self.subtitles[ist.index] = track
        if not self.segmented:
            self._carry_over(src)
        if self.stage_configs:
            self._add_bridge(vin)

    def _add_audio(self, src: av.container.InputContainer, normalize: dict[int, Any]) -> None:
        for a in self.plan.audio:
            ist = src.streams[a.index]
            track = add_audio_track(self.outputs, a, ist, normalize.get(a.index), self.segmented)
            stream_info(ist, track.streams, self.segmented)
            self.audio[ist.index] = track

    def _carry_over(self, src: av.container.InputContainer) -> None:
        self.chapters = self.source.timeline.chapters(src.chapters())
        for o in self.outputs:
            o.covers = carry_over(self.base, src, o.container, self.plan.container,
                                  [] if self.shot_chapters else self.chapters)

    def _add_runner(self, ist: av.video.stream.VideoStream) -> None:
        """The model stages, run once for every rendition (their bridge comes once the
        encoders are open: see _add_bridge)."""
        from mediad.models.runner import StageRunner

        fps = frame_rate(ist)
        self.runner = StageRunner.from_profile(self.stage_configs, gpu=self.base.gpu.device,
                                               fps_hint=float(fps) if fps else None)

    def _add_bridge(self, ist: av.video.stream.VideoStream) -> None:
        """Decoded frames -> the models, batched on their own thread -> the frames the
        renditions take. Host frames go in upright, cropped RGB; the renditions' sinks convert
        what comes out. CUDA frames (a single output: a ladder with stages keeps its frames on
        the host) come out ready for that output's encoder."""
        from mediad.media import stages as bridge

        vp = self.plan.outputs[0].video
        if not self.base.frames_on_gpu:
            # Copied video: the models only look (post None: nothing comes out)
            post = None if self.copied is not None else as_they_are
            self.bridge = bridge.host_bridge(self.runner, stage_input_work(self.base.video, ist),
                                             post, post, batch=8)
            return
        assert len(self.plan.outputs) == 1, "a ladder with stages keeps frames on the host"
        encode = vp.action == "encode"
        post = None
        if encode and not vp.hardware:
            enc = self.encoders[0]
            post = VideoTransform(replace(vp, rotate=0, mirror=False, crop=None, deinterlace="off"),
                                  ist.time_base, enc.full_range, enc.matrix)
        self.bridge = bridge.gpu_bridge(self.runner, size=(vp.width, vp.height),
                                        out_format=gpu_layout(vp), nvenc=encode and vp.hardware,
                                        post=post, batch=8)

    def _label(self, r: OutputPlan) -> str | None:
        """The rendition's name in errors and NVENC refusals; None for a single output."""
        return None if self.plan.package == "file" else r.name

    def _add_rendition(self, r: OutputPlan, ist: av.video.stream.VideoStream,
                       out: av.container.OutputContainer) -> None:
        if r.video.action == "copy":
            self._add_copied_video(r, ist, out)
            return
        base, gaps = self.base, self.fan_out.gaps
        on_gpu = base.frames_on_gpu
        encoder = open_video_encoder(out, ist, r.video, self.plan.container,
                                     input_name=base.input, output=self._label(r),
                                     cuda_device=base.decode.device if on_gpu else None,
                                     rate=gaps.rate if gaps is not None else None)
        self.encoders.append(encoder)
        if not self.segmented:
            copy_stream_info(ist, encoder.stream)
        sink = functools.partial(VideoSink, encoder, r.video, out=out, name=r.name,
                                 output=self._label(r))
        if on_gpu and (r.video.hardware or self.runner is not None):
            # CUDA frames scaled in torch into NVENC, here; or the GPU stages' bridge made
            # them ready for this (single) output's encoder
            work = as_they_are if self.runner is not None else gpu_nvenc_work(r.video)
            self.sinks.append(sink(transform=work, threaded=False))
            return
        before = None
        if on_gpu:  # scaled (tone-mapped) on the GPU here, downloaded, encoded on its thread
            from mediad.media.gpu_host import gpu_host_work

            transform, before = as_they_are, gpu_host_work(r.video)
        # An upscale stage's frames are RGB, upright and cropped already; analysis stages pass
        # the decoded frames on as they were.
        elif self.runner is not None and self.runner.modifies_frames:
            transform = after_stages_work(r.video, ist, encoder)
        else:
            transform = host_work(r.video, ist, encoder)
        # Each rendition converts and encodes on its own thread; a ladder's have 8 frames of
        # slack between them
        depth = 2 if len(self.plan.outputs) == 1 else 8
        self.sinks.append(sink(transform=transform, depth=depth, before=before))

    def _add_copied_video(self, r: OutputPlan, ist: av.video.stream.VideoStream,
                          out: av.container.OutputContainer) -> None:
        assert self.plan.package == "file", "a ladder encodes every rendition"
        self.copied = _CopiedVideo(*add_copied_video(out, ist, r.video, self.plan.container),
                                   edit_list=self.plan.container in ("mp4", "mov"))

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> RunResult:
        with contextlib.ExitStack() as stack:
            src = stack.enter_context(self.source.open())
            self._open_outputs(stack)
            stack.callback(self._stop_workers)  # before the outputs close (last in, first out)
            vin = src.streams[self.base.decode.stream]
            self._set_up(src, vin)
            for o in self.outputs:  # headers and encoders, here, before the sinks' threads run
                o.container.start_encoding()
            # Every stream is read, kept or not: what each really holds is measured against
            # what the header promises (a truncated download), like with like.
            for packet in read_packets(src, [s for s in src.streams if s.type != "attachment"],
                                       self.health.lost_sync):
                stopping.check()
                self._packet(packet, vin)
            self._fan_out(self._staged(self.source.flush(), end=True), end=True)
            if self.runner is not None:
                self._finish_stages()
            for sink in self.sinks:
                sink.out.mux(sink.finish())
            self._finish_tracks()
            self.result.warnings += self.source.finish()
            if warning := self.source.combed_warning():
                self.result.warnings.append(warning)
            if (gaps := self.fan_out.gaps) is not None:
                self.result.frame_rate = gaps.max_rate()
                if filled := gaps.summary():
                    self.result.warnings.append(filled)
        self.result.source_spans = self.source.spans
        encoded = [r.name for r in self.plan.outputs if r.video.action == "encode"]
        for name, sink in zip(encoded, self.sinks, strict=True):
            self.result.wrote(name, sink.frames, sink.span)
        if self.copied is not None:
            self.result.wrote(self.plan.outputs[0].name, self.copied.frames, self.copied.span)
            if warning := self.copied.warning():
                self.result.warnings.append(warning)
        self.progress(self.result.frames_written if self.copied else self.fan_out.fanned,
                      force=True)
        return self.result

    def _finish_stages(self) -> None:
        self.result.analysis = self.runner.finish()
        self.result.stages = self.runner.describe()
        chapters = self.result.analysis.chapters() or self.chapters
        if self.shot_chapters and not self.segmented and chapters:
            for o in self.outputs:
                o.container.set_chapters(chapters)

    def _finish_tracks(self) -> None:
        for index, track in self.audio.items():
            if track.sink is not None:
                mux_audio(self.health, track.sink.finish(),
                          functools.partial(self._write_audio, track))
                if change := track.sink.convert.change:
                    self.result.warnings.append(change)
                if dropped := track.sink.timer.dropped:
                    self.result.warnings.append(
                        f"{dropped} audio frame(s) of stream #{track.sink.index} within the time "
                        "already written were dropped (recordings joined with an overlap)")
                if (figures := track.sink.loudness()) is not None:
                    self.result.loudness.append(figures)
            if (span := track.sink.span if track.sink else self.source.spans.get(index)) is not None:
                self.result.audio_spans[index] = span
        for sub in self.subtitles.values():
            if sub.converter is not None:
                mux_to_all(self.outputs, sub.streams, sub.converter.flush())
                if summary := sub.converter.summary():
                    self.result.warnings.append(summary)

    def _write_audio(self, track: AudioTrack, packet: av.Packet) -> None:
        """One encoded audio packet into every output."""
        mux_to_all(self.outputs, track.streams, [packet])

    def _packet(self, packet: av.Packet, vin: av.video.stream.VideoStream) -> None:
        index = packet.stream.index
        self.source.seen(packet)
        sub, track = self.subtitles.get(index), self.audio.get(index)
        if index != vin.index and sub is None and track is None \
                and index not in self.outputs[0].covers:
            return  # a stream not kept: measured only
        self.health.packet(packet)
        if index == vin.index:
            if self.copied is None:
                self._fan_out(self._staged(self.source.video(packet)))
                return
            if self.bridge is not None:  # analysis stages look at the copied video's frames
                self._staged(self.source.video(packet))
            self._copy_video(packet, self.copied)
        elif sub is not None:
            if sub.converter is not None:
                mux_to_all(self.outputs, sub.streams, sub.converter.convert(packet))
            elif cue_from_zero(packet):
                self.copy(packet, sub.streams)
        elif track is not None:
            if track.sink is not None:
                mux_audio(self.health, track.sink.put(packet),
                          functools.partial(self._write_audio, track))
            else:
                self._copy_audio(packet, track)
        else:  # a picture: one packet into every file
            self.copy(packet, [o.covers[index] for o in self.outputs])

    def _copy_audio(self, packet: av.Packet, track: AudioTrack) -> None:
        """A copied audio packet. Those an MP4 edit list marks discard (a cut's pre-roll) are
        left out, so no output plays what the cut took off (Matroska and HLS segments have no
        edit list to hide them), but for the last before the first presented one: the
        decoder's priming (an AAC encoder's delay), without which that one decodes wrong."""
        if packet.is_discard and packet.size:
            track.preroll = packet
            return
        if track.preroll is not None:
            self.copy(track.preroll, track.streams, track.bsf)
            track.preroll = None
        self.copy(packet, track.streams, track.bsf)

    def _copy_video(self, packet: av.Packet, copied: _CopiedVideo) -> None:
        """A copied video packet. Those before the first keyframe the source marks (a recording
        cut mid-GOP) are copied and counted in a warning: a decoder may well show some (an
        I-frame that is no IDR and has no recovery point is not marked, so leaving them out as
        `ffmpeg -c copy` does lost pictures that decode). An MP4 edit list's pre-roll (marked
        discard) is copied, and counted only where the output shows it (Matroska has no edit
        list: as with `ffmpeg -c copy`, it is shown). What an edit list leaves out at the end
        (a trimmed phone clip) is not copied, as `ffmpeg -c copy` leaves it out: an MP4's edit
        list has no place to hide it, so the copy played the trimmed end (and was refused)."""
        if packet.size and packet.pts is None and packet.dts is None and packet.duration:
            packet.pts = packet.dts = copied.next_ts  # no B-frames: the plan refused those
            copied.next_ts += packet.duration
        if packet.size and not copied.keyed:
            if packet.is_keyframe:
                copied.keyed = True
            else:
                copied.unkeyed += 1
                copied.before_key.add(packet.pts, packet.duration, packet.time_base)
        if packet.size and packet.is_discard and copied.edit_list and copied.frames:
            copied.past_end.append(packet)
            return
        if packet.size:  # a shown packet after them: they were no end (the flush packet is)
            for held in copied.past_end:
                self.copy(held, [copied.stream], copied.bsf)
            copied.past_end.clear()
        if packet.size and not (packet.is_discard and copied.edit_list):
            copied.span.add(with_pts(packet).pts, packet.duration, packet.time_base)
            copied.frames += 1
            self.progress(copied.frames)
        self.copy(packet, [copied.stream], copied.bsf)

    def _staged(self, frames: list[av.VideoFrame], end: bool = False) -> list[av.VideoFrame]:
        """Decoded frames through the stages (when there are any): the frames they finished."""
        if self.bridge is None:
            return frames
        staged = [f for frame in frames for f in self.bridge(frame)]
        return staged + self.bridge(None) if end else staged

    def _fan_out(self, frames: list[av.VideoFrame], end: bool = False) -> None:
        if self.sinks:  # else the video is copied: its frames were only looked at
            self.fan_out(frames, end)


def run(plan: JobPlan, target: Path, on_progress: ProgressCallback | None = None,
        frames_total: int | None = None, stages: Sequence[Any] = ()) -> RunResult:
    """Write every output of `plan` to `target`: the file of a single output, else the folder
    (temporary: the caller verifies and commits). `stages` are the profile's [[stages]]
    configs; the plan holds only their decisions. An NVENC or NVDEC refusal raises
    EncoderRefused or DecoderRefused for the caller to re-plan; other failures, one line."""
    try:
        return _Runner(plan, target, on_progress, frames_total, stages).run()
    except (MediadError, EncoderRefused, DecoderRefused):
        raise
    except av.FFmpegError as e:
        log.event("pipeline_error", input=plan.base.input, error=str(e))
        if is_storage_error(e):  # a full disk, quota, failing disk: not the source's fault
            raise io_error(Path(plan.output), e) from None
        raise MediadError(f"{plan.base.input}: transcode failed: {e}", reason=Reason.CORRUPT) from None
