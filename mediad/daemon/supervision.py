"""Supervision: the workers' progress, stalls and ends, and each ended job's outcome recorded
(done, retried, waited out, failed) by the pure policy of outcomes.py. A mixin of service.Daemon."""

from __future__ import annotations

import logging
import signal
import sqlite3
import time
from functools import partial
from pathlib import Path

from mediad import log
from mediad.config import WatchConfig
from mediad.daemon import disposition
from mediad.daemon.disposition import REWRITTEN
from mediad.daemon.outcomes import Action, decide
from mediad.daemon.partial import remove_partials
from mediad.daemon.pool import Outcome, Worker
from mediad.daemon.queue import Job, disk_full
from mediad.daemon.state import DaemonState
from mediad.errors import Reason
from mediad.media.commit import committed_job, remove_output

KILL_AFTER = 5.0          # seconds between SIGTERM and SIGKILL for a worker we stop
PROGRESS_WRITE_EVERY = 1.0  # seconds between progress rows written per job


class Supervision(DaemonState):
    """Supervision (see the module)."""

    def _read_worker(self, worker: Worker | None) -> None:
        if worker is None:
            return
        messages, eof = worker.read()
        if eof:
            self.sel.unregister(worker.fd)
        for msg in messages:
            before, node = worker.frames_done, worker.node
            if worker.handle(msg):
                self.metrics.frames.inc(max(0, worker.frames_done - before))
                now = time.monotonic()
                if now - self._progress_written.get(worker.job_id, 0.0) >= PROGRESS_WRITE_EVERY:
                    self._progress_written[worker.job_id] = now
                    self._write_progress(worker)
            elif worker.node != node:  # a cluster job started on its node
                self._record(partial(self.queue.set_node, worker.job_id, worker.node))
                log.event("job_placed", job=worker.job_id, node=worker.node, pid=worker.proc.pid)

    def _write_progress(self, worker: Worker) -> None:
        """Record a running job's progress; on a full state disk it is skipped (the next one
        says more), never the worker's messages after it: its end among them."""
        try:
            self.queue.progress(worker.job_id, worker.frames_done, worker.frames_total, worker.fps)
        except sqlite3.OperationalError as e:
            if not disk_full(e):
                raise
            self._state_full(None)

    def _supervise(self, now: float) -> None:
        """Reap ended workers, kill stalled ones, escalate SIGTERM to SIGKILL."""
        stall = self.config.daemon.stall_timeout_seconds
        for worker in list(self.workers.values()):
            if worker.ended:  # done or error said: its process is free for another job
                self._finished(worker)
                continue
            if worker.proc.poll() is not None:
                if not worker.eof:
                    self._read_worker(worker)  # what it wrote just before exiting
                    if not worker.eof:
                        # Something it started still holds the pipe: end the whole group.
                        worker.signal(signal.SIGKILL)
                        continue
                self._finished(worker)
                continue
            if worker.killed_for is None and worker.placed and now - worker.last_progress > stall:
                log.event("job_stalled", logging.WARNING, job=worker.job_id, pid=worker.proc.pid,
                          seconds=round(now - worker.last_progress, 1))
                # A hung worker is stuck in C code (FFmpeg, CUDA) where a Python SIGTERM handler
                # never runs: kill it outright; its temporary output is removed afterwards.
                worker.killed_for = "stalled"
                worker.signal(signal.SIGKILL)
            elif worker.kill_deadline is not None and now >= worker.kill_deadline:
                worker.signal(signal.SIGKILL)
                worker.kill_deadline = None

    def _apply_commands(self, now: float) -> None:
        """What `mediad cancel` / `priority` and the API (the command channel) asked, in order.
        A submit is fingerprinted and a retry made off the loop: answered when they are done."""
        for command in self.queue.pending_commands():
            if command.id in self.commands_in_flight:
                continue
            if command.kind == "submit":
                self._submit(command)
                continue
            if command.kind == "retry" and command.job is not None:
                self.commands_in_flight.add(command.id)
                self.retrier.submit(command.id, (command.id, self.config, command.job))
                continue
            job = self.queue.get(command.job) if command.job is not None else None
            if job is None:
                result = "no such job"
            elif command.kind == "cancel":
                result = self._cancel(job, now)
            elif command.value is not None and self.queue.set_priority(job.id, command.value):
                result = f"priority {command.value}"
            else:
                result = f"is {job.state}: only a queued job can be reordered"
            self.queue.command_applied(command.id, result)
            self._counts_dirty = True

    def _cancel(self, job: Job, now: float) -> str:
        if self.queue.cancel_queued(job.id):
            log.event("job_cancelled", job=job.id, source=job.source, was="queued")
            return "cancelled"
        worker = self.workers.get(job.id)
        if worker is not None:
            if worker.killed_for is None:  # its engine unwinds: temporary output removed
                self._terminate(worker, "cancel", now)
            return "cancelling"
        return f"is {job.state}: nothing to cancel"

    def _terminate(self, worker: Worker, why: str, now: float) -> None:
        worker.killed_for = why
        worker.kill_deadline = now + KILL_AFTER
        worker.signal(signal.SIGTERM)

    def _finished(self, worker: Worker) -> None:
        """A job ended (its done or error line, or its process's end): free its slot and
        record the outcome (kept to record once there is room, when the state disk is full)."""
        del self.workers[worker.job_id]
        if not worker.eof:
            self.sel.unregister(worker.fd)
        self.executor.release(worker)
        self._progress_written.pop(worker.job_id, None)
        if worker.nvenc_device is not None:
            self.nvenc_in_use[worker.nvenc_device] -= 1
        self._counts_dirty = True
        self._record(partial(self._ended, worker))

    def _ended(self, worker: Worker) -> None:
        """Record how the job `worker` ran ended. Made again from the start when a full disk
        refused one of its writes: each way records the job's new state, and what it does
        besides (removing partial files, logging) is the same the second time."""
        self._counts_dirty = True
        job = self.queue.get(worker.job_id)
        if job is None:
            return
        watch = self._watch_for(job)
        elapsed = time.monotonic() - worker.started
        outcome = worker.outcome()
        if not outcome.ok and worker.killed_for == "cancel":
            remove_partials(Path(job.output))  # the source stays where it is: no disposition
            self.queue.cancelled(job.id)
            log.event("job_cancelled", job=job.id, source=job.source, was="running")
            return
        if not outcome.ok and worker.killed_for == "shutdown":
            remove_partials(Path(job.output))
            self.queue.requeue(job.id)
            log.event("job_requeued", job=job.id, source=job.source, reason=Reason.SHUTDOWN)
            return
        if not outcome.ok and outcome.reason == "output_exists" \
                and committed_job(Path(job.output)) == job.key:
            # Committed by another attempt of this very job (a cluster node thought lost that
            # was not, a daemon restarted while its old attempt finished): done, once.
            self._done(job, watch, {"output": job.output, "already_done": True}, None)
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
            if committed_job(Path(job.output)) == job.key:
                remove_output(Path(job.output))
            self.queue.requeue(job.id)
            log.event("output_discarded", logging.WARNING, job=job.id, source=job.source,
                      output=job.output, reason=Reason.SOURCE_CHANGED)
            return
        if outcome.ok:
            self.queue.progress(job.id, worker.frames_done, worker.frames_total, worker.fps)
            self._done(job, watch, outcome.report or {}, worker, elapsed)
            return
        remove_partials(Path(job.output))
        self._retry_or_fail(job, watch, outcome.reason, outcome.message, outcome.transient)
        self.metrics.duration.labels("failed").observe(elapsed)

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
        if decision.action in (Action.FAIL, Action.SKIP):
            self._space_waits.pop(job.id, None)
            self._fail(job, watch, reason, decision.message, dispose=decision.action is Action.FAIL)
            return
        waiting = decision.action is Action.WAIT
        self.queue.retry(job.id, reason, message, time.time() + decision.delay,
                         count_attempt=not waiting)
        self._space_waits[job.id] = waits + 1 if waiting else 0
        self.metrics.failures.labels(reason, "false").inc()
        count = {"waits": waits + 1} if waiting else {"attempt": job.attempts + 1,
                                                       "of": settings.max_attempts}
        log.event("job_retry", logging.WARNING, job=job.id, source=job.source, reason=reason,
                  **count, retry_in=round(decision.delay, 1), error=message)

    def _fail(self, job: Job, watch: WatchConfig | None, reason: Reason, message: str, *,
              dispose: bool = True) -> None:
        self.queue.failed(job.id, reason, message)
        self.metrics.failures.labels(reason, "true").inc()
        self._counts_dirty = True
        log.event("job_failed", logging.ERROR, job=job.id, source=job.source, reason=reason,
                  error=message)
        if dispose:
            self._dispose(self.queue.get(job.id) or job, watch)
        else:  # a skip: nothing to move, nothing to note
            self.queue.disposed(job.id, None)
