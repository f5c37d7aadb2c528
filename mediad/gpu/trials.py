"""Capabilities found by trying: open NVENC with a tiny frame, decode a tiny clip with NVDEC
and check the frames are CUDA frames; cached per process, busy results re-probed."""

from __future__ import annotations

import functools
import io
import threading
import time
from fractions import Fraction

from mediad import log
from mediad.gpu.cuda_context import cuda_hwaccel
from mediad.gpu.nvenc_errors import _explain, capture_ffmpeg_log, classify_nvenc_error
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
)
from mediad.gpu.telemetry import cuda_device_count, read_telemetry
from mediad.realtime import undo_realtime

# Software encoders used to make the tiny trial clips for the NVDEC check.
_TRIAL_ENCODERS = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1"}
# Capabilities that may change soon (busy, unexplained errors) are re-probed after this long.
RETRY_PROBE_S = 60.0


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
