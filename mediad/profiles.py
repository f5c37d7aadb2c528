"""Profiles: pydantic models of what a transcode should produce, loaded from profiles/*.toml."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from mediad.errors import InvalidFile, MediadError, Reason
from mediad.formats import (
    CONTAINER_VIDEO,
    PACKAGE_AUDIO,
    PACKAGE_VIDEO,
    PACKAGES,
    OutputKind,
)
from mediad.fsutil import read_toml_text
from mediad.profile_base import (
    VIDEO_MIN_BITRATE,
    FiniteFloat,
    Speed,
    StrictModel,
    kbit,
    parse_bitrate,
)
from mediad.profile_ladder import PackageSettings, RenditionSettings
from mediad.profile_stages import STAGE_KINDS, Stage

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin_profiles"
DEFAULT_PROFILE = "h264"

VideoCodec = Literal["h264", "hevc", "av1", "copy"]
AudioCodec = Literal["aac", "opus", "copy", "none"]

# Constant-quality ranges per codec (x264/x265 crf and NVENC cq: 0..51; SVT-AV1 crf: 1..63).
QUALITY_RANGE = {"h264": (0, 51), "hevc": (0, 51), "av1": (1, 63)}
DEFAULT_QUALITY = {"h264": 23, "hevc": 28, "av1": 32}
# Where a VMAF search (target_vmaf) looks by default: ab-av1's --min-crf/--max-crf defaults
# (10..46 for x264/x265, 10..55 for SVT-AV1); NVENC's cq takes the same scale.
SEARCH_RANGE = {"h264": (10, 46), "hevc": (10, 46), "av1": (10, 55)}

AV1_MAX_BITRATE = 100_000_000
# Opus's documented floor; FFmpeg's aac opens down to a few bit/s but sounds like noise there.
AUDIO_MIN_BITRATE = 6_000
# Per output channel: libopus refuses more than 256k (avcodec_open2 returns EINVAL); FFmpeg's aac
# clamps to 6144 bits per 1024-sample frame, 288k at 48 kHz, whatever is asked.
AUDIO_MAX_BITRATE_PER_CHANNEL = {"opus": 256_000, "aac": 288_000}
DEFAULT_AUDIO_BITRATE, AUDIO_BITRATE_PER_CHANNEL = 128_000, 64_000
# Where a profile's text comes from (parse_profile's validation context): see _given.
_FROM_FILE = "from_file"


def _given(model: type[BaseModel], info: ValidationInfo, value: Any) -> bool:
    """Whether a key that validation reached was really set by the profile's author.

    Field validators run only for keys given, so from a file every key they see was written there.
    A profile re-validated from its JSON dump (the daemon's worker) has every key given: there
    only a value off the default counts, and a file that passed has none of those to reject.
    """
    if isinstance(info.context, dict) and info.context.get(_FROM_FILE):
        return True
    assert info.field_name is not None
    return bool(value != model.model_fields[info.field_name].default)


class VideoSettings(StrictModel):
    codec: VideoCodec = "h264"
    encoder: Literal["auto", "gpu", "cpu"] = "auto"
    quality: StrictInt | None = None
    bitrate: str | None = None
    speed: Speed = "medium"
    max_height: StrictInt | None = Field(default=None, ge=16, le=8640)
    bit_depth: Literal[8, 10] = 8
    # Copy instead of re-encoding a source already in `codec` that this profile would not change
    # (the Tdarr/Unmanic "skip if already HEVC" rule): see media.plan.copy_mismatch.
    copy_if_matching: StrictBool = False
    # auto: deinterlace (bwdif) what the source flags as interlaced, as HandBrake decombs by
    # default; on: every frame; off: never.
    deinterlace: Literal["auto", "on", "off"] = "auto"
    # Never bigger than the source: an output that would pass the source's size times this is
    # stopped as soon as that shows (skipped_larger; the source untouched). None: no limit.
    max_size_ratio: float | None = Field(default=None, gt=0.0, le=10.0)
    # An HDR (PQ or HLG) source: tone-map it to SDR BT.709 (media.tonemap), keep it HDR, or
    # auto: tone-map when the output cannot carry HDR (8-bit, or H.264), keep it otherwise.
    hdr: Literal["keep", "tonemap", "auto"] = "auto"
    # Choose the constant-quality value per file: the highest (smallest output) whose VMAF,
    # measured on encoded samples of the source, reaches this (media.vmaf_search). Exclusive
    # with quality and bitrate; min_quality/max_quality bound the search (ab-av1's
    # --min-crf/--max-crf).
    target_vmaf: FiniteFloat | StrictInt | None = Field(default=None, gt=0, le=100)
    min_quality: StrictInt | None = None
    max_quality: StrictInt | None = None

    # First, so a copy profile hears that the key is not used rather than what is wrong with it.
    @field_validator("encoder", "quality", "bitrate", "speed", "max_height", "bit_depth",
                     "deinterlace", "hdr", "target_vmaf", "min_quality", "max_quality")
    @classmethod
    def _not_with_copy(cls, v: Any, info: ValidationInfo) -> Any:
        # Copy writes the source's packets: a user who sets max_height expects a smaller video.
        if info.data.get("codec") == "copy" and _given(cls, info, v):
            raise ValueError('not used with codec = "copy" (the video is copied as it is): '
                             "remove it or name a codec to encode to")
        return v

    @field_validator("bitrate")
    @classmethod
    def _bitrate(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        bps = parse_bitrate(v)
        if bps < VIDEO_MIN_BITRATE:
            raise ValueError(f"must be at least {kbit(VIDEO_MIN_BITRATE)} (is {v!r})")
        if info.data.get("codec") == "av1" and bps > AV1_MAX_BITRATE:
            raise ValueError(f"must be at most {AV1_MAX_BITRATE // 1_000_000}M for av1 "
                             "(SVT-AV1's limit)")
        return v

    @field_validator("quality", "min_quality", "max_quality")
    @classmethod
    def _quality_range(cls, v: int | None, info: ValidationInfo) -> int | None:
        codec = info.data.get("codec")
        if v is not None and codec in QUALITY_RANGE:
            lo, hi = QUALITY_RANGE[codec]
            if not lo <= v <= hi:
                raise ValueError(f"must be {lo}..{hi} for {codec}")
        return v

    @model_validator(mode="after")
    def _quality(self) -> VideoSettings:
        if self.quality is not None and self.bitrate is not None:
            raise ValueError("quality and bitrate are exclusive: set one")
        if self.target_vmaf is not None and (self.quality is not None or self.bitrate is not None):
            raise ValueError("target_vmaf chooses the quality per file: it is exclusive with "
                             f"{'quality' if self.quality is not None else 'bitrate'}; set one")
        if self.target_vmaf is None and (self.min_quality is not None
                                         or self.max_quality is not None):
            raise ValueError("min_quality and max_quality bound the search of target_vmaf: "
                             "set target_vmaf too")
        if (self.min_quality is not None and self.max_quality is not None
                and self.min_quality >= self.max_quality):
            raise ValueError(f"min_quality ({self.min_quality}) must be below max_quality "
                             f"({self.max_quality})")
        if self.copy_if_matching and self.codec == "copy":
            raise ValueError("copy_if_matching needs a codec to match: codec = \"copy\" always copies")
        if self.codec == "h264" and self.bit_depth == 10 and self.encoder == "gpu":
            raise ValueError("NVENC has no 10-bit H.264: use hevc or av1 for bit_depth = 10")
        return self

    @property
    def effective_quality(self) -> int | None:
        """The constant-quality value in force (None when a bitrate is set or on copy; with
        target_vmaf, the codec's default, where the search starts)."""
        if self.bitrate is not None or self.codec == "copy":
            return None
        return self.quality if self.quality is not None else DEFAULT_QUALITY[self.codec]

    @property
    def search_range(self) -> tuple[int, int]:
        """The quality values a target_vmaf search may choose from (low: better, bigger)."""
        lo, hi = SEARCH_RANGE.get(self.codec, (10, 46))
        if self.min_quality is not None:  # one bound given past the other's default: it wins
            lo, hi = self.min_quality, max(hi, self.min_quality + 1)
        if self.max_quality is not None:
            lo, hi = min(lo, self.max_quality - 1), self.max_quality
        return lo, hi


class AudioSettings(StrictModel):
    codec: AudioCodec = "aac"
    # Before bitrate, so the bitrate's limit can count the channels.
    channels: StrictInt | None = Field(default=None, ge=1, le=8)
    # Per track; without it, DEFAULT_AUDIO_BITRATE, and AUDIO_BITRATE_PER_CHANNEL for each
    # channel above stereo (a 5.1 track at 128k sounded poor: ffmpeg gives ~340k, HandBrake 384k).
    bitrate: str | None = None
    # EBU R128 loudness normalisation, two-pass loudnorm (media.loudness): the integrated
    # loudness to reach (LUFS), the true peak not to pass (dBTP), the loudness range (LU)
    # within which a track is only turned up or down (linear), not compressed.
    loudness: float | None = Field(default=None, ge=-70.0, le=-5.0)
    true_peak: float | None = Field(default=None, ge=-9.0, le=0.0)
    lra: float | None = Field(default=None, ge=1.0, le=50.0)

    # First, so a copy profile hears that the key is not used rather than what is wrong with it.
    @field_validator("channels", "bitrate", "loudness", "true_peak", "lra")
    @classmethod
    def _not_copied_or_dropped(cls, v: Any, info: ValidationInfo) -> Any:
        # Copied tracks keep their channels and rate, dropped ones have none: silently ignoring
        # channels = 1 would leave the user with the stereo they asked to lose.
        codec = info.data.get("codec")
        if codec in ("copy", "none") and _given(cls, info, v):
            what = "tracks are copied as they are" if codec == "copy" else "audio is dropped"
            raise ValueError(f'not used with codec = "{codec}" ({what}): '
                             "remove it or name a codec to encode to")
        return v

    @field_validator("bitrate")
    @classmethod
    def _bitrate(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        bps = parse_bitrate(v)
        if bps < AUDIO_MIN_BITRATE:
            raise ValueError(f"must be at least {kbit(AUDIO_MIN_BITRATE)} (is {v!r})")
        codec, channels = info.data.get("codec"), info.data.get("channels")
        per_channel = AUDIO_MAX_BITRATE_PER_CHANNEL.get(codec or "")
        # Without channels each track keeps its own, up to 8: a stereo source given more than
        # 512k of opus is for the plan to catch.
        if per_channel is not None and bps > per_channel * (channels or 8):
            where = f"with channels = {channels}" if channels else "(8 channels at most)"
            raise ValueError(f"must be at most {kbit(per_channel * (channels or 8))} for {codec} "
                             f"{where}: {kbit(per_channel)} per channel")
        return v


    @model_validator(mode="after")
    def _loudness(self) -> AudioSettings:
        if self.loudness is None and (self.true_peak is not None or self.lra is not None):
            raise ValueError("true_peak and lra shape loudness normalisation: set loudness too")
        return self

    def bit_rate_for(self, channels: int) -> int:
        """Bits per second for a track of `channels`: the profile's, or the default."""
        if self.bitrate is not None:
            return parse_bitrate(self.bitrate)
        return max(DEFAULT_AUDIO_BITRATE, AUDIO_BITRATE_PER_CHANNEL * channels)

    @property
    def loudness_target(self) -> tuple[float, float, float] | None:
        """(integrated LUFS, true peak dBTP, LRA LU) when the profile normalises loudness."""
        if self.loudness is None:
            return None
        return (self.loudness, -1.0 if self.true_peak is None else self.true_peak,
                20.0 if self.lra is None else self.lra)


class SubtitleSettings(StrictModel):
    mode: Literal["copy", "none"] = "copy"


class Profile(StrictModel):
    """A validated transcode profile."""

    name: str = Field(default="", exclude=True)
    description: str = ""
    container: OutputKind = "mp4"
    faststart: StrictBool = False
    # A source with corrupt or missing frames: warn (finish, say so in the report) or fail.
    on_decode_error: Literal["warn", "fail"] = "warn"
    video: VideoSettings = VideoSettings()
    audio: AudioSettings = AudioSettings()
    subtitles: SubtitleSettings = SubtitleSettings()
    stages: list[Stage] = []
    # A ladder: renditions encoded from one decode (container hls or dash).
    renditions: list[RenditionSettings] = Field(default=[], max_length=12)
    package: PackageSettings = PackageSettings()

    @model_validator(mode="after")
    def _cross(self) -> Profile:
        c, v, a = self.container, self.video.codec, self.audio.codec
        if self.video.target_vmaf is not None and self.is_ladder:
            raise ValueError("video.target_vmaf searches the quality of one output: a ladder's "
                             "renditions are not searched yet (set quality or bitrate per "
                             "rendition)")
        if self.video.target_vmaf is not None and self.changes_frames:
            raise ValueError("video.target_vmaf does not run with an upscale stage yet (the "
                             "samples would need the model too): set quality instead")
        if self.video.copy_if_matching and self.is_ladder:
            raise ValueError("video.copy_if_matching copies one output's video as it is: a "
                             "ladder's renditions are encoded from one decode")
        if self.video.max_size_ratio is not None and self.is_ladder:
            raise ValueError("video.max_size_ratio compares one output file with its source: a "
                             "ladder's renditions are several")
        if c in PACKAGES:
            return self._cross_package()
        for r in self.renditions:  # one file per rendition: each codec must fit the container
            allowed = CONTAINER_VIDEO[c]
            if r.codec and allowed is not None and r.codec not in allowed:
                raise ValueError(f"renditions: container {c} cannot hold {r.codec} video")
        if self.renditions and v == "copy":
            raise ValueError("renditions re-encode the video from one decode: video.codec "
                             "cannot be copy")
        if c == "webm" and (v not in ("av1", "copy") or a not in ("opus", "copy", "none")):
            raise ValueError("webm needs av1 video and opus audio")
        allowed_v = CONTAINER_VIDEO[c]
        if v != "copy" and allowed_v is not None and v not in allowed_v:
            raise ValueError(f"container {c} cannot hold {v} video")
        if c == "mov" and a == "opus":
            raise ValueError("mov cannot hold opus audio: use aac")
        if self.faststart and c not in ("mp4", "mov"):
            raise ValueError("faststart applies to mp4/mov only")
        kinds = [s.kind for s in self.stages]
        if v == "copy" and "upscale" in kinds:
            raise ValueError("an upscale stage changes the frames: video.codec cannot be copy")
        for kind in ("shots", "classify"):
            if kinds.count(kind) > 1:
                raise ValueError(f"stages: at most one {kind} stage")
        return self

    def _cross_package(self) -> Profile:
        c = self.container
        codecs = {self.video.codec, *(r.codec for r in self.renditions if r.codec)}
        if not codecs <= PACKAGE_VIDEO:
            raise ValueError(f"{c} re-encodes the video (segments start at keyframes mediad "
                             f"places): video.codec must be one of {sorted(PACKAGE_VIDEO)}")
        if self.audio.codec not in PACKAGE_AUDIO[c]:
            raise ValueError(f"{c} cannot carry {self.audio.codec} audio: use aac")
        if self.faststart:
            raise ValueError("faststart applies to mp4/mov only")
        heights = [r.height for r in self.renditions]
        if len(set(heights)) != len(heights):
            raise ValueError("renditions: two have the same height")
        return self

    @property
    def is_ladder(self) -> bool:
        """True when the profile makes a folder (an HLS/DASH set, or a file per rendition)."""
        return self.container in PACKAGES or bool(self.renditions)

    @property
    def changes_frames(self) -> bool:
        """True when a stage rewrites the frames (so the video must be re-encoded)."""
        return any(s.kind == "upscale" for s in self.stages)

    @property
    def stage_scale(self) -> int:
        """How many times larger the upscale stages make the frames (1: none)."""
        return math.prod(s.scale for s in self.stages if s.kind == "upscale")

    @property
    def extension(self) -> str:
        """File extension of the output container."""
        return self.container

    @property
    def output_suffix(self) -> str:
        """What follows the source's stem in the default output name: the container's extension
        for a file (`talk.mp4`), the profile's name for a ladder's folder (`talk.hls/`)."""
        return (self.name or "custom") if self.is_ladder else self.extension


def validation_errors(err: ValidationError, source: str) -> list[str]:
    """One line per error, 'SOURCE: key.path: reason' (profiles and the daemon config)."""
    errors = err.errors()
    # A bad list entry can also make its list "too short": report the inner error, not its echo.
    errors = [e for e in errors if not any(
        len(o["loc"]) > len(e["loc"]) and o["loc"][:len(e["loc"])] == e["loc"] for o in errors)]
    return [f"{source}: {_error_line(e)}" for e in errors]


def _error_line(error: ErrorDetails) -> str:
    """'key.path: reason' of one pydantic error, in the words of the profile's TOML."""
    parts = list(error["loc"])
    # A tagged union puts the stage kind in the path (stages.0.upscale.scale): drop it.
    if len(parts) > 2 and parts[0] == "stages" and parts[2] in STAGE_KINDS:
        del parts[2]
    msg = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        msg = "unknown key"
    elif error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        parts.append("kind")
        msg = f"must be one of {', '.join(STAGE_KINDS)}"
    loc = ".".join(str(p) for p in parts) or "(top level)"
    return f"{loc}: {msg}"


def parse_profile(text: str, source: str, name: str, base: Path | None = None) -> Profile:
    """Validate TOML text as a profile; errors name the source, the key path and the reason.

    Relative model and labels paths in stages are taken from `base` (the profile's folder).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise MediadError(f"{source}: not valid TOML: {e}", reason=Reason.BAD_PROFILE) from None
    if "name" in data:
        raise MediadError(f"{source}: name: unknown key (a profile is named by its file)",
                          reason=Reason.BAD_PROFILE)
    try:
        return Profile.model_validate({**data, "name": name},
                                      context={"base": base, _FROM_FILE: True})
    except ValidationError as e:
        raise InvalidFile(validation_errors(e, source), reason=Reason.BAD_PROFILE) from None


def builtin_names() -> list[str]:
    """Names of the built-in profiles."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def resolve_profile_path(name_or_path: str | Path) -> Path:
    """A profile is a path to a .toml file, or the stem of a built-in one."""
    text = str(name_or_path)
    if not text.strip():
        raise MediadError("profile name is empty: give a built-in name or a path to a .toml file",
                          reason=Reason.BAD_PROFILE)
    path = Path(text)
    if text.endswith(".toml") or "/" in text:
        if not path.is_file():
            raise MediadError(f"{path}: profile file not found", reason=Reason.BAD_PROFILE)
        return path
    builtin = BUILTIN_DIR / f"{text}.toml"
    if not builtin.is_file():
        raise MediadError(
            f"unknown profile {text!r}: built-in profiles are {', '.join(builtin_names())}, "
            "or give a path to a .toml file", reason=Reason.BAD_PROFILE)
    return builtin


def load_profile(name_or_path: str | Path | None = None) -> Profile:
    """Load and validate a profile by built-in name or path (default: h264)."""
    # Only None means the default: an empty name is a mistake (an unset variable, `-p ""`).
    path = resolve_profile_path(DEFAULT_PROFILE if name_or_path is None else name_or_path)
    shown = f"profiles/{path.name}" if path.parent.resolve() == BUILTIN_DIR.resolve() else str(path)
    text = read_toml_text(path, shown, "profile", "bad_profile")
    return parse_profile(text, shown, path.stem, base=path.resolve().parent)


def profile_schema() -> dict:
    """JSON schema of a profile file."""
    schema = Profile.model_json_schema()
    schema.get("properties", {}).pop("name", None)
    return schema
