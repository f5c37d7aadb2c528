"""Which GPU a job uses: --gpu auto|none|N resolved against telemetry."""

from __future__ import annotations

from collections.abc import Sequence

from mediad.errors import MediadError, Reason
from mediad.gpu.telemetry import (
    DeviceTelemetry,
    cuda_device_count,
    read_telemetry,
    visible_devices,
)

# A device needs this much free memory to be worth choosing for a transcode.
MIN_FREE_MEMORY = 1 << 30


def _encoder_free(r: DeviceTelemetry) -> int:
    """Percent of encoder capacity left, from the best figure NVML gives."""
    if r.has_nvenc is False:
        return 0
    if r.encoder_capacity is not None:
        return max(0, min(100, r.encoder_capacity))
    if r.util_encoder is not None:
        return max(0, 100 - r.util_encoder)
    return 50  # unknown: neither best nor worst


def pick_device(records: Sequence[DeviceTelemetry]) -> tuple[int, str]:
    """Best CUDA device among visible telemetry records for a transcode, and why.

    Order of preference: enough free memory; an NVENC engine; most free encoder capacity
    (10% steps, so sampling noise does not flip the choice); fewest encoder sessions; most
    free memory (whole GiB); least busy SMs (10% steps); lowest index.
    """
    usable = [r for r in records if r.cuda_index is not None]
    if not usable:
        raise ValueError("no visible device among the telemetry records")

    def key(r: DeviceTelemetry) -> tuple:
        mem_ok = r.memory_free is None or r.memory_free >= MIN_FREE_MEMORY
        return (
            mem_ok,
            r.has_nvenc is not False,
            _encoder_free(r) // 10,
            -(r.encoder_sessions or 0),
            (r.memory_free or 0) >> 30,
            -((r.util_gpu or 0) // 10),
            -(r.cuda_index or 0),
        )

    best = max(usable, key=key)
    if len(usable) == 1:
        return best.cuda_index or 0, f"GPU {best.cuda_index} ({best.name}): the only visible GPU"
    parts = []
    if best.has_nvenc is False:
        parts.append("no visible GPU has NVENC")
    else:
        parts.append(f"encoder {_encoder_free(best)}% free, {best.encoder_sessions or 0} sessions")
    if best.memory_free is not None:
        parts.append(f"{best.memory_free / (1 << 30):.1f} GiB free")
    if best.util_gpu is not None:
        parts.append(f"SM {best.util_gpu}% busy")
    return best.cuda_index or 0, (f"GPU {best.cuda_index} ({best.name}) of {len(usable)} visible: "
                                  + ", ".join(parts))


def choose_device(request: str) -> tuple[int | None, str]:
    """Resolve --gpu auto|none|N to a device index (None: CPU only) and the reason."""
    if request == "none":
        return None, "--gpu none"
    devices = visible_devices()
    if request == "auto":
        if not devices:
            _, why = cuda_device_count()
            return None, why or "CUDA_VISIBLE_DEVICES hides every GPU"
        if len(devices) == 1:
            return devices[0], "the only visible GPU"
        records, why = read_telemetry()
        visible = [r for r in records if r.cuda_index is not None]
        if not visible:
            return devices[0], f"first visible GPU (no telemetry: {why or 'none visible'})"
        return pick_device(visible)
    try:
        index = int(request)
    except ValueError:
        raise MediadError(f"--gpu {request}: expected auto, none or a device number",
                          reason=Reason.BAD_REQUEST) from None
    if index not in devices:
        raise MediadError(f"--gpu {index}: no such GPU (visible: {devices or 'none'})",
                          reason=Reason.NO_GPU)
    return index, f"--gpu {index}"
