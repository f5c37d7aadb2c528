"""The Ray executor: the daemon's jobs placed on the nodes of a Ray cluster by what each job
needs (NVENC sessions per codec, CPUs for software encodes, a share of a GPU for model
stages) and what each node declared (`mediad node`). The daemon stays the one source of
truth: Ray only places and runs; attempts, retries and the exactly-once commit stay the
daemon's. Ray is imported only here, when the config names this executor.

Each job is a streaming task (ray_relay.relay) whose items are the worker's event lines; a
thread per job copies them into a pipe, so the daemon's loop reads a cluster job exactly as it
reads a local worker (pool.Worker over a RayTask).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any

from mediad import log
from mediad.config import DaemonSettings, ExecutorConfig
from mediad.daemon.executor import NODES_EVERY
from mediad.daemon.node import nvenc_resource
from mediad.daemon.pool import Worker
from mediad.daemon.protocol import Failed, JobSpec
from mediad.daemon.queue import NodeView
from mediad.daemon.ray_relay import EXIT, relay
from mediad.daemon.slots import wants_nvenc
from mediad.errors import MediadError, Reason, first_line
from mediad.gpu.records import CODECS
from mediad.profiles import Profile


@dataclass(frozen=True)
class Request:
    """What one job asks of the node it runs on, and NVENC withheld (with why) if it is."""

    resources: dict[str, float] = field(default_factory=dict)
    num_cpus: float = 0.0
    num_gpus: float = 0.0
    no_nvenc: str | None = None

    def used(self) -> dict[str, float]:
        """The request as resource amounts (what `mediad status` adds up per node)."""
        used = dict(self.resources)
        if self.num_cpus:
            used["CPU"] = self.num_cpus
        if self.num_gpus:
            used["GPU"] = self.num_gpus
        return used


def nvenc_sessions(profile: Profile) -> Counter[str]:
    """NVENC sessions the profile's encodes would hold, per codec (one per rendition)."""
    if not wants_nvenc(profile):
        return Counter()
    codecs = [r.codec or profile.video.codec for r in profile.renditions] or [profile.video.codec]
    return Counter(c for c in codecs if c in CODECS)


def request_for(profile: Profile, settings: ExecutorConfig, overflow: str,
                total: dict[str, float], free: dict[str, float]) -> Request:
    """The resources a job of `profile` asks for, given the cluster's declared (`total`) and
    currently free (`free`) resources.

    A job that may use NVENC asks for its sessions when some node declares them and they are
    free (or the profile requires NVENC, or the daemon's overflow is "wait": then it waits in
    Ray's queue for a node with free sessions); otherwise it encodes in software and asks for
    CPUs, with NVENC withheld and the reason said, as the local daemon does.
    """
    gpus = settings.model_gpu_share if profile.stages and total.get("GPU", 0) > 0 else 0.0
    sessions = nvenc_sessions(profile)
    if not sessions:
        return Request(num_cpus=settings.software_cpus, num_gpus=gpus)
    wanted = {nvenc_resource(c): float(n) for c, n in sessions.items()}
    declared = all(total.get(r, 0) >= n for r, n in wanted.items())
    available = all(free.get(r, 0) >= n for r, n in wanted.items())
    if declared and (available or overflow == "wait" or profile.video.encoder == "gpu"):
        return Request(resources=wanted, num_gpus=gpus)
    codecs = ", ".join(sorted(sessions))
    why = (f"every cluster node's NVENC sessions for {codecs} are in use" if declared else
           f"no cluster node declares NVENC sessions for {codecs}")
    return Request(num_cpus=settings.software_cpus, num_gpus=gpus, no_nvenc=why)


class RayTask:
    """One job's streaming task, seen as a process: its event lines on `stdout` (a pipe fed by
    a thread), `poll()` None until the task ended, signals as cancels."""

    def __init__(self, generator: Any, request: Request) -> None:
        self.generator = generator
        self.request = request
        self.pid = 0  # the worker process's on its node, once it started
        self.returncode: int | None = None
        read_end, self._write_end = os.pipe()
        os.set_blocking(read_end, False)
        self.stdout: IO[bytes] | None = os.fdopen(read_end, "rb", buffering=0)
        self._thread = threading.Thread(target=self._pump, name="ray-job", daemon=True)
        self._thread.start()

    def _write(self, line: str) -> None:
        # OSError: the daemon has read the job's end and let go; the rest is not news
        with contextlib.suppress(OSError):
            os.write(self._write_end, line.encode() + b"\n")

    def _pump(self) -> None:
        import ray

        code = 1
        try:
            for ref in self.generator:
                line = ray.get(ref)
                msg = json.loads(line)
                if msg.get("event") == EXIT:
                    code = int(msg.get("code", 1))
                    continue
                if msg.get("event") == "started":
                    self.pid = int(msg.get("pid") or 0)
                self._write(line)
        except Exception as e:  # the node died, Ray lost the task, or it was cancelled
            code = -signal.SIGKILL
            self._write(Failed(message=f"the cluster lost the job: {type(e).__name__}: "
                                       f"{first_line(e)}".rstrip(": "),
                               reason=Reason.WORKER_CRASHED, transient=True).line())
        finally:
            self.returncode = code  # before the pipe closes: the loop polls after end of file
            os.close(self._write_end)

    def poll(self) -> int | None:
        """None while the task runs (or waits for a node); its worker's exit status after."""
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """SIGTERM: cancel (the worker removes its temporary output); SIGKILL: force-cancel
        (Ray ends the task's process, the worker dies with it)."""
        import ray

        try:
            ray.cancel(self.generator, force=sig == signal.SIGKILL)
        except Exception as e:  # already ended, or its node gone
            log.event("ray_cancel_failed", logging.DEBUG, error=f"{type(e).__name__}: {e}")


@dataclass(frozen=True)
class NodesSnapshot:
    """ray.nodes() as it answered at `at` (Unix time)."""

    at: float
    nodes: list[dict[str, Any]]


class RayExecutor:
    """Jobs as Ray tasks on the cluster at `settings.address`."""

    remote = True

    def __init__(self, settings: ExecutorConfig, daemon: DaemonSettings) -> None:
        self.settings = settings
        self.daemon = daemon
        self._relay: Any = None
        # ray.nodes() asks the cluster's GCS and may block: a thread of its own keeps this
        # snapshot fresh, and the daemon's loop reads it (nodes()) without waiting on Ray
        self._snapshot = NodesSnapshot(0.0, [])
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None

    def prepare(self) -> None:
        """Connect to the cluster (the daemon becomes one of its drivers)."""
        import ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # ray.init installs its own SIGTERM handler (exit at once): the daemon's stops it
        # gracefully, and must stay.
        handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            ray.init(address=self.settings.address, namespace="mediad", log_to_driver=False,
                     logging_level=logging.WARNING, configure_logging=False)
        except Exception as e:  # no cluster there (yet): systemd starts the daemon again
            raise MediadError(f"executor.address {self.settings.address}: cannot join the Ray "
                              f"cluster: {first_line(e) or type(e).__name__}",
                              reason=Reason.IO_ERROR) from None
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        self._relay = ray.remote(relay)
        self._snapshot = NodesSnapshot(time.time(), ray.nodes())
        log.event("cluster_connected", address=self.settings.address,
                  nodes=sum(1 for n in self._snapshot.nodes if n.get("Alive")))
        self._watcher = threading.Thread(target=self._watch_nodes, name="ray-nodes", daemon=True)
        self._watcher.start()

    def _watch_nodes(self) -> None:
        """Look at the cluster's nodes every NODES_EVERY seconds until closed."""
        import ray

        while not self._closing.wait(NODES_EVERY):
            try:
                self._snapshot = NodesSnapshot(time.time(), ray.nodes())
            except Exception as e:  # the cluster unreachable for a moment: the record ages
                if not self._closing.is_set():
                    log.event("cluster_unreachable", logging.WARNING,
                              error=f"{type(e).__name__}: {e}")

    def run(self, job_id: int, spec: JobSpec, gpu: str, nvenc_device: int | None) -> Worker:
        """Place the job: ask for what it needs, then stream its events."""
        import ray

        profile = Profile.model_validate({**spec.profile, "name": spec.profile_name})
        request = request_for(profile, self.settings, self.daemon.nvenc_overflow,
                              ray.cluster_resources(), ray.available_resources())
        if request.no_nvenc:
            spec = spec.model_copy(update={"no_nvenc": request.no_nvenc})
        # The daemon retries (its store fences attempts), never Ray: max_retries=0.
        generator = self._relay.options(
            num_returns="streaming", max_retries=0, resources=request.resources,
            num_cpus=request.num_cpus, num_gpus=request.num_gpus,
        ).remote(spec.line(), self.settings.path_map)
        return Worker(job_id=job_id, gpu=gpu, nvenc_device=None, proc=RayTask(generator, request),
                      placed=False)

    def release(self, worker: Worker) -> None:
        """Nothing to keep: the task's process is Ray's."""
        if worker.proc.stdout is not None:
            worker.proc.stdout.close()

    def close(self) -> None:
        import ray

        self._closing.set()
        if self._watcher is not None:
            self._watcher.join(NODES_EVERY)  # a look under way ends, or fails at the shutdown
        ray.shutdown()

    def nodes(self, running: list[Worker]) -> list[NodeView]:
        """Each node as the last look saw it (`seen`: when): address, alive, what it declared,
        and what this daemon's jobs use there. Asks Ray nothing."""
        snapshot = self._snapshot
        used: dict[str, Counter[str]] = {}
        for worker in running:
            if worker.node and isinstance(worker.proc, RayTask):
                used.setdefault(worker.node, Counter()).update(worker.proc.request.used())
        views: dict[str, NodeView] = {}
        for n in snapshot.nodes:  # a node that restarted is listed dead and alive: alive wins
            address = n["NodeManagerAddress"]
            if address in views and views[address].alive:
                continue
            views[address] = NodeView(
                node=address, alive=bool(n.get("Alive")),
                declared={k: v for k, v in n.get("Resources", {}).items() if not k.startswith("node:")},
                used=dict(used.get(address, Counter())), seen=snapshot.at)
        return list(views.values())
