"""File-system helpers shared by the engine's neighbours (model cache, sidecars, daemon notes)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
