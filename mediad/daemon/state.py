"""The daemon's state, as its parts see it: intake, scheduling and supervision are mixins of
service.Daemon that share these attributes (set up by Daemon.__init__) and these lookups."""

from __future__ import annotations

import selectors
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mediad.config import Config, WatchConfig
from mediad.daemon.background import Background
from mediad.daemon.disposition import Disposed
from mediad.daemon.fingerprint import Identified
from mediad.daemon.pool import Worker
from mediad.daemon.queue import Job, Queue
from mediad.daemon.settle import Settler
from mediad.daemon.watcher import Watcher
from mediad.profiles import Profile, load_profile

if TYPE_CHECKING:
    from mediad.daemon.executor import Executor
    from mediad.daemon.metrics import Metrics


class DaemonState:
    """What the daemon's main loop holds; only the main thread reads or writes it."""

    config: Config
    queue: Queue
    metrics: Metrics
    settler: Settler
    watcher: Watcher
    hasher: Background[tuple[int, Path] | tuple[int, Path, int], Identified]
    disposer: Background[tuple[Job, WatchConfig | None], Disposed]
    retrier: Background[tuple[int, Config, int], tuple[int, str]]
    commands_in_flight: set[int]  # submit and retry commands being worked on off the loop
    executor: Executor
    workers: dict[int, Worker]
    nvenc_in_use: dict[int, int]
    devices: list[int]
    refused: set[tuple[str, str]]
    stop_requests: int
    next_rescan: float
    next_watch_retry: float
    unrecorded: dict[tuple[int, Path], Identified]
    unrecorded_writes: list[Callable[[], object]]
    next_unrecorded: float
    state_full: bool
    sel: selectors.DefaultSelector
    _progress_written: dict[int, float]
    _space_waits: dict[int, int]
    _counts_dirty: bool

    @staticmethod
    def _outputs_of(job: Job, watch: WatchConfig | None) -> WatchConfig | None:
        """The job's watch as far as its outputs go: with the output folder a submit named."""
        if watch is None or job.output_dir is None:
            return watch
        return watch.model_copy(update={"output_dir": Path(job.output_dir)})

    def _watch_for(self, job: Job) -> WatchConfig | None:
        return next((w for w in self.config.watch if str(w.path) == job.watch), None)

    def _profile_for(self, job: Job) -> Profile:
        for w in self.config.watch:
            if w.profile == job.profile:
                return w.loaded_profile
        return load_profile(job.profile)  # its watch was removed by a reload: load it afresh
