"""Scheduling: ready jobs onto free workers and GPU slots, after checking that each source is
still the file that was queued and its output name still free. A mixin of service.Daemon."""

from __future__ import annotations

import logging
import os
import selectors
import sqlite3
import time
import traceback
from pathlib import Path

from mediad import log
from mediad.config import WatchConfig
from mediad.daemon.paths import enclosing_set, inspect_source
from mediad.daemon.protocol import JobSpec, SourceCheck
from mediad.daemon.queue import USER_RETRY, Job, disk_full
from mediad.daemon.slots import Slot, choose_gpu
from mediad.daemon.state import DaemonState
from mediad.errors import MediadError, Reason
from mediad.media.commit import committed_job


class Scheduling(DaemonState):
    """Scheduling (see the module)."""

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
            except sqlite3.OperationalError as e:
                if not disk_full(e):
                    raise
                self._state_full(None)  # the machine's, not the job's: tried again, not counted
                return
            except Exception as e:  # a bug must cost this job an attempt, not stop the daemon
                log.event("internal_error", logging.ERROR, job=job.id, error=f"{type(e).__name__}: {e}",
                          trace=traceback.format_exc(limit=-3))
                self._retry_or_fail(job, self._watch_for(job), "internal_error", str(e), True)
                started = False
            if started:
                free -= 1
                self._state_room()  # its start was recorded

    def _start(self, job: Job) -> bool:
        """Start a worker for `job`; False when it did not start (waiting, or failed at once)."""
        watch = self._watch_for(job)
        try:
            profile = self._profile_for(job)
        except MediadError as e:
            self._fail(job, watch, e.reason, str(e))
            return False
        if committed_job(Path(job.output)) == job.key:
            # Committed (a file, or a ladder's whole set) by an earlier attempt that ended
            # (kill -9, a crash) before it was recorded: done, not done again.
            self._done(job, watch, {"output": job.output, "already_done": True}, None)
            return False
        settings = self.config.daemon
        # A cluster executor places the job on a node with what it needs; this machine's GPUs
        # and their session budget are for local workers.
        slot = Slot("auto") if self.executor.remote else choose_gpu(
            profile, self.devices, self.nvenc_in_use, settings.nvenc_sessions, settings.nvenc_overflow)
        if slot is None:
            return False
        if not self._source_unchanged(job, watch):
            return False
        job = self.queue.get(job.id) or job  # its stat as just re-checked (a touch updates it)
        if os.path.lexists(job.output):
            # Someone else's file (or folder) took the reserved name since the job was queued.
            renamed = self._next_output(job, watch, "before_start")
            if renamed is None:
                return False
            job = renamed
        output = Path(job.output)
        outputs = self._outputs_of(job, watch)
        if (inside := enclosing_set(outputs.output_dir if outputs else output.parent, output)):
            self._fail(job, watch, Reason.OUTPUT_EXISTS,
                       f"{output}: would be written into {inside}, a committed output set")
            return False
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._retry_or_fail(job, watch, "io_error", f"{output.parent}: {e.strerror}", True)
            return False
        spec = JobSpec(
            input=job.source, output=job.output, profile=profile.model_dump(mode="json"),
            profile_name=profile.name, job_key=job.key, gpu=slot.gpu, no_nvenc=slot.no_nvenc,
            log_level=self.config.daemon.log_level,
            # The file the daemon checked: the worker opens it once and checks its descriptor
            source=SourceCheck(watch=job.watch, inode=job.inode, size=job.size,
                               allow_hard_links=watch.allow_hard_links if watch else False))
        worker = self.executor.run(job.id, spec, slot.gpu, slot.nvenc_device)
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

    def _next_output(self, job: Job, watch: WatchConfig | None, when: str) -> Job | None:
        """Reserve the next free output name for a job whose name is held by a file (or folder)
        that is not its output (an existing one is never replaced or written into); the updated
        job, or None when no name is free (the job is then failed)."""
        taken = Path(job.output)
        try:
            profile = self._profile_for(job)
        except MediadError as e:
            self._fail(job, watch, e.reason, str(e))
            return None
        outputs = self._outputs_of(job, watch)
        output = (self._free_output(outputs, Path(job.source), profile)
                  if outputs is not None else None)
        if output is None:
            self._fail(job, watch, "output_exists",
                       f"{taken}: something else has this output name and no other name is free")
            return None
        self.queue.set_output(job.id, output)
        log.event("output_renamed", logging.WARNING, job=job.id, taken=taken, output=output,
                  when=when, note="a file or folder appeared at the reserved name; it is left alone")
        return self.queue.get(job.id)
