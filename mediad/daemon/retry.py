"""`mediad retry`: put failed jobs back in the daemon's queue, whether the daemon runs or not.

A failed job's source is in its watch's failed_dir with `<name>.error.json` beside it (or, with no
failed_dir, still in place with the note beside it). Retry finds it through that note, moves it
back to its original path (never over anything that is there now), removes the note, records the
file as it is now (it may have been fixed or replaced) and sets the job queued with its attempts
at zero.

While the daemon runs, `mediad retry` only names the jobs: it writes a retry command to the state
database (the command channel the API uses too) and the daemon does the above on a thread of its
own, then starts the job. With no daemon running there is nobody to ask, and the command does it
itself; the daemon starts the job at its next start.

Order matters while the daemon runs: the job's new identity (dedup key, stat) is recorded before
the file reappears in the watched folder, so the watcher recognises it as this job instead of
queueing it as a new one; the job is queued only once the file is back in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mediad.config import Config, WatchConfig
from mediad.daemon.disposition import move_temp_prefix
from mediad.daemon.fingerprint import Fingerprint, fingerprint, job_key
from mediad.daemon.paths import refusal
from mediad.daemon.queue import MAX_ID, Job, Queue, refused
from mediad.daemon.status import daemon_pid, state_database
from mediad.errors import MediadError, Reason
from mediad.fsutil import NO_HARD_LINK, fsync_dir

NOTE_SUFFIX = ".error.json"
DISPOSAL_WAIT = 10.0  # seconds to wait for a daemon still moving a just-failed source aside
RETRY_WAIT = 120.0  # for a running daemon to answer a retry (moving a source back may copy it)
MOVED_BACK = " (moved back from "  # in a retry command's result: `requeued (moved back from P)`


@dataclass(frozen=True)
class Requeued:
    """One job put back in the queue."""

    job: int
    source: Path
    moved_from: Path | None  # where it was brought back from; None: it was in place
    warning: str | None = None

    def line(self) -> str:
        """The one line `mediad retry` prints for it."""
        back = f" (moved back from {self.moved_from})" if self.moved_from else ""
        return f"job {self.job}: requeued {self.source}{back}"


@dataclass(frozen=True)
class Note:
    """A `<name>.error.json` written by disposition.after_failure."""

    path: Path
    data: dict
    mtime: float


def read_note(path: Path) -> Note | None:
    """The note at `path`, or None when there is none or it is not one of ours."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
            mtime = os.fstat(f.fileno()).st_mtime
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("job"), int):
        return None
    return Note(path, data, mtime)


def retry(config_path: Path | None, targets: list[str], *,
          all_failed: bool = False) -> list[Requeued | MediadError]:
    """Requeue the failed jobs named by id or path (or every failed job); one result per job,
    in order: what was requeued, or why not. Raises MediadError when the queue cannot be opened."""
    _path, config, db = state_database(config_path)
    try:
        queue = Queue(config.daemon.state_dir)
    except sqlite3.Error as e:
        raise MediadError(f"{db}: cannot open the state database: {e}", reason=Reason.BAD_STATE) from None
    try:
        running = daemon_pid(config.daemon.state_dir) is not None
        retrier = Retrier(config, queue, daemon_running=running)
        results: list[Requeued | MediadError] = []
        names: list[int | str] = [j.id for j in queue.failed_jobs()] if all_failed else list(targets)
        done: set[int] = set()
        for name in names:
            try:
                job_id = name if isinstance(name, int) else retrier.resolve(name)
                if job_id in done:  # named twice (by id and by path): once is enough
                    continue
                done.add(job_id)
                # A running daemon owns its queue and folders: it moves the file back itself.
                results.append(through_daemon(queue, job_id) if running else retrier.retry(job_id))
            except MediadError as e:
                results.append(e)
            except sqlite3.Error as e:  # locked for longer than busy_timeout, read-only...
                label = f"job {name}" if isinstance(name, int) or name.isdigit() else name
                results.append(MediadError(f"{label}: {db}: {e}", reason=Reason.BAD_STATE))
        return results
    finally:
        queue.close()


class Retrier:
    """Finds failed jobs and their sources, and puts them back."""

    def __init__(self, config: Config, queue: Queue, *, daemon_running: bool) -> None:
        self.config = config
        self.queue = queue
        self.daemon_running = daemon_running
        self._notes: dict[Path, dict[int, list[Note]]] = {}  # failed_dir -> job id -> its notes

    # ----- finding the job and its file -------------------------------------------------

    def resolve(self, target: str) -> int:
        """A job id from an argument: digits are an id; anything else a path, matched to the
        note beside it (a file in failed_dir, or the note itself), else to a job's source."""
        if target.isascii() and target.isdigit():
            if int(target) > MAX_ID:  # SQLite would raise OverflowError: no such id
                raise MediadError(f"job {target}: no such job", reason=Reason.NO_JOB)
            return int(target)
        path = Path(os.path.abspath(target))
        note_path = path if path.name.endswith(NOTE_SUFFIX) else path.with_name(path.name + NOTE_SUFFIX)
        note = read_note(note_path)
        if note is not None:
            job = self.queue.get(note.data["job"])
            if job is not None and job.source == note.data.get("source"):
                return job.id
        jobs = self.queue.by_source(path)
        if not jobs:
            raise MediadError(f"{path}: no job has this source, and no error note names it",
                              reason=Reason.NO_JOB)
        # The same path may have been several files over time: the failed one is meant.
        return next((j for j in jobs if j.state == "failed"), jobs[0]).id

    def _failed_dir_notes(self, folder: Path) -> dict[int, list[Note]]:
        """The notes in a failed_dir by job id, read once per run (`--failed` needs them all)."""
        if folder not in self._notes:
            index: dict[int, list[Note]] = {}
            with contextlib.suppress(OSError):
                for entry in os.scandir(folder):
                    if entry.name.endswith(NOTE_SUFFIX) and entry.is_file(follow_symlinks=False):
                        note = read_note(Path(entry.path))
                        if note is not None:
                            index.setdefault(note.data["job"], []).append(note)
            self._notes[folder] = index
        return self._notes[folder]

    def _note_for(self, job: Job, watch: WatchConfig) -> Note | None:
        """The job's error note: beside its source (not moved) or in failed_dir."""
        candidates: list[Note] = []
        beside = read_note(Path(job.source + NOTE_SUFFIX))
        if beside is not None:
            candidates.append(beside)
        if watch.failed_dir is not None:
            candidates += self._failed_dir_notes(watch.failed_dir).get(job.id, [])
        # The source check guards against a job id reused after a row was deleted by hand.
        mine = [n for n in candidates if n.data["job"] == job.id and n.data.get("source") == job.source]
        return max(mine, key=lambda n: n.mtime) if mine else None

    @staticmethod
    def _moved_copy(job: Job, watch: WatchConfig) -> Path | None:
        """Where the daemon moved the failed source, as the state database recorded it, and
        only inside the watch's failed_dir. Never the error note's word: notes are for people,
        and anyone who can write failed_dir can rewrite one."""
        if job.moved_to is None or watch.failed_dir is None:
            return None
        moved = Path(job.moved_to)
        if os.path.realpath(moved.parent) != os.path.realpath(watch.failed_dir):
            return None
        return moved

    def _locate(self, job: Job, watch: WatchConfig) -> Path | None:
        """Where the failed source is: a path to move back from, or None when it is in place.
        Raises MediadError when it cannot be retried from where it is."""
        source = Path(job.source)
        moved = self._moved_copy(job, watch)
        if moved is not None and os.path.lexists(moved):
            if os.path.lexists(source):
                if not os.path.samestat(os.lstat(moved), os.lstat(source)):
                    raise MediadError(f"job {job.id}: {source} exists; not moving {moved} back "
                                      "over it", reason=Reason.OCCUPIED)
                # One file under both names: a retry stopped between link and unlink. Finish it.
                os.unlink(moved)
            else:
                if not watch.path.is_dir():  # an unmounted share: do not recreate it locally
                    raise MediadError(f"job {job.id}: its watch folder {watch.path} is missing",
                                      reason=Reason.MISSING_WATCH)
                why = refusal(watch, source)
                if why != "vanished":  # "vanished" is what a free path gives
                    raise MediadError(f"job {job.id}: cannot move {moved} back to {source}: "
                                      f"refused ({why})", reason=why or Reason.ERROR)
                return moved
        if not os.path.lexists(source):
            gone = f"neither {source} nor {moved} exists" if moved else f"{source} does not exist"
            raise MediadError(f"job {job.id}: its source is gone ({gone})", reason=Reason.MISSING_INPUT)
        why = refusal(watch, source)
        if why:
            raise MediadError(f"job {job.id}: {source}: refused ({why})",
                              reason=Reason.MISSING_INPUT if why == "vanished" else why)
        if moved is not None and _fingerprint(job, source).digest != job.digest:
            # Its note says it was moved away, and that copy is gone: whatever is at the source
            # path now is another file, unless a stopped retry already brought this one back.
            raise MediadError(f"job {job.id}: {moved} is gone and {source} is another file",
                              reason=Reason.MISSING_INPUT)
        return None

    # ----- putting it back --------------------------------------------------------------

    def retry(self, job_id: int) -> Requeued:
        """Requeue one failed job; raises MediadError (one line) when it cannot be."""
        try:
            return self._retry(job_id)
        except OSError as e:  # permissions, I/O: one line like every other refusal
            where = f"{e.filename}: " if e.filename else ""
            raise MediadError(f"job {job_id}: {where}{e.strerror or e}", reason=Reason.IO_ERROR) from None

    def _retry(self, job_id: int) -> Requeued:
        job = self.queue.get(job_id)
        if job is None:
            raise MediadError(f"job {job_id}: no such job", reason=Reason.NO_JOB)
        if job.state != "failed":
            raise MediadError(f"job {job_id}: is {job.state}; only failed jobs can be retried",
                              reason=Reason.NOT_FAILED)
        deadline = time.monotonic() + DISPOSAL_WAIT
        while not job.disposed and self.daemon_running and time.monotonic() < deadline:
            # It failed a moment ago and the daemon is moving its source aside right now
            time.sleep(0.05)
            job = self.queue.get(job_id) or job
        if not job.disposed and self.daemon_running:
            raise MediadError(f"job {job_id}: its source is still being moved aside; try again",
                              reason=Reason.BUSY)
        watch = next((w for w in self.config.watch if str(w.path) == job.watch), None)
        if watch is None:
            raise MediadError(f"job {job_id}: its watch {job.watch} is no longer in the config",
                              reason=Reason.NO_WATCH)
        if os.path.lexists(job.output):
            # Left to the user: the daemon never replaces it (the job would write to a -2 name).
            raise MediadError(f"job {job_id}: its output {job.output} exists; move it away first",
                              reason=Reason.OUTPUT_EXISTS)
        source = Path(job.source)
        note = self._note_for(job, watch)
        moved_from = self._locate(job, watch)
        fp = _fingerprint(job, moved_from or source)
        # The job's own profile and output folder: the watch's, or those a submit (the API) named
        key = job_key(fp, job.profile, Path(job.output_dir) if job.output_dir else watch.output_dir)
        other = self.queue.by_key(key)
        if other is not None and other.id != job.id:
            raise MediadError(f"job {job_id}: {moved_from or source} has the same content as job "
                              f"{other.id} ({other.state})", reason=Reason.DUPLICATE)

        try:
            if not self.queue.reidentify(job.id, key, fp):
                raise self._no_longer_failed(job_id)
        except sqlite3.IntegrityError:
            raise MediadError(f"job {job_id}: its content was just queued as another job",
                              reason=Reason.DUPLICATE) from None
        try:
            if moved_from is not None:
                self._move_back(job, moved_from, source)
            st = os.lstat(source)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # as it was: still failed, file not back
                self.queue.reidentify(job.id, job.key, job.fingerprint)
            raise
        here = Fingerprint(st.st_size, st.st_mtime_ns, st.st_ino, fp.digest)
        warning = None
        if note is not None:
            # Removed while the job is still failed: once it is queued, a quick new failure
            # may write a fresh note under the same name.
            try:
                note.path.unlink(missing_ok=True)
            except OSError as e:
                warning = f"job {job_id}: cannot remove {note.path}: {e.strerror}"
        self.queue.remember(source, here, key)  # known at this stat: no hashing at the next scan
        if not self.queue.requeue_failed(job.id, key, here):
            raise self._no_longer_failed(job_id)
        return Requeued(job.id, source, moved_from, warning)

    def _no_longer_failed(self, job_id: int) -> MediadError:
        job = self.queue.get(job_id)
        return MediadError(f"job {job_id}: is {job.state if job else 'gone'} now; not retried",
                           reason=Reason.NOT_FAILED)

    @staticmethod
    def _move_back(job: Job, src: Path, dest: Path) -> None:
        """Move `src` to `dest`, never replacing a file there, even one that appears meanwhile."""
        occupied = MediadError(f"job {job.id}: {dest} exists; not moving {src} back over it",
                               reason=Reason.OCCUPIED)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dest)  # atomic, and fails if dest exists: no check-then-rename race
            except FileExistsError:
                raise occupied from None
            except OSError as e:
                if e.errno not in NO_HARD_LINK:
                    raise
                _copy_no_replace(src, dest, occupied)
            fsync_dir(dest.parent)  # the name at dest is durable before the one in src goes
            try:
                os.unlink(src)
            except OSError:
                # Undo rather than leave the file under two names, one of them watched.
                with contextlib.suppress(OSError):
                    dest.unlink()
                raise
            fsync_dir(src.parent)
        except OSError as e:
            raise MediadError(f"job {job.id}: cannot move {src} back to {dest}: "
                              f"{e.strerror or e}", reason=Reason.IO_ERROR) from None


def through_daemon(queue: Queue, job_id: int) -> Requeued:
    """Ask the running daemon to retry `job_id` (the command channel) and wait for its answer;
    raises MediadError with the daemon's reason when it refuses, or when it does not answer."""
    command_id = queue.add_command("retry", job_id)
    deadline = time.monotonic() + RETRY_WAIT
    while time.monotonic() < deadline:
        command = queue.command(command_id)
        if command is not None and command.result is not None:
            if not command.ok:
                reason, message = command.refusal()
                raise MediadError(message, reason=_reason(reason))
            job = queue.get(job_id)
            assert job is not None  # requeued a moment ago; jobs are never deleted
            back = command.result.partition(MOVED_BACK)[2].removesuffix(")")
            return Requeued(job_id, Path(job.source), Path(back) if back else None)
        time.sleep(0.05)
    raise MediadError(f"job {job_id}: asked the daemon to retry it; it has not answered in "
                      f"{RETRY_WAIT:.0f}s (it applies it when it can)", reason=Reason.BUSY)


def _reason(name: str) -> Reason:
    try:
        return Reason(name)
    except ValueError:
        return Reason.ERROR


class CommandRetrier:
    """The daemon's retry commands (the API's POST /api/v1/jobs/{id}/retry): `mediad retry`'s
    rules, on a thread of their own (moving a source back may copy a large file) with a
    connection of their own, as `mediad retry` writes from its own process."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.queue: Queue | None = None  # opened on the thread that uses it

    def __call__(self, item: tuple[int, Config, int]) -> tuple[int, str]:
        """(command id, the command's result) for (command id, config, job id)."""
        command_id, config, job_id = item
        try:
            if self.queue is None:
                self.queue = Queue(self.state_dir)
            done = Retrier(config, self.queue, daemon_running=True).retry(job_id)
        except MediadError as e:
            return command_id, refused(e.reason, e)
        except sqlite3.Error as e:
            return command_id, refused("bad_state", f"job {job_id}: {e}")
        except Exception as e:  # a bug: answered, not left pending for ever
            return command_id, refused("internal_error", f"job {job_id}: {type(e).__name__}: {e}")
        back = f"{MOVED_BACK}{done.moved_from})" if done.moved_from else ""
        return command_id, f"requeued{back}"


def _fingerprint(job: Job, path: Path) -> Fingerprint:
    try:
        return fingerprint(path)
    except MediadError as e:  # not a regular file, unreadable
        raise MediadError(f"job {job.id}: {e}", reason=e.reason) from None


def _copy_no_replace(src: Path, dest: Path, occupied: MediadError) -> None:
    """Another file system (or no hard links): copy to a hidden name beside `dest`, fsync, then
    link or rename it to `dest` without replacing anything."""
    # A dot-name: the watcher ignores it until it has its real name.
    fd, name = tempfile.mkstemp(prefix=move_temp_prefix(), suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        shutil.copy2(src, tmp)  # keeps the mtime, so the stat recorded for the job holds
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        try:
            os.link(tmp, dest)
        except FileExistsError:
            raise occupied from None
        except OSError as e:
            if e.errno not in NO_HARD_LINK:
                raise
            if os.path.lexists(dest):  # no hard links at all here: check, then rename
                raise occupied from None
            os.rename(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
