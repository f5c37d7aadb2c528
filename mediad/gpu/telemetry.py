"""NVML: the NVIDIA devices, their CUDA ordinals, and what each is doing now."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@functools.cache
def cuda_device_count() -> tuple[int, str]:
    """Number of NVIDIA devices the driver reports, with the reason when there are none."""
    if sys.platform == "linux":
        # The library NVML loads, tried first: importing pynvml took ~11 ms of every job on
        # a machine without NVIDIA driver (--gpu auto), only to fail to load it.
        import ctypes  # here: --gpu none never counts devices

        try:
            ctypes.CDLL("libnvidia-ml.so.1")
        except OSError:  # what pynvml.nvmlInit() would say
            return 0, "no NVIDIA driver or GPU (NVML Shared Library Not Found)"
    try:
        import pynvml
    except ImportError:
        return 0, "pynvml (nvidia-ml-py) is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return 0, f"no NVIDIA driver or GPU ({e})"
    try:
        count = pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError as e:
        return 0, f"NVML cannot count devices ({e})"
    return (count, "") if count else (0, "the NVIDIA driver reports no GPU")


@dataclass(frozen=True)
class DeviceTelemetry:
    """One GPU as NVML sees it now. None: NVML does not report that value on this device."""

    index: int  # NVML index, as nvidia-smi numbers devices
    cuda_index: int | None  # CUDA ordinal in this process; None: hidden by CUDA_VISIBLE_DEVICES
    name: str
    uuid: str
    memory_total: int | None = None  # bytes
    memory_free: int | None = None
    util_gpu: int | None = None  # percent of time the SMs were busy
    util_encoder: int | None = None
    util_decoder: int | None = None
    encoder_sessions: int | None = None
    encoder_fps: int | None = None  # average over the sessions
    encoder_latency_us: int | None = None
    encoder_capacity: int | None = None  # percent of H.264 encode capacity left
    has_nvenc: bool | None = None  # False: NVML says this device has no encoder
    clock_video_mhz: int | None = None
    clock_video_max_mhz: int | None = None
    sessions: tuple[dict, ...] = ()

    def to_dict(self) -> dict:
        """Plain data for --json."""
        data = asdict(self)
        data["sessions"] = list(self.sessions)
        return data


def resolve_visible(env: str | None, uuids: Sequence[str]) -> list[int]:
    """NVML indices in CUDA ordinal order for a CUDA_VISIBLE_DEVICES value (None: unset).

    Entries are indices or GPU UUIDs (a unique prefix is enough); like CUDA, the list ends at
    the first entry that names no device. Integer entries assume CUDA_DEVICE_ORDER=PCI_BUS_ID
    (NVML's order); on a mix of GPU models CUDA's default order can differ: use UUIDs there.
    MIG instances are not resolved here, and end the list.
    """
    if env is None:
        return list(range(len(uuids)))
    result: list[int] = []
    for raw in env.split(","):
        token = raw.strip()
        if not token:
            break
        index: int | None = None
        if token.lstrip("+-").isdigit():
            number = int(token)
            index = number if 0 <= number < len(uuids) else None
        elif token.upper().startswith("GPU-"):
            matches = [i for i, u in enumerate(uuids) if u.upper().startswith(token.upper())]
            index = matches[0] if len(matches) == 1 else None
        if index is None:
            break
        if index not in result:
            result.append(index)
    return result


def _nvml_value(fn: Any, *args: Any) -> Any:
    """fn(*args), or None when NVML cannot report it on this device."""
    import pynvml

    try:
        return fn(*args)
    except pynvml.NVMLError:
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_device(index: int, cuda_index: int | None) -> DeviceTelemetry:
    import pynvml

    h = pynvml.nvmlDeviceGetHandleByIndex(index)
    mem = _nvml_value(pynvml.nvmlDeviceGetMemoryInfo, h)
    util = _nvml_value(pynvml.nvmlDeviceGetUtilizationRates, h)
    enc = _nvml_value(pynvml.nvmlDeviceGetEncoderUtilization, h)
    dec = _nvml_value(pynvml.nvmlDeviceGetDecoderUtilization, h)
    stats = _nvml_value(pynvml.nvmlDeviceGetEncoderStats, h)
    try:
        capacity: int | None = int(pynvml.nvmlDeviceGetEncoderCapacity(
            h, pynvml.NVML_ENCODER_QUERY_H264))
        has_nvenc: bool | None = True
    except pynvml.NVMLError_NotSupported:
        capacity, has_nvenc = None, False
    except pynvml.NVMLError:
        capacity, has_nvenc = None, None
    raw_sessions = _nvml_value(pynvml.nvmlDeviceGetEncoderSessions, h) or []
    sessions = tuple(
        {"pid": s.pid, "codec": {0: "h264", 1: "hevc", 2: "av1"}.get(s.codecType, str(s.codecType)),
         "width": s.hResolution, "height": s.vResolution, "fps": s.averageFps,
         "latency_us": s.encodeLatency}
        for s in raw_sessions)
    return DeviceTelemetry(
        index=index, cuda_index=cuda_index,
        name=_text(pynvml.nvmlDeviceGetName(h)), uuid=_text(pynvml.nvmlDeviceGetUUID(h)),
        memory_total=int(mem.total) if mem else None, memory_free=int(mem.free) if mem else None,
        util_gpu=int(util.gpu) if util else None,
        util_encoder=int(enc[0]) if enc else None, util_decoder=int(dec[0]) if dec else None,
        encoder_sessions=int(stats[0]) if stats else None,
        encoder_fps=int(stats[1]) if stats else None,
        encoder_latency_us=int(stats[2]) if stats else None,
        encoder_capacity=capacity, has_nvenc=has_nvenc,
        clock_video_mhz=_nvml_value(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_VIDEO),
        clock_video_max_mhz=_nvml_value(pynvml.nvmlDeviceGetMaxClockInfo, h,
                                        pynvml.NVML_CLOCK_VIDEO),
        sessions=sessions,
    )


def _uuids() -> list[str]:
    """NVML UUID of every device (empty without NVML)."""
    count, _ = cuda_device_count()
    if not count:
        return []
    import pynvml

    return [_text(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i)))
            for i in range(count)]


def read_telemetry() -> tuple[list[DeviceTelemetry], str]:
    """Telemetry of every NVIDIA device (visible to CUDA or not), or ([], why not)."""
    count, why = cuda_device_count()
    if not count:
        return [], why
    import pynvml

    try:
        order = resolve_visible(os.environ.get("CUDA_VISIBLE_DEVICES"), _uuids())
        cuda_of = {nvml: ordinal for ordinal, nvml in enumerate(order)}
        return [_read_device(i, cuda_of.get(i)) for i in range(count)], ""
    except pynvml.NVMLError as e:
        return [], f"NVML failed reading devices ({e})"


def visible_devices() -> list[int]:
    """CUDA device indices this process may use, honouring CUDA_VISIBLE_DEVICES."""
    count, _ = cuda_device_count()
    if not count:
        return []
    try:
        uuids = _uuids()
    except Exception:  # NVML hiccup: fall back to counting entries
        uuids = [f"?{i}" for i in range(count)]
    return list(range(len(resolve_visible(os.environ.get("CUDA_VISIBLE_DEVICES"), uuids))))
