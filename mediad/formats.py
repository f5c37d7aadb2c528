"""Container knowledge in one place: what each container holds, its muxer, its file names."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Container = Literal["mp4", "mkv", "webm", "mov"]
# Segmented streaming sets (a folder: manifest, init sections, fMP4 segments).
Package = Literal["hls", "dash"]
PACKAGES = ("hls", "dash")
# What a profile's `container` may name (one Literal: one clear error for a typo).
OutputKind = Literal["mp4", "mkv", "webm", "mov", "hls", "dash"]
# What their fMP4 (CMAF) segments carry; HLS players (Apple's) take no Opus.
PACKAGE_VIDEO = {"h264", "hevc", "av1"}
PACKAGE_AUDIO = {"hls": {"aac", "copy", "none"}, "dash": {"aac", "opus", "copy", "none"}}

# Which codecs each container can carry (what we produce or copy into it).
CONTAINER_VIDEO: dict[str, set[str] | None] = {
    "mp4": {"h264", "hevc", "av1", "mpeg4", "vp9"},
    "mov": {"h264", "hevc", "prores", "mpeg4"},
    "mkv": None,  # Matroska carries nearly anything: its muxer says (plan.muxer_takes)
    "webm": {"av1", "vp9", "vp8"},
}
CONTAINER_AUDIO = {
    "mp4": {"aac", "mp3", "opus", "ac3", "eac3", "alac", "flac"},
    "mov": {"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s24le"},
    # Matroska holds nearly anything; these are the codecs players handle there.
    "mkv": {"aac", "mp3", "opus", "vorbis", "flac", "ac3", "eac3", "dts", "truehd", "alac",
            "pcm_s16le", "pcm_s24le", "pcm_f32le", "mp2"},
    "webm": {"opus", "vorbis"},
}
CONTAINER_SUBTITLES = {
    "mp4": {"mov_text"},
    "mov": {"mov_text"},
    "mkv": {"subrip", "srt", "ass", "ssa", "hdmv_pgs_subtitle", "dvd_subtitle", "dvb_subtitle",
            "webvtt", "text"},
    "webm": {"webvtt"},
    "hls": {"webvtt"},  # a set's subtitle renditions: segmented WebVTT, as Apple's spec has it
}
# The text subtitle codec each container gets when it cannot hold a text stream as it is.
CONTAINER_TEXT_SUBTITLE = {"mp4": "mov_text", "mov": "mov_text", "mkv": "subrip", "webm": "webvtt",
                           "hls": "webvtt"}
# The audio codec a copied track becomes when the container cannot hold it as it is.
CONTAINER_DEFAULT_AUDIO = {"mp4": "aac", "mov": "aac", "mkv": "aac", "webm": "opus"}
CONTAINER_FORMAT = {"mp4": "mp4", "mov": "mov", "mkv": "matroska", "webm": "webm"}
# File name extensions that fit each container, as players and media servers read them.
CONTAINER_SUFFIXES = {"mp4": (".mp4", ".m4v"), "mov": (".mov", ".qt"), "mkv": (".mkv",),
                      "webm": (".webm",)}
# Containers that carry attachments (fonts), and cover art (FFmpeg's mov muxer writes it only
# in MP4 mode: a MOV file loses it).
CONTAINER_ATTACHMENTS = {"mkv"}
CONTAINER_COVER_ART = {"mp4", "mkv"}


def container_for_path(path: Path) -> Container | None:
    """The container a file name asks for by its extension (None: not one mediad writes)."""
    suffix = path.suffix.lower()
    for container, suffixes in CONTAINER_SUFFIXES.items():
        if suffix in suffixes:
            return container  # type: ignore[return-value]
    return None


def all_suffixes() -> list[str]:
    """Every output extension mediad knows, for error messages."""
    return [s for suffixes in CONTAINER_SUFFIXES.values() for s in suffixes]
