"""What this machine's NVIDIA GPUs are doing and can really do (found by trying); device choice.

Telemetry comes from NVML (pynvml). Capabilities come from trials: open NVENC with a tiny frame,
decode a tiny clip with NVDEC and check the frames are CUDA frames. A GPU without NVENC (H100,
H200, A100) is a normal configuration: its NVENC entries say "unsupported", not "error".
A busy encoder (session limit, "OpenEncodeSessionEx failed: out of memory") is "busy": transient,
so it is not cached for long and a later job probes again.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from typing import Any

from mediad import log
from mediad.errors import MediadError
from mediad.realtime import undo_realtime

CODECS = ("h264", "hevc", "av1")
NVENC_NAMES = {"h264": "h264_nvenc", "hevc": "hevc_nvenc", "av1": "av1_nvenc"}
# Software encoders used to make the tiny trial clips for the NVDEC check.
_TRIAL_ENCODERS = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1"}
# A device needs this much free memory to be worth choosing for a transcode.
MIN_FREE_MEMORY = 1 << 30
# Capabilities that may change soon (busy, unexplained errors) are re-probed after this long.
RETRY_PROBE_S = 60.0

# Capability.status values.
OK, UNSUPPORTED, BUSY, UNAVAILABLE, ERROR = "ok", "unsupported", "busy", "unavailable", "error"


@dataclass(frozen=True)
class Capability:
    """Whether one hardware path works, and why (not).

    status: "ok"; "unsupported" (this GPU or driver lacks it: permanent, normal on H100);
    "busy" (transient: session limit, encoder or memory full; retry later);
    "unavailable" (no GPU or driver at all); "error" (failed for another reason).
    """

    ok: bool
    reason: str
    status: str = ""

    def __post_init__(self) -> None:
        if not self.status:
            object.__setattr__(self, "status", OK if self.ok else ERROR)

    @property
    def transient(self) -> bool:
        """True when a retry later may succeed (NVENC busy, session limit)."""
        return self.status == BUSY


@dataclass(frozen=True)
class Capabilities:
    """NVENC/NVDEC support per codec on one device (device None: no usable GPU)."""

    device: int | None
    nvenc: dict[str, Capability] = field(default_factory=dict)
    nvdec: dict[str, Capability] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain data for reports and --json."""
        def one(v: Capability) -> dict:
            return {"ok": v.ok, "status": v.status, "reason": v.reason}

        return {
            "device": self.device,
            "nvenc": {k: one(v) for k, v in self.nvenc.items()},
            "nvdec": {k: one(v) for k, v in self.nvdec.items()},
        }

    @property
    def settled(self) -> bool:
        """False when some entry may change soon (busy or unexplained error): do not keep it long."""
        return all(c.status not in (BUSY, ERROR)
                   for c in (*self.nvenc.values(), *self.nvdec.values()))


def without_nvenc(caps: Capabilities, reason: str) -> Capabilities:
    """`caps` with NVENC withheld for `reason` (a session budget); NVDEC stays as it is."""
    withheld = Capability(False, reason, UNAVAILABLE)
    return replace(caps, nvenc={codec: withheld for codec in caps.nvenc})


def no_gpu(reason: str) -> Capabilities:
    """Capabilities of a machine (or a request) without a usable GPU."""
    cap = Capability(False, reason, UNAVAILABLE)
    return Capabilities(None, {c: cap for c in CODECS}, {c: cap for c in CODECS})


# --- NVENC failure classification ---------------------------------------------------------

# Lower-case fragments of FFmpeg/NVENC/CUDA messages. Busy wins over the others: a session
# limit on the only device also logs "No capable devices found".
_BUSY = (
    "out of memory", "cannot allocate memory", "incompatible client key", "encoder busy",
    "lock busy", "resource temporarily unavailable", "session limit", "too many sessions",
    "maximum number of", "out_of_memory",
)
_UNAVAILABLE = (
    "cannot load libcuda", "failed loading the nvenc library", "cannot load libnvidia-encode",
    "no cuda capable devices", "no cuda-capable device", "cuinit", "driver not loaded",
    "cuda_error_no_device", "no nvidia driver",
    # NVDEC's library: absent where a container runtime mounts no "video" driver capability
    "cannot load libnvcuvid", "failed loading nvcuvid",
)
_UNSUPPORTED = (
    "unsupported device", "no encode device", "no capable devices found",
    "no nvenc capable devices", "does not support nvenc", "codec not supported",
    "function not implemented", "required nvenc api version", "unsupported param",
    "encoder not found", "unknown encoder", "10 bit encode not supported",
    "lacking required capabilities", "no supported hardware config",
)


def classify_nvenc_error(message: str) -> str:
    """Status ("busy", "unavailable", "unsupported" or "error") for an NVENC failure text."""
    text = message.lower()
    for status, marks in ((BUSY, _BUSY), (UNAVAILABLE, _UNAVAILABLE), (UNSUPPORTED, _UNSUPPORTED)):
        if any(m in text for m in marks):
            return status
    return ERROR


def is_transient_nvenc_error(message: str) -> bool:
    """True when an NVENC failure is a busy encoder (session limit / out of memory), not a lack."""
    return classify_nvenc_error(message) == BUSY


_LOG_LOCK = threading.Lock()
_LOG_USERS = 0
_LOG_PREVIOUS: int | None = None


@contextlib.contextmanager
def capture_ffmpeg_log() -> Iterator[list[str]]:
    """Collect FFmpeg's log lines from this thread (e.g. NVENC's real error) into a list.

    PyAV turns FFmpeg's log off by default, and an NVENC open failure then surfaces only as
    "Generic error in an external library"; the line saying why is in the log.
    """
    import av.logging

    global _LOG_USERS, _LOG_PREVIOUS
    with _LOG_LOCK:
        if _LOG_USERS == 0:
            _LOG_PREVIOUS = av.logging.get_level()
            av.logging.set_level(av.logging.VERBOSE)
        _LOG_USERS += 1
    lines: list[str] = []
    capture = av.logging.Capture()
    try:
        with capture as logs:
            yield lines
    finally:
        lines.extend(m.strip() for _, _, m in logs if m.strip())
        with _LOG_LOCK:
            _LOG_USERS -= 1
            if _LOG_USERS == 0:
                av.logging.set_level(_LOG_PREVIOUS)


def _explain(error: Exception, lines: Sequence[str]) -> str:
    """The exception text plus the FFmpeg log lines that say why."""
    head = str(error)
    telling = [ln for ln in lines if (classify_nvenc_error(ln) != ERROR or "failed" in ln.lower())
               and ln not in head]
    return "; ".join([head, *dict.fromkeys(telling[-3:])])


# --- NVML: devices and their telemetry ----------------------------------------------------

@functools.cache
def cuda_device_count() -> tuple[int, str]:
    """Number of NVIDIA devices the driver reports, with the reason when there are none."""
    if sys.platform == "linux":
        # The library NVML loads, tried first: importing pynvml took ~11 ms of every job on
        # a machine without NVIDIA driver (--gpu auto), only to fail to load it.
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
                          reason="bad_request") from None
    if index not in devices:
        raise MediadError(f"--gpu {index}: no such GPU (visible: {devices or 'none'})",
                          reason="no_gpu")
    return index, f"--gpu {index}"


# --- sharing CUDA between FFmpeg and torch --------------------------------------------------

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


# --- capability trials --------------------------------------------------------------------

def _trial_nvenc(codec: str, device: int) -> Capability:
    import av

    name = NVENC_NAMES[codec]
    with capture_ffmpeg_log() as lines:
        try:
            ctx = av.CodecContext.create(name, "w")
            ctx.width, ctx.height = 256, 144
            ctx.pix_fmt = "yuv420p"
            ctx.time_base = Fraction(1, 25)
            ctx.framerate = Fraction(25)
            ctx.options = {"gpu": str(device)}
            ctx.open()
            frame = av.VideoFrame(256, 144, "yuv420p")
            frame.pts = 0
            ctx.encode(frame)
            ctx.encode(None)
            del ctx  # closes the session now: consumer GPUs allow only a few at once
            error: Exception | None = None
        except (av.FFmpegError, ValueError, OSError) as e:
            error = e
    if error is None:
        return Capability(True, f"{name} opened and encoded a trial frame", OK)
    text = _explain(error, lines)
    status = classify_nvenc_error(text)
    if status in (ERROR, UNAVAILABLE) and _nvml_has_nvenc(device) is False:
        # NVML says this GPU has no encoder (H100/H200/A100): a lack, not a fault, also where
        # the container mounts no libnvidia-encode for it.
        status = UNSUPPORTED
    what = {UNSUPPORTED: "not supported on this GPU", BUSY: "busy, retry later",
            UNAVAILABLE: "no usable driver"}.get(status, "did not open")
    return Capability(False, f"{name} {what}: {text}", status)


def _nvml_has_nvenc(device: int) -> bool | None:
    """NVML's view of whether CUDA device `device` has an encoder (None: cannot tell)."""
    try:
        records, _ = read_telemetry()
    except Exception:
        return None
    for r in records:
        if r.cuda_index == device:
            return r.has_nvenc
    return None


@functools.cache
def _trial_clip(codec: str) -> bytes:
    """A tiny in-memory clip in `codec`, made with the software encoder."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream(_TRIAL_ENCODERS[codec], rate=25,
                                options={"x265-params": "log-level=error"} if codec == "hevc" else {})
        stream.width, stream.height, stream.pix_fmt = 256, 144, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame(256, 144, "yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    undo_realtime()  # SVT-AV1 as root made this thread real-time
    return buf.getvalue()


def _decoder_without_cuda(clip: bytes) -> str | None:
    """The name of the decoder PyAV picks for `clip`, when that decoder has no CUDA path.

    PyAV takes FFmpeg's first decoder for a codec; for AV1 that is libdav1d, which is software
    only, so NVDEC cannot be reached through it whatever the GPU.
    """
    import av

    with av.open(io.BytesIO(clip)) as src:
        codec = src.streams.video[0].codec_context.codec
        if any(c.device_type.name == "cuda" for c in codec.hardware_configs):
            return None
        return codec.name


def _trial_nvdec(codec: str, device: int) -> Capability:
    import av

    with capture_ffmpeg_log() as lines:
        try:
            clip = _trial_clip(codec)
            if (decoder := _decoder_without_cuda(clip)) is not None:
                return Capability(False, f"NVDEC {codec} not reachable: PyAV decodes {codec} with "
                                         f"{decoder}, which has no CUDA path", UNSUPPORTED)
            hw = cuda_hwaccel(device, allow_software_fallback=False)
            with av.open(io.BytesIO(clip), hwaccel=hw) as src:
                frames = list(src.decode(video=0))
            error: Exception | None = None
        except (av.FFmpegError, OSError, ValueError, NotImplementedError, RuntimeError) as e:
            # RuntimeError: PyAV found no stream it could accelerate (no fallback allowed)
            error = e
    if error is not None:
        text = _explain(error, lines)
        # No CUDA config for the codec is a lack; otherwise NVENC's vocabulary fits (driver
        # missing, memory full, hardware lacking the profile).
        lack = isinstance(error, NotImplementedError | RuntimeError) and not isinstance(
            error, av.FFmpegError)
        status = UNSUPPORTED if lack else classify_nvenc_error(text)
        return Capability(False, f"NVDEC {codec} failed: {text}", status)
    if not frames:
        return Capability(False, f"NVDEC {codec} decoded no frames", ERROR)
    fmt = frames[0].format.name
    if fmt != "cuda":
        return Capability(False, f"NVDEC {codec} fell back to software (frames are {fmt})",
                          UNSUPPORTED)
    return Capability(True, f"NVDEC {codec} decoded a trial clip into CUDA frames", OK)


_CAPS_LOCK = threading.Lock()
_CAPS: dict[int | None, tuple[Capabilities, float]] = {}


def capabilities(device: int | None) -> Capabilities:
    """Try NVENC and NVDEC for each codec on `device` (None: no GPU); cached per process.

    Settled results are kept for the process; results with a busy or failed entry are
    re-probed after RETRY_PROBE_S, so one job's session-limit failure does not stick.
    """
    if device is None:
        _, why = cuda_device_count()
        return no_gpu(why or "no GPU requested")
    with _CAPS_LOCK:  # one probe at a time: each trial opens a real encoder session
        cached = _CAPS.get(device)
        if cached and (cached[0].settled or time.monotonic() - cached[1] < RETRY_PROBE_S):
            return cached[0]
        caps = Capabilities(
            device,
            {c: _trial_nvenc(c, device) for c in CODECS},
            {c: _trial_nvdec(c, device) for c in CODECS},
        )
        _CAPS[device] = (caps, time.monotonic())
    log.event("gpu_capabilities", device=device,
              nvenc=",".join(c for c, v in caps.nvenc.items() if v.ok) or "none",
              nvdec=",".join(c for c, v in caps.nvdec.items() if v.ok) or "none",
              nvenc_status=",".join(sorted({v.status for v in caps.nvenc.values()})))
    return caps


def forget_capabilities(device: int | None = None) -> None:
    """Drop cached capabilities (of one device, or all) so the next call probes again."""
    with _CAPS_LOCK:
        if device is None:
            _CAPS.clear()
        else:
            _CAPS.pop(device, None)



# --- `mediad gpus` ------------------------------------------------------------------------

def _system_versions() -> dict[str, str | None]:
    import pynvml

    driver = _nvml_value(pynvml.nvmlSystemGetDriverVersion)
    cuda = _nvml_value(pynvml.nvmlSystemGetCudaDriverVersion)
    return {
        "driver_version": _text(driver) if driver is not None else None,
        "cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else None,
    }


def gpus_report(probe: bool = True) -> dict:
    """Devices, telemetry, capabilities (when `probe`) and the --gpu auto choice, as plain data."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    report: dict[str, Any] = {"available": False, "reason": None, "driver_version": None,
                              "cuda_driver_version": None, "cuda_visible_devices": env,
                              "probed": probe, "devices": [], "auto": None}
    records, why = read_telemetry()
    if not records:
        report["reason"] = why
        report["auto"] = {"device": None, "reason": why}
        return report
    report.update(_system_versions())
    devices = []
    for r in records:
        entry = r.to_dict()
        entry["capabilities"] = (capabilities(r.cuda_index).to_dict()
                                 if probe and r.cuda_index is not None else None)
        devices.append(entry)
    report["devices"] = devices
    visible = [r for r in records if r.cuda_index is not None]
    report["available"] = bool(visible)
    if not visible:
        report["reason"] = "CUDA_VISIBLE_DEVICES hides every GPU"
        report["auto"] = {"device": None, "reason": report["reason"]}
    else:
        index, reason = pick_device(visible)
        report["auto"] = {"device": index, "reason": reason}
    return report


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / (1 << 30):.1f} GiB"


def _pct(n: int | None) -> str:
    return "n/a" if n is None else f"{n}%"


def _cap_cell(c: dict) -> str:
    status = c.get("status") or (OK if c.get("ok") else ERROR)
    return {OK: "yes", UNSUPPORTED: "no (not on this GPU)", BUSY: "busy (retry later)",
            UNAVAILABLE: "n/a"}.get(status, "error")


def format_gpus(report: dict) -> str:
    """Human-readable text of a gpus_report()."""
    if not report.get("devices"):
        return (f"No NVIDIA GPU: {report.get('reason') or 'none found'}.\n"
                "mediad will decode and encode on the CPU.")
    env = report.get("cuda_visible_devices")
    head = (f"NVIDIA driver {report.get('driver_version') or '?'}, "
            f"CUDA {report.get('cuda_driver_version') or '?'}; "
            f"{len(report['devices'])} GPU(s); CUDA_VISIBLE_DEVICES "
            + ("unset" if env is None else repr(env)))
    lines = [head]
    for d in report["devices"]:
        where = f"cuda:{d['cuda_index']}" if d["cuda_index"] is not None else "hidden"
        lines.append(f"GPU {d['index']} [{where}]  {d['name']}  {d['uuid']}")
        lines.append(f"  memory    {_gib(d['memory_free'])} free of {_gib(d['memory_total'])}")
        clock = (f"{d['clock_video_mhz']}/{d['clock_video_max_mhz']} MHz"
                 if d.get("clock_video_mhz") is not None else "n/a")
        lines.append(f"  load      SM {_pct(d['util_gpu'])}, encoder {_pct(d['util_encoder'])}, "
                     f"decoder {_pct(d['util_decoder'])}, video clock {clock}")
        if d.get("has_nvenc") is False:
            lines.append("  encoder   no NVENC engine on this GPU (decode-only: normal for "
                         "H100/H200/A100)")
        else:
            lines.append(f"  encoder   {d['encoder_sessions'] or 0} session(s), "
                         f"{d['encoder_fps'] or 0} fps average, capacity left "
                         f"{_pct(d['encoder_capacity'])}")
        for s in d.get("sessions") or []:
            lines.append(f"            pid {s['pid']} {s['codec']} {s['width']}x{s['height']} "
                         f"{s['fps']} fps")
        caps = d.get("capabilities")
        if caps:
            for kind in ("nvenc", "nvdec"):
                cells = "  ".join(f"{codec} {_cap_cell(c)}" for codec, c in caps[kind].items())
                lines.append(f"  {kind.upper():8}  {cells}")
                for codec, c in caps[kind].items():
                    if c.get("status") in (ERROR, BUSY):
                        lines.append(f"            {codec}: {c['reason']}")
        elif d["cuda_index"] is not None and not report.get("probed", True):
            lines.append("  NVENC/NVDEC not probed (--no-probe)")
    auto = report.get("auto") or {}
    if auto.get("device") is not None:
        lines.append(f"--gpu auto: {auto['reason']}")
    else:
        lines.append(f"--gpu auto: CPU ({auto.get('reason') or 'no visible GPU'})")
    return "\n".join(lines)
