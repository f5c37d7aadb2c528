"""The last hour of GPU telemetry, sampled on a thread of its own (the dashboard's plots).

A ring buffer per device of (time, SM %, NVENC %, NVDEC %, memory used bytes); on a machine
without an NVIDIA GPU the sampler sees that once and stops.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

INTERVAL = 10.0  # seconds between samples
WINDOW = 3600.0  # seconds of history kept


@dataclass(frozen=True)
class Sample:
    """One device at one time; None: NVML does not report it there."""

    at: float
    sm: int | None
    encoder: int | None
    decoder: int | None
    memory_used: int | None
    memory_total: int | None


class TelemetryHistory:
    """Samples of every NVIDIA device over the last WINDOW seconds, by NVML index."""

    def __init__(self, interval: float = INTERVAL, window: float = WINDOW) -> None:
        self.interval = interval
        self._size = max(2, int(window / interval) + 1)
        self._samples: dict[int, deque[Sample]] = {}
        self.names: dict[int, str] = {}
        self.reason = ""  # why there is nothing to sample (no driver, no GPU)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> bool:
        """Read every device once; False when there is no device to read."""
        from mediad.gpu.telemetry import read_telemetry

        records, why = read_telemetry()
        now = time.time()
        with self._lock:
            self.reason = why
            for r in records:
                used = r.memory_total - r.memory_free \
                    if r.memory_total is not None and r.memory_free is not None else None
                ring = self._samples.setdefault(r.index, deque(maxlen=self._size))
                ring.append(Sample(now, r.util_gpu, r.util_encoder, r.util_decoder, used,
                                   r.memory_total))
                self.names[r.index] = r.name
        return bool(records)

    def snapshot(self) -> dict[int, list[Sample]]:
        """A copy of every device's samples, oldest first."""
        with self._lock:
            return {i: list(ring) for i, ring in sorted(self._samples.items())}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.sample():
                    return  # no GPU: nothing to plot (NVML's answer does not change)
            except Exception as e:  # noqa: BLE001 - a driver hiccup: keep the thread going
                with self._lock:
                    self.reason = f"{type(e).__name__}: {e}"
            self._stop.wait(self.interval)

    def start(self) -> None:
        """Sample every `interval` seconds on a daemon thread until stop()."""
        self._thread = threading.Thread(target=self._run, name="mediad-gpu-history",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the sampling thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
