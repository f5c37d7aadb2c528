"""One CUDA context shared by FFmpeg (NVDEC/NVENC) and torch."""

from __future__ import annotations

import threading
from typing import Any

from mediad import log

_CU_CTX_SCHED_BLOCKING_SYNC = 0x04
_SHARED: set[int] = set()
_SHARED_LOCK = threading.Lock()


def share_primary_context(device: int) -> str | None:
    """Give `device`'s primary CUDA context the flags FFmpeg requires; None, or why not.

    FFmpeg's CUDA device (primary_ctx=1, which HWAccel(is_hw_owned=True) and PyAV's DLPack
    import use) insists on CU_CTX_SCHED_BLOCKING_SYNC and fails with "Primary context already
    active with incompatible flags" when torch created the context first. The driver lets the
    flags change on an active context (CUDA 11+). Harmless without CUDA: it says why (also in the
    log, once per device) and returns.
    """
    why = _share_primary_context(device)
    if why:
        log.event_once(f"share_ctx:{device}", "cuda_context_not_shared", device=device, why=why)
    return why


def _share_primary_context(device: int) -> str | None:
    import ctypes  # here: a CPU transcode never loads it

    with _SHARED_LOCK:
        if device in _SHARED:
            return None
        try:
            cuda = ctypes.CDLL("libcuda.so.1")
        except OSError as e:
            return f"libcuda.so.1 not loadable ({e})"
        dev, flags, active = ctypes.c_int(), ctypes.c_uint(), ctypes.c_int()
        if cuda.cuInit(0) != 0:
            return "cuInit failed"
        if cuda.cuDeviceGet(ctypes.byref(dev), device) != 0:
            return f"no CUDA device {device}"
        if cuda.cuDevicePrimaryCtxGetState(dev, ctypes.byref(flags), ctypes.byref(active)) != 0:
            return "cuDevicePrimaryCtxGetState failed"
        if flags.value != _CU_CTX_SCHED_BLOCKING_SYNC:
            set_flags = (getattr(cuda, "cuDevicePrimaryCtxSetFlags_v2", None)
                         or cuda.cuDevicePrimaryCtxSetFlags)
            rc = set_flags(dev, _CU_CTX_SCHED_BLOCKING_SYNC)
            if rc != 0:
                return f"cuDevicePrimaryCtxSetFlags failed (CUresult {rc})"
        _SHARED.add(device)
        return None


def cuda_hwaccel(device: int, *, allow_software_fallback: bool = True) -> Any:
    """PyAV HWAccel for NVDEC decode or NVENC encode whose frames torch can use in place.

    is_hw_owned keeps decoded frames on the GPU and makes PyAV pass primary_ctx=1, so FFmpeg
    and torch share the device's primary context; the context flags are aligned first.
    """
    from av.codec.hwaccel import HWAccel

    share_primary_context(device)
    return HWAccel("cuda", device=device, allow_software_fallback=allow_software_fallback,
                   is_hw_owned=True)
