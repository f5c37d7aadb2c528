"""Errors a user or the machine can cause, and their reasons: a stable, documented vocabulary
(docs/operations.md) shared by the engine, the daemon, the store and the API."""

from __future__ import annotations

import errno
import os
from enum import StrEnum


class Reason(StrEnum):
    """Why a job or command failed; what the state database, --json and the API record.

    Transient reasons are failures a retry may fix (the machine's, not the file's); the daemon
    retries those and fails the others at once.
    """

    # The source
    NOT_MEDIA = "not_media"
    CORRUPT = "corrupt"
    NO_VIDEO = "no_video"
    UNSUPPORTED = "unsupported"
    UNSUPPORTED_FORMAT = "unsupported_format"
    MISSING_INPUT = "missing_input"
    UNREADABLE = "unreadable"
    SOURCE_CHANGED = "source_changed"
    VERIFY_FAILED = "verify_failed"
    # What was asked: the command, profile, config, models
    BAD_REQUEST = "bad_request"
    BAD_PROFILE = "bad_profile"
    BAD_CONFIG = "bad_config"
    BAD_MODEL = "bad_model"
    MISSING_MODEL = "missing_model"
    MISSING_DEPENDENCY = "missing_dependency"
    OUTPUT_EXISTS = "output_exists"
    NO_OUTPUT_NAME = "no_output_name"
    SKIPPED_LARGER = "skipped_larger"  # the output would be larger than [video] max_size_ratio allows
    # The machine
    NO_GPU = "no_gpu"
    GPU_OOM = "gpu_oom"
    ENCODER_BUSY = "encoder_busy"
    IO_ERROR = "io_error"
    DISK_FULL = "disk_full"
    # Entries a watched folder holds that the daemon will not read
    SYMLINK = "symlink"
    NOT_REGULAR = "not_regular"
    OUTSIDE_WATCH = "outside_watch"
    HARD_LINK = "hard_link"
    # The daemon, its workers and its state
    WORKER_CRASHED = "worker_crashed"
    STALLED = "stalled"
    SHUTDOWN = "shutdown"
    INTERNAL_ERROR = "internal_error"
    BAD_STATE = "bad_state"
    NO_STATE = "no_state"
    BUSY = "busy"
    # `mediad retry` and other commands on jobs
    NO_JOB = "no_job"
    NOT_FAILED = "not_failed"
    DUPLICATE = "duplicate"
    OCCUPIED = "occupied"
    NO_WATCH = "no_watch"
    MISSING_WATCH = "missing_watch"
    USER_RETRY = "user_retry"  # not a failure: queued again by `mediad retry`, until it ends
    INTERRUPTED = "interrupted"
    ERROR = "error"  # none more precise

    @property
    def transient(self) -> bool:
        """Whether a retry may fix it (the machine's failure, not the file's)."""
        return self in _TRANSIENT


_TRANSIENT = frozenset({Reason.SOURCE_CHANGED, Reason.GPU_OOM, Reason.ENCODER_BUSY,
                        Reason.IO_ERROR, Reason.DISK_FULL, Reason.WORKER_CRASHED, Reason.STALLED,
                        Reason.INTERNAL_ERROR, Reason.BUSY})

# OS errors that say the storage failed, not the media: a full disk or quota, a file-size limit,
# a failing disk, lost permissions, a read-only or vanished (NFS) mount. A retry may succeed once
# someone fixes that, and the source is not to blame.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EACCES,
                            errno.EPERM, errno.EROFS, errno.ESTALE})


class MediadError(Exception):
    """A user-facing error: its message says what went wrong and where, in one line.

    `transient` marks failures a retry may fix (GPU busy, NVENC session refused); by default
    the reason's. The daemon retries those and fails the others at once.
    """

    def __init__(self, message: str, *, transient: bool | None = None,
                 reason: Reason | str = Reason.ERROR) -> None:
        super().__init__(message)
        self.reason = Reason(reason)  # a str from outside (a worker's line) must be one of ours
        self.transient = self.reason.transient if transient is None else transient


class InvalidFile(MediadError):
    """A profile or config that failed validation: one line for the first error, all in `errors`."""

    def __init__(self, errors: list[str], *, reason: Reason) -> None:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(errors[0] + more, reason=reason)
        self.errors = errors  # 'SOURCE: key.path: reason', one per error


def first_line(e: BaseException | str) -> str:
    """The first line of an exception's text (or of a text), stripped; empty when it has none:
    a library's message can run to a traceback or a dump, and ours are one line."""
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def is_storage_error(err: BaseException) -> bool:
    """Whether `err` is an OSError (PyAV's FFmpeg errors from errno codes are too) of storage."""
    return isinstance(err, OSError) and err.errno in STORAGE_ERRNOS


def io_error(path: object, err: OSError) -> MediadError:
    """The transient one-line error for an OS error on `path`: 'PATH: No space left on device'
    (reason disk_full: the daemon waits for room instead of counting it against the job)."""
    cause = os.strerror(err.errno) if err.errno else str(err)
    full = err.errno in (errno.ENOSPC, errno.EDQUOT)
    return MediadError(f"{path}: {cause}", transient=True,
                       reason=Reason.DISK_FULL if full else Reason.IO_ERROR)
