"""File-system helpers shared by the engine's neighbours (model cache, sidecars, daemon notes)."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from mediad.errors import MediadError

# os.link failures that mean "this filesystem has no hard links here", not "the name is taken".
NO_HARD_LINK = (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK)


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries (a new name, a removed one) durable; best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write `data` to `path` via a temp file beside it, fsync and rename: never a partial file.

    `mode` sets the file's permission bits (mkstemp makes 0600). Raises OSError, after removing
    the temp file; the folder must exist.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # Concurrent writers (workers converting the same model): rename is atomic, last one wins.
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_toml_text(path: Path, shown: str, what: str, reason: str) -> str:
    """The text of a TOML file, or a one-line error.

    TOML is UTF-8 by definition; a byte-order mark (some Windows editors write one) is dropped.
    """
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise MediadError(f"{shown}: cannot read {what}: {e.strerror}", reason=reason) from None
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise MediadError(f"{shown}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})",
                          reason=reason) from None
