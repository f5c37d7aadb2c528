"""Planning of the audio, subtitle and attachment streams (the video is plan.py's)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from mediad.errors import MediadError, Reason
from mediad.formats import (
    CONTAINER_ATTACHMENTS,
    CONTAINER_AUDIO,
    CONTAINER_COVER_ART,
    CONTAINER_DEFAULT_AUDIO,
    CONTAINER_SUBTITLES,
    CONTAINER_TEXT_SUBTITLE,
)
from mediad.media.loudness import LoudnessTarget
from mediad.media.media_info import MediaInfo
from mediad.media.subtitles import codec_names, subtitle_kind
from mediad.profiles import AUDIO_MAX_BITRATE_PER_CHANNEL, Profile

AUDIO_ENCODERS = {"aac": "aac", "opus": "libopus"}


@dataclass(frozen=True, kw_only=True)
class StreamPlan:
    """What happens to one audio or subtitle stream (or attachment, or cover art)."""

    index: int
    action: Literal["copy", "encode", "convert", "drop"]  # convert: text subtitles, cue by cue
    source_codec: str
    reason: str
    codec: str | None = None
    encoder: str | None = None
    bit_rate: int | None = None
    channels: int | None = None
    sample_rate: int | None = None
    language: str | None = None
    loudness: LoudnessTarget | None = None  # the track's loudness normalised (two-pass)


def no_fit(info: MediaInfo, what: str, container: str, why: str) -> MediadError:
    """The one-line error for a planned stream the output's container cannot hold."""
    return MediadError(f"{info.path}: {what} does not fit {container} ({why})",
                       reason=Reason.UNSUPPORTED)


def plan_audio(info: MediaInfo, profile: Profile, container: str) -> list[StreamPlan]:
    a = profile.audio
    plans = []
    allowed = CONTAINER_AUDIO[container]
    for s in info.audio:
        fits = s.codec in allowed
        if a.codec == "none":
            plans.append(StreamPlan(index=s.index, action="drop", source_codec=s.codec,
                                    language=s.language, reason="profile drops audio"))
            continue
        target = a.codec if a.codec != "copy" else CONTAINER_DEFAULT_AUDIO[container]
        if target not in allowed:  # only when -o chose another container than the profile's
            raise no_fit(info, f"audio #{s.index} (encoded to {target})", container,
                          f"profile {profile.name}: use another container or profile")
        channels = min(s.channels, a.channels) if a.channels else s.channels
        if a.codec == "copy" and fits:
            reason = "profile asks to copy audio"
        elif a.codec != "copy" and s.codec == target and fits and channels == s.channels \
                and a.loudness is None:
            reason = f"source is already {target}: copied without re-encoding"
        else:
            reason = (f"{s.codec} does not fit {container}" if not fits
                      else f"profile asks for {target}")
            rate = 48000 if target == "opus" else s.sample_rate
            bit_rate = a.bit_rate_for(channels)
            # The profile could only check its bitrate against 8 channels: cap it for this track
            # (libopus refuses more than its limit; FFmpeg's aac would cap it without a word).
            per_channel = AUDIO_MAX_BITRATE_PER_CHANNEL.get(target)
            if per_channel and bit_rate > per_channel * channels:
                bit_rate = per_channel * channels
                reason += (f"; bitrate capped to {bit_rate // 1000}k ({target} takes at most "
                           f"{per_channel // 1000}k per channel)")
            loudness = LoudnessTarget(*a.loudness_target) if a.loudness_target else None
            if loudness is not None:
                reason += (f"; loudness normalised to {loudness.integrated:g} LUFS (true peak "
                           f"{loudness.true_peak:g} dBTP, range {loudness.lra:g} LU), two-pass")
            plans.append(StreamPlan(index=s.index, action="encode", source_codec=s.codec,
                                    codec=target, encoder=AUDIO_ENCODERS[target],
                                    bit_rate=bit_rate, channels=channels, sample_rate=rate,
                                    language=s.language, reason=f"encode to {target}: {reason}",
                                    loudness=loudness))
            continue
        plans.append(StreamPlan(index=s.index, action="copy", source_codec=s.codec, codec=s.codec,
                                channels=s.channels, sample_rate=s.sample_rate,
                                language=s.language, reason=reason))
    return plans


def plan_subtitles(info: MediaInfo, profile: Profile,
                    container: str) -> tuple[list[StreamPlan], list[str]]:
    """Copy what the container holds, convert other text subtitles, drop the rest (bitmaps)."""
    plans, warnings = [], []
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
        plans.append(StreamPlan(index=s.index, action=action, source_codec=s.codec, codec=target,
                                encoder=target if action == "convert" else None,
                                language=s.language, reason=reason))
    return plans, warnings


def plan_extras(info: MediaInfo, container: str) -> tuple[list[StreamPlan], list[StreamPlan],
                                                           list[str]]:
    """Attachments (fonts) and cover art: kept where the container holds them, else warned."""
    attachments, covers, warnings = [], [], []
    keep_files = container in CONTAINER_ATTACHMENTS
    for a in info.attachments:
        reason = "kept" if keep_files else f"{container} cannot hold attachments"
        attachments.append(StreamPlan(index=a.index, action="copy" if keep_files else "drop",
                                      source_codec=a.mimetype, reason=f"{a.filename}: {reason}"))
    if info.attachments and not keep_files:
        names = ", ".join(a.filename for a in info.attachments)
        warnings.append(f"{len(info.attachments)} attachment(s) dropped ({names}): {container} "
                        "cannot hold attachments (fonts for ASS subtitles need mkv)")
    for c in info.cover_art:
        keep = container in CONTAINER_COVER_ART
        covers.append(StreamPlan(index=c.index, action="copy" if keep else "drop",
                                 source_codec=c.codec, codec=c.codec,
                                 reason="cover art kept" if keep
                                 else f"{container} cannot hold cover art"))
        if not keep:
            warnings.append(f"cover art #{c.index} ({c.codec}) dropped: {container} cannot "
                            "hold attached pictures")
    return attachments, covers, warnings


# The containers whose muxers write a start timecode from the video stream's `timecode` tag: a
# tmcd track (MP4, MOV), a TIMECODE tag (Matroska, WebM), as the ffmpeg CLI carries it.
TIMECODE_CONTAINERS = ("mp4", "mov", "mkv", "webm")
TIMECODE_NOTE = "timecode"  # how the plan's note on it starts


def plan_data(info: MediaInfo, container: str) -> tuple[str | None, list[str], list[str]]:
    """The start timecode written (None: none), and the plan's notes and warnings on it and on
    the data streams, which are not kept (the ffmpeg CLI maps none by default either)."""
    notes, warnings = [], []
    timecode = info.timecode if container in TIMECODE_CONTAINERS else None
    if timecode and (why := _timecode_fault(timecode, info)):  # the muxer would drop it
        warnings.append(f"timecode {timecode} not kept: {why}")
        timecode = None
    elif timecode:
        notes.append(f"{TIMECODE_NOTE} {timecode} kept (" + ("a TIMECODE tag" if container in
                                                            ("mkv", "webm") else "a tmcd track")
                     + ")")
    elif info.timecode:
        warnings.append(f"timecode {info.timecode} not kept: {container} holds no timecode")
    for d in info.data:
        if not (d.timecode and timecode):
            warnings.append(f"data stream #{d.index} ({d.codec}) not kept: mediad keeps video, "
                            "audio, subtitles, attachments and cover art")
    return timecode, notes, warnings


def _timecode_fault(timecode: str, info: MediaInfo) -> str | None:
    """Why FFmpeg's muxers would refuse this timecode for this video (av_timecode_init):
    hh:mm:ss:ff with a frame number under the rate, drop-frame (`;`) at 29.97 or 59.94 only."""
    m = re.fullmatch(r"(\d\d):([0-5]\d):([0-5]\d)([:;.,])(\d\d)", timecode)
    v = info.main_video
    fps = round(v.fps) if v is not None and v.fps else None
    if m is None:
        return "not an hh:mm:ss:ff timecode"
    if fps and int(m[5]) >= fps:
        return f"frame {m[5]} of a {v.fps:g} fps video"  # type: ignore[union-attr]
    if m[4] in ";," and (v is None or v.fps is None or round(v.fps * 1001) not in (30000, 60000)):
        return "a drop-frame timecode needs 29.97 or 59.94 fps"
    return None


def loudness_targets(audio: list[StreamPlan]) -> dict[int, LoudnessTarget]:
    """The encoded tracks to normalise: audio stream index -> its target."""
    return {a.index: a.loudness for a in audio if a.action == "encode" and a.loudness is not None}
