"""The daemon: one main loop that owns the queue, the intake, the workers, signals and sd_notify.

Everything that changes state runs on the main thread (observers and the metrics server only
post events or read gauges), so there is no locking around SQLite or the worker table.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import selectors
import signal
import sqlite3
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from mediad import log
from mediad.api.ready import Readiness, ReadinessBox
from mediad.config import Config, WatchConfig, load_config
from mediad.daemon import disposition
from mediad.daemon.background import Background
from mediad.daemon.disposition import Disposed
from mediad.daemon.executor import NODES_EVERY, make_executor
from mediad.daemon.fingerprint import Identified, identify
from mediad.daemon.intake import Intake
from mediad.daemon.metrics import Metrics
from mediad.daemon.notify import Notifier
from mediad.daemon.partial import remove_partials
from mediad.daemon.pool import Worker
from mediad.daemon.queue import DB_NAME, Job, Queue, disk_full
from mediad.daemon.retry import CommandRetrier
from mediad.daemon.scheduling import Scheduling
from mediad.daemon.settle import Settler
from mediad.daemon.state_room import StateRoom
from mediad.daemon.status import PID_FILE
from mediad.daemon.supervision import Supervision
from mediad.daemon.watcher import Watcher
from mediad.errors import MediadError, Reason, first_line

if TYPE_CHECKING:
    from mediad.api.server import ApiServer



def damaged_database(db: Path, detail: str) -> MediadError:
    """The one line for a state database SQLite reads as damaged."""
    return MediadError(f"{db}: the state database is damaged ({first_line(detail)}); move "
                       "it aside to start afresh (outputs already committed are recognised by "
                       "their job key and not made again)", reason=Reason.BAD_STATE)


def run_daemon(config_path: Path) -> int:
    """Run the watch-folder daemon until SIGTERM/SIGINT; 0 on a clean stop."""
    config = load_config(config_path)
    log.setup(config.daemon.log_level)
    return Daemon(config_path, config).run()


class Daemon(Intake, Scheduling, Supervision, StateRoom):
    """The long-running service: its lifecycle and main loop. What the loop does is in the
    mixins: intake.py (files in), scheduling.py (jobs to workers), supervision.py (workers and
    outcomes), with the policy in outcomes.py; state_room.py (a full state disk)."""

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
        self.hasher: Background[tuple[int, Path] | tuple[int, Path, int], Identified] = \
            Background(identify, self._wake, name="mediad-hasher")
        self.disposer: Background[tuple[Job, WatchConfig | None], Disposed] = Background(
            disposition.dispose, self._wake, name="mediad-disposer")
        # The API's retry commands: `mediad retry`'s rules (a source may be copied back)
        self.retrier: Background[tuple[int, Config, int], tuple[int, str]] = Background(
            CommandRetrier(self.state_dir), self._wake, name="mediad-retrier")
        self.commands_in_flight: set[int] = set()
        self.readiness = ReadinessBox()  # what /readyz reads (the API thread, no locks)
        self.api: ApiServer | None = None  # the API's server thread, with [api]
        self.workers: dict[int, Worker] = {}
        # Where jobs run; the local one keeps worker processes started ahead, engine imported
        self.executor = make_executor(config.executor, config.daemon)
        self.next_nodes = 0.0  # when the cluster's nodes are recorded next
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
        self.unrecorded_writes: list[Callable[[], object]] = []  # likewise: ends, disposals
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

    def _record_nodes(self) -> None:
        """Record the cluster's nodes, declared and used, for `mediad status` (and the API):
        the executor's latest look at them (the loop never waits on the cluster; an unchanged
        record is not written again, see Queue.set_nodes)."""
        self.queue.set_nodes(self.executor.nodes(list(self.workers.values())))

    def _start_api(self) -> None:
        """Serve the REST API on a thread of its own, with [api] (the web stack is imported
        only then); a busy port is said loudly and the daemon goes on, as for metrics."""
        address = self.config.api.address
        if address is None:
            return
        try:
            from mediad.api.server import start_api  # the `web` extra
        except ImportError as e:
            raise MediadError(f"{self.config_path}: api.listen is set, but the web stack is not "
                              f"installed ({e.name or e}): pip install 'mediad[web]'",
                              reason=Reason.BAD_CONFIG) from None
        self.api = start_api(address, self.state_dir, lambda: self.config, self.readiness)

    def _publish_readiness(self, now: float) -> None:
        self.readiness.publish(Readiness(
            at=now, store_writable=not (self.state_full or self.state_lost),
            watches=tuple((str(w.path), self.watcher.alive(i))
                          for i, w in enumerate(self.config.watch)),
            stopping=bool(self.stop_requests)))

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
        self.executor.close()
        if self.api is not None:
            self.api.stop()
        self.hasher.stop()
        self.disposer.stop()
        self.retrier.stop()
        if not self.state_lost:  # what they finished while the loop was ending
            with contextlib.suppress(sqlite3.Error):
                self._record_background()
                self._record_waiting(math.inf)  # what a full disk held back: a last try
            if self.unrecorded_writes:
                log.event("state_not_recorded", logging.WARNING, writes=len(self.unrecorded_writes),
                          note="the state disk is still full: jobs that ended meanwhile are "
                               "found done by their outputs' job keys at the next start")
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
        self._start_api()
        log.event("daemon_starting", pid=os.getpid(), config=self.config_path,
                  state_dir=self.state_dir, workers=self.config.daemon.workers,
                  nvenc_gpus=",".join(map(str, self.devices)) or "none")
        self.executor.prepare()
        self._start_watches()
        self._scan_all()
        self._refresh_counts()
        self._publish_readiness(time.monotonic())  # /readyz: ready with READY=1, not later
        self.notifier.ready(self._status_text())
        log.event("daemon_ready", watches=len(self.config.watch), pending=len(self.settler),
                  **self._counts)
        try:
            while True:
                try:
                    self._step()
                except sqlite3.OperationalError as e:
                    if not disk_full(e):
                        raise
                    # Not recorded now (a job's start or progress): the loop goes on. What must
                    # not be lost (a job's end) goes through _record, which keeps it.
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
        self._record_background()
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
            waited = self._unrecorded_due(now)
            for item in waited + self.hasher.drain():
                try:
                    self._identified(item)
                except sqlite3.OperationalError as e:
                    if not disk_full(e):
                        raise
                    self._state_full(item)
                except Exception as e:  # one odd file must not stop the daemon
                    log.event("internal_error", logging.ERROR, path=item.path,
                              error=f"{type(e).__name__}: {e}", trace=traceback.format_exc(limit=-3))
                    self._refuse(item.path, "internal_error")
            if waited and not self.unrecorded:  # the files that waited for room are recorded
                self._state_room()
        self._record_waiting(now)
        self._apply_commands(now)
        self._supervise(now)
        if self.executor.remote and now >= self.next_nodes:
            self.next_nodes = now + NODES_EVERY
            self._record_nodes()
        self._dispatch()
        self._report(now)

    def _record_background(self) -> None:
        """Record the moves and retries finished off the loop, even while stopping: where a
        failed source went is what `mediad retry` trusts, and only the database says it."""
        for done in self.disposer.drain():
            self._record(partial(self.queue.disposed, done.job, done.moved_to))
        for command_id, result in self.retrier.drain():
            self.commands_in_flight.discard(command_id)
            self._record(partial(self.queue.command_applied, command_id, result))
            self._counts_dirty = True

    def _timeout(self) -> float:
        settle = self.config.daemon.settle_seconds
        timeout = 1.0
        if len(self.settler) or self.workers or self.stop_requests:
            timeout = min(0.2, max(0.02, settle / 5))
        ping = self.notifier.next_ping()
        if ping is not None:
            timeout = min(timeout, max(0.0, ping - time.monotonic()))
        return timeout

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
        if new.executor != old.executor:  # the running one keeps its processes
            log.event("config_needs_restart", logging.WARNING, key="executor")
            new = new.model_copy(update={"executor": old.executor})
        if new.metrics.listen != old.metrics.listen:
            log.event("config_needs_restart", logging.WARNING, key="metrics.listen")
        if new.api.listen != old.api.listen:
            log.event("config_needs_restart", logging.WARNING, key="api.listen")
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
        self._publish_readiness(now)
        self.notifier.watchdog(now)
