"""MediaInfo: what is in a media file (streams, codecs, size, duration, rotation, colour, ...)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import av

from mediad.errors import MediadError

HDR_TRANSFERS = {"smpte2084", "arib-std-b67"}


@dataclass(frozen=True)
class VideoInfo:
    """One video stream."""

    index: int
    codec: str
    width: int
    height: int
    pix_fmt: str
    bit_depth: int
    fps: float | None
    time_base: str
    duration: float | None
    frames: int | None
    bit_rate: int | None  # the stream's, a Matroska BPS tag, or the file's minus known audio rates
    rotation: int  # degrees of display rotation (counter-clockwise, as FFmpeg reports it)
    sample_aspect_ratio: str
    color_space: str | None
    color_range: str | None
    color_transfer: str | None
    color_primaries: str | None
    hdr: bool
    language: str | None

    @property
    def display_size(self) -> tuple[int, int]:
        """Width and height as shown, after rotation."""
        return (self.height, self.width) if self.rotation % 180 else (self.width, self.height)


@dataclass(frozen=True)
class AudioInfo:
    """One audio stream."""

    index: int
    codec: str
    channels: int
    sample_rate: int
    bit_rate: int | None
    language: str | None
    title: str | None


@dataclass(frozen=True)
class SubtitleInfo:
    """One subtitle stream."""

    index: int
    codec: str
    language: str | None


@dataclass(frozen=True)
class MediaInfo:
    """What is in one file."""

    path: str
    size: int
    format: str
    duration: float | None
    bit_rate: int | None
    video: list[VideoInfo] = field(default_factory=list)
    audio: list[AudioInfo] = field(default_factory=list)
    subtitles: list[SubtitleInfo] = field(default_factory=list)
    chapters: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def main_video(self) -> VideoInfo | None:
        """The video stream a transcode uses (the first one)."""
        return self.video[0] if self.video else None

    def to_dict(self) -> dict:
        """Plain data for --json and reports."""
        return asdict(self)


def _int_tag(tags: dict[str, str], *names: str) -> int | None:
    """The first of these tags that holds a positive integer."""
    for name in names:
        value = tags.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def _bit_depth(pix_fmt: str | None) -> int:
    if not pix_fmt:
        return 8
    try:
        fmt = av.VideoFormat(pix_fmt)
    except (ValueError, av.FFmpegError):
        return 8
    return max((c.bits for c in fmt.components), default=8)


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def _lang(stream: av.stream.Stream) -> str | None:
    lang = stream.metadata.get("language")
    return None if lang in (None, "", "und") else lang


def open_input(path: Path, **kwargs: object) -> av.container.InputContainer:
    """Open a media file for reading, turning every failure into a one-line MediadError."""
    if not path.exists():
        raise MediadError(f"{path}: no such file", reason="missing_input")
    if path.is_dir():
        raise MediadError(f"{path}: is a directory, not a media file", reason="not_media")
    if not os.access(path, os.R_OK):
        raise MediadError(f"{path}: not readable (permission denied)", reason="unreadable")
    if path.stat().st_size == 0:
        raise MediadError(f"{path}: file is empty (0 bytes)", reason="not_media")
    try:
        # Metadata in a broken or legacy encoding must not stop a transcode: replace bad bytes.
        container = av.open(str(path), "r", metadata_errors="replace", **kwargs)
    except av.InvalidDataError:
        container = _sniff_container(path)
        if container:
            raise MediadError(f"{path}: truncated or corrupt {container} file (FFmpeg cannot "
                              "read its header)", reason="corrupt") from None
        raise MediadError(f"{path}: not a media file (no known container format)",
                          reason="not_media") from None
    except av.FFmpegError as e:
        raise MediadError(f"{path}: cannot open: {e.strerror or e}", reason="not_media") from None
    fmt = container.format.name
    if fmt in _TEXT_ART_FORMATS or fmt == "image2" or fmt.endswith("_pipe"):
        container.close()
        what = "a text file" if fmt in _TEXT_ART_FORMATS else "a still image"
        raise MediadError(f"{path}: {what} ({container.format.long_name}), not a video",
                          reason="not_media")
    return container


# FFmpeg demuxers that render text files (.txt, .nfo, .ans) as video: a notes file in a
# watched folder must fail as not media, not become a video of its text.
_TEXT_ART_FORMATS = frozenset({"tty", "bin", "xbin", "adf", "idf"})


def codec_name(cc: av.codec.context.CodecContext) -> str:
    """The codec's own name (av1, mp3), not the decoder FFmpeg picked for it (libdav1d, mp3float)."""
    return cc.codec.canonical_name if cc.codec is not None else cc.name


def _sniff_container(path: Path) -> str | None:
    """Name the container a file's first bytes claim, to tell 'corrupt' from 'not media'."""
    with open(path, "rb") as f:
        head = f.read(12)
    if head[4:8] == b"ftyp":
        return "MP4/MOV"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "Matroska/WebM"
    if head[:4] == b"RIFF":
        return "RIFF (AVI/WAV)"
    return None


def probe(path: Path) -> MediaInfo:
    """Read a file's streams and properties without decoding it all."""
    with open_input(path) as c:
        return _probe_container(path, c)


def _probe_container(path: Path, c: av.container.InputContainer) -> MediaInfo:
    videos: list[VideoInfo] = []
    audios: list[AudioInfo] = []
    subs: list[SubtitleInfo] = []
    for s in c.streams:
        if s.type == "video":
            if s.disposition & av.stream.Disposition.attached_pic:
                continue  # cover art, not a video track
            cc = s.codec_context
            rate = s.average_rate or s.guessed_rate
            duration = _seconds(s.duration, s.time_base)
            trc = color_name("color_trc", cc.color_trc)
            videos.append(VideoInfo(
                index=s.index, codec=codec_name(cc), width=cc.width, height=cc.height,
                pix_fmt=cc.pix_fmt or "unknown", bit_depth=_bit_depth(cc.pix_fmt),
                fps=float(rate) if rate else None, time_base=str(s.time_base),
                duration=duration, frames=s.frames or None,
                bit_rate=cc.bit_rate or _int_tag(s.metadata, "BPS", "BPS-eng"), rotation=first_frame_rotation(c, s) if not videos else 0,
                sample_aspect_ratio=str(cc.sample_aspect_ratio or "1/1"),
                color_space=color_name("colorspace", cc.colorspace),
                color_range=color_name("color_range", cc.color_range),
                color_transfer=trc, color_primaries=color_name("color_primaries", cc.color_primaries),
                hdr=trc in HDR_TRANSFERS,
                language=_lang(s)))
        elif s.type == "audio":
            cc = s.codec_context
            audios.append(AudioInfo(
                index=s.index, codec=codec_name(cc), channels=cc.channels, sample_rate=cc.sample_rate,
                bit_rate=cc.bit_rate or None, language=_lang(s), title=s.metadata.get("title")))
        elif s.type == "subtitle":
            subs.append(SubtitleInfo(index=s.index, codec=s.codec_context.name, language=_lang(s)))
    if len(videos) == 1 and videos[0].bit_rate is None and c.bit_rate:
        # No stream rate (e.g. Matroska without BPS tags): the file's rate less the audio rates
        # that are known, an upper bound on the video's.
        known_audio = sum(a.bit_rate or 0 for a in audios)
        videos[0] = replace(videos[0], bit_rate=max(c.bit_rate - known_audio, 0) or None)
    duration = c.duration / av.time_base if c.duration is not None else None
    return MediaInfo(
        path=str(path), size=path.stat().st_size, format=c.format.name, duration=duration,
        bit_rate=c.bit_rate or None, video=videos, audio=audios, subtitles=subs,
        chapters=len(c.chapters()), metadata=dict(c.metadata))


# FFmpeg's colour enums (libavutil/pixfmt.h), named as ffprobe names them.
_COLOR_NAMES = {
    "colorspace": {0: "gbr", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
                   8: "ycgco", 9: "bt2020nc", 10: "bt2020c", 14: "ictcp"},
    "color_range": {1: "tv", 2: "pc"},
    "color_trc": {1: "bt709", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m",
                  8: "linear", 13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12",
                  16: "smpte2084", 18: "arib-std-b67"},
    "color_primaries": {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
                        8: "film", 9: "bt2020", 11: "smpte431", 12: "smpte432"},
}


def color_name(kind: str, value: object) -> str | None:
    """ffprobe's name of a colour property value; None when unspecified."""
    if value is None:
        return None
    return _COLOR_NAMES[kind].get(int(value))  # type: ignore[call-overload]


def first_frame_rotation(c: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """Display rotation (degrees counter-clockwise, 0/90/180/270) read from the first frame.

    PyAV exposes the stream's display matrix only on decoded frames, so this decodes one frame;
    it also proves early that the video decodes at all. Raises MediadError when it does not.
    """
    try:
        for frame in c.decode(stream):
            return int(round(frame.rotation / 90.0)) * 90 % 360
    except av.FFmpegError as e:
        raise MediadError(f"{c.name}: video does not decode: {e}", reason="corrupt") from None
    return 0


def format_media_info(info: MediaInfo) -> str:
    """Human-readable summary for `mediad probe`."""
    lines = [f"{info.path}: {info.format}, {info.size} bytes, "
             f"duration {info.duration:.3f}s" if info.duration is not None
             else f"{info.path}: {info.format}, {info.size} bytes"]
    for v in info.video:
        extra = f", rotation {v.rotation}" if v.rotation else ""
        hdr = ", HDR" if v.hdr else ""
        fps = f"{v.fps:.3f} fps" if v.fps else "unknown fps"
        rate = f", {v.bit_rate // 1000} kb/s" if v.bit_rate else ""
        lines.append(f"  video #{v.index}: {v.codec} {v.width}x{v.height} {v.pix_fmt} "
                     f"({v.bit_depth}-bit), {fps}{rate}{extra}{hdr}")
    for a in info.audio:
        lines.append(f"  audio #{a.index}: {a.codec} {a.channels}ch {a.sample_rate} Hz"
                     f"{' [' + a.language + ']' if a.language else ''}")
    for s in info.subtitles:
        lines.append(f"  subtitle #{s.index}: {s.codec}{' [' + s.language + ']' if s.language else ''}")
    if info.chapters:
        lines.append(f"  chapters: {info.chapters}")
    return "\n".join(lines)
