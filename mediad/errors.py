"""The one exception type for errors a user can cause (bad profile, unreadable input, ...)."""


class MediadError(Exception):
    """A user-facing error: its message says what went wrong and where, in one line.

    `transient` marks failures a retry may fix (GPU busy, NVENC session refused); the daemon
    retries those and fails the others at once.
    """

    def __init__(self, message: str, *, transient: bool = False, reason: str = "error") -> None:
        super().__init__(message)
        self.transient = transient
        self.reason = reason  # short machine-readable cause, e.g. "not_media", "bad_profile"
