"""Plan: the record of every decision a transcode makes (decode, video, tracks, stages), with a
reason for each fallback; media.plan makes it, the engine runs it, reports and the API show it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from mediad.gpu import Capabilities, Capability
from mediad.media.encoders import SOFTWARE_ENCODERS, encoder_options, quality_option
from mediad.media.hdr import HdrMetadata
from mediad.media.plan_streams import StreamPlan
from mediad.media.tonemap import ToneMapPlan
from mediad.media.vmaf_target import VmafTarget
from mediad.models.decision import StageDecision

# bwdif on every frame, or only on frames the decoder flags as interlaced; "auto": the source
# looked progressive, bwdif joins at the first frame flagged interlaced (a broadcast that
# switches from a progressive advert to an interlaced programme).
Deinterlace = Literal["off", "all", "interlaced", "auto"]


@dataclass(frozen=True, kw_only=True)
class DecodePlan:
    """How the video is decoded."""

    stream: int
    codec: str
    hardware: bool
    device: int | None
    reason: str


@dataclass(frozen=True, kw_only=True)
class VideoPlan:
    """What happens to the video stream."""

    action: Literal["encode", "copy"]
    codec: str
    encoder: str
    hardware: bool
    options: dict[str, str]
    speed: str
    quality: int | None
    bit_rate: int | None
    pix_fmt: str
    width: int
    height: int
    rotate: int  # degrees counter-clockwise applied to the pixels (the source's display rotation)
    mirror: bool = False  # the display matrix flips the picture too (VideoTransform)
    crop: tuple[int, int] | None  # (w, h) cropped from the top-left after rotation, to reach even sizes
    sample_aspect_ratio: str
    reason: str
    deinterlace: Deinterlace = "off"
    hdr: HdrMetadata | None = None  # HDR10 metadata written into the encoded stream
    # A copy's bitstream filter: Matroska takes the aspect ratio from the bitstream only
    # (PyAV cannot set the stream-level one its muxer reads), so it is written there.
    bitstream_filter: str | None = None
    source_interlaced: bool = False  # the probe saw interlacing (the plan then says it)
    tonemap: ToneMapPlan | None = None  # HDR -> SDR BT.709 before the encoder (media.tonemap)
    # target_vmaf: `quality` is chosen per file by a VMAF search before the encode (until
    # then it is where the search starts); see media.vmaf_search.
    vmaf: VmafTarget | None = None


def software_video(v: VideoPlan, reason: str) -> VideoPlan:
    """`v` encoded by the software encoder of its codec (NVENC refused it), and why."""
    encoder = SOFTWARE_ENCODERS[v.codec]
    return replace(v, encoder=encoder, hardware=False,
                   options=encoder_options(encoder, v.speed, v.quality, None, v.hdr),
                   pix_fmt="yuv420p10le" if v.pix_fmt == "p010le" else v.pix_fmt,
                   reason=f"software encoder: {reason}")


@dataclass(frozen=True, kw_only=True)
class GpuDecision:
    """The GPU a plan may use (device None: none), why that one, and what its NVENC and NVDEC
    did when tried, per codec."""

    device: int | None
    reason: str
    nvenc: dict[str, Capability]
    nvdec: dict[str, Capability]

    @classmethod
    def of(cls, caps: Capabilities, reason: str) -> GpuDecision:
        return cls(device=caps.device, reason=reason, nvenc=dict(caps.nvenc),
                   nvdec=dict(caps.nvdec))


@dataclass(frozen=True, kw_only=True)
class Plan:
    """The decision record of one transcode; `mediad plan` prints it and the report embeds it."""

    input: str
    output: str
    profile: str
    container: str
    format: str
    faststart: bool
    decode: DecodePlan
    video: VideoPlan
    audio: list[StreamPlan]
    subtitles: list[StreamPlan]
    gpu: GpuDecision
    frames_on_gpu: bool = False  # NVDEC -> (torch) -> NVENC without a host copy
    frames_reason: str = ""
    stages: list[StageDecision] = field(default_factory=list)  # each stage's device, precision
    attachments: list[StreamPlan] = field(default_factory=list)  # Matroska fonts and files
    cover_art: list[StreamPlan] = field(default_factory=list)  # attached pictures
    # Seconds subtracted from every timestamp so that the output starts at 0, as the ffmpeg CLI
    # does: the earliest start of the kept streams (their offsets to each other stay).
    start_offset: float = 0.0
    discontinuous: bool = False  # join up jumps of the source's clock (MPEG-TS/PS), as ffmpeg
    on_decode_error: Literal["warn", "fail"] = "warn"
    timecode: str | None = None  # the start timecode written on the output's video (ffmpeg's)
    notes: list[str] = field(default_factory=list)  # decisions worth saying that are no fallback
    fallbacks: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain data for --json and reports."""
        return {**asdict(self), "stages": [s.to_dict() for s in self.stages]}

    def with_software_video(self, reason: str) -> Plan:
        """The same plan with the video encoded in software (after NVENC refused at run time)."""
        return replace(self, video=software_video(self.video, reason), frames_on_gpu=False,
                       frames_reason="frames downloaded once for the software encoder",
                       fallbacks=[*self.fallbacks, f"video: {reason}"])

    def with_quality(self, quality: int, note: str) -> Plan:
        """The same plan encoding at `quality` (chosen by the VMAF search), and why."""
        key = quality_option(self.video.encoder)
        video = replace(self.video, quality=quality,
                        options={**self.video.options, key: str(quality)})
        return replace(self, video=video, notes=[*self.notes, note])

    def with_software_decode(self, reason: str) -> Plan:
        """The same plan decoded in software (after NVDEC failed or refused the stream at run time)."""
        decode = replace(self.decode, hardware=False, device=None,
                         reason=f"software decoder: {reason}")
        return replace(self, decode=decode, frames_on_gpu=False,
                       frames_reason="software decode: frames are in host memory",
                       fallbacks=[*self.fallbacks, f"decode: {reason}"])
