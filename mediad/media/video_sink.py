"""The sink side of a run: one video encoder opened as its plan says, and the sink that feeds
it (conversion and encoding, on its own thread for host frames). A single transcode has one
sink, a ladder one per rendition; both open and run them with this code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction

import av

from mediad.errors import MediadError, Reason
from mediad.media import color
from mediad.media.plan_records import VideoPlan
from mediad.media.probe import frame_rate
from mediad.media.source import HW_SETUP_ERRORS
from mediad.media.timing import Span
from mediad.media.tonemap import tag_sdr
from mediad.media.transform import VideoTransform, encoder_colour, tag_colour
from mediad.media.worker import OrderedWorker
from mediad.realtime import undo_realtime

# A frame transform: one decoded frame in (None: the end), the frames to encode out.
FrameWork = Callable[[av.VideoFrame | None], list[av.VideoFrame]]


def as_they_are(frame: av.VideoFrame | None) -> list[av.VideoFrame]:
    """The frame work that passes frames on unchanged (they are ready for the encoder)."""
    return [] if frame is None else [frame]


class EncoderRefused(Exception):
    """The hardware video encoder would not set up, open or encode (no engine, session limit):
    re-plan that output with its software encoder. `output`: the ladder rendition it was for
    (None: the single output); the other outputs keep theirs."""

    def __init__(self, reason: str, output: str | None = None) -> None:
        super().__init__(reason)
        self.output = output


@dataclass(frozen=True)
class OpenedEncoder:
    """An opened video encoder and the colour its input frames must have."""

    stream: av.video.stream.VideoStream
    full_range: bool  # the YUV range to write (see transform.encoder_colour)
    matrix: str | None  # the matrix an RGB source is converted with


def sar_of(vp: VideoPlan) -> Fraction | None:
    """The plan's sample aspect ratio, None when it is not a usable one."""
    num, _, den = vp.sample_aspect_ratio.partition("/")
    if int(num or 0) > 0 and int(den or 1) > 0:
        return Fraction(int(num), int(den or 1))
    return None


def gpu_layout(vp: VideoPlan) -> str:
    """Layout of the CUDA frames NVENC takes for this plan: P010 for 10-bit, else NV12."""
    return "p010le" if vp.pix_fmt == "p010le" else "nv12"


def open_video_encoder(out: av.container.OutputContainer, ist: av.video.stream.VideoStream,
                       vp: VideoPlan, container: str, *, input_name: str,
                       cuda_device: int | None = None,
                       output: str | None = None, rate: Fraction | None = None) -> OpenedEncoder:
    """Add `vp`'s encoder to `out` for frames of `ist` and open it now, so that an NVENC
    refusal happens before anything is written.

    `cuda_device`: NVENC is fed CUDA frames of that device (through a frames context) instead
    of host frames. `rate`: the frames' rate, when not the source's average (a segmented set's
    video, gaps filled: rate control budgets bits per frame by it). A hardware refusal raises
    EncoderRefused; a software encoder that cannot take this video, a one-line MediadError.
    """
    rate = rate or frame_rate(ist) or Fraction(25)
    try:
        if cuda_device is not None and vp.hardware:
            from mediad.gpu import cuda_hwaccel

            # The device comes from the hwaccel; pix_fmt names the layout of the GPU frames.
            options = {k: v for k, v in vp.options.items() if k != "gpu"}
            ost = out.add_stream(vp.encoder, rate=rate, options=options,
                                 hwaccel=cuda_hwaccel(cuda_device))
            ost.pix_fmt = gpu_layout(vp)
        else:  # host frames; NVENC then takes the device from its `gpu` option
            ost = out.add_stream(vp.encoder, rate=rate, options=dict(vp.options))
            ost.pix_fmt = vp.pix_fmt
    except HW_SETUP_ERRORS as e:  # e.g. no CUDA device for NVENC's frames context
        if vp.hardware:
            raise EncoderRefused(f"{vp.encoder} cannot be set up: {e}", output) from None
        raise
    occ = ost.codec_context
    # As the ffmpeg CLI: FFmpeg's default frame+slice threads, auto count. PyAV's default,
    # slice only, makes libx264 run sliced_threads=1: same CPU time, less parallel.
    occ.thread_type, occ.thread_count = "AUTO", 0
    ost.width, ost.height = vp.width, vp.height
    # Keep the source's time base so frame timestamps pass through untouched (VFR-safe).
    ost.time_base = occ.time_base = ist.time_base
    if (sar := sar_of(vp)) is not None:
        occ.sample_aspect_ratio = sar
    full_range, matrix = encoder_input_colour(ist, vp)
    tag_colour(ist.codec_context, occ, full_range, matrix)
    if vp.tonemap is not None:  # tone mapping writes SDR BT.709, limited range
        tag_sdr(occ)
    if vp.bit_rate:
        ost.bit_rate = vp.bit_rate
    if vp.codec == "hevc" and container in ("mp4", "mov"):
        ost.codec_tag = "hvc1"  # Apple players (and HLS's authoring spec) refuse hev1
    try:
        occ.open()
        undo_realtime()  # SVT-AV1 as root made this thread and its own real-time
    except HW_SETUP_ERRORS as e:
        if vp.hardware:
            raise EncoderRefused(f"{vp.encoder} refused to open: {e}", output) from None
        if not isinstance(e, av.FFmpegError):
            raise
        what = f"rendition {output}" if output else "this video"
        raise MediadError(f"{input_name}: {vp.encoder} cannot encode {what}: {e}",
                          reason=Reason.UNSUPPORTED) from None
    return OpenedEncoder(ost, full_range, matrix)


def host_work(vp: VideoPlan, ist: av.video.stream.VideoStream,
              encoder: OpenedEncoder) -> FrameWork:
    """The conversion of host frames for this encoder: libavfilter (rotation, crop, bwdif, scale,
    pixel format), then tone mapping in torch when the plan tone-maps (torch imported only then)."""
    return host_transform(vp, ist, encoder.full_range, encoder.matrix)


def gpu_nvenc_work(vp: VideoPlan) -> FrameWork:
    """CUDA frames scaled (tone-mapped) and converted in torch for NVENC, no host copy."""
    from mediad.media.gpu_frames import GpuVideoTransform

    gpu = GpuVideoTransform(size=(vp.width, vp.height), out_format=gpu_layout(vp),
                            tonemap=vp.tonemap)
    return lambda frame: [] if frame is None else [gpu(frame)]


def encoder_input_colour(ist: av.video.stream.VideoStream, vp: VideoPlan) -> tuple[bool, str | None]:
    """(full range, matrix) of the frames `vp`'s encoder gets from `ist` (as it is opened)."""
    if vp.tonemap is not None:  # tone mapping writes SDR BT.709, limited range
        return False, None
    return encoder_colour(ist.codec_context, vp.height)


def host_transform(vp: VideoPlan, ist: av.video.stream.VideoStream, full_range: bool,
                   matrix: str | None) -> FrameWork:
    """`host_work` for frames in a given range and matrix (also what VMAF's reference sees)."""
    if vp.tonemap is None:
        return VideoTransform(vp, ist.time_base, full_range, matrix)
    from mediad.media.tonemap import host_tone_map

    # Geometry in libavfilter on the 10-bit HDR samples, kept in the source's range.
    geometry = VideoTransform(replace(vp, pix_fmt="yuv420p10le"), ist.time_base,
                              vp.tonemap.full_range)
    return host_tone_map(geometry, vp.tonemap, vp.pix_fmt)


def stage_input_work(vp: VideoPlan, ist: av.video.stream.VideoStream) -> FrameWork:
    """Decoded host frames as the model stages take them: upright, cropped, deinterlaced,
    tone-mapped when the plan says, rgb24 at the source's size (the stages' output is then
    scaled for each encoder)."""
    cc = ist.codec_context
    w0, h0 = (cc.height, cc.width) if vp.rotate % 180 else (cc.width, cc.height)
    if vp.crop:
        w0, h0 = vp.crop
    at_source = replace(vp, width=w0, height=h0)
    if vp.tonemap is None:
        return VideoTransform(replace(at_source, pix_fmt="rgb24"), ist.time_base)
    # SDR BT.709 first (geometry on the 10-bit samples, then the curve), then RGB of that
    sdr = host_transform(replace(at_source, pix_fmt="yuv420p"), ist, False, None)
    to_rgb = VideoTransform(replace(at_source, rotate=0, mirror=False, crop=None, deinterlace="off",
                                    pix_fmt="rgb24", tonemap=None), ist.time_base)

    def work(frame: av.VideoFrame | None) -> list[av.VideoFrame]:
        done = [g for f in sdr(frame) for g in to_rgb(f)]
        return done + to_rgb(None) if frame is None else done

    return work


def after_stages_work(vp: VideoPlan, ist: av.video.stream.VideoStream,
                      encoder: OpenedEncoder) -> VideoTransform:
    """The models' rgb24 frames (already upright and cropped) scaled and converted for this
    encoder: back into YUV in the source's matrix (the tag copied onto the encoder), or the
    output matrix chosen for an RGB source."""
    cc = ist.codec_context
    matrix = "bt709" if vp.tonemap is not None else encoder.matrix or (
        color.matrix_for(cc.colorspace, cc.height) if cc.colorspace not in (None, 0, 2) else None)
    # Tone mapping (if any) came before the stages: what is left is geometry and format
    return VideoTransform(replace(vp, rotate=0, mirror=False, crop=None, deinterlace="off", tonemap=None),
                          ist.time_base, encoder.full_range, matrix)


class VideoSink:
    """One output's video: frames in, converted (`transform`) and encoded, packets out.

    Threaded, the work runs on its own thread behind a bounded queue, beside the reader's
    demuxing and decoding, as the ffmpeg CLI runs each filter chain and encoder; the packets
    come back to the reader's thread, which alone muxes. Unthreaded (frames that stay on the
    GPU, or model stages with a thread of their own), it runs in the caller's thread.
    `before` runs in the caller's thread ahead of the queue: GPU work on decoded CUDA frames,
    so that no frame waiting in the queue holds one of NVDEC's few surfaces.
    """

    def __init__(self, encoder: OpenedEncoder, vp: VideoPlan, transform: FrameWork,
                 out: av.container.OutputContainer, *, name: str = "video",
                 threaded: bool = True, depth: int = 2, output: str | None = None,
                 before: FrameWork | None = None) -> None:
        self.ost = encoder.stream
        self.vp = vp
        self.out = out  # the container its packets go to
        self.transform = transform
        self.before = before
        self.output = output  # the ladder rendition (for EncoderRefused), None: single
        self.frames = 0
        self.span = Span()  # what the encoded frames span
        self._next_pts = 0  # where a frame without a timestamp goes: after the one before
        self._next_base: Fraction | None = None
        # Each packet lasts what its frame lasted, by pts: the encoders leave packets without a
        # duration, and the muxer took one frame interval of the stream's nominal rate for the
        # last one (a VFR recording's held last picture was lost) and a segmenter ends each
        # fragment by the last packet's duration (gap-filled frames).
        self._durations: dict[int, int] = {}
        self.worker: OrderedWorker[av.VideoFrame | None, av.Packet] | None = \
            OrderedWorker(self._work, name=f"mediad-{name}", depth=depth) if threaded else None

    def _work(self, frame: av.VideoFrame | None) -> list[av.Packet]:
        packets: list[av.Packet] = []
        for f in self.transform(frame):
            if f.pts is None:  # raw streams (.h264, .m2v) carry no timestamps: number the frames
                if f.duration and f.time_base:  # each one after the one before, as ffmpeg does
                    f.pts = self._next_pts if f.time_base == self._next_base else 0
                else:
                    f.pts, f.time_base = self._next_pts, self.ost.codec_context.time_base
            self._next_pts, self._next_base = f.pts + (f.duration or 1), f.time_base
            self.span.add(f.pts, f.duration or 1, f.time_base)
            if f.duration:
                self._durations[f.pts] = f.duration
            self.frames += 1
            packets += self._encode(f)
        if frame is None:
            packets += self._encode(None)
        return packets

    def _encode(self, frame: av.VideoFrame | None) -> list[av.Packet]:
        try:
            packets = self.ost.encode(frame)
        except av.FFmpegError as e:
            # NVENC registers and maps its input inside encode(): a first failure shows here.
            if self.vp.hardware:
                raise EncoderRefused(f"{self.vp.encoder} failed while encoding: {e}",
                                     self.output) from None
            raise
        for p in packets:
            if p.pts is not None and (d := self._durations.pop(p.pts, None)):
                p.duration = d
        return packets

    def put(self, frame: av.VideoFrame) -> list[av.Packet]:
        """Hand one frame over; returns the packets finished so far."""
        frames = self.before(frame) if self.before is not None else [frame]
        return [p for f in frames for p in self._hand_over(f)]

    def _hand_over(self, frame: av.VideoFrame | None) -> list[av.Packet]:
        return self.worker.put(frame) if self.worker is not None else self._work(frame)

    def finish(self) -> list[av.Packet]:
        """Flush the conversion and the encoder; returns the rest."""
        done = [p for f in self.before(None) for p in self._hand_over(f)] \
            if self.before is not None else []
        if self.worker is None:
            return done + self._work(None)
        done += self.worker.put(None)
        return done + self.worker.finish()

    def close(self) -> None:
        """End the thread when the run gives up before the end; idempotent."""
        if self.worker is not None:
            self.worker.close()
