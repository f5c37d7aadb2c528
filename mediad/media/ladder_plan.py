"""The plan of a ladder: one decode, several renditions, packaged as HLS or DASH.

Each rendition is planned as a single-output transcode of its own height (encoder choice,
geometry, colour, deinterlacing: the same decisions, the same code), then gets the rate
control and the aligned keyframes that streaming needs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Literal

from mediad.errors import MediadError, Reason
from mediad.formats import PACKAGES
from mediad.gpu import Capabilities
from mediad.media.encoders import gop_options
from mediad.media.plan import Plan, VideoPlan, host_frames_reason, make_plan, software_video
from mediad.media.plan_streams import StreamPlan, plan_audio, plan_extras, plan_subtitles
from mediad.media.probe import MediaInfo
from mediad.profiles import Profile, RenditionSettings, parse_bitrate

# hls/dash: a streaming set; files: one file per rendition (a profile's file container);
# file: a single transcode's one output (single_output).
Package = Literal["hls", "dash", "files", "file"]
# A bit-rate ladder without max_bitrate: peaks up to 1.5x the average, a 2-peak-second buffer
# (Apple's authoring spec allows peaks to 2x; players pick a variant by BANDWIDTH, the peak).
_PEAK_OVER_AVERAGE = 1.5


@dataclass(frozen=True, kw_only=True)
class OutputPlan:
    """One output of a run (a ladder's rendition, or a single transcode's video): its name
    (`720p`), its video plan (geometry, encoder, the reason for it), its rate control and how
    the decoded frames reach its encoder."""

    name: str
    video: VideoPlan
    max_bit_rate: int | None  # the VBV peak, with bit_rate (None: constant quality)
    gop: int  # frames between keyframes
    file: str | None = None  # files: its file's name in the folder (<stem>.<name>.<ext>)
    frames: str = ""  # how the decoded frames reach its encoder (scaled where, downloaded when)


@dataclass(frozen=True, kw_only=True)
class LadderPlan:
    """What the engine runs: decode once (`base`: decode, audio and timeline decisions), and
    encode every output (`renditions`). A ladder's, or a single transcode's (single_output)."""

    base: Plan  # the single-output plan of the tallest rendition
    package: Package
    container: str  # of each file (files, file), or of the segments (fMP4: mp4)
    output: str  # the folder (a single output: its file)
    renditions: list[OutputPlan]
    audio: list[StreamPlan]  # the audio tracks, each one output track (an HLS group member)
    subtitles: list[StreamPlan]  # the text tracks kept: in every file, or HLS WebVTT renditions
    segment_seconds: float
    keyframe_seconds: float
    skipped: list[str]  # renditions not made, and why
    warnings: list[str]
    fallbacks: list[str]  # what runs in software although the plan wanted the GPU, and why

    @property
    def audio_names(self) -> list[str]:
        """A name per audio track, unique, for folders and reports: audio (the only one),
        audio-eng, audio-2..."""
        names: list[str] = []
        for i, a in enumerate(self.audio, 1):
            name = f"audio-{a.language}" if a.language else \
                "audio" if len(self.audio) == 1 else f"audio-{i}"
            names.append(name if name not in names else f"{name}-{i}")
        return names

    @property
    def manifest(self) -> str | None:
        """The playlist or manifest players open; None for a folder of files."""
        return {"hls": "master.m3u8", "dash": "manifest.mpd"}.get(self.package)

    def to_dict(self) -> dict:
        return asdict(self)

    def with_software_decode(self, reason: str) -> LadderPlan:
        """The same plan decoded in software (NVDEC failed or refused the stream at run time)."""
        base = self.base.with_software_decode(reason)
        return replace(self, base=base, fallbacks=[*self.fallbacks, base.fallbacks[-1]],
                       renditions=[_resided(r, False) for r in self.renditions])

    def with_software_rendition(self, name: str, reason: str) -> LadderPlan:
        """The same plan with one rendition on its software encoder (NVENC refused that sink
        at run time); the others keep theirs."""
        renditions = [_resided(_with_stream_options(replace(r, video=software_video(r.video, reason))),
                               self.base.frames_on_gpu)
                      if r.name == name else r for r in self.renditions]
        return replace(self, renditions=renditions,
                       fallbacks=[*self.fallbacks, f"rendition {name}: {reason}"])


def single_output(plan: Plan) -> LadderPlan:
    """A single transcode as the engine runs it: one rendition, the plan's own video (encoded
    or copied), into the plan's one file."""
    video = OutputPlan(name="video", video=plan.video, max_bit_rate=None, gop=0,
                          frames=plan.frames_reason)
    return LadderPlan(base=plan, package="file", container=plan.container, output=plan.output,
                      renditions=[video], audio=[a for a in plan.audio if a.action != "drop"],
                      subtitles=[s for s in plan.subtitles if s.action in ("copy", "convert")],
                      segment_seconds=0.0, keyframe_seconds=0.0, skipped=[],
                      warnings=plan.warnings, fallbacks=plan.fallbacks)


def _rendition_profile(profile: Profile, r: RenditionSettings, container: str) -> Profile:
    """The single-output profile one rendition is planned with (fMP4 segments: mp4 rules)."""
    v = profile.video
    rate = {"bitrate": r.bitrate, "quality": None} if r.bitrate else \
        {"quality": r.quality, "bitrate": None} if r.quality is not None else {}
    video = v.model_copy(update={"codec": r.codec or v.codec, "speed": r.speed or v.speed,
                                 "max_height": r.height, **rate})
    return profile.model_copy(update={"container": container, "video": video, "renditions": []})


def plan_ladder(info: MediaInfo, profile: Profile, caps: Capabilities, output: Path,
                gpu_reason: str = "", gpu_allowed: bool = True) -> LadderPlan:
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
        kinds = "audio-only" if info.audio else "has no video stream"
        raise MediadError(f"{info.path}: {kinds} file, but profile {profile.name} makes a "
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
            skipped: list[str]) -> LadderPlan:
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
    if package != "files":
        warnings += _package_extras(info, package)
    fallbacks = list(base.fallbacks)
    on_gpu, frames_reason = _residency(base, v.pix_fmt)
    base = replace(base, frames_on_gpu=on_gpu, frames_reason=frames_reason)
    renditions = [_resided(r, on_gpu) for r in renditions]
    kept_audio = [_package_audio(a, info, profile, package) for a in base.audio
                  if a.action != "drop"]
    subtitles = _package_subtitles(info, profile, package, len(renditions), base.subtitles,
                                   warnings)
    # A file of a ladder carries what a single output of its container would (carry_over);
    # the subtitles are the set's own (above), in every file or as HLS renditions.
    base = replace(base, container=container, subtitles=[], audio=kept_audio, warnings=warnings)
    if package != "files":
        base = replace(base, attachments=[], cover_art=[])
    return LadderPlan(base=base, package=package, container=container,
                      output=str(output), renditions=renditions,
                      audio=kept_audio, subtitles=subtitles,
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


def _resided(r: OutputPlan, on_gpu: bool) -> OutputPlan:
    """The rendition with the word on how its frames reach its encoder."""
    v = r.video
    frames = "host frames, scaled in libavfilter" if not on_gpu else \
        "scaled on the GPU -> NVENC, no host copy" if v.hardware else \
        f"scaled on the GPU, downloaded at {v.width}x{v.height} for {v.encoder}"
    return replace(r, frames=frames)


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
    """The subtitle tracks the set carries: in every file as a single output of that container
    would (`planned`); in HLS as WebVTT renditions of one group (FFmpeg's segmenter cuts one
    per video variant, so at most one per rendition); not in DASH yet. Warns of each dropped."""
    if package == "files":
        return [s for s in planned if s.action != "drop"]
    if package == "dash":
        if any(s.action != "drop" for s in planned):
            warnings.append("subtitles are not carried into DASH sets yet: dropped")
        return []
    plans, dropped = plan_subtitles(info, profile, "hls")
    warnings += dropped
    # The source's default track first: it rides with the top rendition and is the default
    flagged = {s.index for s in info.subtitles if "default" in s.dispositions}
    kept = sorted((s for s in plans if s.action != "drop"), key=lambda s: s.index not in flagged)
    for s in kept[variants:]:
        warnings.append(f"subtitle stream #{s.index} dropped: an HLS set of {variants} "
                        f"rendition(s) carries at most {variants} subtitle track(s)")
    return kept[:variants]


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
    return _with_stream_options(OutputPlan(name=name, video=video, max_bit_rate=peak, gop=gop))


def _with_stream_options(r: OutputPlan) -> OutputPlan:
    """The rendition with its encoder's keyframe and VBV options added."""
    v = r.video
    options = {**v.options, **gop_options(v.encoder, r.gop, v.options)}
    if r.max_bit_rate:
        options.update({"maxrate": str(r.max_bit_rate), "bufsize": str(2 * r.max_bit_rate)})
    return replace(r, video=replace(v, options=options))


def format_ladder_plan(plan: LadderPlan) -> str:
    """Human-readable ladder plan for `mediad plan`: the base plan, then each rendition."""
    from mediad.media.plan import format_plan

    lines = format_plan(plan.base).splitlines()
    lines[1] = f"output:  {plan.output}/ ({plan.package}, {plan.manifest}, segments of " \
               f"{plan.segment_seconds:g} s, keyframes every {plan.keyframe_seconds:g} s)" \
        if plan.manifest else f"output:  {plan.output}/ (one {plan.container} file per rendition)"
    lines = [ln for ln in lines if not ln.startswith(("video:", "warning:"))]
    for r in plan.renditions:
        v = r.video
        rc = f"{v.bit_rate // 1000}k (peak {r.max_bit_rate // 1000}k)" \
            if v.bit_rate and r.max_bit_rate else f"quality {v.quality}"
        lines.append(f"rendition: {r.name} {v.codec} via {v.encoder} {v.width}x{v.height} "
                     f"{v.pix_fmt} {rc}" + (f" -> {r.file}" if r.file else "") + f" - {v.reason}"
                     + (f"; frames: {r.frames}" if r.frames else ""))
    lines += [f"skipped: {s}" for s in plan.skipped]
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)
