"""Runs a LadderPlan: demux and decode once, run the model stages once, fan the frames out to
one sink per rendition (scale and encode on its own thread), mux every rendition into FFmpeg's
HLS or DASH muxer (or a file each).

Like the pipeline it writes what it is given (a temporary folder) and knows nothing of
commits; the caller verifies and commits the set.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from mediad import log
from mediad.errors import MediadError, Reason, io_error, is_storage_error
from mediad.formats import CONTAINER_FORMAT
from mediad.media.audio_sink import AudioSink, add_encoded_audio, mux_audio
from mediad.media.carry_over import add_attachments, add_cover_art, copy_stream_info, copy_tags
from mediad.media.gap_fill import GapFiller, fill_rate
from mediad.media.ladder_outputs import AudioTrack, Output, SubtitleTrack, mux_to_all
from mediad.media.ladder_plan import LadderPlan, RenditionPlan
from mediad.media.loudness import normalizers
from mediad.media.packaging import muxer_setup
from mediad.media.plan_streams import StreamPlan, loudness_targets
from mediad.media.progress import ProgressCallback, ProgressReporter
from mediad.media.source import DecoderRefused, Source
from mediad.media.subtitles import SubtitleConverter
from mediad.media.timing import Monotonic, Span
from mediad.media.video_sink import (
    EncoderRefused,
    VideoSink,
    after_stages_work,
    as_they_are,
    gpu_nvenc_work,
    host_work,
    open_video_encoder,
    stage_input_work,
)


@dataclass
class LadderResult:
    """What one ladder run produced."""

    frames: dict[str, int] = field(default_factory=dict)  # per rendition name
    video_spans: dict[str, Span] = field(default_factory=dict)
    source_spans: dict[int, Span] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    loudness: list[dict] = field(default_factory=list)  # per normalised track: loudnorm's figures
    analysis: Any = None  # the stages' AnalysisResult, when the profile has stages
    stages: list[dict] = field(default_factory=list)  # StageRunner.describe()
    frame_rate: Fraction | None = None  # a segmented set's highest rate (gap_fill), measured


class _LadderRunner:
    def __init__(self, plan: LadderPlan, folder: Path, on_progress: ProgressCallback | None,
                 frames_total: int | None, stages: Sequence[Any]) -> None:
        self.plan = plan
        self.folder = folder
        self.stage_configs = stages
        self.runner: Any = None  # mediad.models.runner.StageRunner, when there are stages
        self.bridge: Any = None  # mediad.media.stages.StageBridge: decoded -> staged frames
        self.source = Source(plan.base)
        self.health = self.source.health
        self.monotonic = Monotonic(self.health.moved)  # copied tracks' dts kept increasing
        self.sinks: list[VideoSink] = []
        self.outputs: list[Output] = []
        self.audio: dict[int, AudioTrack] = {}  # by source stream index
        self.subtitles: dict[int, SubtitleTrack] = {}  # by source stream index
        self.normalize: dict[int, Any] = {}  # loudness.Normalizer per normalised track
        self.result = LadderResult()
        self.fanned = 0
        self.next_key = 0  # index of the next keyframe time
        self.first_t: Fraction | None = None  # the first frame's time: keyframe times count from it
        self.gaps: GapFiller | None = None  # segmented sets only
        self.progress = ProgressReporter(on_progress, frames_total)

    def run(self) -> LadderResult:
        try:
            return self._run()
        finally:
            if self.bridge is not None:
                self.bridge.close()
            for sink in self.sinks:
                sink.close()
            for track in self.audio.values():
                if track.sink is not None:
                    track.sink.close()

    def _open_outputs(self, stack: contextlib.ExitStack) -> None:
        plan = self.plan
        if plan.package == "files":
            for r in plan.renditions:
                assert r.file is not None
                self.outputs.append(Output(stack.enter_context(av.open(
                    str(self.folder / r.file), "w", format=CONTAINER_FORMAT[plan.container]))))
            return
        path, fmt, options = muxer_setup(plan, self.folder)
        self.outputs.append(Output(stack.enter_context(
            av.open(str(path), "w", format=fmt, options=options))))

    def _run(self) -> LadderResult:
        plan, base = self.plan, self.plan.base
        with contextlib.ExitStack() as stack:
            src = stack.enter_context(self.source.open())
            self._open_outputs(stack)
            vin = src.streams[base.decode.stream]
            ains = [src.streams[a.index] for a in plan.audio]
            sins = [src.streams[s.index] for s in plan.subtitles]
            if self.stage_configs:
                self._add_stages(vin)
            if plan.package != "files":  # segmented: gaps in the frames filled (gap_fill)
                rate = fill_rate(vin.base_rate, vin.average_rate, base.video.source_interlaced)
                self.gaps = GapFiller(rate or Fraction(25))
            # Loudness: every normalised track measured first, in one read of the source
            self.normalize, silent = normalizers(Path(base.input), loudness_targets(plan.audio))
            self.result.warnings += silent
            # Files: video first, as players and mediad's own outputs have it. HLS/DASH: audio
            # first, streams 0..A-1 (muxer_setup's stream indices count on it).
            if plan.package != "files":
                for a, ist in zip(plan.audio, ains, strict=True):
                    self._add_audio(a, ist)
            for i, r in enumerate(plan.renditions):
                self._add_rendition(r, vin,
                                    self.outputs[i if plan.package == "files" else 0].container)
            if plan.package == "files":
                for a, ist in zip(plan.audio, ains, strict=True):
                    self._add_audio(a, ist)
            for s, ist in zip(plan.subtitles, sins, strict=True):
                self._add_subtitle(s, ist)
            if plan.package == "files":
                self._carry_over(src)
            covers = [src.streams[i] for i in self.outputs[0].covers]
            for o in self.outputs:  # headers and encoders, here, before the sinks' threads run
                o.container.start_encoding()
            for packet in src.demux([vin, *ains, *sins, *covers]):
                self._packet(packet, vin)
            self._fan_out(self._staged(self.source.flush(), end=True), end=True)
            if self.runner is not None:
                self.result.analysis = self.runner.finish()
                self.result.stages = self.runner.describe()
            for sink in self.sinks:
                sink.out.mux(sink.finish())
            for track in self.audio.values():
                if track.sink is not None:
                    mux_audio(self.health, track.sink.finish(),
                              functools.partial(self._write_audio, track))
                    if change := track.sink.convert.change:
                        self.result.warnings.append(change)
                    if (figures := track.sink.loudness()) is not None:
                        self.result.loudness.append(figures)
            for sub in self.subtitles.values():
                if sub.converter is not None:
                    self._write(sub.streams, sub.converter.flush())
                    if summary := sub.converter.summary():
                        self.result.warnings.append(summary)
            self.result.warnings += self.source.finish()
            if self.gaps is not None:
                self.result.frame_rate = self.gaps.max_rate()
                if filled := self.gaps.summary():
                    self.result.warnings.append(filled)
        self.result.source_spans = self.source.spans
        for r, sink in zip(plan.renditions, self.sinks, strict=True):
            self.result.frames[r.name] = sink.frames
            self.result.video_spans[r.name] = sink.span
        self.progress(self.fanned, force=True)
        return self.result

    def _add_audio(self, a: StreamPlan, ist: av.audio.stream.AudioStream) -> None:
        """The track in every output: copied, or encoded once (into the first output's
        stream, the others' streams made from it) and its packets written to each."""
        first = self.outputs[0].container
        if a.action == "copy":
            streams = [o.container.add_stream_from_template(ist) for o in self.outputs]
            track = AudioTrack(streams)
            if a.source_codec == "aac" and self.plan.package != "files":
                # ADTS (TS, raw .aac) into fMP4 segments: the segmenter's inner MP4 muxer wants
                # raw AAC and converts nothing itself (a file's MP4 muxer does, as for a copy).
                track.bsf = av.BitStreamFilterContext("aac_adtstoasc", ist, streams[0])
                streams[0].codec_tag = "mp4a"  # not the TS's stream type (0x0F) the filter kept
        else:
            ost = add_encoded_audio(first, a, ist)
            streams = [ost]
            if len(self.outputs) > 1:
                ost.codec_context.open()  # its parameters (AAC's config) template the others
            for o in self.outputs[1:]:
                copy = o.container.add_stream_from_template(ost)
                # The encoder's AAC config: Matroska's header needs it (the template has none)
                copy.codec_context.extradata = ost.codec_context.extradata
                streams.append(copy)
            track = AudioTrack(streams, sink=AudioSink(ist.index, ost,
                                                        self.normalize.get(ist.index)))
        self._stream_info(ist, track.streams)
        self.audio[ist.index] = track

    def _write_audio(self, track: AudioTrack, packet: av.Packet) -> None:
        """One audio packet into every output."""
        self._write(track.streams, [packet])

    def _write(self, streams: list[av.stream.Stream], packets: list[av.Packet]) -> None:
        mux_to_all(self.outputs, streams, packets)

    def _add_subtitle(self, s: StreamPlan, ist: av.subtitles.stream.SubtitleStream) -> None:
        """The text track in every output: copied, or converted once (into the first output's
        stream, the others' made from it) and its packets written to each."""
        if s.action == "copy":
            streams = [o.container.add_stream_from_template(ist) for o in self.outputs]
            track = SubtitleTrack(streams)
        else:
            assert s.codec is not None
            converter = SubtitleConverter(ist, self.outputs[0].container, s.codec,
                                          self.plan.base.start_offset)
            streams = [converter.stream]
            for o in self.outputs[1:]:
                copy = o.container.add_stream_from_template(converter.stream)
                copy.codec_context.subtitle_header = converter.stream.codec_context.subtitle_header
                streams.append(copy)
            track = SubtitleTrack(streams, converter)
        self._stream_info(ist, track.streams)
        self.subtitles[ist.index] = track

    def _stream_info(self, ist: av.stream.Stream, streams: list[av.stream.Stream]) -> None:
        """A file takes the track's language, title and default/forced flags, as a single
        output does; a set's playlists name the language (its players' menus)."""
        for stream in streams:
            if self.plan.package == "files":
                copy_stream_info(ist, stream)
            elif lang := ist.metadata.get("language"):
                stream.metadata["language"] = lang

    def _carry_over(self, src: av.container.InputContainer) -> None:
        """Each file carries what a single output of its container would: the source's tags,
        chapters, attachments (Matroska) and cover art."""
        base = self.plan.base
        chapters = self.source.timeline.chapters(src.chapters())
        for o in self.outputs:
            copy_tags(src.metadata, o.container.metadata)
            if chapters:
                o.container.set_chapters(chapters)
            add_attachments(base.attachments, src, o.container)
            o.covers = add_cover_art(base.cover_art, src, o.container, self.plan.container,
                                     base.input)

    def _add_stages(self, ist: av.video.stream.VideoStream) -> None:
        """The model stages, once for every rendition: decoded frames -> (upright, cropped)
        RGB -> the models, batched on their own thread -> the frames the renditions scale."""
        from mediad.media import stages as bridge
        from mediad.models.runner import StageRunner

        fps = ist.average_rate or ist.guessed_rate
        self.runner = StageRunner.from_profile(self.stage_configs, gpu=self.plan.base.gpu.device,
                                               fps_hint=float(fps) if fps else None)
        # The renditions' sinks convert what comes out (see _add_rendition): passed on as it is
        self.bridge = bridge.host_bridge(self.runner, stage_input_work(self.plan.base.video, ist),
                                         as_they_are, as_they_are, batch=8)

    def _staged(self, frames: list[av.VideoFrame], end: bool = False) -> list[av.VideoFrame]:
        """Decoded frames through the stages (when there are any): the frames they finished."""
        if self.bridge is None:
            return frames
        staged = [f for frame in frames for f in self.bridge(frame)]
        return staged + self.bridge(None) if end else staged

    def _add_rendition(self, r: RenditionPlan, ist: av.video.stream.VideoStream,
                       out: av.container.OutputContainer) -> None:
        base = self.plan.base
        on_gpu = base.frames_on_gpu
        encoder = open_video_encoder(out, ist, r.video, self.plan.container,
                                     input_name=base.input, output=r.name,
                                     cuda_device=base.decode.device if on_gpu else None,
                                     rate=self.gaps.rate if self.gaps is not None else None)
        if self.plan.package == "files":
            copy_stream_info(ist, encoder.stream)
        if on_gpu and r.video.hardware:  # scaled in torch, CUDA frames into NVENC, here
            self.sinks.append(VideoSink(encoder, r.video, gpu_nvenc_work(r.video), out, name=r.name,
                                        threaded=False, output=r.name, timed=self.gaps is not None))
            return
        before = None
        if on_gpu:  # scaled on the GPU here, downloaded, encoded on the rendition's thread
            from mediad.media.gpu_host import gpu_host_work

            transform, before = as_they_are, gpu_host_work(r.video)
        # An upscale stage's frames are RGB, upright and cropped already; analysis stages pass
        # the decoded frames on as they were.
        elif self.runner is not None and self.runner.modifies_frames:
            transform = after_stages_work(r.video, ist, encoder)
        else:
            transform = host_work(r.video, ist, encoder)
        # Each rendition scales and encodes on its own thread; 8 frames of slack between them
        self.sinks.append(VideoSink(encoder, r.video, transform, out, name=r.name, depth=8,
                                    output=r.name, before=before, timed=self.gaps is not None))

    def _packet(self, packet: av.Packet, vin: av.video.stream.VideoStream) -> None:
        index = packet.stream.index
        self.source.seen(packet)
        self.health.packet(packet)
        if index == vin.index:
            self._fan_out(self._staged(self.source.video(packet)))
        elif (sub := self.subtitles.get(index)) is not None:
            if sub.converter is not None:
                self._write(sub.streams, sub.converter.convert(packet))
            elif packet.size:
                if packet.pts is None and packet.dts is not None:
                    packet.pts = packet.dts  # MPEG PES may omit it; Matroska cannot store that
                self.monotonic(packet, index)
                self._write(sub.streams, [packet])
        elif index in self.outputs[0].covers:  # a picture: one packet into every file
            if packet.size:
                self._write([o.covers[index] for o in self.outputs], [packet])
        elif (track := self.audio.get(index)) is not None:
            if track.sink is not None:
                mux_audio(self.health, track.sink.put(packet),
                          functools.partial(self._write_audio, track))
            elif packet.size:
                self.monotonic(packet, index)
                for p in track.bsf.filter(packet) if track.bsf else [packet]:
                    self._write_audio(track, p)

    def _fan_out(self, frames: list[av.VideoFrame], end: bool = False) -> None:
        """Each frame to every rendition, marked I at each keyframe time (the same frames in
        every rendition: segments align); the other frame types are the encoder's choice.

        Keyframe times count from the first frame, in exact fractions, as FFmpeg's hls and dash
        segmenters count their cut times (n x segment length after the stream's first
        timestamp, no tolerance): the first frame at or after each time is the keyframe, so
        each cut finds one. (Counted from 0, a video starting 0.4 s after its audio, or a frame
        a hair early, moved every cut a whole keyframe interval later.)
        """
        key_every = Fraction(self.plan.keyframe_seconds).limit_denominator(1000)
        fill = self.gaps if self.gaps is not None else _no_gaps
        for frame in (f for decoded in [*frames, *([None] if end else [])] for f in fill(decoded)):
            t = Fraction(frame.pts) * frame.time_base if frame.pts is not None \
                and frame.time_base is not None else Fraction(self.fanned)
            if self.first_t is None:
                self.first_t = t
            if t - self.first_t >= self.next_key * key_every:
                frame.pict_type = av.video.frame.PictureType.I
                self.next_key = (t - self.first_t) // key_every + 1
            else:
                frame.pict_type = av.video.frame.PictureType.NONE
            for sink in self.sinks:
                sink.out.mux(sink.put(frame))
            self.fanned += 1
            self.progress(self.fanned)


def _no_gaps(frame: av.VideoFrame | None) -> Iterator[av.VideoFrame]:
    if frame is not None:
        yield frame


def run_ladder(plan: LadderPlan, folder: Path, on_progress: ProgressCallback | None = None,
               frames_total: int | None = None, stages: Sequence[Any] = ()) -> LadderResult:
    """Write every rendition of `plan` into `folder` (a temporary folder: the caller commits).
    `stages` are the profile's [[stages]] configs; the plan holds only their decisions."""
    try:
        return _LadderRunner(plan, folder, on_progress, frames_total, stages).run()
    except (MediadError, EncoderRefused, DecoderRefused):
        raise
    except av.FFmpegError as e:
        log.event("pipeline_error", input=plan.base.input, error=str(e))
        if is_storage_error(e):
            raise io_error(Path(plan.output), e) from None
        raise MediadError(f"{plan.base.input}: transcode failed: {e}", reason=Reason.CORRUPT) from None
