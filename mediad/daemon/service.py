"""The daemon: one main loop that owns the queue, the intake, the workers, signals and sd_notify.

Everything that changes state runs on the main thread (observers and the metrics server only
post events or read gauges), so there is no locking around SQLite or the worker table.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import selectors
import signal
import sqlite3
import time
import traceback
from pathlib import Path

from mediad import log
from mediad.config import Config, WatchConfig, load_config
from mediad.daemon import disposition
from mediad.daemon.background import Background
from mediad.daemon.disposition import REWRITTEN, Disposed
from mediad.daemon.fingerprint import Fingerprint, Identified, identify, job_key
from mediad.daemon.metrics import Metrics
from mediad.daemon.notify import Notifier
from mediad.daemon.outcomes import Action, decide
from mediad.daemon.partial import remove_partials
from mediad.daemon.paths import (
    inspect_source,
    output_candidates,
    refusal,
    relative_to_watch,
    wanted,
)
from mediad.daemon.pool import Outcome, Worker, spawn
from mediad.daemon.queue import DB_NAME, USER_RETRY, Job, Queue
from mediad.daemon.retry import NOTE_SUFFIX, read_note
from mediad.daemon.settle import Settler
from mediad.daemon.slots import choose_gpu
from mediad.daemon.status import PID_FILE
from mediad.daemon.watcher import Watcher, scan
from mediad.errors import MediadError, Reason
from mediad.media.commit import job_of
from mediad.profiles import Profile, load_profile

KILL_AFTER = 5.0          # seconds between SIGTERM and SIGKILL for a worker we stop
PROGRESS_WRITE_EVERY = 1.0  # seconds between progress rows written per job
WATCH_RETRY = 10.0        # seconds between attempts to start a watch whose folder is missing
STATE_FULL_RETRY = 5.0    # seconds between tries to record files while the state disk is full


def _disk_full(e: sqlite3.OperationalError) -> bool:
    """SQLITE_FULL: the state database's disk (or its quota) is full."""
    return getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "is full" in str(e)


def damaged_database(db: Path, detail: str) -> MediadError:
    """The one line for a state database SQLite reads as damaged."""
    return MediadError(f"{db}: the state database is damaged ({detail.splitlines()[0]}); move "
                       "it aside to start afresh (outputs already committed are recognised by "
                       "their job key and not made again)", reason=Reason.BAD_STATE)


def run_daemon(config_path: Path) -> int:
    """Run the watch-folder daemon until SIGTERM/SIGINT; 0 on a clean stop."""
    config = load_config(config_path)
    log.setup(config.daemon.log_level)
    return Daemon(config_path, config).run()


class Daemon:
    """The long-running service."""

    def __init__(self, config_path: Path, config: Config) -> None:
        self.config_path = config_path
        self.config = config
        self.state_dir = config.daemon.state_dir
        self._lock_fd = self._lock_state_dir()
        try:
            self.queue = Queue(self.state_dir)
        except sqlite3.DatabaseError as e:
            db = self.state_dir / DB_NAME
            if "malformed" in str(e) or "not a database" in str(e):
                raise damaged_database(db, str(e)) from None
            raise MediadError(f"{self.state_dir}: cannot open the state database: {e}",
                              reason=Reason.BAD_STATE) from None
        if (problem := self.queue.check()) is not None:  # damage inside a page shows only here
            raise damaged_database(self.queue.path, problem)
        self._state_id = self._state_identity()
        self.state_lost = False
        self.next_state_check = 0.0
        self.metrics = Metrics()
        self.notifier = Notifier()
        self.settler = Settler()
        self.sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self.watcher = Watcher(self._wake)
        # Whole-file hashing and cross-filesystem moves: on threads of their own
        self.hasher: Background[tuple[int, Path], Identified] = Background(
            identify, self._wake, name="mediad-hasher")
        self.disposer: Background[tuple[Job, WatchConfig | None], Disposed] = Background(
            disposition.dispose, self._wake, name="mediad-disposer")
        self.workers: dict[int, Worker] = {}
        self.nvenc_in_use: dict[int, int] = {}
        self.devices = self._gpu_devices()
        self.refused: set[tuple[str, str]] = set()
        self.stop_requests = 0
        self.stop_deadline: float | None = None
        self.reload_requested = False
        self.next_rescan = 0.0
        self.next_watch_retry = 0.0
        self._progress_written: dict[int, float] = {}
        self._space_waits: dict[int, int] = {}  # per job: disk_full retries in a row
        self.unrecorded: dict[tuple[int, Path], Identified] = {}  # state disk full: to retry
        self.next_unrecorded = 0.0
        self.state_full = False
        self._counts: dict[str, int] = {}
        self._counts_dirty = True

    # ----- set-up and tear-down -------------------------------------------------------------

    def _lock_state_dir(self) -> int:
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        except OSError as e:
            raise MediadError(f"{self.state_dir}: cannot create the state directory: {e.strerror}",
                              reason=Reason.BAD_STATE) from None
        fd = os.open(self.state_dir / PID_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise MediadError(f"{self.state_dir}: another mediad daemon is using this state_dir "
                              f"(pid {other or '?'})", reason=Reason.BUSY) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _state_identity(self) -> tuple[tuple[int, int], ...] | None:
        """(device, inode) of the database and the pid lock; None when either is gone."""
        try:
            return tuple((st.st_dev, st.st_ino) for st in
                         (os.stat(self.state_dir / DB_NAME), os.stat(self.state_dir / PID_FILE)))
        except OSError:
            return None

    def _check_state(self, now: float) -> None:
        """Notice a state dir deleted or replaced under the running daemon (its writes would go
        to a deleted database, its lock with it): take no more jobs and stop, exit status 1."""
        if now < self.next_state_check or self.state_lost:
            return
        self.next_state_check = now + 1.0
        if self._state_identity() == self._state_id:
            return
        self.state_lost = True
        self.stop_requests = max(self.stop_requests, 1)
        log.event("state_lost", logging.ERROR, state_dir=self.state_dir,
                  error="the state directory was deleted or replaced: no more jobs are taken "
                        "and the daemon stops; started again, it begins a fresh state (outputs "
                        "already committed are recognised, not made again)")

    @staticmethod
    def _gpu_devices() -> list[int]:
        """CUDA ordinals of the visible GPUs that have NVENC (the ones with a session budget)."""
        from mediad.gpu import read_telemetry

        records, _why = read_telemetry()
        # has_nvenc None (NVML could not tell) counts as NVENC: the budget then errs on the safe side.
        return sorted(r.cuda_index for r in records
                      if r.cuda_index is not None and r.has_nvenc is not False)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    def _install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

        def on_stop(signum: int, _frame: object) -> None:
            self.stop_requests += 1

        def on_hup(signum: int, _frame: object) -> None:
            self.reload_requested = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        # A writer opening a file while we hold our (microsecond) read lease makes the kernel
        # send SIGIO, whose default action would kill the daemon.
        signal.signal(signal.SIGIO, signal.SIG_IGN)

    def _close(self) -> None:
        self.watcher.stop_all()
        self.hasher.stop()
        self.disposer.stop()
        self.metrics.stop()
        self.queue.close()
        self.notifier.close()
        signal.set_wakeup_fd(-1)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        os.ftruncate(self._lock_fd, 0)
        os.close(self._lock_fd)

    # ----- the main loop --------------------------------------------------------------------

    def run(self) -> int:
        """Recover, scan, announce READY, then loop until stopped; returns the exit status."""
        self._install_signals()
        for watch in self.config.watch:  # copies cut off by a kill: their sources move again
            for folder in {watch.path, watch.done_dir, watch.failed_dir} - {None}:
                for stale in disposition.remove_stale_moves(folder):
                    log.event("partial_removed", path=stale, note="a move cut off mid-copy")
        for job in self.queue.recover():
            remove_partials(Path(job.output))
            log.event("job_recovered", job=job.id, source=job.source,
                      note="was running when the daemon stopped; queued again")
        self.metrics.start(self.config.metrics.address)
        log.event("daemon_starting", pid=os.getpid(), config=self.config_path,
                  state_dir=self.state_dir, workers=self.config.daemon.workers,
                  nvenc_gpus=",".join(map(str, self.devices)) or "none")
        self._start_watches()
        self._scan_all()
        self._refresh_counts()
        self.notifier.ready(self._status_text())
        log.event("daemon_ready", watches=len(self.config.watch), pending=len(self.settler),
                  **self._counts)
        try:
            while True:
                try:
                    self._step()
                except sqlite3.OperationalError as e:
                    if not _disk_full(e):
                        raise
                    # Not recorded now (a job's progress or end): the loop goes on; a job whose
                    # end went unrecorded is found done by its output's key at the next start.
                    self._state_full(None)
                    time.sleep(1.0)
                if self.stop_requests and not self.workers:
                    break
        finally:
            self._close()
        log.event("daemon_stopped")
        return 1 if self.state_lost else 0

    def _step(self) -> None:
        """One turn of the loop: wait for something, then handle everything that is due."""
        for key, _ in self.sel.select(self._timeout()):
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 4096):
                        pass
            else:
                self._read_worker(self.workers.get(key.data))
        now = time.monotonic()
        self._check_state(now)
        if self.stop_requests:
            self._stopping(now)
        elif self.reload_requested:
            self.reload_requested = False
            self._reload()
        if not self.stop_requests:
            self._take_events()
            self._maintain_watches(now)
            for index, path in self.settler.tick(self.config.daemon.settle_seconds):
                try:
                    self._intake(index, path)
                except Exception as e:  # one odd file must not stop the daemon
                    log.event("internal_error", logging.ERROR, path=path,
                              error=f"{type(e).__name__}: {e}", trace=traceback.format_exc(limit=-3))
                    self._refuse(path, "internal_error")
            for done in self.disposer.drain():
                self.queue.disposed(done.job, done.moved_to)
            for item in self._unrecorded_due(now) + self.hasher.drain():
                try:
                    self._identified(item)
                except sqlite3.OperationalError as e:
                    if not _disk_full(e):
                        raise
                    self._state_full(item)
                except Exception as e:  # one odd file must not stop the daemon
                    log.event("internal_error", logging.ERROR, path=item.path,
                              error=f"{type(e).__name__}: {e}", trace=traceback.format_exc(limit=-3))
                    self._refuse(item.path, "internal_error")
        self._supervise(now)
        self._dispatch()
        self._report(now)

    def _timeout(self) -> float:
        settle = self.config.daemon.settle_seconds
        timeout = 1.0
        if len(self.settler) or self.workers or self.stop_requests:
            timeout = min(0.2, max(0.02, settle / 5))
        ping = self.notifier.next_ping()
        if ping is not None:
            timeout = min(timeout, max(0.0, ping - time.monotonic()))
        return timeout

    # ----- intake ---------------------------------------------------------------------------

    def _start_watches(self) -> None:
        self.next_watch_retry = time.monotonic() + WATCH_RETRY
        for index, watch in enumerate(self.config.watch):
            self.watcher.start(index, watch)

    def _maintain_watches(self, now: float) -> None:
        """Retry watches whose folder was missing or whose observer died; rescan now and then."""
        if now >= self.next_watch_retry:
            self.next_watch_retry = now + WATCH_RETRY
            for index, watch in enumerate(self.config.watch):
                if not self.watcher.alive(index) and self.watcher.start(index, watch):
                    self._scan(index, watch)
        if now >= self.next_rescan:
            # A safety net for lost inotify events (queue overflow) and for polling gaps.
            self._scan_all()

    def _scan_all(self) -> None:
        self.next_rescan = time.monotonic() + self.config.daemon.rescan_seconds
        for index, watch in enumerate(self.config.watch):
            self._scan(index, watch)

    def _scan(self, index: int, watch: WatchConfig, folder: Path | None = None) -> None:
        if not watch.path.is_dir():
            return
        for path in scan(watch, folder):
            if not wanted(watch, path):
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            # Already identified at exactly this stat: no hashing, no settle wait.
            job = self.queue.seen_job(path, st)
            if job is not None:
                self._finish_disposition(job, path, watch, report=False)
                continue
            self.settler.note(index, path, "scan", settle=self.config.daemon.settle_seconds,
                              local=not watch.polling)

    def _take_events(self) -> None:
        for seen in self.watcher.drain():
            if seen.watch >= len(self.config.watch):
                continue
            watch = self.config.watch[seen.watch]
            if seen.kind == "dir":
                if watch.recursive:
                    self._scan(seen.watch, watch, seen.path)
            elif seen.kind == "gone" or wanted(watch, seen.path):
                self.settler.note(seen.watch, seen.path, seen.kind,
                                  settle=self.config.daemon.settle_seconds, local=not watch.polling)

    def _refuse(self, path: Path, reason: Reason | str, watch: WatchConfig | None = None) -> None:
        """Say once why `path` is not taken; with its watch, leave it an error note too."""
        if (str(path), reason) in self.refused:
            return
        if len(self.refused) > 10000:
            self.refused.clear()
        self.refused.add((str(path), reason))
        self.metrics.refused.labels(reason).inc()
        log.event("file_refused", logging.WARNING, path=path, reason=reason)
        if watch is not None:
            disposition.note_refusal(watch, path, reason)

    def _intake(self, index: int, path: Path) -> None:
        """A settled file: check it, then have it fingerprinted (see _identified)."""
        watch = self.config.watch[index]
        why = refusal(watch, path)
        if why == "vanished":
            return
        if why:
            self._refuse(path, why, watch)
            return
        self.hasher.submit((index, path), (index, path))  # the whole file is read: off the loop

    def _state_full(self, item: Identified | None) -> None:
        """The state database's disk is full: keep `item` (identified, not yet recorded) to try
        again every few seconds, without reading it again; say so once per episode."""
        if item is not None:
            self.unrecorded[(item.watch, item.path)] = item
        self.next_unrecorded = time.monotonic() + STATE_FULL_RETRY
        if not self.state_full:
            self.state_full = True
            log.event("state_full", logging.ERROR, state_dir=self.state_dir,
                      note="the state database's disk is full: files wait, and are queued as "
                           "soon as there is room")

    def _unrecorded_due(self, now: float) -> list[Identified]:
        """Files identified while the state disk was full, when it is time to try again."""
        if not self.unrecorded or now < self.next_unrecorded:
            return []
        items = list(self.unrecorded.values())
        self.unrecorded.clear()
        self.state_full = False
        return items

    def _identified(self, item: Identified) -> None:
        """A settled file fingerprinted: queue it unless its content has a job already."""
        if item.watch >= len(self.config.watch):
            return  # its watch went with a reload meanwhile
        index, path, watch = item.watch, item.path, self.config.watch[item.watch]
        if relative_to_watch(watch, path) is None:
            return
        if item.error is not None:
            if item.error.transient:  # written to while it was read: let it settle again
                self.settler.note(index, path, "write", settle=self.config.daemon.settle_seconds,
                                  local=not watch.polling)
            else:
                self._refuse(path, item.error.reason, watch)
            return
        fp = item.fp
        assert fp is not None
        key = job_key(fp, watch.profile, watch.output_dir)
        self.queue.remember(path, fp, key)
        existing = self.queue.by_key(key)
        if existing is not None:
            self._finish_disposition(existing, path, watch)
            return
        if not self._supersede(index, path):
            return
        output = self._free_output(watch, path, watch.loaded_profile.extension, key)
        if output is None:
            self._refuse(path, "no_output_name")
            return
        job = self.queue.enqueue(key=key, source=path, watch=watch.path, profile=watch.profile,
                                 output=output, fp=fp)
        if job is not None:
            self._counts_dirty = True
            log.event("job_queued", job=job.id, source=path, profile=watch.profile, output=output)

    def _supersede(self, index: int, path: Path) -> bool:
        """New content at the path of a job not yet done (a recording that grew, a file
        rewritten): a queued job is dropped, so the new one takes its output name; with one
        running (it will fail as source_changed), the new content waits for it to end. False:
        not now."""
        for old in self.queue.by_source(path):
            if old.state == "queued":
                self.queue.forget(old.id)
                log.event("job_dropped", job=old.id, source=path, reason=Reason.SOURCE_CHANGED)
            elif old.state == "running":
                self.settler.note(index, path, "write", settle=self.config.daemon.settle_seconds,
                                  local=not self.config.watch[index].polling)
                return False
        return True

    def _finish_disposition(self, job: Job, path: Path, watch: WatchConfig, *,
                            report: bool = True) -> None:
        """A known file seen again: follow it if its job has not run on it yet, finish a
        move/delete that a crash interrupted, or say it is a duplicate. A source is disposed of
        once, when its job ends; the same content dropped again later is reported and left
        alone, never deleted."""
        try:
            st = os.lstat(path)
        except OSError:
            return
        if self._follow(job, watch, path, st):
            return
        if job.source != str(path) or not job.fingerprint.same_stat(st):
            if report:  # (rescans find known duplicates again and again: say it once)
                log.event("file_duplicate", path=path, job=job.id, state=job.state,
                          first=job.source)
            return
        if job.disposed or job.state not in ("done", "failed"):
            return
        self._dispose(job, self._watch_for(job))

    def _follow(self, job: Job, watch: WatchConfig, path: Path, st: os.stat_result) -> bool:
        """Move a job along with its file when the file has not been transcoded yet: a queued
        job whose file was renamed (or moved to another watched folder), or a job that failed as
        `missing_input` because the file was away when its turn came and is now back. Without
        this the file would only be logged as a duplicate of a job that finds nothing to run.
        A copy or a second hard link (the old path still holds the job's file) stays a duplicate.
        True when the job now follows `path`."""
        back = job.state == "failed" and job.reason == "missing_input"
        if not back:
            if job.state != "queued" or job.source == str(path):
                return False
            with contextlib.suppress(OSError):
                if os.lstat(job.source).st_ino == job.inode:
                    return False
        if refusal(watch, path) is not None:  # the scan path comes here without intake's check
            return False
        output = Path(job.output)
        extension = output.suffix.lstrip(".")
        if output not in output_candidates(watch, path, extension):
            # Named after the old name: reserve one after the new name.
            output = self._free_output(watch, path, extension) or output
        # Same key, so same content digest; the stat is the file's at its new path.
        fp = Fingerprint(st.st_size, st.st_mtime_ns, st.st_ino, job.digest)
        if not self.queue.follow(job.id, source=path, watch=watch.path, output=output, fp=fp):
            return False
        if back:
            self._remove_note(job)
        self._counts_dirty = True
        log.event("job_followed", job=job.id, source=path, was=job.source, state=job.state,
                  output=output)
        return True

    def _remove_note(self, job: Job) -> None:
        """Remove the error note of a failed job that is queued again, if it is still its own."""
        watch = self._watch_for(job)
        src = Path(job.source)
        folder = watch.failed_dir if watch is not None and watch.failed_dir is not None else src.parent
        note = read_note(folder / (src.name + NOTE_SUFFIX))
        if note is not None and note.data["job"] == job.id and note.data.get("source") == job.source:
            with contextlib.suppress(OSError):
                note.path.unlink()

    def _dispose(self, job: Job, watch: WatchConfig | None) -> None:
        """Apply on_success or failed_dir to a finished job's source (on the disposer's thread:
        a move to another filesystem copies), then mark it done with (here, when it is)."""
        self.disposer.submit(job.id, (job, watch))

    # ----- dispatch -------------------------------------------------------------------------

    def _watch_for(self, job: Job) -> WatchConfig | None:
        return next((w for w in self.config.watch if str(w.path) == job.watch), None)

    def _profile_for(self, job: Job) -> Profile:
        for w in self.config.watch:
            if w.profile == job.profile:
                return w.loaded_profile
        return load_profile(job.profile)  # its watch was removed by a reload: load it afresh

    def _dispatch(self) -> None:
        if self.stop_requests:
            return
        free = self.config.daemon.workers - len(self.workers)
        if free <= 0:
            return
        for job in self.queue.ready(time.time(), limit=free + 100):
            if free <= 0:
                break
            if job.id in self.workers:
                continue
            try:
                started = self._start(job)
            except Exception as e:  # a bug must cost this job an attempt, not stop the daemon
                log.event("internal_error", logging.ERROR, job=job.id, error=f"{type(e).__name__}: {e}",
                          trace=traceback.format_exc(limit=-3))
                self._retry_or_fail(job, self._watch_for(job), "internal_error", str(e), True)
                started = False
            if started:
                free -= 1

    def _start(self, job: Job) -> bool:
        """Start a worker for `job`; False when it did not start (waiting, or failed at once)."""
        watch = self._watch_for(job)
        try:
            profile = self._profile_for(job)
        except MediadError as e:
            self._fail(job, watch, e.reason, str(e))
            return False
        if job_of(Path(job.output)) == job.key:
            # Committed by an earlier attempt that ended (kill -9, a crash) before it was
            # recorded: done, not done again.
            self._done(job, watch, {"output": job.output, "already_done": True}, None)
            return False
        settings = self.config.daemon
        slot = choose_gpu(profile, self.devices, self.nvenc_in_use, settings.nvenc_sessions,
                          settings.nvenc_overflow)
        if slot is None:
            return False
        if not self._source_unchanged(job, watch):
            return False
        job = self.queue.get(job.id) or job  # its stat as just re-checked (a touch updates it)
        if os.path.lexists(job.output):
            # Someone else's file took the reserved name since the job was queued.
            renamed = self._next_output(job, watch, "before_start")
            if renamed is None:
                return False
            job = renamed
        output = Path(job.output)
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._retry_or_fail(job, watch, "io_error", f"{output.parent}: {e.strerror}", True)
            return False
        spec = {
            "input": job.source,
            "output": job.output,
            "profile": profile.model_dump(mode="json"),
            "profile_name": profile.name,
            "job_key": job.key,
            # The file the daemon checked: the worker opens it once and checks its descriptor
            "watch": job.watch,
            "inode": job.inode,
            "size": job.size,
            "allow_hard_links": watch.allow_hard_links if watch is not None else False,
            "gpu": slot.gpu,
            "no_nvenc": slot.no_nvenc,
            "log_level": self.config.daemon.log_level,
        }
        worker = spawn(job.id, spec, slot.gpu, slot.nvenc_device)
        self.workers[job.id] = worker
        self.sel.register(worker.fd, selectors.EVENT_READ, job.id)
        if slot.nvenc_device is not None:
            self.nvenc_in_use[slot.nvenc_device] = self.nvenc_in_use.get(slot.nvenc_device, 0) + 1
        self.queue.mark_running(job.id, slot.gpu)
        self._counts_dirty = True
        # A job `mediad retry` put back says so: the CLI's line is not in the journal.
        after = {"after": "mediad_retry"} if job.reason == USER_RETRY else {}
        withheld = {"nvenc": "withheld"} if slot.no_nvenc else {}
        log.event("job_started", job=job.id, source=job.source, gpu=slot.gpu,
                  attempt=job.attempts + 1, pid=worker.proc.pid, **withheld, **after)
        return True

    def _source_unchanged(self, job: Job, watch: WatchConfig | None) -> bool:
        """Check the source is still the file that was queued; deal with it when it is not."""
        source = Path(job.source)
        why: str | None = None
        changed = False
        try:
            # The refusal check's own lstat serves for the unchanged test too: one stat, not two.
            why, st = inspect_source(watch, source) if watch is not None else (None, os.lstat(source))
            changed = why is None and st is not None and not job.fingerprint.same_stat(st)
        except FileNotFoundError:
            why = "vanished"
        except (OSError, MediadError) as e:
            why = getattr(e, "reason", None) or "unreadable"
        # With the watch, the error note goes to failed_dir (if set) like every other failure's;
        # disposition moves nothing that is not the job's own regular file.
        if why == "vanished":
            self._fail(job, watch, "missing_input", f"{source}: the source disappeared before its job ran")
            return False
        if why:
            self._refuse(source, why)
            self._fail(job, watch, why, f"{source}: refused ({why}) before its job ran")
            return False
        if changed:
            # Written to or touched since it was queued: it settles and is identified again (off
            # this loop: a whole file is read), as a new job or, the same content, the same key.
            self.queue.forget(job.id)
            if watch is not None:
                self.settler.note(self.config.watch.index(watch), source, "write",
                                  settle=self.config.daemon.settle_seconds, local=not watch.polling)
            log.event("job_dropped", job=job.id, source=source, reason=Reason.SOURCE_CHANGED)
            return False
        return True

    def _free_output(self, watch: WatchConfig, source: Path, extension: str,
                     key: str | None = None) -> Path | None:
        """The first output name for `source` that no file and no other job holds, or the one
        a file committed for job `key` holds (the job's record was lost: a deleted state
        database; the job then finds it done instead of writing a second copy)."""
        return next((p for p in output_candidates(watch, source, extension)
                     if (not os.path.lexists(p) or (key is not None and job_of(p) == key))
                     and not self.queue.output_taken(p)), None)

    def _next_output(self, job: Job, watch: WatchConfig | None, when: str) -> Job | None:
        """Reserve the next free output name for a job whose name is held by a file that is not
        its output (an existing file is never replaced); the updated job, or None when no name
        is free (the job is then failed)."""
        taken = Path(job.output)
        output = (self._free_output(watch, Path(job.source), taken.suffix.lstrip("."))
                  if watch is not None else None)
        if output is None:
            self._fail(job, watch, "output_exists",
                       f"{taken}: another file has this output name and no other name is free")
            return None
        self.queue.set_output(job.id, output)
        log.event("output_renamed", logging.WARNING, job=job.id, taken=taken, output=output,
                  when=when, note="a file appeared at the reserved name; it is left alone")
        return self.queue.get(job.id)

    # ----- workers --------------------------------------------------------------------------

    def _read_worker(self, worker: Worker | None) -> None:
        if worker is None:
            return
        messages, eof = worker.read()
        if eof:
            self.sel.unregister(worker.fd)
        for msg in messages:
            before = worker.frames_done
            if worker.handle(msg):
                self.metrics.frames.inc(max(0, worker.frames_done - before))
                now = time.monotonic()
                if now - self._progress_written.get(worker.job_id, 0.0) >= PROGRESS_WRITE_EVERY:
                    self._progress_written[worker.job_id] = now
                    self.queue.progress(worker.job_id, worker.frames_done, worker.frames_total,
                                        worker.fps)

    def _supervise(self, now: float) -> None:
        """Reap ended workers, kill stalled ones, escalate SIGTERM to SIGKILL."""
        stall = self.config.daemon.stall_timeout_seconds
        for worker in list(self.workers.values()):
            if worker.proc.poll() is not None:
                if not worker.eof:
                    self._read_worker(worker)  # what it wrote just before exiting
                    if not worker.eof:
                        # Something it started still holds the pipe: end the whole group.
                        worker.signal(signal.SIGKILL)
                        continue
                self._finished(worker)
                continue
            if worker.killed_for is None and now - worker.last_progress > stall:
                log.event("job_stalled", logging.WARNING, job=worker.job_id, pid=worker.proc.pid,
                          seconds=round(now - worker.last_progress, 1))
                # A hung worker is stuck in C code (FFmpeg, CUDA) where a Python SIGTERM handler
                # never runs: kill it outright; its temporary output is removed afterwards.
                worker.killed_for = "stalled"
                worker.signal(signal.SIGKILL)
            elif worker.kill_deadline is not None and now >= worker.kill_deadline:
                worker.signal(signal.SIGKILL)
                worker.kill_deadline = None

    def _terminate(self, worker: Worker, why: str, now: float) -> None:
        worker.killed_for = why
        worker.kill_deadline = now + KILL_AFTER
        worker.signal(signal.SIGTERM)

    def _finished(self, worker: Worker) -> None:
        """A worker process ended: record the job's outcome and free its slot."""
        del self.workers[worker.job_id]
        worker.close()
        self._progress_written.pop(worker.job_id, None)
        if worker.nvenc_device is not None:
            self.nvenc_in_use[worker.nvenc_device] -= 1
        self._counts_dirty = True
        job = self.queue.get(worker.job_id)
        if job is None:
            return
        watch = self._watch_for(job)
        elapsed = time.monotonic() - worker.started
        outcome = worker.outcome()
        if not outcome.ok and worker.killed_for == "shutdown":
            remove_partials(Path(job.output))
            self.queue.requeue(job.id)
            log.event("job_requeued", job=job.id, source=job.source, reason=Reason.SHUTDOWN)
            return
        if not outcome.ok and outcome.reason == "output_exists":
            # A file appeared at the output name while the job ran and the engine would not
            # replace it: run again under the next free name, the attempt not counted.
            remove_partials(Path(job.output))
            if self._next_output(job, watch, "during_job") is not None:
                self.queue.requeue(job.id)
                log.event("job_requeued", job=job.id, source=job.source, reason=Reason.OUTPUT_EXISTS)
            return
        if not outcome.ok and worker.killed_for == "stalled":
            stall = self.config.daemon.stall_timeout_seconds
            outcome = Outcome(False, reason=Reason.STALLED, transient=True,
                              message=f"no progress for {stall:g}s; worker killed")
        if outcome.ok and watch is not None and \
                disposition.not_the_job_file(watch, job, Path(job.source)) == REWRITTEN:
            # Written to after the engine's last look (a writer back from a pause): the output
            # is of a part of it. Discarded; the source kept; the job requeued, which finds the
            # new content and lets it settle as a job of its own.
            if job_of(Path(job.output)) == job.key:
                Path(job.output).unlink(missing_ok=True)
            self.queue.requeue(job.id)
            log.event("output_discarded", logging.WARNING, job=job.id, source=job.source,
                      output=job.output, reason=Reason.SOURCE_CHANGED)
            return
        if outcome.ok:
            self.queue.progress(job.id, worker.frames_done, worker.frames_total, worker.fps)
            self._done(job, watch, outcome.report or {}, worker, elapsed)
            return
        remove_partials(Path(job.output))
        self.metrics.duration.labels("failed").observe(elapsed)
        self._retry_or_fail(job, watch, outcome.reason, outcome.message, outcome.transient)

    def _done(self, job: Job, watch: WatchConfig | None, report: dict, worker: Worker | None,
              elapsed: float = 0.0) -> None:
        """The job's output is committed: record it, then dispose of the source."""
        self._space_waits.pop(job.id, None)
        self.queue.done(job.id, report)
        self._counts_dirty = True
        self.metrics.duration.labels("done").observe(elapsed)
        if worker is None:
            log.event("job_done", job=job.id, source=job.source, output=job.output,
                      already_done="committed by an earlier attempt")
        else:
            log.event("job_done", job=job.id, source=job.source, output=job.output,
                      seconds=round(elapsed, 2), frames=worker.frames_done, gpu=worker.gpu)
        remove_partials(Path(job.output))  # left by an earlier, killed attempt
        self._dispose(self.queue.get(job.id) or job, watch)

    def _retry_or_fail(self, job: Job, watch: WatchConfig | None, reason: Reason, message: str,
                       transient: bool) -> None:
        settings = self.config.daemon
        waits = self._space_waits.get(job.id, 0)
        decision = decide(Reason(reason), message, transient=transient, attempts=job.attempts,
                          waits=waits, max_attempts=settings.max_attempts,
                          backoff=settings.retry_backoff_seconds)
        if decision.action is Action.FAIL:
            self._space_waits.pop(job.id, None)
            self._fail(job, watch, reason, decision.message)
            return
        waiting = decision.action is Action.WAIT
        self._space_waits[job.id] = waits + 1 if waiting else 0
        self.queue.retry(job.id, reason, message, time.time() + decision.delay,
                         count_attempt=not waiting)
        self.metrics.failures.labels(reason, "false").inc()
        count = {"waits": waits + 1} if waiting else {"attempt": job.attempts + 1,
                                                       "of": settings.max_attempts}
        log.event("job_retry", logging.WARNING, job=job.id, source=job.source, reason=reason,
                  **count, retry_in=round(decision.delay, 1), error=message)

    def _fail(self, job: Job, watch: WatchConfig | None, reason: Reason, message: str) -> None:
        self.queue.failed(job.id, reason, message)
        self.metrics.failures.labels(reason, "true").inc()
        self._counts_dirty = True
        log.event("job_failed", logging.ERROR, job=job.id, source=job.source, reason=reason,
                  error=message)
        self._dispose(self.queue.get(job.id) or job, watch)

    # ----- stop and reload ------------------------------------------------------------------

    def _stopping(self, now: float) -> None:
        if self.stop_deadline is None:
            self.stop_deadline = now + self.config.daemon.stop_grace_seconds
            self.watcher.stop_all()
            self.notifier.stopping()
            log.event("daemon_stopping", running=len(self.workers),
                      grace=self.config.daemon.stop_grace_seconds)
        if self.stop_requests > 1:
            self.stop_deadline = min(self.stop_deadline, now)  # a second signal: no more grace
        if now >= self.stop_deadline:
            for worker in self.workers.values():
                if worker.killed_for is None:
                    self._terminate(worker, "shutdown", now)

    def _reload(self) -> None:
        """SIGHUP: read the config and profiles again; keep the old ones if the new are invalid."""
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
        except Exception as e:  # noqa: BLE001 - whatever the file holds, a reload never stops the service
            error = str(e) if isinstance(e, MediadError) else f"{self.config_path}: {e!r}"
            log.event("config_rejected", logging.ERROR, error=error, note="keeping the old config")
            self.notifier.reloaded(self._status_text())
            return
        old = self.config
        if new.daemon.state_dir != old.daemon.state_dir:
            log.event("config_needs_restart", logging.WARNING, key="daemon.state_dir")
            new = new.model_copy(update={"daemon": new.daemon.model_copy(
                update={"state_dir": old.daemon.state_dir})})
        if new.metrics.listen != old.metrics.listen:
            log.event("config_needs_restart", logging.WARNING, key="metrics.listen")
        log.setup(new.daemon.log_level)
        self.watcher.stop_all()
        self.watcher = Watcher(self._wake)
        self.settler = Settler()
        self.refused.clear()
        self.config = new
        self._start_watches()
        self._scan_all()
        log.event("config_reloaded", config=self.config_path, watches=len(new.watch))
        self.notifier.reloaded(self._status_text())

    # ----- reporting ------------------------------------------------------------------------

    def _refresh_counts(self) -> None:
        self._counts = self.queue.counts()
        self._counts_dirty = False
        self.metrics.set_counts(self._counts)

    def _status_text(self) -> str:
        c = self._counts
        return (f"queued={c.get('queued', 0)} running={c.get('running', 0)} "
                f"done={c.get('done', 0)} failed={c.get('failed', 0)}")

    def _report(self, now: float) -> None:
        # `mediad retry` writes from outside: its requeued jobs must show in STATUS= and metrics.
        if self._counts_dirty or self.queue.changed_elsewhere():
            self._refresh_counts()
            self.notifier.status(self._status_text())
        self.metrics.fps.set(sum(w.fps for w in self.workers.values()))
        self.metrics.workers.set(len(self.workers))
        for device in self.devices:
            self.metrics.nvenc.labels(str(device)).set(self.nvenc_in_use.get(device, 0))
        self.notifier.watchdog(now)
