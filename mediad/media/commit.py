"""Commit: a temporary name beside the destination, verification, fsync, then an atomic rename."""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

import av

from mediad.errors import MediadError
from mediad.fsutil import NO_HARD_LINK, fsync_dir
from mediad.media.probe import codec_name

DURATION_TOLERANCE_S = 0.2


@dataclass(frozen=True)
class OutputInfo:
    """What the verification read back from a written file."""

    path: str
    size: int
    video_codec: str | None
    width: int | None
    height: int | None
    frames: int
    duration: float | None
    audio_streams: int
    subtitle_streams: int

    def to_dict(self) -> dict:
        """Plain data for the report."""
        return asdict(self)


def temp_path_for(dest: Path) -> Path:
    """A hidden, unique name in the destination folder (same filesystem, so rename is atomic).

    Dot-prefixed and marked `.part` so watchers (ours included) ignore it.
    """
    return dest.with_name(f".{dest.stem}.{os.getpid()}-{secrets.token_hex(4)}.part{dest.suffix}")


def temp_writer_pid(dest: Path, name: str) -> int | None:
    """The writer's pid if `name` is one of `temp_path_for(dest)`'s names, else None."""
    m = re.fullmatch(rf"\.{re.escape(dest.stem)}\.(\d+)-[0-9a-f]{{8}}\.part{re.escape(dest.suffix)}",
                     name)
    return int(m.group(1)) if m else None


def _video_span(container: av.container.InputContainer) -> tuple[int, float | None]:
    """(packet count, seconds from first pts to last pts + duration) of the first video stream."""
    stream = container.streams.video[0]
    count, first, last = 0, None, None
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        count += 1
        if packet.pts is None:
            continue
        end = packet.pts + (packet.duration or 0)
        first = packet.pts if first is None else min(first, packet.pts)
        last = end if last is None else max(last, end)
    if first is None or last is None:
        return count, None
    return count, float((last - first) * stream.time_base)


def verify_output(path: Path, expected_duration: float | None, source: str) -> OutputInfo:
    """Check a written file decodes and lasts as long as the source (within 0.2 s)."""
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise MediadError(f"{source}: output has no video stream", reason="verify_failed")
            vs = c.streams.video[0]
            first = next(c.decode(vs), None)
            if first is None:
                raise MediadError(f"{source}: output video does not decode", reason="verify_failed")
            c.seek(0)
            frames, duration = _video_span(c)
            info = OutputInfo(str(path), path.stat().st_size, codec_name(vs.codec_context),
                              vs.codec_context.width, vs.codec_context.height, frames, duration,
                              len(c.streams.audio), len(c.streams.subtitles))
    except av.FFmpegError as e:
        raise MediadError(f"{source}: output does not read back: {e}", reason="verify_failed") from None
    if expected_duration is not None and duration is not None \
            and abs(duration - expected_duration) > DURATION_TOLERANCE_S:
        raise MediadError(
            f"{source}: output lasts {duration:.3f}s but the source {expected_duration:.3f}s "
            "(truncated or corrupt source?)", reason="corrupt")
    return info


def commit(tmp: Path, dest: Path, overwrite: bool) -> None:
    """Make `tmp` durable and visible as `dest`; never replaces an existing file unless asked."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    if overwrite:
        os.replace(tmp, dest)
    else:
        try:
            os.link(tmp, dest)  # fails if dest appeared meanwhile: no silent replacement
        except FileExistsError:
            raise MediadError(f"{dest}: already exists (use --overwrite to replace it)",
                              reason="output_exists") from None
        except OSError as e:
            if e.errno not in NO_HARD_LINK:
                raise
            if dest.exists():  # a filesystem without hard links: check, then rename
                raise MediadError(f"{dest}: already exists (use --overwrite to replace it)",
                                  reason="output_exists") from None
            os.rename(tmp, dest)
        else:
            tmp.unlink()
    fsync_dir(dest.parent)
