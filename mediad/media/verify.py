"""Checks around a run: the source is whole and unchanged, and the output holds what went in.

Like is compared with like: the output's video with the video that went into it, each audio
track with its source track, each measured from packets; a source's header is checked against
what its packets really hold (a truncated download promises more than it has).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import av

from mediad import stopping
from mediad.errors import MediadError, Reason
from mediad.media.first_frame import FirstFrameDecoder
from mediad.media.media_info import MediaInfo
from mediad.media.pinned import read_path
from mediad.media.probe import codec_name
from mediad.media.timing import Span

# Output against input: a frame or two of encoder delay or audio priming, never more.
DURATION_TOLERANCE_S = 0.2
# A header may round or count one more frame; a truncated file misses far more.
TRUNCATION_TOLERANCE_S = 0.5


@dataclass(frozen=True)
class OutputInfo:
    """What the verification read back from a written file."""

    path: str
    size: int
    video_codec: str | None
    width: int | None
    height: int | None
    frames: int
    duration: float | None  # the video's, first pts to last pts + duration
    audio_streams: int
    subtitle_streams: int
    audio_durations: list[float | None] = field(default_factory=list)
    video_bit_rate: int | None = None  # measured: the video packets' bytes over its duration
    # Seconds of the source's held last picture the output shows as a frame (its muxer wrote
    # the last frame with the stream's frame duration): the video ends that much sooner.
    hold_lost: float | None = None

    def to_dict(self) -> dict:
        """Plain data for the report."""
        return asdict(self)

    def hold_warnings(self, container: str) -> list[str]:
        """The report's word on a held last picture this output lost, if it lost one."""
        if self.hold_lost is None:
            return []
        return [f"the source's last picture is held {self.hold_lost:.3f}s longer than the "
                f"{container} output shows it (its muxer writes the last frame with the "
                "stream's frame duration): the video ends that much sooner"]

    def video_rate_text(self) -> str:
        """', 2345k video' (the measured rate, for the report's lines), or nothing."""
        return f", {self.video_bit_rate // 1000}k video" if self.video_bit_rate else ""


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(read_path(path))
    except OSError:
        return None


@dataclass(frozen=True)
class SourceStamp:
    """Identity, size and modification time of a source, to tell that it grew during a job."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    # A write that puts the mtime back (rsync --inplace, a copy keeping times) still moves it
    ctime_ns: int

    @classmethod
    def of(cls, path: Path) -> SourceStamp | None:
        """The stamp now; None when the file cannot be read (it failed elsewhere then)."""
        st = _stat(path)
        return cls._of(st) if st is not None else None

    @classmethod
    def _of(cls, st: os.stat_result) -> SourceStamp:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def changed(self, path: Path) -> MediadError | None:
        """The error to give when the file was written to meanwhile (a recording going on).

        Another file renamed over the name is not this: the job read the file it opened, and
        the new one is a job of its own (the daemon's disposition leaves it alone).
        """
        st = _stat(path)
        # Read through a pinned descriptor it is the file the job opened even once renamed
        # over: unlinked (nlink 0), its ctime moved with the unlink, not with a write.
        if st is None or st.st_nlink == 0:
            return None
        now = SourceStamp._of(st)
        if now == self or (now.dev, now.ino) != (self.dev, self.ino):
            return None
        what = (f"grew from {self.size} to {now.size} bytes" if now.size > self.size
                else f"changed ({self.size} -> {now.size} bytes)" if now.size != self.size
                else "was modified")
        return MediadError(f"{path}: the source {what} during the transcode: it is still being "
                           "written (a recording in progress?); run it again once it is complete",
                           reason=Reason.SOURCE_CHANGED, transient=True)


def check_source_body(info: MediaInfo, spans: dict[int, Span], offset: float) -> None:
    """Fail when the source's header promises more than its packets hold (a truncated file).

    `spans` are on the output's timeline, `offset` seconds before the source's clock. Each
    stream with a duration of its own (MP4 tracks, Matroska DURATION tags, AVI) is held to it;
    Matroska files without those are held to their segment duration. MPEG-TS/PS have no header
    to hold them to: their durations are read from their own last packets, and their clock may
    jump.
    """
    if info.discontinuous:
        return
    checked = False
    for s in [*info.video[:1], *info.audio]:
        span = spans.get(s.index)
        if s.duration is None or span is None or span.end_seconds is None:
            continue
        checked = True
        promised = (s.start_time or 0.0) + s.duration
        if promised - (span.end_seconds + offset) > TRUNCATION_TOLERANCE_S:
            raise _truncated(info, f"stream #{s.index} lasts until {promised:.3f}s",
                             span.end_seconds + offset)
    if checked or not info.format.startswith("matroska") or not info.duration:
        return
    ends = [span.end_seconds + offset for span in spans.values() if span.end_seconds is not None]
    promised = (info.start_time or 0.0) + info.duration
    if ends and promised - max(ends) > TRUNCATION_TOLERANCE_S:
        raise _truncated(info, f"the file lasts until {promised:.3f}s", max(ends))


def _truncated(info: MediaInfo, promise: str, end: float) -> MediadError:
    return MediadError(f"{info.path}: truncated source: its header says {promise}, but its "
                       f"data ends at {end:.3f}s", reason=Reason.CORRUPT)


def _read_back(container: av.container.InputContainer) -> tuple[bool, int, int, dict[int, Span]]:
    """(first video frame decodes, video packet count, video bytes, span per video/audio
    stream), in one pass from the start: a seek back would land on a keyframe and skip audio
    before it."""
    wanted = [s for s in container.streams if s.type in ("video", "audio")]
    spans = {s.index: Span() for s in wanted}
    video = container.streams.video[0]
    count, size, decoded, decode = 0, 0, False, FirstFrameDecoder()
    for packet in container.demux(wanted):
        stopping.check()
        if packet.stream.index == video.index:
            if not decoded:
                decoded = bool(decode(packet))
            if packet.size and not packet.is_discard:  # an edit list's pre-roll is not shown
                count += 1
                size += packet.size
        if packet.size and not packet.is_discard:
            spans[packet.stream.index].add(packet.pts, packet.duration, packet.time_base)
    return decoded, count, size, spans


@contextlib.contextmanager
def _flushing(path: Path) -> Iterator[None]:
    """fsync `path` on a thread while the caller reads it back. The commit's own fsync, the one
    that counts, then finds little or nothing left to write (a 23 MB output: verify + fsync
    66 -> 51 ms). Best effort: a failure here is the commit's to meet and report.

    (Decoding the first frame on a thread too measured no gain: 62-67 ms either way.)"""
    def flush() -> None:
        with contextlib.suppress(OSError), open(path, "rb") as f:
            os.fsync(f.fileno())

    thread = threading.Thread(target=flush, name="verify-fsync", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()


def _open_output(path: Path) -> av.container.InputContainer:
    """Open a written file; its video (our outputs put it first) is probed without pixels.

    Stream info needs no decoded picture, and _read_back decodes the keyframe anyway:
    opening decoded it once more (grainy 720p 30 ms, 1080p 62 ms of output I-frame).
    """
    try:
        return av.open(str(path), stream_options=[{"skip_frame": "all"}])
    except ValueError:  # PyAV: no streams in the header to give options to (a broken file)
        return av.open(str(path))


def verify_output(path: Path, video: Span | None, audio: list[float | None],
                  source: str) -> OutputInfo:
    """Check a written file decodes, and that its video and each audio track last as long as
    what went into them (within 0.2 s): `video`, what went into the video encoder (or was
    copied), and `audio`, the seconds per kept track.

    A last picture held longer than a frame (a VFR recording's end) is the container's to
    write, in its own way: the video passes if its frames' times (first to last frame's start)
    are what went in and it ends between where the last frame shown ends (Matroska gives a
    frame without a duration its default one; the output says how much of the hold it lost)
    and where the furthest-reaching frame ends (an MP4 keeps the hold on the sample decoded
    last, which need not be the one shown last)."""
    try:
        with _flushing(path), _open_output(path) as c:
            if not c.streams.video:
                raise MediadError(f"{source}: output has no video stream", reason=Reason.VERIFY_FAILED)
            vs = c.streams.video[0]
            decoded, frames, video_bytes, spans = _read_back(c)
            if not decoded:
                raise MediadError(f"{source}: output video does not decode", reason=Reason.VERIFY_FAILED)
            audio_out = [spans[s.index].seconds for s in c.streams.audio]
            seconds = spans[vs.index].seconds
            starts = spans[vs.index].starts_seconds
            info = OutputInfo(str(path), path.stat().st_size, codec_name(vs.codec_context),
                              vs.codec_context.width, vs.codec_context.height, frames,
                              seconds, len(c.streams.audio), len(c.streams.subtitles), audio_out,
                              round(video_bytes * 8 / seconds) if seconds else None)
    except av.FFmpegError as e:
        raise MediadError(f"{source}: output does not read back: {e}", reason=Reason.VERIFY_FAILED) from None
    want = video.seconds if video is not None else None
    hold_lost = None
    if video is not None and _same_frames(video, starts) and info.duration is not None \
            and want is not None:
        reach = video.reach_seconds or want
        if info.duration < reach - DURATION_TOLERANCE_S:
            hold_lost = reach - info.duration  # the held last picture's seconds, not frames
            want = info.duration
        elif info.duration <= reach + DURATION_TOLERANCE_S:
            want = info.duration  # the hold kept, on the last frame shown or another
    checks = [("video", info.duration, want)]
    checks += [(f"audio track {i + 1}", got, want)
               for i, (got, want) in enumerate(zip(audio_out, audio, strict=False))]
    for what, got, want in checks:
        if got is not None and want is not None and abs(got - want) > DURATION_TOLERANCE_S:
            raise MediadError(f"{source}: the output's {what} lasts {got:.3f}s but {want:.3f}s "
                              "went into it", reason=Reason.VERIFY_FAILED)
    return replace(info, hold_lost=hold_lost)


def _same_frames(went_in: Span, starts: float | None) -> bool:
    """Whether the output's frames start where those that went in did (first to last)."""
    return starts is not None and went_in.starts_seconds is not None \
        and abs(starts - went_in.starts_seconds) <= DURATION_TOLERANCE_S
