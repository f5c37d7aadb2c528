"""File-system helpers shared by the engine's neighbours (model cache, sidecars, daemon notes)."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from mediad.errors import MediadError, Reason

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
    import tempfile  # here: a transcode never writes through it (random, shutil, ...)

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


def read_toml_text(path: Path, shown: str, what: str, reason: Reason) -> str:
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


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """Linux renameat2(); False where the C library or the filesystem lacks it."""
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:
        return False
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(dst))


def rename_no_replace(src: Path, dst: Path) -> None:
    """Rename `src` to `dst`, refusing (FileExistsError) when `dst` exists, atomically where the
    filesystem can (a plain rename would replace an empty folder)."""
    if not _renameat2(src, dst, _RENAME_NOREPLACE):
        if dst.exists():
            raise FileExistsError(errno.EEXIST, "exists", str(dst))
        os.rename(src, dst)


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step; False where the filesystem cannot."""
    return _renameat2(a, b, _RENAME_EXCHANGE)
