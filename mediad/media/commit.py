"""Commit: a temporary name beside the destination, fsync, then an atomic rename (of a file,
or of a folder holding an output set)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import stat
from pathlib import Path

from mediad.errors import MediadError, Reason
from mediad.fsutil import NO_HARD_LINK, exchange, fsync_dir, rename_no_replace

# The job an output file was committed for, in the file's extended attributes: kept through the
# link/rename of the commit, beside the file's bytes (which stay exactly what was verified).
JOB_XATTR = "user.mediad.job"
# An output set's own record, in the set: its job key, tracks and files (media.ladder_job).
RECORD = "mediad.json"


def mark_job(path: Path, key: str) -> bool:
    """Record in `path` (before it is committed) the key of the job that made it; False where
    the filesystem keeps no user extended attributes (then a re-run cannot recognise it)."""
    try:
        os.setxattr(path, JOB_XATTR, key.encode("ascii"), follow_symlinks=False)
    except OSError:
        return False
    return True


def job_of(path: Path) -> str | None:
    """The key of the job that committed the file at `path`, if it carries one."""
    try:
        return os.getxattr(path, JOB_XATTR, follow_symlinks=False).decode("ascii", "replace")
    except OSError:
        return None


def set_record(folder: Path) -> dict | None:
    """The record of a committed set; None when `folder` is not one."""
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def committed_key(folder: Path) -> str | None:
    """The job key of a committed set that is still whole (every file it lists there, at its
    size); None when `folder` is not one, or a file went missing or changed since."""
    record = set_record(folder)
    if record is None:
        return None
    tracks = record.get("tracks", [])
    files = [(folder / name, None) for t in tracks for name in t.get("files", [])]
    # A set's files live in its folder: looked for there by name, so the record holds whatever
    # path the machine that wrote it used (a cluster node may mount the storage elsewhere).
    files += [(folder / Path(f["path"]).name, f.get("size")) for f in record.get("files", [])]
    for path, size in files:
        try:
            if size is not None and path.stat().st_size != size or not path.is_file():
                return None
        except OSError:
            return None
    return record.get("job")


def committed_job(path: Path) -> str | None:
    """The key of the job that committed the output at `path`: a file's mark (job_of), or a
    whole set's record (committed_key); None for anything else, a link included."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    if stat.S_ISDIR(mode):
        return committed_key(path)
    return job_of(path) if stat.S_ISREG(mode) else None


def remove_output(path: Path) -> None:
    """Remove a committed output. A set is first renamed to a hidden temporary name, so no one
    sees it half removed; cut off midway, what is left is a stale set remove_stale_sets clears."""
    if not path.is_dir() or path.is_symlink():
        path.unlink(missing_ok=True)
        return
    hidden = temp_dir_for(path)
    try:
        os.rename(path, hidden)
    except FileNotFoundError:
        return
    shutil.rmtree(hidden)


def temp_path_for(dest: Path) -> Path:
    """A hidden, unique name in the destination folder (same filesystem, so rename is atomic).

    Dot-prefixed and marked `.part` so watchers (ours included) ignore it.
    """
    return dest.with_name(f".{dest.stem}.{os.getpid()}-{secrets.token_hex(4)}.part{dest.suffix}")


def temp_name(dest: Path) -> re.Pattern[str]:
    """What `temp_path_for(dest)`'s names look like; group 1: the writer's pid."""
    return re.compile(rf"\.{re.escape(dest.stem)}\.(\d+)-[0-9a-f]{{8}}\.part{re.escape(dest.suffix)}")


def remove_dead_writers(folder: Path, name: re.Pattern[str], *, dirs: bool = False) -> list[Path]:
    """Remove the files (or, `dirs`, folders) in `folder` whose names match `name`, its first
    group the writer's pid, when that writer is gone: only a SIGKILL (or a power cut) leaves
    one behind. Returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = name.fullmatch(entry.name)
        kind_ok = entry.is_dir(follow_symlinks=False) if dirs else \
            entry.is_file(follow_symlinks=False)
        if m is None or pid_alive(int(m.group(1))) or not kind_ok:
            continue
        try:
            if dirs:
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:  # gone meanwhile, or not ours to remove
            continue
        removed.append(Path(entry.path))
    return removed


def commit(tmp: Path, dest: Path, overwrite: bool) -> None:
    """Make `tmp` durable and visible as `dest`; never replaces an existing file unless asked."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    if overwrite:
        os.replace(tmp, dest)
    else:
        try:
            os.link(tmp, dest)  # fails if dest appeared meanwhile: no silent replacement
        except FileExistsError:
            raise MediadError(f"{dest}: already exists (use --overwrite to replace it)",
                              reason=Reason.OUTPUT_EXISTS) from None
        except OSError as e:
            if e.errno not in NO_HARD_LINK:
                raise
            if dest.exists():  # a filesystem without hard links: check, then rename
                raise MediadError(f"{dest}: already exists (use --overwrite to replace it)",
                                  reason=Reason.OUTPUT_EXISTS) from None
            os.rename(tmp, dest)
        else:
            tmp.unlink()
    fsync_dir(dest.parent)


def temp_dir_for(dest: Path) -> Path:
    """A hidden, unique folder beside a destination folder, for writing an output set."""
    return dest.with_name(f".{dest.name}.{os.getpid()}-{secrets.token_hex(4)}.part")


def pid_alive(pid: int) -> bool:
    """True while process `pid` exists (owned by us or not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user (e.g. the mediad user, seen by `mediad status`)
    return True


def remove_stale_sets(dest: Path) -> list[Path]:
    """Remove hidden set folders of `dest` (`temp_dir_for`'s) whose writer process is gone."""
    name = re.compile(rf"\.{re.escape(dest.name)}\.(\d+)-[0-9a-f]{{8}}\.part")
    return remove_dead_writers(dest.parent, name, dirs=True)


def commit_folder(tmp: Path, dest: Path, overwrite: bool) -> None:
    """Make every file of the set in `tmp` durable, then make it visible as `dest` in one
    rename: a crash leaves either no `dest` (or the old one) or the complete set."""
    for path in sorted(tmp.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    for folder in [*(p for p in tmp.rglob("*") if p.is_dir()), tmp]:
        fsync_dir(folder)
    try:
        rename_no_replace(tmp, dest)
    except FileExistsError:
        if not overwrite:
            raise MediadError(f"{dest}: already exists (use --overwrite to replace it)",
                              reason=Reason.OUTPUT_EXISTS) from None
        if exchange(tmp, dest):  # the new set in, the old one out, in one step
            shutil.rmtree(tmp)
        else:  # no atomic swap here: the old set moves aside (hidden) first
            old = tmp.with_name(tmp.name + ".old")
            os.rename(dest, old)
            os.rename(tmp, dest)
            shutil.rmtree(old)
    fsync_dir(dest.parent)
