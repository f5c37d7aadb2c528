"""The source side of a run: open the input once, account for every packet (timeline repair,
spans, decode health) and decode the video into timed frames, for one output or many.

A run has one Source and N sinks; the Source never knows what the frames become.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
from av.codec.hwaccel import HWAccel

from mediad.errors import MediadError
from mediad.media.health import DecodeHealth
from mediad.media.plan_records import Plan
from mediad.media.probe import frame_rate, open_input
from mediad.media.timing import Span, Timeline, VideoTimer

# What PyAV raises besides FFmpegError when a CUDA device, frames context or hw config is missing.
HW_SETUP_ERRORS = (av.FFmpegError, NotImplementedError, MemoryError, RuntimeError)
# Frame layouts NVDEC gives (libavcodec/nvdec.c): in GPU memory, or as downloaded by PyAV;
# the 4:2:2 ones come from newer FFmpeg on GPUs that decode 4:2:2. FFmpeg's software
# H.264/HEVC/AV1 decoders give planar yuv4xxp* instead.
_NVDEC_FORMATS = {"cuda", "nv12", "p010le", "p016le", "yuv444p", "yuv444p16le", "nv16",
                  "p210le", "p216le"}
# Frame threads each hold one more NVDEC surface; past 32 surfaces NVDEC may refuse to start.
_NVDEC_MAX_THREADS = 8


class DecoderRefused(Exception):
    """NVDEC could not be set up, failed, or FFmpeg left this stream to software; re-plan with
    the software decoder (a corrupt file then fails there, with its real error)."""


class Source:
    """The input of one run: its packets measured and repaired, its video decoded once."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.timeline = Timeline(plan.start_offset, plan.discontinuous)
        self.health = DecodeHealth(plan.input, plan.on_decode_error,
                                   video_index=plan.decode.stream)
        # What the source's packets span, per source stream (its header may promise more).
        self.spans: dict[int, Span] = {}
        # NVDEC frames are not held for reordering: its surface pool is small.
        self.timer = VideoTimer(hold=0) if plan.decode.hardware else VideoTimer()
        self.interlaced_frames = 0  # decoded frames flagged interlaced
        self._nvdec_checked = False

    def open(self) -> av.container.InputContainer:
        """The input, its video decoder set up as the plan says (NVDEC or software threads)."""
        decode = self.plan.decode
        hw = self._hwaccel()
        if hw is None:
            src = open_input(Path(self.plan.input))
        else:
            try:  # the probe opened this file without a hwaccel: a failure here is NVDEC's
                src = open_input(Path(self.plan.input), hwaccel=hw)
            except (MediadError, *HW_SETUP_ERRORS) as e:
                raise DecoderRefused(f"NVDEC cannot be set up: {e}") from None
        ist = src.streams[decode.stream]
        # Frames missing where the source is damaged are counted in nominal frame durations
        rate = frame_rate(ist)
        self.health.frame_duration = 1 / Fraction(rate) if rate else None
        cc = ist.codec_context
        cc.thread_type = "AUTO"  # frame + slice threads, as the ffmpeg CLI does
        if decode.hardware:
            cc.thread_count = min(os.cpu_count() or 1, _NVDEC_MAX_THREADS)
        return src

    def _hwaccel(self) -> HWAccel | None:
        decode = self.plan.decode
        if not decode.hardware:
            return None
        if self.plan.frames_on_gpu:
            from mediad.gpu import cuda_hwaccel

            return cuda_hwaccel(decode.device)  # frames stay in GPU memory, shared with torch
        # NVDEC with frames downloaded once (for libavfilter and the software encoder).
        return HWAccel("cuda", device=decode.device, allow_software_fallback=True)

    def seen(self, packet: av.Packet) -> None:
        """Every packet, kept or not, first: the timeline repairs it before decoders, muxers
        and measures see it, and what each stream really holds is measured."""
        if not packet.size:
            return
        self.timeline.packet(packet)
        # A packet marked discard (before an MP4 edit list's start: the decoders' pre-roll)
        # gives no frame or samples: its time is not presented, nor lost.
        if packet.pts is not None and not packet.is_discard:
            self.spans.setdefault(packet.stream.index, Span()).add(
                packet.pts, packet.duration, packet.time_base)

    def video(self, packet: av.Packet) -> list[av.VideoFrame]:
        """The timed frames one video packet completes (counted for the health report)."""
        frames = self._decode(packet)
        for f in frames:
            self.health.video_frame(f)
            self.interlaced_frames += f.interlaced_frame
        return self.timer(frames)

    def flush(self) -> list[av.VideoFrame]:
        """The frames the timer still holds, at the end."""
        return self.timer(None)

    def _decode(self, packet: av.Packet) -> list[av.VideoFrame]:
        """A software decode error is counted and the packet skipped, as the ffmpeg CLI does;
        with NVDEC, proof that NVDEC really made the frames."""
        if not self.plan.decode.hardware:
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

    def combed_warning(self) -> str | None:
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

    def finish(self) -> list[str]:
        """The timeline's and the decode's warnings, at the end of the input."""
        dropped = [f"{self.timer.dropped} video frame(s) repeating the times of the frames before "
                   "them were dropped, keeping the source's timeline (recordings joined with "
                   "an overlap)"] \
            if self.timer.dropped else []
        return self.timeline.summary() + dropped + \
            self.health.finish(self.spans.get(self.plan.decode.stream))
