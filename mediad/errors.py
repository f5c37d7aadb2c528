"""The one exception type for errors a user can cause (bad profile, unreadable input, ...)."""

from __future__ import annotations

import errno
import os

# OS errors that say the storage failed, not the media: a full disk or quota, a file-size limit,
# a failing disk, lost permissions, a read-only or vanished (NFS) mount. A retry may succeed once
# someone fixes that, and the source is not to blame.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EACCES,
                            errno.EPERM, errno.EROFS, errno.ESTALE})


class MediadError(Exception):
    """A user-facing error: its message says what went wrong and where, in one line.

    `transient` marks failures a retry may fix (GPU busy, NVENC session refused); the daemon
    retries those and fails the others at once.
    """

    def __init__(self, message: str, *, transient: bool = False, reason: str = "error") -> None:
        super().__init__(message)
        self.transient = transient
        self.reason = reason  # short machine-readable cause, e.g. "not_media", "bad_profile"


class InvalidFile(MediadError):
    """A profile or config that failed validation: one line for the first error, all in `errors`."""

    def __init__(self, errors: list[str], *, reason: str) -> None:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(errors[0] + more, reason=reason)
        self.errors = errors  # 'SOURCE: key.path: reason', one per error


def is_storage_error(err: BaseException) -> bool:
    """Whether `err` is an OSError (PyAV's FFmpeg errors from errno codes are too) of storage."""
    return isinstance(err, OSError) and err.errno in STORAGE_ERRNOS


def io_error(path: object, err: OSError) -> MediadError:
    """The transient one-line error for an OS error on `path`: 'PATH: No space left on device'
    (reason disk_full: the daemon waits for room instead of counting it against the job)."""
    cause = os.strerror(err.errno) if err.errno else str(err)
    full = err.errno in (errno.ENOSPC, errno.EDQUOT)
    return MediadError(f"{path}: {cause}", transient=True,
                       reason="disk_full" if full else "io_error")
