"""A job's picture: one frame of its output (or of its source) as a small JPEG, made with PyAV
on the server's thread pool, kept in a small cache."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from fractions import Fraction

WIDTH = 320
CACHED = 64

_cache: OrderedDict[tuple[str, int, int, int, float | None], bytes] = OrderedDict()
_lock = threading.Lock()


def picture_source(output: str, source: str) -> str | None:
    """The file to take a frame from: the output when it is a file, else the source."""
    for path in (output, source):
        if os.path.isfile(path):
            return path
    return None


def thumbnail(path: str, width: int = WIDTH, at: float | None = None) -> bytes | None:
    """A JPEG of the frame at `at` seconds into `path` (None: a tenth of the way in), `width`
    pixels wide; None when it has no video or cannot be decoded."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (path, st.st_mtime_ns, st.st_size, width, at)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    data = _grab(path, width, at)
    if data is not None:
        with _lock:
            _cache[key] = data
            while len(_cache) > CACHED:
                _cache.popitem(last=False)
    return data


def _grab(path: str, width: int, at: float | None) -> bytes | None:
    import av

    try:
        with av.open(path) as c:
            if not c.streams.video:
                return None
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            start = (c.start_time or 0) / 1e6
            if at is None:
                target = start + (c.duration / 1e6 / 10 if c.duration and c.duration > 0 else 0)
            else:
                target = start + at
            c.seek(int(target * 1e6), any_frame=False)  # the keyframe before, then forward
            last = None
            for frame in c.decode(stream):
                last = frame
                if frame.time is not None and frame.time + 1e-3 < target:
                    continue  # decoded from the keyframe: not there yet
                break
            if last is not None:
                frame = last
                height = max(2, round(frame.height * width / max(frame.width, 1) / 2) * 2)
                picture = frame.reformat(width=width, height=height, format="yuvj420p")
                enc = av.CodecContext.create("mjpeg", "w")
                enc.width, enc.height, enc.pix_fmt = width, height, "yuvj420p"
                enc.time_base = Fraction(1, 25)
                picture.pts = 0
                return b"".join(bytes(p) for p in [*enc.encode(picture), *enc.encode(None)])
    except (av.FFmpegError, OSError, ValueError):
        return None
    return None
