"""Intake: watches, scans and events, settling, identifying (off the loop), refusals, queueing
with a free output name, and following a queued file that moves. Part of the daemon's main
loop (a mixin of service.Daemon: its state is the daemon's)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path

from mediad import log
from mediad.config import WatchConfig
from mediad.daemon import disposition
from mediad.daemon.fingerprint import Fingerprint, Identified, job_key
from mediad.daemon.paths import (
    output_candidates,
    refusal,
    relative_to_watch,
    wanted,
)
from mediad.daemon.queue import Command, Job, refused
from mediad.daemon.retry import NOTE_SUFFIX, read_note
from mediad.daemon.state import DaemonState
from mediad.daemon.submit import Submission, check_submission
from mediad.daemon.watcher import scan
from mediad.errors import MediadError, Reason
from mediad.media.commit import committed_job
from mediad.profiles import Profile

WATCH_RETRY = 10.0        # seconds between attempts to start a watch whose folder is missing


class Intake(DaemonState):
    """Intake (see the module)."""

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

    def _submit(self, command: Command) -> None:
        """A submit command (the API): check it, then have the file fingerprinted off the loop
        as intake does (see _identified); refused at once when it does not pass."""
        try:
            args = json.loads(command.args or "{}")
            sub = check_submission(self.config, str(args.get("path", "")),
                                   str(args.get("profile", "")), args.get("output_dir"))
        except MediadError as e:
            self.queue.command_applied(command.id, refused(e.reason, e))
            return
        except (ValueError, TypeError, AttributeError) as e:  # not what the API writes
            self.queue.command_applied(command.id, refused("bad_request", e))
            return
        self.commands_in_flight.add(command.id)
        self.hasher.submit(("command", command.id), (sub.index, sub.path, command.id))

    def _submitted(self, item: Identified) -> None:
        """A submitted file fingerprinted: queue its job (or name the job its content has
        already) and answer the command."""
        assert item.command is not None
        self.commands_in_flight.discard(item.command)
        command = self.queue.command(item.command)
        if command is None or command.applied is not None:
            return
        if item.error is not None:
            self.queue.command_applied(command.id, refused(item.error.reason, item.error))
            return
        try:  # again, with the file as it is now and the config as it is now
            args = json.loads(command.args or "{}")
            sub = check_submission(self.config, args["path"], args["profile"], args.get("output_dir"))
        except MediadError as e:
            self.queue.command_applied(command.id, refused(e.reason, e))
            return
        assert item.fp is not None
        key = job_key(item.fp, sub.profile_spec, sub.watch.output_dir)
        existing = self.queue.by_key(key)
        if existing is not None:
            self.queue.command_applied(command.id, f"exists: job {existing.id} ({existing.state})",
                                       existing.id)
            return
        job = self._enqueue(sub, item.fp, key, command=command.id)
        if job is None:
            self.queue.command_applied(command.id, refused(
                "no_output_name", f"no free output name for {sub.path} in {sub.watch.output_dir}"))
            return
        self.queue.command_applied(command.id, "queued", job.id)

    def _enqueue(self, sub: Submission, fp: Fingerprint, key: str, **via: object) -> Job | None:
        """Queue the job of a file (intake's, or a submit's) under a free output name; None
        when no name is free."""
        output = self._free_output(sub.watch, sub.path, sub.profile, key)
        if output is None:
            return None
        own = sub.watch.output_dir != self.config.watch[sub.index].output_dir
        job = self.queue.enqueue(key=key, source=sub.path, watch=sub.watch.path,
                                 profile=sub.profile_spec, output=output, fp=fp,
                                 output_dir=sub.watch.output_dir if own else None)
        if job is not None:
            self._counts_dirty = True
            log.event("job_queued", job=job.id, source=sub.path, profile=sub.profile_spec,
                      output=output, **via)
        return job

    def _identified(self, item: Identified) -> None:
        """A settled file fingerprinted: queue it unless its content has a job already."""
        if item.command is not None:
            self._submitted(item)
            return
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
        sub = Submission(index, watch, path, watch.profile, watch.loaded_profile)
        if self._enqueue(sub, fp, key) is None:
            self._refuse(path, "no_output_name")

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
        try:
            profile = self._profile_for(job)
        except MediadError:  # its profile file is gone: the job fails when its turn comes
            return False
        output = Path(job.output)
        if output not in output_candidates(watch, path, profile):
            # Named after the old name: reserve one after the new name.
            output = self._free_output(watch, path, profile) or output
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

    def _free_output(self, watch: WatchConfig, source: Path, profile: Profile,
                     key: str | None = None) -> Path | None:
        """The first output name for `source` that nothing (no file, no folder) and no other
        job holds, or the one an output committed for job `key` holds (the job's record was
        lost: a deleted state database; the job then finds it done instead of writing a second
        copy)."""
        return next((p for p in output_candidates(watch, source, profile)
                     if (not os.path.lexists(p) or (key is not None and committed_job(p) == key))
                     and not self.queue.output_taken(p)), None)
