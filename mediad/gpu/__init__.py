"""What this machine's NVIDIA GPUs are doing and can really do (found by trying); device choice.

Telemetry comes from NVML (pynvml). Capabilities come from trials: open NVENC with a tiny frame,
decode a tiny clip with NVDEC and check the frames are CUDA frames. A GPU without NVENC (H100,
H200, A100) is a normal configuration: its NVENC entries say "unsupported", not "error".
A busy encoder (session limit, "OpenEncodeSessionEx failed: out of memory") is "busy": transient,
so it is not cached for long and a later job probes again.

One module per job: `records` (the capability records), `nvenc_errors` (failure texts told apart),
`telemetry` (NVML), `device` (which GPU), `cuda_context` (FFmpeg and torch share one context),
`trials` (finding capabilities by trying), `report` (`mediad gpus`).
"""

from mediad.gpu.cuda_context import cuda_hwaccel, share_primary_context
from mediad.gpu.device import MIN_FREE_MEMORY, choose_device, pick_device
from mediad.gpu.nvenc_errors import (
    capture_ffmpeg_log,
    classify_nvenc_error,
    is_transient_nvenc_error,
)
from mediad.gpu.records import (
    BUSY,
    CODECS,
    ERROR,
    NVENC_NAMES,
    OK,
    UNAVAILABLE,
    UNSUPPORTED,
    Capabilities,
    Capability,
    no_gpu,
    without_nvenc,
)
from mediad.gpu.report import format_gpus, gpus_report
from mediad.gpu.telemetry import (
    DeviceTelemetry,
    cuda_device_count,
    read_telemetry,
    resolve_visible,
    visible_devices,
)
from mediad.gpu.trials import RETRY_PROBE_S, capabilities, forget_capabilities

__all__ = [
    "BUSY", "CODECS", "ERROR", "MIN_FREE_MEMORY", "NVENC_NAMES", "OK", "RETRY_PROBE_S",
    "UNAVAILABLE", "UNSUPPORTED", "Capabilities", "Capability", "DeviceTelemetry", "capabilities",
    "capture_ffmpeg_log", "choose_device", "classify_nvenc_error", "cuda_device_count",
    "cuda_hwaccel", "forget_capabilities", "format_gpus", "gpus_report",
    "is_transient_nvenc_error", "no_gpu", "pick_device", "read_telemetry", "resolve_visible",
    "share_primary_context", "visible_devices", "without_nvenc",
]
