"""Executors: what runs the daemon's jobs. The daemon hands one a typed JobSpec and reads the
job's typed events back (protocol.py); the executor owns where and how the job runs.

The config names one (`[executor] kind`): `local` (pool.Pool: warm worker processes on this
machine) or `ray` (ray_executor.RayExecutor: tasks on a Ray cluster's nodes, which run the
same worker and send the same events). Ray is imported only when it is named.
"""

from __future__ import annotations

from typing import Protocol

from mediad.config import DaemonSettings, ExecutorConfig
from mediad.daemon.pool import Pool, Worker
from mediad.daemon.protocol import JobSpec
from mediad.daemon.queue import NodeView
from mediad.errors import MediadError, Reason

NODES_EVERY = 5.0  # seconds between looks at a cluster's nodes (mediad status shows them)


class Executor(Protocol):
    """Runs jobs: `run` starts one (its events are read from the Worker it returns), `release`
    takes back what a job used once it ended, `prepare` and `close` bracket the daemon's run.
    A job is stopped (cancel, stall, shutdown) by signalling its Worker. `remote`: jobs run on
    other machines, which the executor chooses (the local GPU slots do not apply); `nodes`
    describes those machines for `mediad status`."""

    remote: bool

    def prepare(self) -> None: ...
    def run(self, job_id: int, spec: JobSpec, gpu: str, nvenc_device: int | None) -> Worker: ...
    def release(self, worker: Worker) -> None: ...
    def close(self) -> None: ...
    def nodes(self, running: list[Worker]) -> list[NodeView]: ...


class LocalExecutor:
    """Jobs in warm worker processes on this machine (see pool.Pool)."""

    remote = False

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

    def nodes(self, running: list[Worker]) -> list[NodeView]:
        """No cluster: this machine is the one node."""
        return []


def make_executor(settings: ExecutorConfig, daemon: DaemonSettings) -> Executor:
    """The executor the config names."""
    if settings.kind == "local":
        return LocalExecutor(settings.warm_workers)
    try:
        from mediad.daemon.ray_executor import RayExecutor
    except ImportError as e:  # ray itself, imported when the executor connects, or its parts
        raise MediadError(f"executor.kind = \"ray\" needs Ray: pip install 'mediad[cluster]' "
                          f"({e})", reason=Reason.BAD_CONFIG) from None
    return RayExecutor(settings, daemon)
