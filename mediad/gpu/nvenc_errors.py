"""NVENC/NVDEC failures told apart (busy, unavailable, unsupported) from FFmpeg's texts and log."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

from mediad.gpu.records import BUSY, ERROR, UNAVAILABLE, UNSUPPORTED

# Lower-case fragments of FFmpeg/NVENC/CUDA messages. Busy wins over the others: a session
# limit on the only device also logs "No capable devices found".
_BUSY = (
    "out of memory", "cannot allocate memory", "incompatible client key", "encoder busy",
    "lock busy", "resource temporarily unavailable", "session limit", "too many sessions",
    "maximum number of", "out_of_memory",
)
_UNAVAILABLE = (
    "cannot load libcuda", "failed loading the nvenc library", "cannot load libnvidia-encode",
    "no cuda capable devices", "no cuda-capable device", "cuinit", "driver not loaded",
    "cuda_error_no_device", "no nvidia driver",
    # NVDEC's library: absent where a container runtime mounts no "video" driver capability
    "cannot load libnvcuvid", "failed loading nvcuvid",
)
_UNSUPPORTED = (
    "unsupported device", "no encode device", "no capable devices found",
    "no nvenc capable devices", "does not support nvenc", "codec not supported",
    "function not implemented", "required nvenc api version", "unsupported param",
    "encoder not found", "unknown encoder", "10 bit encode not supported",
    "lacking required capabilities", "no supported hardware config",
)


def classify_nvenc_error(message: str) -> str:
    """Status ("busy", "unavailable", "unsupported" or "error") for an NVENC failure text."""
    text = message.lower()
    for status, marks in ((BUSY, _BUSY), (UNAVAILABLE, _UNAVAILABLE), (UNSUPPORTED, _UNSUPPORTED)):
        if any(m in text for m in marks):
            return status
    return ERROR


def is_transient_nvenc_error(message: str) -> bool:
    """True when an NVENC failure is a busy encoder (session limit / out of memory), not a lack."""
    return classify_nvenc_error(message) == BUSY


_LOG_LOCK = threading.Lock()
_LOG_USERS = 0
_LOG_PREVIOUS: int | None = None


@contextlib.contextmanager
def capture_ffmpeg_log() -> Iterator[list[str]]:
    """Collect FFmpeg's log lines from this thread (e.g. NVENC's real error) into a list.

    PyAV turns FFmpeg's log off by default, and an NVENC open failure then surfaces only as
    "Generic error in an external library"; the line saying why is in the log.
    """
    import av.logging

    global _LOG_USERS, _LOG_PREVIOUS
    with _LOG_LOCK:
        if _LOG_USERS == 0:
            _LOG_PREVIOUS = av.logging.get_level()
            av.logging.set_level(av.logging.VERBOSE)
        _LOG_USERS += 1
    lines: list[str] = []
    capture = av.logging.Capture()
    try:
        with capture as logs:
            yield lines
    finally:
        lines.extend(m.strip() for _, _, m in logs if m.strip())
        with _LOG_LOCK:
            _LOG_USERS -= 1
            if _LOG_USERS == 0:
                av.logging.set_level(_LOG_PREVIOUS)


def _explain(error: Exception, lines: Sequence[str]) -> str:
    """The exception text plus the FFmpeg log lines that say why."""
    head = str(error)
    telling = [ln for ln in lines if (classify_nvenc_error(ln) != ERROR or "failed" in ln.lower())
               and ln not in head]
    return "; ".join([head, *dict.fromkeys(telling[-3:])])
