"""Who a source file is: size, mtime, inode and a hash of its whole content."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from mediad.errors import MediadError, Reason

# The whole content is hashed: a file whose middle changed (a torrent's pieces filled in, a tag
# rewritten in place) is new content, a touched or copied file is not. About 1 GB/s from the
# page cache; the daemon hashes on a thread of its own (hasher.py), never in its main loop.
READ = 4 << 20


@dataclass(frozen=True)
class Fingerprint:
    """Identity of one version of a file."""

    size: int
    mtime_ns: int
    inode: int
    digest: str

    def same_stat(self, st: os.stat_result) -> bool:
        """True when `st` shows the very file this fingerprint was taken from, unchanged."""
        return (st.st_size, st.st_mtime_ns, st.st_ino) == (self.size, self.mtime_ns, self.inode)


def open_regular(path: Path) -> int:
    """Open a regular file read-only without following a symlink or blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise MediadError(f"{path}: cannot open: {e.strerror}", reason=Reason.UNREADABLE) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise MediadError(f"{path}: not a regular file", reason=Reason.NOT_REGULAR)
    return fd


def fingerprint(path: Path) -> Fingerprint:
    """Fingerprint a regular file (symlinks are refused by O_NOFOLLOW); reads all of it."""
    fd = open_regular(path)
    try:
        st = os.fstat(fd)
        h = hashlib.sha256(f"{st.st_size}:".encode())
        buf = bytearray(READ)
        view = memoryview(buf)
        offset = 0
        while n := os.preadv(fd, [buf], offset):
            h.update(view[:n])  # hashlib lets other threads run while it hashes a large block
            offset += n
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns) or offset != st.st_size:
            raise MediadError(f"{path}: changed while it was being identified",
                              reason=Reason.SOURCE_CHANGED, transient=True)
        return Fingerprint(st.st_size, st.st_mtime_ns, st.st_ino, h.hexdigest())
    finally:
        os.close(fd)


def job_key(fp: Fingerprint, profile: str, output_dir: Path) -> str:
    """The dedup key: same content, same profile, same destination -> same job.

    mtime and inode are left out on purpose, so a file touched or copied again unchanged is not
    transcoded twice.
    """
    text = f"{fp.digest}\0{profile}\0{output_dir}"
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Identified:
    """A settled file of watch number `watch`, fingerprinted, or why it could not be."""

    watch: int
    path: Path
    fp: Fingerprint | None
    error: MediadError | None = None
    command: int | None = None  # a submit command's (the API): its id; None: the watch's intake


def identify(item: tuple[int, Path] | tuple[int, Path, int]) -> Identified:
    """fingerprint() for the daemon's hashing thread: a failure is a result, not a raise."""
    watch, path, command = (*item, None)[:3]
    try:
        return Identified(watch, path, fingerprint(path), command=command)
    except MediadError as e:
        return Identified(watch, path, None, e, command=command)
    except OSError as e:  # a read error: unreadable now
        return Identified(watch, path, None, MediadError(f"{path}: cannot read: {e.strerror or e}",
                                                         reason=Reason.UNREADABLE), command=command)

