"""MediaInfo: the record of what is in a media file, as `probe` reads it, and its text."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from mediad.media.hdr import HdrMetadata

FieldOrder = Literal["progressive", "tff", "bff", "unknown"]
# Stream flags worth keeping on a copy or an encode (Matroska's default/forced, MP4's).
KEPT_DISPOSITIONS = ("default", "forced", "hearing_impaired", "visual_impaired", "comment",
                     "original", "dub", "lyrics", "karaoke", "captions", "descriptions")


@dataclass(frozen=True)
class VideoInfo:
    """One video stream."""

    index: int
    codec: str
    width: int
    height: int
    pix_fmt: str
    bit_depth: int
    fps: float | None  # the average rate
    # The nominal rate (FFmpeg's r_frame_rate): above the average for a stream with gaps
    # (a screen recording), 2x it for field-coded video, absurd for some 1 ms time bases.
    base_fps: float | None
    time_base: str
    start_time: float | None  # seconds; DVR recordings start hours in
    duration: float | None  # the stream's own, from the header (None when it has none)
    frames: int | None
    bit_rate: int | None  # the stream's, or a Matroska BPS tag: None when unknown
    # No stream rate (Matroska without BPS tags): the file's rate less the known audio rates,
    # an upper bound on the video's.
    bit_rate_estimate: int | None
    rotation: int  # degrees of display rotation (counter-clockwise, as FFmpeg reports it)
    sample_aspect_ratio: str  # the container's (MKV DisplayWidth, MP4 pasp) over the codec's
    display_aspect_ratio: str
    container_aspect: bool  # the container's aspect is not the one in the video bitstream
    field_order: FieldOrder
    color_space: str | None
    color_range: str | None
    color_transfer: str | None
    color_primaries: str | None
    hdr: bool
    hdr_metadata: HdrMetadata | None  # mastering display and content light levels (HDR10)
    language: str | None
    dispositions: list[str] = field(default_factory=list)
    mirrored: bool = False  # the display matrix also flips the picture, as well as `rotation`
    reordered: bool = False  # B-frames: decode order is not display order

    @property
    def interlaced(self) -> bool:
        """True when the stream says its frames are interlaced (either field first)."""
        return self.field_order in ("tff", "bff")

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
    start_time: float | None = None
    duration: float | None = None
    dispositions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SubtitleInfo:
    """One subtitle stream."""

    index: int
    codec: str
    language: str | None
    title: str | None = None
    start_time: float | None = None
    dispositions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AttachmentInfo:
    """A file carried in the container (Matroska fonts for ASS subtitles, cover images)."""

    index: int
    filename: str
    mimetype: str
    size: int


@dataclass(frozen=True)
class CoverArtInfo:
    """An attached picture (cover art): a one-picture video stream, not a video track."""

    index: int
    codec: str
    width: int
    height: int


@dataclass(frozen=True)
class DataInfo:
    """A data stream (a QuickTime timecode track, DVD navigation packets, KLV): not transcoded."""

    index: int
    codec: str
    timecode: str | None  # a timecode track's start


def main_of(videos: list[VideoInfo]) -> VideoInfo | None:
    """ffmpeg's default pick of a video stream (a file whose first video stream is a 160x120
    preview kept the preview): the highest `pick_score`, the first of equals."""
    return max(videos, key=lambda v: pick_score(v.width, v.height, "default" in v.dispositions),
               default=None)


def pick_score(width: int, height: int, default: bool) -> int:
    """The ffmpeg CLI's score of a video stream for its automatic pick: its pixels, and 5
    million more for the default flag (a flagged 720p beats an unflagged 1080p; 4K beats it)."""
    return width * height + 5_000_000 * default


@dataclass(frozen=True)
class MediaInfo:
    """What is in one file."""

    path: str
    size: int
    format: str
    duration: float | None  # of the content: its first timestamp to its end
    bit_rate: int | None  # the whole file's, over that duration
    video: list[VideoInfo] = field(default_factory=list)
    audio: list[AudioInfo] = field(default_factory=list)
    subtitles: list[SubtitleInfo] = field(default_factory=list)
    attachments: list[AttachmentInfo] = field(default_factory=list)
    cover_art: list[CoverArtInfo] = field(default_factory=list)
    data: list[DataInfo] = field(default_factory=list)
    # The start timecode (SMPTE hh:mm:ss:ff): the video's, a timecode track's or the file's tag
    timecode: str | None = None
    chapters: int = 0
    start_time: float | None = None
    # The format's clock may jump (MPEG-TS/PS: splices, joined recordings, resets).
    discontinuous: bool = False
    # False for raw streams (.h264, .hevc): no container, no timestamps on the packets.
    timestamps: bool = True
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def main_video(self) -> VideoInfo | None:
        """The video stream a transcode uses (the largest)."""
        return main_of(self.video)

    def to_dict(self) -> dict:
        """Plain data for --json and reports."""
        return asdict(self)


def _flags(dispositions: list[str], start: float | None) -> str:
    extra = list(dispositions)
    if start:
        extra.append(f"starts {start:.3f}s")
    return f" ({', '.join(extra)})" if extra else ""


def format_media_info(info: MediaInfo) -> str:
    """Human-readable summary for `mediad probe`."""
    head = f"{info.path}: {info.format}, {info.size} bytes"
    if info.duration is not None:
        head += f", duration {info.duration:.3f}s"
    if info.start_time:
        head += f", starts at {info.start_time:.3f}s"
    if info.bit_rate:
        head += f", {info.bit_rate // 1000} kb/s"
    lines = [head]
    for v in info.video:
        fps = f"{v.fps:.3f} fps" if v.fps else "unknown fps"
        if v.bit_rate:
            rate = f", {v.bit_rate // 1000} kb/s"
        elif v.bit_rate_estimate:
            rate = f", at most {v.bit_rate_estimate // 1000} kb/s (file rate less audio)"
        else:
            rate = ""
        extra = f", rotation {v.rotation}" if v.rotation else ""
        extra += ", mirrored" if v.mirrored else ""
        colour = "/".join(x or "unknown" for x in (v.color_space, v.color_primaries,
                                                    v.color_transfer))
        lines.append(f"  video #{v.index}: {v.codec} {v.width}x{v.height} {v.pix_fmt} "
                     f"({v.bit_depth}-bit), SAR {v.sample_aspect_ratio} DAR "
                     f"{v.display_aspect_ratio}, {v.field_order}, {fps}{rate}{extra}"
                     f"{', HDR' if v.hdr else ''}{_flags(v.dispositions, v.start_time)}")
        lines.append(f"    colour: {v.color_range or 'unknown'} range, {colour}"
                     " (matrix/primaries/transfer)")
        if v.hdr_metadata:
            lines.append(f"    HDR10: {v.hdr_metadata.describe()}")
    for a in info.audio:
        rate = f", {a.bit_rate // 1000} kb/s" if a.bit_rate else ""
        lines.append(f"  audio #{a.index}: {a.codec} {a.channels}ch {a.sample_rate} Hz{rate}"
                     f"{' [' + a.language + ']' if a.language else ''}"
                     f"{_flags(a.dispositions, a.start_time)}")
    for s in info.subtitles:
        lines.append(f"  subtitle #{s.index}: {s.codec}"
                     f"{' [' + s.language + ']' if s.language else ''}"
                     f"{_flags(s.dispositions, s.start_time)}")
    for c in info.cover_art:
        lines.append(f"  cover art #{c.index}: {c.codec} {c.width}x{c.height}")
    for d in info.data:
        lines.append(f"  data #{d.index}: {d.codec}"
                     + (f" (timecode {d.timecode})" if d.timecode else ""))
    if info.timecode:
        lines.append(f"  timecode: {info.timecode}")
    for a in info.attachments:
        lines.append(f"  attachment #{a.index}: {a.filename} ({a.mimetype}, {a.size} bytes)")
    if info.chapters:
        lines.append(f"  chapters: {info.chapters}")
    return "\n".join(lines)
