"""probe: what is in a media file (streams, codecs, size, duration, rotation, colour, ...),
read into a MediaInfo (media_info) without decoding more than the first frame (first_frame)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av

from mediad.errors import MediadError, Reason
from mediad.media.first_frame import FirstFrame, first_frame
from mediad.media.media_info import (
    KEPT_DISPOSITIONS,
    AttachmentInfo,
    AudioInfo,
    CoverArtInfo,
    DataInfo,
    FieldOrder,
    MediaInfo,
    SubtitleInfo,
    VideoInfo,
    main_of,
    pick_score,
)
from mediad.media.pinned import read_path
from mediad.media.reading import read_packets
from mediad.media.timing import JUMP_S, MPEG_WRAP_S

# How much of a recording measures the rate it is written at (_clock_went_back).
_RATE_SECONDS, _RATE_BYTES = 4.0, 8_000_000

HDR_TRANSFERS = {"smpte2084", "arib-std-b67"}
# AVFieldOrder (libavcodec/defs.h) as FFmpeg's decoders and muxers use it: the first letter is
# the field shown first (MPEG-2 with bottom_field_first reports BT, "bottom coded first").
_FIELD_ORDERS: dict[int, FieldOrder] = {1: "progressive", 2: "tff", 3: "bff", 4: "tff", 5: "bff"}


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


def _tag(tags: dict[str, str], name: str) -> str | None:
    """A tag whatever its case (Matroska's are upper case)."""
    return next((v for k, v in tags.items() if k.lower() == name and v), None)


def _timecode(c: av.container.InputContainer, videos: list[VideoInfo],
              data: list[DataInfo]) -> str | None:
    """The start timecode, as the ffmpeg CLI carries it: the main video's, a timecode track's,
    or the file's (MXF, Matroska)."""
    main = main_of(videos)
    video = _tag(c.streams[main.index].metadata, "timecode") if main else None
    return video or next((d.timecode for d in data if d.timecode), None) \
        or _tag(c.metadata, "timecode")


def _lang(stream: av.stream.Stream) -> str | None:
    lang = stream.metadata.get("language")
    return None if lang in (None, "", "und") else lang


def open_input(path: Path, **kwargs: object) -> av.container.InputContainer:
    """Open a media file for reading, turning every failure into a one-line MediadError."""
    name, path = path, read_path(path)  # messages name the file; a pinned one is read by fd
    if not path.exists():
        raise MediadError(f"{name}: no such file", reason=Reason.MISSING_INPUT)
    if path.is_dir():
        raise MediadError(f"{name}: is a directory, not a media file", reason=Reason.NOT_MEDIA)
    if not os.access(path, os.R_OK):
        raise MediadError(f"{name}: not readable (permission denied)", reason=Reason.UNREADABLE)
    if path.stat().st_size == 0:
        raise MediadError(f"{name}: file is empty (0 bytes)", reason=Reason.NOT_MEDIA)
    try:
        # Metadata in a broken or legacy encoding must not stop a transcode: replace bad bytes.
        container = av.open(str(path), "r", metadata_errors="replace", **kwargs)
    except av.InvalidDataError:
        container = _sniff_container(path)
        if container:
            raise MediadError(f"{name}: truncated or corrupt {container} file (FFmpeg cannot "
                              "read its header)", reason=Reason.CORRUPT) from None
        raise MediadError(f"{name}: not a media file (no known container format)",
                          reason=Reason.NOT_MEDIA) from None
    except av.FFmpegError as e:
        raise MediadError(f"{name}: cannot open: {e.strerror or e}", reason=Reason.NOT_MEDIA) from None
    fmt = container.format.name
    if fmt in _TEXT_ART_FORMATS or fmt == "image2" or fmt.endswith("_pipe"):
        container.close()
        what = "a text file" if fmt in _TEXT_ART_FORMATS else "a still image"
        raise MediadError(f"{name}: {what} ({container.format.long_name}), not a video",
                          reason=Reason.NOT_MEDIA)
    return container


# FFmpeg demuxers that render text files (.txt, .nfo, .ans) as video: a notes file in a
# watched folder must fail as not media, not become a video of its text.
_TEXT_ART_FORMATS = frozenset({"tty", "bin", "xbin", "adf", "idf"})


def frame_rate(stream: av.video.stream.VideoStream) -> Fraction | None:
    """A video stream's frame rate: its average, unless that is above the rate every timestamp
    fits (the DV demuxer's average is its 1/60000 time base, 60000 fps for 25), then FFmpeg's
    guess (`av_guess_frame_rate`, what the ffmpeg CLI encodes at)."""
    average, nominal = stream.average_rate, stream.base_rate
    if average and not (nominal and average > 2 * nominal):
        return average
    return stream.guessed_rate or None


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
    early = _EARLY.pop(str(path), None)
    if early is not None and (taken := early.take()) is not None:
        return taken
    return _probe(path)


def _probe(path: Path) -> MediaInfo:
    with open_input(path) as c:
        return _probe_container(path, c)  # its name; its size read through open_input's file


def _identity(path: Path) -> tuple[int, ...] | None:
    """What tells that a file was written to or replaced (as verify.SourceStamp); None if gone."""
    try:
        st = os.stat(read_path(path))
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


class _EarlyProbe:
    """A probe run on a thread ahead of the probe() that wants it (see probing_early)."""

    def __init__(self, path: Path, identity: tuple[int, ...]) -> None:
        self.path, self.identity = path, identity
        self.info: MediaInfo | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="probe", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.info = _probe(self.path)
        except BaseException as e:  # given to the probe() that takes it
            self.error = e

    def take(self) -> MediaInfo | None:
        """Its result (or its error, raised), if the file is still the one it read; else None."""
        self.thread.join()
        if _identity(self.path) != self.identity:
            return None  # written to or replaced since: probe it again, as it is now
        if self.error is not None:
            raise self.error
        return self.info


_EARLY: dict[str, _EarlyProbe] = {}


@contextlib.contextmanager
def probing_early(path: Path) -> Iterator[None]:
    """Probe `path` on a thread while the caller goes on (a command importing its modules and
    loading its profile): the first probe(path) inside takes the result, after checking that
    the file has not changed since (size, times, inode), or probes again.

    The probe's open and first-frame decode are FFmpeg's work, outside the GIL: on the
    command line they overlap the imports (mediad transcode's probe: 16 ms of a 640x360 MP4,
    60 ms of a 720p MKV). An error is raised where the probe would have raised it.
    """
    identity = _identity(path)
    key = str(path)
    if identity is None or key in _EARLY:  # a missing file is the probe's to report, as ever
        yield
        return
    _EARLY[key] = early = _EarlyProbe(path, identity)
    try:
        yield
    finally:
        if _EARLY.get(key) is early:  # never taken (the job failed before its probe)
            del _EARLY[key]
            early.thread.join()


def _stream_duration(s: av.stream.Stream) -> float | None:
    """The stream's own duration from the header, or from Matroska's per-track DURATION tag.

    The tag holds where the track ends on the file's clock (ffmpeg writes 10 s for 3 s that
    start at 7 s), so the track's start is taken off.
    """
    if s.duration is not None and s.time_base:
        return float(s.duration * s.time_base)
    tag = s.metadata.get("DURATION") or s.metadata.get("DURATION-eng")
    if tag:
        h, _, rest = tag.partition(":")
        m, _, sec = rest.partition(":")
        try:
            end = int(h) * 3600 + int(m) * 60 + float(sec)
        except ValueError:
            return None
        return end - (_seconds(s.start_time, s.time_base) or 0.0)
    return None


def _dispositions(s: av.stream.Stream) -> list[str]:
    flags = s.disposition
    return [name for name in KEPT_DISPOSITIONS if flags & av.stream.Disposition[name]]


def _aspect(width: int, height: int, sar: Fraction) -> str:
    dar = Fraction(width * sar.numerator, height * sar.denominator) if height else Fraction(0)
    return f"{dar.numerator}/{dar.denominator}"


def _content_seconds(c: av.container.InputContainer, start: float | None) -> float | None:
    """How long the file's content lasts, from its first timestamp to its end.

    libavformat's duration is that for most formats, but Matroska's counts from 0 on the
    file's clock (a recording that starts at 100 s and lasts 8 s says 108 s).
    """
    if c.duration is None:
        return None
    seconds = c.duration / av.time_base
    if c.format.name.startswith("matroska") and start:
        seconds -= start
    return seconds if seconds > 0 else None


def _clock_went_back(c: av.container.InputContainer, duration: float | None, size: int) -> bool:
    """Whether a recording's length, as libavformat measured it, is a backward jump of its
    clock read as a wrap: over half the wrap (13 h) while the file, at the rate its first
    seconds are written at, holds less than half that. A genuine day-long recording keeps its
    length: its size is its rate times its length. (Declared stream rates cannot tell: H.264
    in MPEG-TS declares none, and an hour-long recording holds as much as a day at audio's.)"""
    if duration is None or duration <= MPEG_WRAP_S / 2:
        return False
    first = last = None
    for packet in read_packets(c, list(c.streams)):  # from where the first frame was found
        if packet.pos is None or packet.pos < 0 or packet.dts is None or packet.time_base is None:
            continue
        at = (packet.pos, float(packet.dts * packet.time_base))
        if last is not None and abs(at[1] - last[1]) > JUMP_S:
            break  # the jump itself: measure what came before it
        first, last = first or at, at
        if last[1] - first[1] >= _RATE_SECONDS or last[0] - first[0] >= _RATE_BYTES:
            break
    if first is None or last is None or last[1] - first[1] < _RATE_SECONDS / 4:
        return False  # too little to measure: libavformat's length stands
    rate = (last[0] - first[0]) / (last[1] - first[1])  # bytes per second
    return rate > 0 and size / rate < duration / 2


def _probe_container(path: Path, c: av.container.InputContainer) -> MediaInfo:
    videos: list[VideoInfo] = []
    audios: list[AudioInfo] = []
    subs: list[SubtitleInfo] = []
    attachments: list[AttachmentInfo] = []
    covers: list[CoverArtInfo] = []
    data: list[DataInfo] = []
    pictures = [s for s in c.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    main = max(pictures, key=lambda s: pick_score(  # main_of's pick, before any is decoded
        s.codec_context.width, s.codec_context.height,
        bool(s.disposition & av.stream.Disposition.default)), default=None)
    for s in c.streams:
        start = _seconds(s.start_time, s.time_base)
        if s.type == "video":
            cc = s.codec_context
            if s.disposition & av.stream.Disposition.attached_pic:
                covers.append(CoverArtInfo(s.index, codec_name(cc), cc.width, cc.height))
                continue
            rate = frame_rate(s)
            trc = color_name("color_trc", cc.color_trc)
            # Only the main video stream is transcoded: only it pays for a decoded frame.
            first = first_frame(c, s) if s is main else FirstFrame(0, False, None)
            field_order = _FIELD_ORDERS.get(cc.field_order, "unknown")
            if field_order == "unknown" and first.interlaced:
                field_order = "tff"  # FFmpeg's default parity when a frame says only "interlaced"
            sar = s.sample_aspect_ratio  # the container's aspect when it has one, as ffmpeg
            if not sar or sar <= 0:
                sar = Fraction(1)
            coded = cc.sample_aspect_ratio if cc.sample_aspect_ratio else Fraction(1)
            videos.append(VideoInfo(
                index=s.index, codec=codec_name(cc), width=cc.width, height=cc.height,
                pix_fmt=cc.pix_fmt or "unknown", bit_depth=_bit_depth(cc.pix_fmt),
                fps=float(rate) if rate else None,
                base_fps=float(s.base_rate) if s.base_rate else None, time_base=str(s.time_base),
                start_time=start, duration=_stream_duration(s), frames=s.frames or None,
                bit_rate=cc.bit_rate or _int_tag(s.metadata, "BPS", "BPS-eng"),
                bit_rate_estimate=None, rotation=first.rotation, mirrored=first.mirrored,
                reordered=bool(cc.has_b_frames),
                sample_aspect_ratio=f"{sar.numerator}/{sar.denominator}",
                display_aspect_ratio=_aspect(cc.width, cc.height, sar),
                container_aspect=sar != coded,
                field_order=field_order,
                color_space=color_name("colorspace", cc.colorspace),
                color_range=color_name("color_range", cc.color_range),
                color_transfer=trc, color_primaries=color_name("color_primaries", cc.color_primaries),
                hdr=trc in HDR_TRANSFERS, hdr_metadata=first.hdr,
                language=_lang(s), dispositions=_dispositions(s)))
        elif s.type == "audio":
            cc = s.codec_context
            audios.append(AudioInfo(
                index=s.index, codec=codec_name(cc), channels=cc.channels, sample_rate=cc.sample_rate,
                bit_rate=cc.bit_rate or _int_tag(s.metadata, "BPS", "BPS-eng"), language=_lang(s),
                title=s.metadata.get("title"), start_time=start, duration=_stream_duration(s),
                dispositions=_dispositions(s)))
        elif s.type == "subtitle":
            subs.append(SubtitleInfo(index=s.index, codec=s.codec_context.name, language=_lang(s),
                                     title=s.metadata.get("title"), start_time=start,
                                     dispositions=_dispositions(s)))
        elif s.type == "data":
            timecode = _tag(s.metadata, "timecode")  # PyAV shows no codec tag: tmcd is this
            data.append(DataInfo(s.index, "tmcd" if timecode else s.name or "unknown", timecode))
        elif s.type == "attachment":
            attachments.append(AttachmentInfo(
                s.index, s.metadata.get("filename") or f"attachment{s.index}",
                s.metadata.get("mimetype") or "application/octet-stream", len(s.data or b"")))
    start = c.start_time / av.time_base if c.start_time is not None else None
    duration = _content_seconds(c, start)
    size = read_path(path).stat().st_size
    discontinuous = bool(c.format.flags & av.format.Flags.ts_discont.value)
    went_back = discontinuous and _clock_went_back(c, duration, size)
    if went_back:
        # libavformat measured to the end across a backward jump of the clock, read as a
        # 33-bit wrap: 26 hours for 8 seconds. The length is unknown until the file is read.
        duration = None
        videos = [replace(v, duration=None, frames=None) for v in videos]
        audios = [replace(a, duration=None) for a in audios]
    # The file's rate over its content's length (libavformat divides by Matroska's duration,
    # which runs from 0: a file starting 100 s in looked 13 times slower than it is).
    file_rate = round(size * 8 / duration) if duration else None if went_back else c.bit_rate or None
    if len(videos) == 1 and videos[0].bit_rate is None and file_rate:
        # No stream rate (e.g. Matroska without BPS tags): the file's rate less the audio rates
        # that are known, an upper bound on the video's.
        known_audio = sum(a.bit_rate or 0 for a in audios)
        videos[0] = replace(videos[0], bit_rate_estimate=max(file_rate - known_audio, 0) or None)
    return MediaInfo(
        path=str(path), size=size, format=c.format.name, duration=duration,
        bit_rate=file_rate, video=videos, audio=audios, subtitles=subs,
        attachments=attachments, cover_art=covers, data=data,
        timecode=_timecode(c, videos, data), chapters=len(c.chapters()),
        start_time=start, metadata=dict(c.metadata), discontinuous=discontinuous,
        timestamps=not c.format.flags & av.format.Flags.no_timestamps.value)


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
