"""The plan of a ladder: one decode, several renditions, packaged as HLS or DASH.

Each rendition is planned as a single-output transcode of its own height (encoder choice,
geometry, colour, deinterlacing: the same decisions, the same code), then gets the rate
control and the aligned keyframes that streaming needs.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from pathlib import Path

from mediad.errors import MediadError, Reason
from mediad.formats import PACKAGES
from mediad.gpu import Capabilities
from mediad.media.job_plan import JobPlan, OutputPlan, Package, resided, with_stream_options
from mediad.media.media_info import MediaInfo
from mediad.media.plan import host_frames_reason, make_plan
from mediad.media.plan_records import Plan, VideoPlan
from mediad.media.plan_streams import (
    TIMECODE_NOTE,
    StreamPlan,
    plan_audio,
    plan_extras,
    plan_subtitles,
)

# A bit-rate ladder without max_bitrate: peaks up to 1.5x the average, a 2-peak-second buffer
from mediad.profile_base import parse_bitrate
from mediad.profile_ladder import RenditionSettings

# A bit-rate ladder without max_bitrate: peaks up to 1.5x the average, a 2-peak-second buffer
from mediad.profiles import Profile

# A bit-rate ladder without max_bitrate: peaks up to 1.5x the average, a 2-peak-second buffer
# (Apple's authoring spec allows peaks to 2x; players pick a variant by BANDWIDTH, the peak).
_PEAK_OVER_AVERAGE = 1.5


def _rendition_profile(profile: Profile, r: RenditionSettings, container: str) -> Profile:
    """The single-output profile one rendition is planned with (fMP4 segments: mp4 rules)."""
    v = profile.video
    rate = {"bitrate": r.bitrate, "quality": None} if r.bitrate else \
        {"quality": r.quality, "bitrate": None} if r.quality is not None else {}
    video = v.model_copy(update={"codec": r.codec or v.codec, "speed": r.speed or v.speed,
                                 "max_height": r.height, **rate})
    return profile.model_copy(update={"container": container, "video": video, "renditions": []})


def plan_ladder(info: MediaInfo, profile: Profile, caps: Capabilities, output: Path,
                gpu_reason: str = "", gpu_allowed: bool = True) -> JobPlan:
    """Plan every rendition of `profile` for `info`; renditions larger than the source are
    skipped (never upscaled, but for an upscale stage's own factor: the rungs are then cut
    from its output), and an empty ladder is an error.

    A rung named N (1080, 720, ...) is a box of N lines and 16:9 of them (1920x1080), turned
    upright for a portrait source, as players and sites label sizes: a 1920x800 film gets a
    1080p rendition of 1920x800 and a 720p one of 1280x534, a 1080x1920 phone video a 720p one
    of 720x1280. A source smaller than a rung's box both ways skips that rung.
    """
    v = info.main_video
    if v is None:
        kinds = "audio-only file" if info.audio else "file with no video stream"
        raise MediadError(f"{info.path}: {kinds}, but profile {profile.name} makes a "
                          "video ladder", reason=Reason.NO_VIDEO)
    stage = profile.stage_scale  # the frames the renditions are cut from: upscaled first
    source_height = _source_height(info) * stage
    if not profile.renditions:  # one rendition: the profile's [video] as it is
        height = min(profile.video.max_height or 1 << 16, source_height)
        return _ladder(info, profile, caps, output, gpu_reason, gpu_allowed,
                       [(f"{height}p", RenditionSettings(height=height))], [])
    shown_w, shown_h = _display_size(info)
    display = (shown_w * stage, shown_h * stage)
    what = f"the source upscaled {stage}x" if stage > 1 else "the source"
    rungs: list[tuple[str, RenditionSettings]] = []  # (name, settings with the height to make)
    skipped: list[str] = []
    for r in sorted(profile.renditions, key=lambda r: -r.height):
        box = _rung_box(r.height, display)
        if display[0] < box[0] and display[1] < box[1]:
            skipped.append(f"{r.height}p: larger than {what} ({display[0]}x{display[1]} "
                           f"within {box[0]}x{box[1]}); renditions are never upscaled")
            continue
        scale = min(Fraction(box[0], display[0]), Fraction(box[1], display[1]), Fraction(1))
        rungs.append((f"{r.height}p", r.model_copy(update={"height": int(source_height * scale)})))
    return _ladder(info, profile, caps, output, gpu_reason, gpu_allowed, rungs, skipped)


def _ladder(info: MediaInfo, profile: Profile, caps: Capabilities, output: Path,
            gpu_reason: str, gpu_allowed: bool, rungs: list[tuple[str, RenditionSettings]],
            skipped: list[str]) -> JobPlan:
    """The ladder of `rungs` (tallest first), each planned as a single output of its height."""
    v = info.main_video
    assert v is not None
    package: Package = profile.container if profile.container in PACKAGES else "files"  # type: ignore[assignment]
    container = "mp4" if package != "files" else profile.container
    planned: list[tuple[str, RenditionSettings, Plan]] = []
    for name, r in rungs:
        plan = make_plan(info, _rendition_profile(profile, r, container), caps, output,
                         gpu_reason, gpu_allowed=gpu_allowed)
        if any(p.video.height == plan.video.height for _, _, p in planned):
            skipped.append(f"{name}: the same size as another rendition")
            continue
        planned.append((name, r, plan))
    if not planned:
        raise MediadError(f"{info.path}: no rendition of profile {profile.name} fits this "
                          f"{v.width}x{v.height} source ({'; '.join(skipped)})",
                          reason=Reason.UNSUPPORTED)
    fps = v.fps or 25.0
    gop = max(1, round(profile.package.keyframe_seconds * fps))
    top = planned[0][2].video
    aspect = Fraction(top.width, top.height) * _sar(top)
    renditions = [_rendition(name, r, plan.video, gop, aspect) for name, r, plan in planned]
    if package == "files":
        stem = Path(info.path).stem
        renditions = [replace(r, file=f"{stem}.{r.name}.{container}") for r in renditions]
    base = planned[0][2]
    # The base plan's word on subtitles, attachments and cover art is about an MP4 file; a
    # package says its own (below)
    mp4_words = set() if package == "files" else \
        {*plan_subtitles(info, profile, container)[1], *plan_extras(info, container)[2]}
    warnings = [w for w in base.warnings if w not in mp4_words]
    notes = base.notes
    if package != "files":
        warnings += _package_extras(info, package)
        if base.timecode:  # the segmenter writes none
            warnings.append(f"timecode {base.timecode} not kept: {package} sets carry none")
            notes = [n for n in notes if not n.startswith(TIMECODE_NOTE)]
    fallbacks = list(base.fallbacks)
    on_gpu, frames_reason = _residency(base, v.pix_fmt)
    base = replace(base, frames_on_gpu=on_gpu, frames_reason=frames_reason)
    renditions = [resided(r, on_gpu) for r in renditions]
    kept_audio = [_package_audio(a, info, profile, package) for a in base.audio
                  if a.action != "drop"]
    subtitles = _package_subtitles(info, profile, package, len(renditions), base.subtitles,
                                   warnings)
    # A file of a ladder carries what a single output of its container would (carry_over);
    # the subtitles are the set's own (above), in every file or as HLS renditions. The base
    # keeps every decision, the dropped tracks with their reason, for the plan's record.
    dropped_audio = [a for a in base.audio if a.action == "drop"]
    base = replace(base, container=container, subtitles=subtitles,
                   audio=[*kept_audio, *dropped_audio], warnings=warnings, notes=notes,
                   timecode=base.timecode if package == "files" else None)
    if package != "files":  # the segmenter writes neither: dropped (and warned of, above)
        base = replace(base, attachments=_dropped(base.attachments, f"{package} sets carry no "
                                                  "attachments"),
                       cover_art=_dropped(base.cover_art, f"{package} sets carry no attached "
                                          "pictures"))
    return JobPlan(base=base, package=package, container=container, output=str(output),
                   outputs=renditions, audio=kept_audio,
                   subtitles=[s for s in subtitles if s.action != "drop"],
                   segment_seconds=profile.package.segment_seconds,
                   keyframe_seconds=profile.package.keyframe_seconds,
                   skipped=skipped, warnings=warnings, fallbacks=fallbacks)


def _residency(base: Plan, source_pix_fmt: str) -> tuple[bool, str]:
    """Whether the decoded frames stay in GPU memory, each rendition scaled from them there
    (PyAV's FFmpeg has no scale_cuda: torch scales), and why (not)."""
    if (host := host_frames_reason(base.decode, base.video, source_pix_fmt)) is not None:
        return False, host
    if base.stages:
        return False, "the model stages of a ladder take host frames: NVDEC frames downloaded once"
    return True, "NVDEC frames stay in GPU memory; each rendition is scaled from them in torch"


# Audio a package's players take as it is (HLS: Apple's players, AAC; DASH: AAC or Opus).
_PACKAGE_COPY = {"hls": {"aac"}, "dash": {"aac", "opus"}}


def _package_audio(a: StreamPlan, info: MediaInfo, profile: Profile,
                   package: Package) -> StreamPlan:
    """The track as the package carries it: a copy the package's players would refuse (Opus,
    MP3 or AC-3 into HLS) is encoded to AAC instead, as planned for an AAC profile."""
    if package == "files" or a.action != "copy" or a.source_codec in _PACKAGE_COPY[package]:
        return a
    aac = profile.model_copy(update={"audio": profile.audio.model_copy(
        update={"codec": "aac", "bitrate": profile.audio.bitrate or "128k"})})
    planned = next(p for p in plan_audio(info, aac, "mp4") if p.index == a.index)
    return replace(planned, reason=f"{package} players do not all play {a.source_codec}: "
                                   "encoded to aac")


def _package_extras(info: MediaInfo, package: Package) -> list[str]:
    """The word on the attachments and cover art an HLS or DASH set does not carry."""
    words = []
    if info.attachments:
        names = ", ".join(a.filename for a in info.attachments)
        words.append(f"{len(info.attachments)} attachment(s) dropped ({names}): {package} sets "
                     "carry no attachments")
    words += [f"cover art #{c.index} ({c.codec}) dropped: {package} sets carry no attached "
              "pictures" for c in info.cover_art]
    return words


def _package_subtitles(info: MediaInfo, profile: Profile, package: Package, variants: int,
                       planned: list[StreamPlan], warnings: list[str]) -> list[StreamPlan]:
    """The decision on every subtitle track of the set (the kept ones in the order the set
    carries them, then the dropped ones with their reason): in every file as a single output of
    that container would (`planned`); in HLS as WebVTT renditions of one group (FFmpeg's
    segmenter cuts one per video variant, so at most one per rendition); not in DASH yet.
    Warns of each dropped."""
    if package == "files":
        return planned
    if package == "dash":
        if any(s.action != "drop" for s in planned):
            warnings.append("subtitles are not carried into DASH sets yet: dropped")
        return _dropped(planned, "DASH sets do not carry subtitles yet")
    plans, dropped = plan_subtitles(info, profile, "hls")
    warnings += dropped
    # The source's default track first: it rides with the top rendition and is the default
    flagged = {s.index for s in info.subtitles if "default" in s.dispositions}
    kept = sorted((s for s in plans if s.action != "drop"), key=lambda s: s.index not in flagged)
    too_many = f"an HLS set of {variants} rendition(s) carries at most {variants} subtitle " \
               "track(s)"
    for s in kept[variants:]:
        warnings.append(f"subtitle stream #{s.index} dropped: {too_many}")
    return [*kept[:variants], *_dropped(kept[variants:], too_many),
            *(s for s in plans if s.action == "drop")]


def _dropped(tracks: list[StreamPlan], reason: str) -> list[StreamPlan]:
    """The tracks as the plan records them when the output cannot carry them."""
    return [s if s.action == "drop" else replace(s, action="drop", reason=reason)
            for s in tracks]


def _source_height(info: MediaInfo) -> int:
    v = info.main_video
    assert v is not None
    return v.width if v.rotation % 180 else v.height


def _display_size(info: MediaInfo) -> tuple[int, int]:
    """The source's picture as shown: upright, its pixels' aspect applied to the width."""
    v = info.main_video
    assert v is not None
    w, h = (v.height, v.width) if v.rotation % 180 else (v.width, v.height)
    num, _, den = v.sample_aspect_ratio.partition("/")
    sar = Fraction(int(num), int(den or 1)) if int(num or 0) > 0 and int(den or 1) > 0 \
        else Fraction(1)
    if v.rotation % 180:
        sar = 1 / sar  # a quarter turn swaps the pixel's sides
    return max(1, round(w * sar)), h


def _rung_box(lines: int, display: tuple[int, int]) -> tuple[int, int]:
    """The (width, height) a rung of `lines` holds: 16:9, upright for a portrait source."""
    wide = round(lines * 16 / 9)
    return (wide, lines) if display[0] >= display[1] else (lines, wide)


def _sar(video: VideoPlan) -> Fraction:
    num, _, den = video.sample_aspect_ratio.partition("/")
    return Fraction(int(num), int(den or 1)) if int(num or 0) > 0 and int(den or 1) > 0 \
        else Fraction(1)


def _rendition(name: str, r: RenditionSettings, video: VideoPlan, gop: int,
               aspect: Fraction) -> OutputPlan:
    """The rendition's video with streaming's rate control, aligned keyframes, and the top
    rendition's display aspect exactly (even sizes round it: 426x240 is not 16:9 with square
    pixels, and DASH refuses an adaptation set of mixed aspects)."""
    sar = aspect * video.height / video.width
    peak = None
    # SVT-AV1 takes a peak only in CRF mode ("Max Bitrate only supported with CRF mode"): a
    # target bit rate there is its own VBR.
    if video.bit_rate and video.encoder != "libsvtav1":
        peak = parse_bitrate(r.max_bitrate) if r.max_bitrate else \
            int(video.bit_rate * _PEAK_OVER_AVERAGE)
    video = replace(video, sample_aspect_ratio=f"{sar.numerator}/{sar.denominator}")
    return with_stream_options(OutputPlan(name=name, video=video, max_bit_rate=peak, gop=gop))
