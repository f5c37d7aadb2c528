"""Sources a caller opened and checked once, then read through that descriptor.

The daemon's worker opens its source with O_NOFOLLOW and checks the descriptor (a regular file,
the inode and size the daemon fingerprinted, inside the watched folder). Every later open of
that path in the process (probe, decode, cover art, the growth check) goes through
/proc/self/fd/N, the same file whatever is renamed or linked over the name meanwhile: a
symlink swapped in after the checks is never followed. Reports and messages keep the name.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

_PINNED: dict[str, int] = {}


def pin(path: Path, fd: int) -> None:
    """Read `path` through descriptor `fd` from now on, in this process."""
    _PINNED[str(path)] = fd


def read_path(path: Path) -> Path:
    """Where to open `path` for reading: its pinned descriptor's path, or itself."""
    fd = _PINNED.get(str(path))
    return Path(f"/proc/self/fd/{fd}") if fd is not None else path


def release() -> None:
    """Forget every pinned path and close its descriptor (a job's end, in a reused process)."""
    for fd in _PINNED.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _PINNED.clear()

