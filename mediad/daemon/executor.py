"""Executors: what runs the daemon's jobs. The daemon hands one a typed JobSpec and reads the
job's typed events back (protocol.py); the executor owns where and how the job runs.

`local` (pool.Pool: warm worker processes on this machine) is the one there is; the config
names it (`[executor] kind`), and a cluster executor will take the same specs and give the
same events.
"""

from __future__ import annotations

from typing import Protocol

from mediad.daemon.pool import Pool, Worker
from mediad.daemon.protocol import JobSpec


class Executor(Protocol):
    """Runs jobs: `run` starts one (its events are read from the Worker it returns), `release`
    takes back what a job used once it ended, `prepare` and `close` bracket the daemon's run.
    A job is stopped (cancel, stall, shutdown) by signalling its Worker."""

    def prepare(self) -> None: ...
    def run(self, job_id: int, spec: JobSpec, gpu: str, nvenc_device: int | None) -> Worker: ...
    def release(self, worker: Worker) -> None: ...
    def close(self) -> None: ...


class LocalExecutor:
    """Jobs in warm worker processes on this machine (see pool.Pool)."""

    def __init__(self, warm: int = 1) -> None:
        self.pool = Pool(warm=warm)

    def prepare(self) -> None:
        """Start the idle processes, so the first job does not wait for one."""
        self.pool.fill()

    def run(self, job_id: int, spec: JobSpec, gpu: str, nvenc_device: int | None) -> Worker:
        """Start the job in an idle process and warm the next one."""
        worker = self.pool.run(job_id, spec, gpu, nvenc_device)
        self.pool.fill()  # the next job's process warms up while this one runs
        return worker

    def release(self, worker: Worker) -> None:
        self.pool.release(worker)

    def close(self) -> None:
        self.pool.close()


def make_executor(kind: str, warm: int) -> Executor:
    """The executor the config names."""
    if kind == "local":
        return LocalExecutor(warm)
    raise ValueError(f"unknown executor {kind!r}")  # the config's validation refuses it first
