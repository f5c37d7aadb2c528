"""Prometheus metrics: jobs by state, durations, frames, fps, failures, NVENC sessions, GPU use."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mediad import log
from mediad.daemon.queue import STATES

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, float("inf"))


class GpuCollector(Collector):
    """GPU use from mediad.gpu.read_telemetry at scrape time; yields nothing without a GPU."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One family per engine (sm, encoder, decoder) plus memory, labelled by NVML index."""
        from mediad.gpu import read_telemetry

        records, _why = read_telemetry()
        if not records:
            return
        util = GaugeMetricFamily("mediad_gpu_utilization_ratio",
                                 "GPU engine utilisation over the driver's last sample period (0-1)",
                                 labels=["gpu", "engine"])
        mem = GaugeMetricFamily("mediad_gpu_memory_used_bytes", "GPU memory in use",
                                labels=["gpu"])
        for r in records:
            # A value NVML will not report on this device is left out, not the whole scrape.
            for engine, percent in (("sm", r.util_gpu), ("encoder", r.util_encoder),
                                    ("decoder", r.util_decoder)):
                if percent is not None:
                    util.add_metric([str(r.index), engine], percent / 100.0)
            if r.memory_total is not None and r.memory_free is not None:
                mem.add_metric([str(r.index)], float(r.memory_total - r.memory_free))
        yield util
        yield mem


class Metrics:
    """The daemon's metrics, in a registry of their own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.jobs = Gauge("mediad_jobs", "Jobs in the queue database by state", ["state"], registry=r)
        self.queue_depth = Gauge("mediad_queue_depth", "Jobs waiting to run", registry=r)
        self.duration = Histogram("mediad_job_duration_seconds", "Wall time of finished job runs",
                                  ["outcome"], buckets=DURATION_BUCKETS, registry=r)
        self.frames = Counter("mediad_frames_total", "Frames transcoded by finished and running jobs",
                              registry=r)
        self.fps = Gauge("mediad_fps", "Frames per second over all running jobs", registry=r)
        self.failures = Counter("mediad_job_failures_total", "Job attempts that failed, by reason",
                                ["reason", "final"], registry=r)
        self.refused = Counter("mediad_files_refused_total", "Files refused by the intake, by reason",
                               ["reason"], registry=r)
        self.nvenc = Gauge("mediad_nvenc_sessions", "NVENC sessions held by running jobs", ["gpu"],
                           registry=r)
        self.workers = Gauge("mediad_workers_busy", "Worker processes running a job", registry=r)
        for state in STATES:
            self.jobs.labels(state).set(0)
        r.register(GpuCollector())
        self.server = None

    def start(self, address: tuple[str, int] | None) -> None:
        """Serve /metrics on address (None: metrics off)."""
        if address is None:
            return
        host, port = address
        try:
            self.server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            # A busy port must not stop the transcoding; say so loudly and go on.
            log.event("metrics_failed", logging.ERROR, listen=f"{host}:{port}",
                      error=e.strerror or str(e))
            return
        log.event("metrics_listening", listen=f"{host}:{port}")

    def stop(self) -> None:
        """Stop serving."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def set_counts(self, counts: dict[str, int]) -> None:
        """Jobs by state and the queue depth."""
        for state, n in counts.items():
            self.jobs.labels(state).set(n)
        self.queue_depth.set(counts.get("queued", 0))
