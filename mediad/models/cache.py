"""Where mediad keeps converted model weights: the per-user cache directory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mediad.errors import MediadError


def cache_dir() -> Path:
    """mediad's cache root: $MEDIAD_CACHE_DIR, else $XDG_CACHE_HOME/mediad, else ~/.cache/mediad."""
    explicit = os.environ.get("MEDIAD_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # XDG spec: a relative $XDG_CACHE_HOME is invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "mediad"


def models_cache_dir() -> Path:
    """The folder for converted model weights (<cache root>/models), not created here."""
    return cache_dir() / "models"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file + rename, so readers never see a partial file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise MediadError(
            f"{path.parent}: cannot create the model cache folder ({e.strerror})"
        ) from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # Concurrent workers may race to convert the same model: rename is atomic, last one wins.
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise MediadError(f"{path}: cannot write the model cache file ({e.strerror})") from e
