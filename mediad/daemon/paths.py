"""Which files a watch takes, which it refuses, and safe names for what it writes."""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
import unicodedata
from pathlib import Path, PurePosixPath

from mediad.config import WatchConfig
from mediad.errors import MediadError, Reason
from mediad.media.commit import RECORD
from mediad.profiles import Profile

# Names that mean "still being written" by browsers, rsync, download tools and editors.
TEMP_SUFFIXES = (".part", ".tmp", ".temp", ".crdownload", ".partial", ".download", ".!qb",
                 ".error.json")
MAX_NAME_BYTES = 200


def is_temporary(name: str) -> bool:
    """True for names taken only once renamed: dot-files, `~` backups, .part/.tmp/... downloads."""
    lower = name.lower()
    return name.startswith(".") or name.endswith("~") or lower.endswith(TEMP_SUFFIXES)


def relative_to_watch(watch: WatchConfig, path: Path) -> PurePosixPath | None:
    """`path` relative to the watched folder, or None when it is not inside (lexically)."""
    try:
        rel = PurePosixPath(os.path.relpath(path, watch.path))
    except ValueError:
        return None
    if rel.parts[:1] == ("..",) or rel == PurePosixPath("."):
        return None
    return rel


def wanted(watch: WatchConfig, path: Path) -> bool:
    """True when the watch takes this path by name (not temporary, included, not excluded)."""
    rel = relative_to_watch(watch, path)
    if rel is None:
        return False
    if not watch.recursive and len(rel.parts) != 1:
        return False
    if any(is_temporary(part) for part in rel.parts):
        return False

    def match(pattern: str) -> bool:
        # A pattern with a slash matches the relative path, one without matches the file name.
        return fnmatch.fnmatchcase(str(rel) if "/" in pattern else rel.name, pattern)

    return any(match(p) for p in watch.include) and not any(match(p) for p in watch.exclude)


def refusal(watch: WatchConfig, path: Path) -> str | None:
    """Why this path must not be read (symlink, escapes the folder, not a regular file, a hard
    link), or None."""
    return inspect_source(watch, path)[0]


def inspect_source(watch: WatchConfig, path: Path) -> tuple[str | None, os.stat_result | None]:
    """(refusal reason or None, the file's lstat when it was reached): `refusal` plus the stat it
    took anyway, so a caller that needs the stat does not take it again."""
    rel = relative_to_watch(watch, path)
    if rel is None:
        return "outside_watch", None
    # Every component below the watched folder must be a real directory or file: a symlink
    # anywhere could point a job at /etc or at another user's files.
    current = watch.path
    for part in rel.parts:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return "vanished", None
        except OSError:
            return "unreadable", None
        if stat.S_ISLNK(st.st_mode):
            return "symlink", st
    try:
        real = Path(os.path.realpath(path))
    except OSError:
        return "unreadable", st
    if not real.is_relative_to(Path(os.path.realpath(watch.path))):
        return "outside_watch", st
    if not stat.S_ISREG(st.st_mode):
        return "not_regular", st
    if st.st_nlink > 1 and not watch.allow_hard_links:
        return "hard_link", st  # the same file may have a name outside the folder
    return None, st


def safe_component(name: str, fallback: str = "video", also: str = "") -> str:
    """One path component that cannot traverse, hide, or confuse a shell or a terminal; the
    characters in `also` are replaced too."""
    name = unicodedata.normalize("NFC", name)
    out = []
    for ch in name:
        cat = unicodedata.category(ch)
        if "\udca0" <= ch <= "\udcff":
            out.append(ch)  # a byte of a name that is not UTF-8 (Latin-1 é): kept as it was
        elif ch in '/\\:*?"<>|' or ch in also or cat.startswith("C") or cat in ("Zl", "Zp"):
            out.append("_")
        else:
            out.append(ch)
    # No leading dot (hidden, or "..") or dash (an option to a shell tool), no trailing dot/space.
    text = "".join(out).strip().lstrip(".-").rstrip(". ")
    while len(os.fsencode(text)) > MAX_NAME_BYTES:
        text = text[:-1]
    return text or fallback


def output_candidates(watch: WatchConfig, source: Path, profile: Profile) -> list[Path]:
    """Output paths for `source`, first choice first: `<stem>.<suffix>`, then
    `<stem>-2.<suffix>`, ...: a file named with the container's extension, or a ladder's folder
    with the profile's name (`talk.hls/`, `talk-2.hls/`, as `mediad transcode` names one).

    Sub-folders of a recursive watch are mirrored under output_dir, each name made safe.
    """
    rel = relative_to_watch(watch, source)
    parts = rel.parts if rel is not None else (source.name,)
    also = "%" if profile.is_ladder else ""  # FFmpeg's segmenters read it as a pattern
    folder = watch.output_dir.joinpath(*(safe_component(p, "folder", also) for p in parts[:-1]))
    stem = safe_component(Path(parts[-1]).stem, also=also)
    suffix = profile.output_suffix
    names = [f"{stem}.{suffix}"] + [f"{stem}-{n}.{suffix}" for n in range(2, 1000)]
    paths = [folder / n for n in names]
    # Belt and braces: whatever the names were, every candidate must stay under output_dir.
    return [p for p in paths if Path(os.path.normpath(p)).is_relative_to(watch.output_dir)]


def enclosing_set(output_dir: Path, output: Path) -> Path | None:
    """The committed output set (a ladder's folder, known by its record) that `output` would be
    written into, if any: a recursive watch's mirrored sub-folder may bear the name of a
    ladder's folder (`a.hls/` for `a.mp4` beside the folder `a.hls/`), and a set is never
    written into."""
    folder = output.parent
    while folder != output_dir and folder.is_relative_to(output_dir):
        if os.path.lexists(folder / RECORD):
            return folder
        folder = folder.parent
    return None


def unique_destination(folder: Path, name: str) -> Path:
    """A path in `folder` named `name` (made safe), or `name-2`, `name-3`... if that is taken."""
    safe = safe_component(name)
    stem, dot, ext = safe.partition(".")  # safe_component leaves no leading dot
    candidate = folder / safe
    n = 2
    while os.path.lexists(candidate):
        candidate = folder / f"{stem}-{n}{dot}{ext}"
        n += 1
    return candidate


def open_checked_source(path: Path, root: Path, *, inode: int, size: int,
                        allow_hard_links: bool) -> int:
    """Open a job's source once and check that descriptor, not the name: not a symlink (the
    last component opened with O_NOFOLLOW; the descriptor's real path inside `root`, so no
    folder on the way was one), a regular file, the inode and size the daemon fingerprinted,
    no other hard links unless allowed. The job then reads only through it (media.pinned)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MediadError(f"{path}: the source disappeared before its job ran",
                          reason=Reason.MISSING_INPUT) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise MediadError(f"{path}: refused (symlink)", reason=Reason.SYMLINK) from None
        raise
    try:
        st = os.fstat(fd)
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
        why = None
        if not stat.S_ISREG(st.st_mode):
            why = "not_regular"
        elif not real.is_relative_to(Path(os.path.realpath(root))):
            why = "outside_watch"
        elif st.st_nlink > 1 and not allow_hard_links:
            why = "hard_link"
        if why is not None:
            raise MediadError(f"{path}: refused ({why})", reason=why)
        if (st.st_ino, st.st_size) != (inode, size):
            raise MediadError(f"{path}: not the file its job was queued for (replaced or "
                              "changed since)", reason=Reason.SOURCE_CHANGED, transient=True)
    except BaseException:
        os.close(fd)
        raise
    return fd

