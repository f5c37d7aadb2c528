"""Plan: every decision a transcode makes, with a reason for each fallback. Never touches frames."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from mediad.errors import MediadError
from mediad.gpu import NVENC_NAMES, Capabilities
from mediad.media.probe import MediaInfo, VideoInfo
from mediad.media.subtitles import codec_names, subtitle_kind
from mediad.profiles import (
    AUDIO_MAX_BITRATE_PER_CHANNEL,
    CONTAINER_AUDIO,
    CONTAINER_FORMAT,
    CONTAINER_SUBTITLES,
    CONTAINER_TEXT_SUBTITLE,
    CONTAINER_VIDEO,
    SPEEDS,
    Profile,
    VideoSettings,
    parse_bitrate,
)

SOFTWARE_ENCODERS = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1"}
X26X_PRESETS = dict(zip(SPEEDS, ("ultrafast", "veryfast", "faster", "medium", "slow", "slower",
                                 "veryslow"), strict=True))
NVENC_PRESETS = dict(zip(SPEEDS, ("p1", "p2", "p3", "p4", "p5", "p6", "p7"), strict=True))
# SVT-AV1 presets run 0 (slowest) .. 13 (fastest); its own default is 10, medium here is 8.
SVTAV1_PRESETS = dict(zip(SPEEDS, ("12", "10", "9", "8", "6", "4", "2"), strict=True))
NVDEC_CODECS = {"h264", "hevc", "av1"}  # the codecs the capability trial checks
AUDIO_ENCODERS = {"aac": "aac", "opus": "libopus"}
CHROMA_420 = {"yuv420p", "yuvj420p", "nv12", "yuv420p10le", "p010le"}  # what the encoders make
CONTAINER_DEFAULT_AUDIO = {"mp4": "aac", "mov": "aac", "mkv": "aac", "webm": "opus"}


@dataclass(frozen=True)
class DecodePlan:
    """How the video is decoded."""

    stream: int
    codec: str
    hardware: bool
    device: int | None
    reason: str


@dataclass(frozen=True)
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
    crop: tuple[int, int] | None  # (w, h) cropped from the top-left after rotation, to reach even sizes
    sample_aspect_ratio: str
    reason: str


@dataclass(frozen=True)
class StreamPlan:
    """What happens to one audio or subtitle stream."""

    index: int
    action: Literal["copy", "encode", "convert", "drop"]  # convert: text subtitles, cue by cue
    source_codec: str
    codec: str | None
    encoder: str | None
    bit_rate: int | None
    channels: int | None
    sample_rate: int | None
    language: str | None
    reason: str


@dataclass(frozen=True)
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
    gpu: dict
    frames_on_gpu: bool = False  # NVDEC -> (torch) -> NVENC without a host copy
    frames_reason: str = ""
    stages: list[dict] = field(default_factory=list)  # each stage's device/precision decision
    fallbacks: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain data for --json and reports."""
        return asdict(self)

    def with_software_video(self, reason: str) -> Plan:
        """The same plan with the video encoded in software (after NVENC refused at run time)."""
        v = self.video
        encoder = SOFTWARE_ENCODERS[v.codec]
        video = replace(v, encoder=encoder, hardware=False,
                        options=_encoder_options(encoder, v.speed, v.quality, None),
                        pix_fmt="yuv420p10le" if v.pix_fmt == "p010le" else v.pix_fmt,
                        reason=f"software encoder: {reason}")
        return replace(self, video=video, frames_on_gpu=False,
                       frames_reason="frames downloaded once for the software encoder",
                       fallbacks=[*self.fallbacks, f"video: {reason}"])

    def with_software_decode(self, reason: str) -> Plan:
        """The same plan decoded in software (after NVDEC failed or refused the stream at run time)."""
        decode = replace(self.decode, hardware=False, device=None,
                         reason=f"software decoder: {reason}")
        return replace(self, decode=decode, frames_on_gpu=False,
                       frames_reason="software decode: frames are in host memory",
                       fallbacks=[*self.fallbacks, f"decode: {reason}"])


def _even(n: float) -> int:
    return max(2, int(round(n / 2.0)) * 2)


def output_geometry(v: VideoInfo, max_height: int | None, stage_scale: int = 1,
                    ) -> tuple[int, int, tuple[int, int] | None, str]:
    """(width, height, crop, sample_aspect_ratio) after rotation, evening, stages and scaling.

    An odd side is cropped by one pixel (right/bottom) rather than resampled, as HandBrake does,
    because 4:2:0 encoders need even sizes. Upscaling stages multiply the size; `max_height`
    then scales down keeping the display aspect (the sample aspect ratio is kept, both sides
    scale alike), never up.
    """
    w, h = v.width, v.height
    num, _, den = v.sample_aspect_ratio.partition("/")
    sar = f"{num}/{den or 1}"
    if v.rotation % 180:
        w, h = h, w
        sar = f"{den or 1}/{num}"  # rotating a quarter turn swaps the pixel's sides
    crop = (w - w % 2, h - h % 2) if (w % 2 or h % 2) else None
    w, h = (w - w % 2) * stage_scale, (h - h % 2) * stage_scale
    if max_height is not None and h > max_height:
        height = max(2, max_height - max_height % 2)  # down to even: never above max_height
        return _even(w * height / h), height, crop, sar
    return w, h, crop, sar


def _encoder_options(encoder: str, speed: str, quality: int | None,
                     device: int | None) -> dict[str, str]:
    opts: dict[str, str] = {}
    if encoder.endswith("_nvenc"):
        opts.update({"preset": NVENC_PRESETS[speed], "tune": "hq"})
        if device is not None:
            opts["gpu"] = str(device)
        if quality is not None:
            opts.update({"rc": "vbr", "cq": str(quality)})
    elif encoder in ("libx264", "libx265"):
        opts["preset"] = X26X_PRESETS[speed]
        if quality is not None:
            opts["crf"] = str(quality)
        if encoder == "libx265":
            opts["x265-params"] = "log-level=error"
    elif encoder == "libsvtav1":
        opts["preset"] = SVTAV1_PRESETS[speed]
        if quality is not None:
            opts["crf"] = str(quality)
        opts["svtav1-params"] = "enable-stat-report=0"
    return opts


def copy_mismatch(v: VideoInfo, vs: VideoSettings, stage_scale: int = 1) -> str | None:
    """Why `copy_if_matching` must still encode this video; None when copying it is right.

    A copy is right when the source already is what the profile makes: its codec, 4:2:0, at most
    its bit depth, height and bit rate, and no upscaling stage. Odd sizes and a rotation tag
    are kept as they are: players handle both in a file that already plays.
    """
    if v.codec != vs.codec:
        return f"source is {v.codec}"
    if stage_scale != 1:
        return "an upscaling stage changes the frames"
    if v.pix_fmt not in CHROMA_420:
        return f"source pixel format {v.pix_fmt} is not 4:2:0"
    if v.bit_depth > vs.bit_depth:
        return f"source is {v.bit_depth}-bit, the profile makes {vs.bit_depth}-bit"
    lines = v.display_size[1]
    if vs.max_height is not None and lines > vs.max_height:
        return f"source has {lines} lines, over max_height {vs.max_height}"
    if vs.bitrate is not None:
        if v.bit_rate is None:
            return "source video bit rate unknown"
        if v.bit_rate > parse_bitrate(vs.bitrate):
            return f"source video is {v.bit_rate // 1000} kb/s, over bitrate {vs.bitrate}"
    return None


def _copied_video(v: VideoInfo, vs: VideoSettings, reason: str) -> VideoPlan:
    return VideoPlan("copy", v.codec, "copy", False, {}, vs.speed, None, None, v.pix_fmt, v.width,
                     v.height, 0, None, v.sample_aspect_ratio, reason)


def _plan_video(info: MediaInfo, profile: Profile, caps: Capabilities,
                gpu_allowed: bool, stage_scale: int) -> tuple[VideoPlan, list[str]]:
    v = info.main_video
    assert v is not None
    vs = profile.video
    fallbacks: list[str] = []
    if vs.codec == "copy":
        allowed = CONTAINER_VIDEO[profile.container]
        if allowed is not None and v.codec not in allowed:
            raise MediadError(f"{info.path}: cannot copy {v.codec} video into {profile.container} "
                              f"(profile {profile.name}: use another container or re-encode)",
                              reason="unsupported")
        return _copied_video(v, vs, "profile asks to copy the video"), fallbacks
    not_copied = ""
    if vs.copy_if_matching:
        mismatch = copy_mismatch(v, vs, stage_scale)
        if mismatch is None:
            return _copied_video(v, vs, f"source is already {vs.codec} within the profile's "
                                        "limits: copied (copy_if_matching)"), fallbacks
        not_copied = f"; re-encoded, not copied: {mismatch}"
    if min(v.width, v.height) < 2:
        raise MediadError(f"{info.path}: video is {v.width}x{v.height}: too small to encode "
                          "(4:2:0 video needs at least 2x2 pixels)", reason="unsupported")
    width, height, crop, sar = output_geometry(v, vs.max_height, stage_scale)
    quality = vs.effective_quality
    bit_rate = parse_bitrate(vs.bitrate) if vs.bitrate else None
    nvenc = caps.nvenc.get(vs.codec)
    use_gpu = False
    if vs.encoder == "gpu":
        if not (nvenc and nvenc.ok):
            why = nvenc.reason if nvenc else "no GPU"
            raise MediadError(f"profile {profile.name} requires NVENC ({vs.codec}) but it is not "
                              f"usable here: {why}", reason="no_gpu")
        use_gpu, reason = True, "profile requires the GPU encoder"
    elif vs.encoder == "auto" and nvenc and nvenc.ok:
        use_gpu, reason = True, nvenc.reason
    elif vs.encoder == "auto" and not gpu_allowed:
        reason = "GPU disabled for this job (--gpu none)"
    elif vs.encoder == "auto":
        why = nvenc.reason if nvenc else "no GPU"
        reason = f"NVENC {vs.codec} not usable ({why})"
        fallbacks.append(f"video: software encoder because {reason}")
    else:
        reason = "profile asks for the software encoder"
    if use_gpu and vs.codec == "h264" and vs.bit_depth == 10:
        use_gpu, reason = False, "NVENC has no 10-bit H.264"
        fallbacks.append(f"video: software encoder because {reason}")
    encoder = NVENC_NAMES[vs.codec] if use_gpu else SOFTWARE_ENCODERS[vs.codec]
    if vs.bit_depth == 10:
        pix_fmt = "p010le" if use_gpu else "yuv420p10le"
    else:
        pix_fmt = "yuv420p"
    return VideoPlan("encode", vs.codec, encoder, use_gpu,
                     _encoder_options(encoder, vs.speed, quality, caps.device if use_gpu else None),
                     vs.speed, quality, bit_rate, pix_fmt, width, height, v.rotation, crop, sar,
                     reason + not_copied), fallbacks


def _plan_decode(v: VideoInfo, video: VideoPlan, caps: Capabilities, analysed: bool) -> DecodePlan:
    if video.action == "copy" and not analysed:
        return DecodePlan(v.index, v.codec, False, None, "video is copied, not decoded")
    nvdec = caps.nvdec.get(v.codec)
    if caps.device is None:
        return DecodePlan(v.index, v.codec, False, None, f"software decoder: {nvdec.reason if nvdec else 'no GPU'}")
    if v.codec not in NVDEC_CODECS or not nvdec:
        return DecodePlan(v.index, v.codec, False, None, f"software decoder: NVDEC not tried for {v.codec}")
    if not nvdec.ok:
        return DecodePlan(v.index, v.codec, False, None, f"software decoder: {nvdec.reason}")
    return DecodePlan(v.index, v.codec, True, caps.device, nvdec.reason)


def _plan_residency(decode: DecodePlan, video: VideoPlan, source_pix_fmt: str,
                    stages_on_cuda: bool) -> tuple[bool, str]:
    """Whether decoded frames stay in GPU memory (for the stages and/or NVENC), and why (not)."""
    if not decode.hardware:
        return False, ("video is copied" if video.action == "copy"
                       else "software decode: frames are in host memory")
    if video.rotate or video.crop:
        return False, "rotation/crop run in libavfilter on the host: frames downloaded once"
    if source_pix_fmt not in CHROMA_420:
        # NVDEC gives 4:4:4 as planar YUV444 (torch reads NV12/P010 only), and no 4:2:2 at all.
        return False, f"{source_pix_fmt} is not 4:2:0: frames downloaded once"
    if video.action == "copy":
        if stages_on_cuda:
            return True, "NVDEC -> stages on the GPU (analysis only; video copied)"
        return False, "analysis stages on the CPU: frames downloaded once"
    if video.hardware:
        return True, ("NVDEC -> stages on the GPU -> NVENC, no host copy" if stages_on_cuda
                      else "NVDEC -> GPU scaling -> NVENC, no host copy")
    if stages_on_cuda:
        return True, "NVDEC -> stages on the GPU; result downloaded once for the software encoder"
    return False, "frames downloaded once for the software encoder"


def _plan_audio(info: MediaInfo, profile: Profile) -> list[StreamPlan]:
    a = profile.audio
    plans = []
    allowed = CONTAINER_AUDIO[profile.container]
    for s in info.audio:
        fits = s.codec in allowed
        if a.codec == "none":
            plans.append(StreamPlan(s.index, "drop", s.codec, None, None, None, None, None,
                                    s.language, "profile drops audio"))
            continue
        target = a.codec if a.codec != "copy" else CONTAINER_DEFAULT_AUDIO[profile.container]
        channels = min(s.channels, a.channels) if a.channels else s.channels
        if a.codec == "copy" and fits:
            reason = "profile asks to copy audio"
        elif a.codec != "copy" and s.codec == target and fits and channels == s.channels:
            reason = f"source is already {target}: copied without re-encoding"
        else:
            reason = (f"{s.codec} does not fit {profile.container}" if not fits
                      else f"profile asks for {target}")
            rate = 48000 if target == "opus" else s.sample_rate
            bit_rate = parse_bitrate(a.bitrate)
            # The profile could only check its bitrate against 8 channels: cap it for this track
            # (libopus refuses more than its limit; FFmpeg's aac would cap it without a word).
            per_channel = AUDIO_MAX_BITRATE_PER_CHANNEL.get(target)
            if per_channel and bit_rate > per_channel * channels:
                bit_rate = per_channel * channels
                reason += (f"; bitrate capped to {bit_rate // 1000}k ({target} takes at most "
                           f"{per_channel // 1000}k per channel)")
            plans.append(StreamPlan(s.index, "encode", s.codec, target, AUDIO_ENCODERS[target],
                                    bit_rate, channels, rate, s.language,
                                    f"encode to {target}: {reason}"))
            continue
        plans.append(StreamPlan(s.index, "copy", s.codec, s.codec, None, None, s.channels,
                                s.sample_rate, s.language, reason))
    return plans


def _plan_subtitles(info: MediaInfo, profile: Profile) -> tuple[list[StreamPlan], list[str]]:
    """Copy what the container holds, convert other text subtitles, drop the rest (bitmaps)."""
    plans, warnings = [], []
    container = profile.container
    allowed = CONTAINER_SUBTITLES[container]
    text_target = CONTAINER_TEXT_SUBTITLE[container]
    for s in info.subtitles:
        target, kind = None, subtitle_kind(s.codec)
        if profile.subtitles.mode == "none":
            action, reason = "drop", "profile drops subtitles"
        elif codec_names(s.codec) & allowed:
            action, reason, target = "copy", "copied", s.codec
        elif kind == "text":
            action, target = "convert", text_target
            reason = f"{container} cannot hold {s.codec} subtitles: converted to {text_target}"
            if codec_names(s.codec) & {"ass", "ssa"}:
                reason += " (ASS positioning, fonts and effects are not kept)"
        else:
            why = ("bitmap subtitles cannot be converted to text" if kind == "bitmap"
                   else "no decoder to convert them")
            action, reason = "drop", f"{container} cannot hold {s.codec} subtitles ({why})"
            warnings.append(f"subtitle stream #{s.index} ({s.codec}) dropped: {reason}")
        plans.append(StreamPlan(s.index, action, s.codec, target,
                                target if action == "convert" else None, None, None, None,
                                s.language, reason))
    return plans, warnings


def _plan_stages(profile: Profile, device: int | None) -> list[dict]:
    """Device and precision of each [[stages]] entry (imports torch only when there are stages)."""
    if not profile.stages:
        return []
    from mediad.models import require_torch

    require_torch()  # before importing the runner, which needs torch
    from mediad.models.runner import plan_stages

    return [d.to_dict() for d in plan_stages(profile.stages, gpu=device)]


def make_plan(info: MediaInfo, profile: Profile, caps: Capabilities, output: Path,
              gpu_reason: str = "", gpu_allowed: bool = True) -> Plan:
    """Decide decoder, encoders and stream handling for `info` under `profile` on this machine.

    `gpu_allowed` is False when the user turned the GPU off: CPU paths are then no fallback.
    """
    v = info.main_video
    if v is None:
        kinds = "audio-only" if info.audio else "has no video stream"
        raise MediadError(f"{info.path}: {kinds} file, but profile {profile.name} makes video",
                          reason="no_video")
    stages = _plan_stages(profile, caps.device)
    stage_scale = math.prod(s.scale for s in profile.stages if s.kind == "upscale")
    video, fallbacks = _plan_video(info, profile, caps, gpu_allowed, stage_scale)
    decode = _plan_decode(v, video, caps, analysed=bool(stages))
    if caps.device is not None and not decode.hardware and video.action == "encode":
        fallbacks.append(f"decode: {decode.reason}")
    stages_on_cuda = any(str(s["device"]).startswith("cuda") for s in stages)
    frames_on_gpu, frames_reason = _plan_residency(decode, video, v.pix_fmt, stages_on_cuda)
    fallbacks += [f"stage {s['kind']}: {r}" for s in stages for r in s["reasons"]]
    subtitles, warnings = _plan_subtitles(info, profile)
    warnings += [f"video #{extra.index} ({extra.codec} {extra.width}x{extra.height}) not kept: "
                 f"mediad keeps one video stream, #{v.index}" for extra in info.video[1:]]
    if v.hdr and video.action == "encode" and profile.video.bit_depth == 8:
        warnings.append("HDR source encoded to 8-bit without tone mapping: colours keep the HDR "
                        "transfer tags; use bit_depth = 10 to keep full quality")
    return Plan(
        input=info.path, output=str(output), profile=profile.name, container=profile.container,
        format=CONTAINER_FORMAT[profile.container], faststart=profile.faststart, decode=decode,
        video=video, audio=_plan_audio(info, profile), subtitles=subtitles,
        gpu={"device": caps.device, "reason": gpu_reason, **caps.to_dict()},
        frames_on_gpu=frames_on_gpu, frames_reason=frames_reason, stages=stages,
        fallbacks=fallbacks, warnings=warnings)


def format_plan(plan: Plan) -> str:
    """Human-readable plan for `mediad plan`."""
    v, d = plan.video, plan.decode
    lines = [f"input:   {plan.input}", f"output:  {plan.output} ({plan.container}"
             + (", faststart)" if plan.faststart else ")"), f"profile: {plan.profile}",
             f"gpu:     {plan.gpu['device'] if plan.gpu['device'] is not None else 'none'}"
             + (f" ({plan.gpu['reason']})" if plan.gpu.get("reason") else ""),
             f"decode:  #{d.stream} {d.codec} {'NVDEC' if d.hardware else 'software'} - {d.reason}",
             f"frames:  {'GPU-resident' if plan.frames_on_gpu else 'host'} - {plan.frames_reason}"]
    if v.action == "copy":
        lines.append(f"video:   copy {v.codec} - {v.reason}")
    else:
        rc = f"{v.bit_rate} b/s" if v.bit_rate else f"quality {v.quality}"
        extra = []
        if v.rotate:
            extra.append(f"rotate {v.rotate}")
        if v.crop:
            extra.append(f"crop to {v.crop[0]}x{v.crop[1]}")
        opts = " ".join(f"{k}={val}" for k, val in v.options.items())
        lines.append(f"video:   {v.codec} via {v.encoder} {v.width}x{v.height} {v.pix_fmt} {rc}"
                     + (f" ({', '.join(extra)})" if extra else "") + f" [{opts}] - {v.reason}")
    for st in plan.stages:
        lines.append(f"stage:   {st['kind']} {st['model']} on {st['device']} {st['precision']}"
                     + "".join(f" - {r}" for r in st["reasons"]))
    for a in plan.audio:
        target = f" -> {a.codec} {a.bit_rate // 1000}k" if a.action == "encode" and a.bit_rate else ""
        lines.append(f"audio:   #{a.index} {a.source_codec} {a.action}{target}"
                     + (f" [{a.language}]" if a.language else "") + f" - {a.reason}")
    for s in plan.subtitles:
        target = f" -> {s.codec}" if s.action == "convert" else ""
        lines.append(f"subs:    #{s.index} {s.source_codec} {s.action}{target}"
                     + (f" [{s.language}]" if s.language else "") + f" - {s.reason}")
    for f in plan.fallbacks:
        lines.append(f"fallback: {f}")
    for w in plan.warnings:
        lines.append(f"warning: {w}")
    return "\n".join(lines)
