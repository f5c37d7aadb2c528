"""What this machine's NVIDIA GPUs can really do, found by trying; cached per process."""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass, field
from fractions import Fraction

from mediad import log
from mediad.errors import MediadError

CODECS = ("h264", "hevc", "av1")
NVENC_NAMES = {"h264": "h264_nvenc", "hevc": "hevc_nvenc", "av1": "av1_nvenc"}
# Software encoders used to make the tiny trial clips for the NVDEC check.
_TRIAL_ENCODERS = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1"}


@dataclass(frozen=True)
class Capability:
    """Whether one hardware path works, and why (not)."""

    ok: bool
    reason: str


@dataclass(frozen=True)
class Capabilities:
    """NVENC/NVDEC support per codec on one device (device None: no usable GPU)."""

    device: int | None
    nvenc: dict[str, Capability] = field(default_factory=dict)
    nvdec: dict[str, Capability] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain data for reports and --json."""
        return {
            "device": self.device,
            "nvenc": {k: {"ok": v.ok, "reason": v.reason} for k, v in self.nvenc.items()},
            "nvdec": {k: {"ok": v.ok, "reason": v.reason} for k, v in self.nvdec.items()},
        }


def no_gpu(reason: str) -> Capabilities:
    """Capabilities of a machine (or a request) without a usable GPU."""
    cap = Capability(False, reason)
    return Capabilities(None, {c: cap for c in CODECS}, {c: cap for c in CODECS})


@functools.cache
def cuda_device_count() -> tuple[int, str]:
    """Number of NVIDIA devices the driver reports, with the reason when there are none."""
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


def visible_devices() -> list[int]:
    """CUDA device indices this process may use, honouring CUDA_VISIBLE_DEVICES."""
    count, _ = cuda_device_count()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return list(range(count))
    # CUDA renumbers the visible devices 0..n-1 in the order given.
    n = sum(1 for part in env.split(",") if part.strip() and not part.strip().startswith("-"))
    return list(range(min(n, count)))


def choose_device(request: str) -> tuple[int | None, str]:
    """Resolve --gpu auto|none|N to a device index (None: CPU only) and the reason."""
    if request == "none":
        return None, "--gpu none"
    devices = visible_devices()
    if request == "auto":
        if not devices:
            _, why = cuda_device_count()
            return None, why or "CUDA_VISIBLE_DEVICES hides every GPU"
        return devices[0], "first visible GPU"
    try:
        index = int(request)
    except ValueError:
        raise MediadError(f"--gpu {request}: expected auto, none or a device number",
                          reason="bad_request") from None
    if index not in devices:
        raise MediadError(f"--gpu {index}: no such GPU (visible: {devices or 'none'})",
                          reason="no_gpu")
    return index, f"--gpu {index}"


def _trial_nvenc(codec: str, device: int) -> Capability:
    import av

    name = NVENC_NAMES[codec]
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
    except av.FFmpegError as e:
        return Capability(False, f"{name} did not open: {e}")
    return Capability(True, f"{name} opened and encoded a trial frame")


@functools.cache
def _trial_clip(codec: str) -> bytes:
    """A tiny in-memory clip in `codec`, made with the software encoder."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream(_TRIAL_ENCODERS[codec], rate=25)
        stream.width, stream.height, stream.pix_fmt = 256, 144, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame(256, 144, "yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def _trial_nvdec(codec: str, device: int) -> Capability:
    import av
    from av.codec.hwaccel import HWAccel

    try:
        clip = _trial_clip(codec)
        hw = HWAccel("cuda", device=device, allow_software_fallback=False, is_hw_owned=True)
        with av.open(io.BytesIO(clip), hwaccel=hw) as src:
            frames = list(src.decode(video=0))
    except (av.FFmpegError, OSError, ValueError) as e:
        return Capability(False, f"NVDEC {codec} failed: {e}")
    if not frames:
        return Capability(False, f"NVDEC {codec} decoded no frames")
    fmt = frames[0].format.name
    if fmt != "cuda":
        return Capability(False, f"NVDEC {codec} fell back to software (frames are {fmt})")
    return Capability(True, f"NVDEC {codec} decoded a trial clip into CUDA frames")


@functools.cache
def capabilities(device: int | None) -> Capabilities:
    """Try NVENC and NVDEC for each codec on `device` (None: no GPU); cached per process."""
    if device is None:
        _, why = cuda_device_count()
        return no_gpu(why or "no GPU requested")
    caps = Capabilities(
        device,
        {c: _trial_nvenc(c, device) for c in CODECS},
        {c: _trial_nvdec(c, device) for c in CODECS},
    )
    log.event("gpu_capabilities", device=device,
              nvenc=",".join(c for c, v in caps.nvenc.items() if v.ok) or "none",
              nvdec=",".join(c for c, v in caps.nvdec.items() if v.ok) or "none")
    return caps
