"""Profiles the API lists and shows, loaded from their files once per version of each file:
keyed by (path, mtime_ns, size), so an edited file is read again at the next request and an
unchanged one is not re-parsed and re-validated on every request."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from mediad.profiles import Profile, load_profile, resolve_profile_path


@dataclass(frozen=True)
class _Entry:
    version: tuple[int, int]  # the file's (mtime_ns, size) when it was read
    profile: Profile


class ProfileCache:
    """load_profile(spec), kept while the spec's file is unchanged (thread-safe: the API's
    handlers run on a thread pool)."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def load(self, spec: str) -> Profile:
        """The profile of `spec` (a built-in name or a .toml path); MediadError as
        load_profile raises it."""
        path = str(resolve_profile_path(spec))  # the name a profile gets is its file's stem
        try:
            st = os.stat(path)
        except OSError:  # gone meanwhile: load_profile says so
            return load_profile(spec)
        # Stat before reading: a file changed while it is read is read again next time
        version = (st.st_mtime_ns, st.st_size)
        with self._lock:
            entry = self._entries.get(path)
        if entry is not None and entry.version == version:
            return entry.profile
        profile = load_profile(spec)
        with self._lock:
            self._entries[path] = _Entry(version, profile)
        return profile
