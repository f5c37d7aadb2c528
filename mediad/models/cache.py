"""Where mediad keeps converted model weights (the per-user cache directory)."""

from __future__ import annotations

import os
from pathlib import Path

from mediad.errors import MediadError
from mediad.fsutil import atomic_write_bytes


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


def write_cache_file(path: Path, data: bytes) -> None:
    """Atomically write a model cache file, creating the cache folder (errors: MediadError)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MediadError(
            f"{path.parent}: cannot create the model cache folder ({e.strerror})"
        ) from e
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise MediadError(f"{path}: cannot write the model cache file ({e.strerror})") from e
