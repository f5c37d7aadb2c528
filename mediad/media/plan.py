"""make_plan: every decision a transcode makes (a Plan, media.plan_records), with a reason for
each fallback. Never touches frames."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import av

from mediad.errors import MediadError, Reason
from mediad.formats import (
    CONTAINER_FORMAT,
    CONTAINER_VIDEO,
    Container,
)
from mediad.gpu import NVENC_NAMES, Capabilities
from mediad.media import color, hdr
from mediad.media.encoders import SOFTWARE_ENCODERS, encoder_options
from mediad.media.media_info import MediaInfo, VideoInfo
from mediad.media.plan_records import DecodePlan, Deinterlace, GpuDecision, Plan, VideoPlan
from mediad.media.plan_streams import (
    StreamPlan,
    no_fit,
    plan_audio,
    plan_data,
    plan_extras,
    plan_subtitles,
)
from mediad.media.tonemap import tonemap_plan
from mediad.media.vmaf_target import VmafTarget
from mediad.models.decision import StageDecision
from mediad.profile_base import parse_bitrate
from mediad.profiles import Profile, VideoSettings

NVDEC_CODECS = {"h264", "hevc", "av1"}  # the codecs the capability trial checks
CHROMA_420 = {"yuv420p", "yuvj420p", "nv12", "yuv420p10le", "p010le"}  # what the encoders make


# How far before the picture and sound a subtitle may start the output (libavformat's
# update_stream_timings takes a text stream's start only within 1 s of the others').
_SUBTITLE_LEAD_S = 1.0


@functools.cache
def muxer_takes(format_name: str, codec: str) -> bool:
    """Whether FFmpeg's muxer for `format_name` takes a stream of `codec` (Matroska has no DV
    mapping: copying a camcorder's DV into MKV failed with a traceback at the muxer)."""
    try:
        av.open(io.BytesIO(), "w", format=format_name).add_mux_stream(codec)
    except (ValueError, av.FFmpegError):
        return False
    return True


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


def deinterlace_mode(v: VideoInfo, setting: str) -> tuple[Deinterlace, str]:
    """How `[video] deinterlace` applies to this source, and why (empty when it does nothing)."""
    if setting == "on":
        return "all", "deinterlace = on: every frame through bwdif"
    if setting == "auto" and v.interlaced:
        return "interlaced", (f"source is interlaced ({v.field_order}): frames flagged "
                              "interlaced go through bwdif (deinterlace = auto)")
    return ("auto" if setting == "auto" else "off"), ""


def copy_mismatch(v: VideoInfo, vs: VideoSettings, tonemapped: bool,
                  stage_scale: int = 1) -> str | None:
    """Why `copy_if_matching` must still encode this video; None when copying it is right.

    A copy is right when the source already is what the profile makes: its codec, 4:2:0, at most
    its bit depth, height and bit rate, progressive (unless deinterlacing is off), and no
    upscaling stage. Odd sizes and a rotation tag are kept as they are: players handle both in
    a file that already plays. `tonemapped`: hdr_decision's answer.
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
    if deinterlace_mode(v, vs.deinterlace)[0] in ("all", "interlaced"):
        return f"source is interlaced ({v.field_order}) and is deinterlaced"
    if tonemapped:
        return "the HDR source is tone-mapped to SDR"
    if vs.bitrate is not None:
        rate = v.bit_rate or v.bit_rate_estimate
        if rate is None:
            return "source video bit rate unknown"
        if rate > parse_bitrate(vs.bitrate):
            return f"source video is {rate // 1000} kb/s, over bitrate {vs.bitrate}"
    return None


def hdr_decision(v: VideoInfo, vs: VideoSettings) -> tuple[bool, str]:
    """Whether `[video] hdr` tone-maps this source to SDR, and why (empty: not HDR, or keep)."""
    if not v.hdr or vs.codec == "copy":
        return False, ""
    if vs.hdr == "tonemap":
        return True, 'hdr = "tonemap"'
    if vs.hdr == "keep":
        return False, ""
    if vs.bit_depth == 8:
        return True, "hdr = auto and the output is 8-bit"
    if vs.codec == "h264":
        # x264 and NVENC write no HDR10 metadata, and few players show PQ/HLG in H.264.
        return True, "hdr = auto and H.264 output does not carry HDR"
    return False, ""


# Bitstream filters that rewrite a copied stream's sample aspect ratio.
_SAR_FILTERS = {"h264": "h264_metadata", "hevc": "hevc_metadata"}


def _copied_video(v: VideoInfo, vs: VideoSettings, container: str,
                  reason: str) -> tuple[VideoPlan, list[str]]:
    """A copy plan, and a warning when the container's aspect ratio cannot go with it."""
    bsf, warnings = None, []
    if v.container_aspect and container in ("mkv", "webm"):
        if v.codec in _SAR_FILTERS:
            bsf = f"{_SAR_FILTERS[v.codec]}=sample_aspect_ratio={v.sample_aspect_ratio}"
        else:
            warnings.append(f"the source's container aspect ratio (SAR {v.sample_aspect_ratio}) "
                            f"is not carried when copying {v.codec} into {container}: players "
                            "show the bitstream's")
    plan = VideoPlan(action="copy", codec=v.codec, encoder="copy", hardware=False, options={},
                     speed=vs.speed, quality=None, bit_rate=None, pix_fmt=v.pix_fmt,
                     width=v.width, height=v.height, rotate=0, crop=None,
                     sample_aspect_ratio=v.sample_aspect_ratio, reason=reason,
                     bitstream_filter=bsf)
    return plan, warnings


def _plan_video(info: MediaInfo, profile: Profile, container: str, caps: Capabilities,
                gpu_allowed: bool, stage_scale: int,
                tonemap: bool) -> tuple[VideoPlan, list[str], list[str]]:
    """The video's plan, its fallbacks and its warnings; `tonemap`: hdr_decision's answer."""
    v = info.main_video
    assert v is not None
    vs = profile.video
    fallbacks: list[str] = []
    warnings: list[str] = []
    allowed = CONTAINER_VIDEO[container]
    if vs.codec == "copy":
        if not info.timestamps and v.reordered:
            raise MediadError(f"{info.path}: video #{v.index} ({v.codec}) is a raw stream with "
                              "B-frames: it has no timestamps to copy it by (re-encode it)",
                              reason=Reason.UNSUPPORTED)
        if v.codec not in allowed if allowed is not None \
                else not muxer_takes(CONTAINER_FORMAT[container], v.codec):
            raise no_fit(info, f"video #{v.index} ({v.codec}, copied)", container,
                          f"profile {profile.name}: use another container or re-encode")
        video, warnings = _copied_video(v, vs, container, "profile asks to copy the video")
        return video, fallbacks, warnings
    if allowed is not None and vs.codec not in allowed:
        raise no_fit(info, f"video #{v.index} (encoded to {vs.codec})", container,
                      f"profile {profile.name}: use another container or profile")
    not_copied = ""
    if vs.copy_if_matching:
        mismatch = copy_mismatch(v, vs, tonemap, stage_scale)
        if mismatch is None:  # the source's codec is the profile's, which fits
            video, warnings = _copied_video(v, vs, container, f"source is already {vs.codec} "
                                            "within the profile's limits: copied "
                                            "(copy_if_matching)")
            return video, fallbacks, warnings
        not_copied = f"; re-encoded, not copied: {mismatch}"
    if min(v.width, v.height) < 2:
        raise MediadError(f"{info.path}: video is {v.width}x{v.height}: too small to encode "
                          "(4:2:0 video needs at least 2x2 pixels)", reason=Reason.UNSUPPORTED)
    width, height, crop, sar = output_geometry(v, vs.max_height, stage_scale)
    quality = vs.effective_quality
    bit_rate = parse_bitrate(vs.bitrate) if vs.bitrate else None
    nvenc = caps.nvenc.get(vs.codec)
    use_gpu = False
    if vs.encoder == "gpu":
        if not (nvenc and nvenc.ok):
            why = nvenc.reason if nvenc else "no GPU"
            raise MediadError(f"profile {profile.name} requires NVENC ({vs.codec}) but it is not "
                              f"usable here: {why}", reason=Reason.NO_GPU)
        use_gpu, reason = True, "profile requires the GPU encoder"
    elif vs.encoder == "auto" and nvenc and nvenc.ok:
        use_gpu, reason = True, nvenc.reason
    elif vs.encoder == "auto" and not gpu_allowed:
        reason = "GPU disabled for this job (--gpu none)"
    elif vs.encoder == "auto" and caps.device is None:
        # No NVIDIA GPU at all: software is this machine's normal path, not a fallback.
        reason = f"software encoder: no NVIDIA GPU here ({nvenc.reason if nvenc else 'none'})"
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
    tm = tonemap_plan(v.color_transfer, v.hdr_metadata, colorspace=v.color_space,
                      full_range=color.is_full_range(v.color_range, v.pix_fmt)) \
        if tonemap else None
    # HDR10 metadata only means something on 10-bit output of an HDR source kept HDR.
    carried = v.hdr_metadata if v.hdr and vs.bit_depth == 10 and tm is None else None
    if carried is not None and not use_gpu and not hdr.encoder_params(encoder, carried):
        warnings.append(f"{encoder} cannot write the source's HDR10 mastering metadata: only "
                        "the colour tags are kept (use hevc or av1)")
        carried = None
    deinterlace, _ = deinterlace_mode(v, vs.deinterlace)
    vmaf = None
    if vs.target_vmaf is not None:
        low, high = vs.search_range
        assert quality is not None
        quality = min(max(quality, low), high)
        vmaf = VmafTarget(float(vs.target_vmaf), low, high, quality, gpu=caps.device)
    options = encoder_options(encoder, vs.speed, quality, caps.device if use_gpu else None,
                              carried)
    return VideoPlan(action="encode", codec=vs.codec, encoder=encoder, hardware=use_gpu,
                     options=options, speed=vs.speed, quality=quality, bit_rate=bit_rate,
                     pix_fmt=pix_fmt, width=width, height=height, rotate=v.rotation,
                     mirror=v.mirrored, crop=crop,
                     sample_aspect_ratio=sar, reason=reason + not_copied, deinterlace=deinterlace,
                     hdr=carried, source_interlaced=v.interlaced, tonemap=tm,
                     vmaf=vmaf), fallbacks, warnings


def _plan_decode(v: VideoInfo, video: VideoPlan, caps: Capabilities, analysed: bool) -> DecodePlan:
    def software(reason: str) -> DecodePlan:
        return DecodePlan(stream=v.index, codec=v.codec, hardware=False, device=None,
                          reason=reason)

    if video.action == "copy" and not analysed:
        return software("video is copied, not decoded")
    nvdec = caps.nvdec.get(v.codec)
    if caps.device is None:
        return software(f"software decoder: {nvdec.reason if nvdec else 'no GPU'}")
    if v.codec not in NVDEC_CODECS or not nvdec:
        return software(f"software decoder: NVDEC not tried for {v.codec}")
    if not nvdec.ok:
        return software(f"software decoder: {nvdec.reason}")
    return DecodePlan(stream=v.index, codec=v.codec, hardware=True, device=caps.device,
                      reason=nvdec.reason)


def host_frames_reason(decode: DecodePlan, video: VideoPlan, source_pix_fmt: str) -> str | None:
    """Why decoded frames cannot stay in GPU memory for `video`, None when they can."""
    if not decode.hardware:
        return ("video is copied" if video.action == "copy"
                else "software decode: frames are in host memory")
    if video.rotate or video.mirror or video.crop:
        return "rotation/crop run in libavfilter on the host: frames downloaded once"
    if video.deinterlace in ("all", "interlaced"):
        return "bwdif deinterlacing runs in libavfilter on the host: frames downloaded once"
    if source_pix_fmt not in CHROMA_420:
        # NVDEC gives 4:4:4 as planar YUV444 (torch reads NV12/P010 only), and no 4:2:2 at all.
        return f"{source_pix_fmt} is not 4:2:0: frames downloaded once"
    return None


def _plan_residency(decode: DecodePlan, video: VideoPlan, source_pix_fmt: str,
                    stages_on_cuda: bool, stages: bool = False) -> tuple[bool, str]:
    """Whether decoded frames stay in GPU memory (for the stages and/or NVENC), and why (not)."""
    if (host := host_frames_reason(decode, video, source_pix_fmt)) is not None:
        return False, host
    if video.tonemap is not None and stages:
        return False, ("tone mapping ahead of the stages runs on host frames for now: frames "
                       "downloaded once")
    if video.action == "copy":
        if stages_on_cuda:
            return True, "NVDEC -> stages on the GPU (analysis only; video copied)"
        return False, "analysis stages on the CPU: frames downloaded once"
    if video.hardware:
        return True, ("NVDEC -> stages on the GPU -> NVENC, no host copy" if stages_on_cuda
                      else "NVDEC -> GPU scaling -> NVENC, no host copy")
    if video.tonemap is not None:
        return True, ("NVDEC -> tone mapping on the GPU; result downloaded once for the software "
                      "encoder")
    if stages_on_cuda:
        return True, "NVDEC -> stages on the GPU; result downloaded once for the software encoder"
    return False, "frames downloaded once for the software encoder"


def _start_offset(info: MediaInfo, audio: list[StreamPlan], subtitles: list[StreamPlan]) -> float:
    """The earliest start of the streams kept: the output's time zero. A subtitle counts only
    within 1 s before the picture and sound, as libavformat (and so ffmpeg) sets a file's
    start: a cue 1.5 s before the video moved everything 1.5 s late."""
    kept = {s.index for s in (*audio, *subtitles) if s.action != "drop"}
    v = info.main_video
    assert v is not None
    starts = [v.start_time] + [a.start_time for a in info.audio if a.index in kept]
    known = [t for t in starts if t is not None]
    cues = [s.start_time for s in info.subtitles if s.index in kept and s.start_time is not None]
    if not known:
        return min(cues) if cues else (info.start_time or 0.0)
    start = min(known)
    return min([start, *(t for t in cues if t > start - _SUBTITLE_LEAD_S)])


def _plan_stages(profile: Profile, device: int | None) -> list[StageDecision]:
    """Device and precision of each [[stages]] entry (imports torch only when there are stages)."""
    if not profile.stages:
        return []
    from mediad.models import require_torch

    require_torch()  # before importing the runner, which needs torch
    from mediad.models.runner import plan_stages

    return plan_stages(profile.stages, gpu=device)


def make_plan(info: MediaInfo, profile: Profile, caps: Capabilities, output: Path,
              gpu_reason: str = "", gpu_allowed: bool = True,
              container: Container | None = None) -> Plan:
    """Decide decoder, encoders and stream handling for `info` under `profile` on this machine.

    `gpu_allowed` is False when the user turned the GPU off: CPU paths are then no fallback.
    `container` is the one the output's name asks for when it is not the profile's (the ffmpeg
    and HandBrake habit of `-o x.mkv`): planned streams must fit it.
    """
    v = info.main_video
    if v is None:
        kinds = "audio-only file" if info.audio else "file with no video stream"
        raise MediadError(f"{info.path}: {kinds}, but profile {profile.name} makes video",
                          reason=Reason.NO_VIDEO)
    notes = []
    if container is None or container == profile.container:
        container = profile.container
    else:
        notes.append(f"container {container} from the output name (profile {profile.name} "
                     f"writes {profile.container})")
    stages = _plan_stages(profile, caps.device)
    stage_scale = profile.stage_scale
    tonemap, tonemap_why = hdr_decision(v, profile.video)
    video, fallbacks, warnings = _plan_video(info, profile, container, caps, gpu_allowed,
                                             stage_scale, tonemap)
    decode = _plan_decode(v, video, caps, analysed=bool(stages))
    if caps.device is not None and not decode.hardware and video.action == "encode":
        fallbacks.append(f"decode: {decode.reason}")
    stages_on_cuda = any(s.device.startswith("cuda") for s in stages)
    frames_on_gpu, frames_reason = _plan_residency(decode, video, v.pix_fmt, stages_on_cuda,
                                                   bool(stages))
    fallbacks += [f"stage {s.kind}: {r}" for s in stages for r in s.reasons]
    audio = plan_audio(info, profile, container)
    subtitles, sub_warnings = plan_subtitles(info, profile, container)
    warnings += sub_warnings
    attachments, cover_art, extra_warnings = plan_extras(info, container)
    warnings += extra_warnings
    timecode, timecode_notes, data_warnings = plan_data(info, container)
    notes += timecode_notes
    warnings += data_warnings
    warnings += [f"video #{extra.index} ({extra.codec} {extra.width}x{extra.height}) not kept: "
                 f"mediad keeps one video stream, #{v.index} (as ffmpeg picks: by its "
                 "pixels, the default flag counting 5 million)"
                 for extra in info.video if extra is not v]
    if video.action == "encode":
        if video.tonemap is not None:
            notes.append(f"{video.tonemap.describe()} ({tonemap_why})")
        elif profile.video.hdr == "tonemap" and not v.hdr:
            notes.append(f'hdr = "tonemap": the source is not HDR (transfer '
                         f'{v.color_transfer or "unspecified"}): nothing to tone-map')
        elif v.hdr and profile.video.bit_depth == 8:
            why = "use bit_depth = 10 to keep full quality, or hdr = \"tonemap\""
            warnings.append("HDR source encoded to 8-bit without tone mapping: colours keep the "
                            f"HDR transfer tags; {why}")
        if video.deinterlace in ("all", "interlaced"):
            notes.append(deinterlace_mode(v, profile.video.deinterlace)[1])
        elif v.interlaced:
            warnings.append(f"source is interlaced ({v.field_order}) but deinterlace = off: "
                            "encoded as it is")
        if video.hdr is not None:
            notes.append(f"HDR10 metadata carried: {video.hdr.describe()}")
            if video.hardware:
                warnings.append(f"{video.encoder} cannot be given the HDR10 mastering metadata "
                                "through PyAV: only the colour tags are written")
    start_offset = _start_offset(info, audio, subtitles)
    if start_offset:
        notes.append(f"timestamps rebased to start at 0: the source starts at "
                     f"{start_offset:.3f}s")
    faststart = profile.faststart and container in ("mp4", "mov")
    return Plan(
        input=info.path, output=str(output), profile=profile.name, container=container,
        format=CONTAINER_FORMAT[container], faststart=faststart, decode=decode,
        video=video, audio=audio, subtitles=subtitles,
        gpu=GpuDecision.of(caps, gpu_reason),
        frames_on_gpu=frames_on_gpu, frames_reason=frames_reason, stages=stages,
        attachments=attachments, cover_art=cover_art, start_offset=start_offset,
        discontinuous=info.discontinuous,
        on_decode_error=profile.on_decode_error, timecode=timecode, notes=notes, fallbacks=fallbacks,
        warnings=warnings)
