"""PyAV VideoFrames <-> torch tensors without host copies, and a decode -> model -> NV12 transform.

The same code runs on CUDA frames (NVDEC output, tensors on the GPU) and on software frames
(CPU tensors), so all of it but the CUDA plumbing is tested without a GPU.

CUDA choices, and why:

- One context. A device pointer is only valid in the CUDA context that allocated it, so FFmpeg
  (NVDEC, NVENC, PyAV's DLPack import) and torch must all use the device's *primary* context,
  the one the CUDA runtime (torch) uses. Decoders get it from ``HWAccel("cuda",
  is_hw_owned=True)`` (PyAV then passes FFmpeg ``primary_ctx=1``); frames made here with
  ``VideoFrame.from_dlpack`` get it from a ``CudaContext(primary_ctx=True)`` kept per device.
- Context flags. FFmpeg wants the primary context created with CU_CTX_SCHED_BLOCKING_SYNC and
  refuses ("Primary context already active with incompatible flags") when torch created it
  first with the default flags. ``mediad.gpu.share_primary_context`` sets the flags through
  the driver API (allowed on an active context since CUDA 11) and ``mediad.gpu.cuda_hwaccel``
  calls it before it makes the decoder's or encoder's HWAccel.
- Streams. FFmpeg's CUDA device context works on the legacy default stream: NVDEC's copy of a
  decoded surface into the frame is queued there. torch's default stream is that same stream,
  so torch work on it is ordered after the copy; a caller on another torch stream is made to
  wait for the default stream (a GPU-side event, no host stall). On the way out NVENC reads the
  frame on no stream we can order against, so ``planes_to_frame`` synchronizes the producing
  torch stream before it hands the memory over.
- Layout. NVENC registers ``frame.data[0]`` with one pitch and finds chroma at
  ``data[0] + pitch * height`` (the layout of FFmpeg's own CUDA frame pool), so Y and UV must
  be ONE allocation with UV straight after Y. ``alloc_planes`` makes that layout and
  ``planes_to_frame`` repacks planes that are not in it (one device-to-device copy).
- Lifetime. A DLPack view of a decoded frame holds a reference on the AVFrame; a frame made by
  ``from_dlpack`` holds the tensor. Memory lives as long as either side needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from mediad.errors import MediadError, Reason
from mediad.gpu import share_primary_context
from mediad.media import color
from mediad.media.color import Matrix, ResizeMode

if TYPE_CHECKING:
    import av
    import torch

    from mediad.media.tonemap import ToneMapPlan

# Pixel formats this module hands to torch as they are (zero copy) or after a cheap repack.
NV12_FAMILY = ("nv12", "p010le")
# Row pitch alignment of planes we allocate: FFmpeg's CUDA frame pool uses 256 bytes.
_PITCH_ALIGN = {"cuda": 256, "cpu": 64}


@dataclass(frozen=True)
class FramePlanes:
    """A 4:2:0 frame as torch tensors: Y (H, W) and interleaved UV (H/2, W/2, 2).

    fmt "nv12": uint8; "p010le": uint16 with the 10-bit value in the high bits.
    colorspace/color_range are the frame's AVColorSpace/AVColorRange values, passed on to
    output frames; matrix/full_range are what the maths uses.
    """

    y: torch.Tensor
    uv: torch.Tensor
    fmt: str
    matrix: Matrix
    full_range: bool
    colorspace: int | None = None
    color_range: int | None = None

    @property
    def height(self) -> int:
        """Luma rows."""
        return int(self.y.shape[0])

    @property
    def width(self) -> int:
        """Luma columns."""
        return int(self.y.shape[1])

    @property
    def device(self) -> torch.device:
        """Where the planes live."""
        return self.y.device

    @property
    def shift(self) -> int:
        """Padding bits below the value: 6 for P010, 0 for NV12."""
        return 6 if self.fmt == "p010le" else 0

    def to(self, device: torch.device | str) -> FramePlanes:
        """The same planes on `device` (a copy when it differs)."""
        import torch

        device = torch.device(device)
        if device == self.device:
            return self
        return replace(self, y=self.y.to(device), uv=self.uv.to(device))


# --- CUDA context plumbing ----------------------------------------------------------------

_CONTEXTS: dict[int, Any] = {}


def cuda_context(device: int) -> Any:
    """PyAV's primary-context CudaContext for `device`, one per device (it caches frames contexts)."""
    from av.video.frame import CudaContext

    ctx = _CONTEXTS.get(device)
    if ctx is None:
        share_primary_context(device)
        ctx = _CONTEXTS.setdefault(device, CudaContext(device_id=device, primary_ctx=True))
    return ctx


def _after_ffmpeg(device: torch.device) -> None:
    """Order torch's current stream after FFmpeg's work on the legacy default stream."""
    import torch

    current = torch.cuda.current_stream(device)
    default = torch.cuda.default_stream(device)
    if current != default:
        current.wait_stream(default)


# --- frames -> tensors --------------------------------------------------------------------

def _colour(frame: av.VideoFrame, pix_fmt: str) -> dict[str, Any]:
    colorspace = int(frame.colorspace) if frame.colorspace is not None else None
    color_range = int(frame.color_range) if frame.color_range is not None else None
    return {
        "matrix": color.matrix_for(colorspace, frame.height),
        "full_range": color.is_full_range(color_range, pix_fmt),
        "colorspace": colorspace if colorspace not in (None, 2) else None,  # 2: unspecified
        "color_range": color_range or None,
    }


def frame_to_planes(frame: av.VideoFrame) -> FramePlanes:
    """Torch views of a decoded frame: CUDA frames stay on the GPU, without copies.

    CUDA (NVDEC) frames must be nv12 or p010le underneath. Software nv12/p010le frames are
    viewed without copies too; yuv420p/yuvj420p/yuv420p10le are repacked to NV12/P010 on the
    CPU; anything else is converted by swscale first.
    """
    import torch
    from torch.utils.dlpack import from_dlpack

    name = frame.format.name
    if name == "cuda":
        sw = frame.sw_format.name if frame.sw_format is not None else "?"
        if sw not in ("nv12", "p010le", "p016le"):
            raise MediadError(f"CUDA frames in {sw} cannot be handed to torch (only nv12/p010)",
                              reason=Reason.UNSUPPORTED_FORMAT)
        # Pass capsules, not the planes: torch.from_dlpack(obj) would ask for a stream
        # handshake that PyAV's CUDA planes refuse; ordering is done by _after_ffmpeg instead.
        y = from_dlpack(frame.planes[0].__dlpack__())
        uv = from_dlpack(frame.planes[1].__dlpack__())
        _after_ffmpeg(y.device)
        fmt = "p010le" if sw != "nv12" else "nv12"  # p016 holds P010 data from 10-bit sources
        return FramePlanes(y, uv, fmt, **_colour(frame, sw))
    if name in NV12_FAMILY:
        y = torch.from_dlpack(frame.planes[0])
        uv = torch.from_dlpack(frame.planes[1])
        return FramePlanes(y, uv, name, **_colour(frame, name))
    if name in ("yuv420p", "yuvj420p"):
        y, u, v = (torch.from_dlpack(p) for p in frame.planes[:3])
        return FramePlanes(y, torch.stack((u, v), dim=-1), "nv12", **_colour(frame, name))
    if name == "yuv420p10le":
        y, u, v = (torch.from_dlpack(p).to(torch.int32) << 6 for p in frame.planes[:3])
        uv = torch.stack((u, v), dim=-1)
        return FramePlanes(y.to(torch.uint16), uv.to(torch.uint16), "p010le",
                           **_colour(frame, name))
    deep = frame.format.components[0].bits > 8
    converted = frame.reformat(format="p010le" if deep else "nv12")
    converted.colorspace, converted.color_range = frame.colorspace, frame.color_range
    planes = frame_to_planes(converted)
    return replace(planes, full_range=color.is_full_range(frame.color_range, name))


# --- tensors -> frames --------------------------------------------------------------------

def alloc_planes(height: int, width: int, fmt: str = "nv12",
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Empty Y (H, W) and UV (H/2, W/2, 2) views into ONE allocation, UV right after Y.

    This is the layout NVENC needs for CUDA input; rows are padded to an aligned pitch.
    """
    import torch

    if fmt not in NV12_FAMILY:
        raise ValueError(f"alloc_planes: fmt must be nv12 or p010le, not {fmt!r}")
    if height % 2 or width % 2:
        raise ValueError(f"4:2:0 needs even width and height, got {width}x{height}")
    device = torch.device(device)
    dtype = torch.uint8 if fmt == "nv12" else torch.uint16
    itemsize = 1 if fmt == "nv12" else 2
    align = _PITCH_ALIGN.get(device.type, 64)
    pitch = -(-width * itemsize // align) * align // itemsize
    buf = torch.empty((height + height // 2, pitch), dtype=dtype, device=device)
    y = buf[:height, :width]
    uv = buf[height:, :width].unflatten(1, (width // 2, 2))
    return y, uv


def _one_allocation(y: torch.Tensor, uv: torch.Tensor) -> bool:
    """Whether UV starts right after Y's last row, with Y's pitch (NVENC's expectation)."""
    height, width = y.shape
    pitch = y.stride(0)
    return (y.stride(1) == 1 and pitch >= width and uv.dim() == 3
            and uv.stride() == (pitch, 2, 1)
            and uv.data_ptr() == y.data_ptr() + pitch * height * y.element_size())


def planes_to_frame(y: torch.Tensor, uv: torch.Tensor, fmt: str = "nv12",
                    pts: int | None = None, time_base: Fraction | None = None, *,
                    colorspace: int | None = None, color_range: int | None = None,
                    ) -> av.VideoFrame:
    """A VideoFrame over NV12/P010 planes: CUDA tensors give a CUDA frame (for NVENC),
    CPU tensors a software frame; no copy unless the planes must be repacked.

    uv may be (H/2, W/2, 2) or (H/2, W). The frame keeps the tensors alive.
    """
    import av
    import torch
    from torch.utils.dlpack import to_dlpack

    if fmt not in NV12_FAMILY:
        raise ValueError(f"planes_to_frame: fmt must be nv12 or p010le, not {fmt!r}")
    want = torch.uint8 if fmt == "nv12" else torch.uint16
    if y.dtype != want or uv.dtype != want:
        raise ValueError(f"{fmt} planes must be {want}, got {y.dtype} and {uv.dtype}")
    if y.device != uv.device:
        raise ValueError(f"Y is on {y.device} but UV on {uv.device}")
    height, width = y.shape
    if uv.dim() == 2:
        uv = uv.unflatten(1, (-1, 2))
    if tuple(uv.shape) != (height // 2, width // 2, 2):
        raise ValueError(f"UV must be ({height // 2}, {width // 2}, 2), got {tuple(uv.shape)}")
    if y.is_cuda:
        if not _one_allocation(y, uv):
            packed_y, packed_uv = alloc_planes(height, width, fmt, y.device)
            packed_y.copy_(y)
            packed_uv.copy_(uv)
            y, uv = packed_y, packed_uv
        # NVENC will read this memory outside torch's streams: finish the writes first.
        torch.cuda.current_stream(y.device).synchronize()
        frame = av.VideoFrame.from_dlpack((to_dlpack(y), to_dlpack(uv)), format=fmt,
                                          cuda_context=cuda_context(y.device.index or 0))
    else:
        if y.stride(1) != 1:
            y = y.contiguous()
        if uv.stride()[1:] != (2, 1):
            uv = uv.contiguous()
        frame = av.VideoFrame.from_dlpack((to_dlpack(y), to_dlpack(uv)), format=fmt)
    if pts is not None:
        frame.pts = pts
    if time_base is not None:
        frame.time_base = time_base
    if colorspace is not None:
        frame.colorspace = colorspace
    if color_range is not None:
        frame.color_range = color_range
    return frame


# --- colour and depth on planes -----------------------------------------------------------

def planes_to_rgb(p: FramePlanes, chroma: str = "bilinear") -> torch.Tensor:
    """float RGB (3, H, W) in [0, 1] of the planes, using their matrix and range."""
    return color.yuv420_to_rgb(p.y, p.uv, bits=10 if p.shift else 8, shift=p.shift,
                               matrix=p.matrix, full_range=p.full_range,
                               chroma=chroma)  # type: ignore[arg-type]


def rgb_to_planes(rgb: torch.Tensor, fmt: str, matrix: Matrix, full_range: bool,
                  out: tuple[torch.Tensor, torch.Tensor] | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """NV12 or P010 planes of float RGB (3, H, W), written into `out` when given."""
    if fmt == "nv12":
        return color.rgb_to_nv12(rgb, matrix=matrix, full_range=full_range, out=out)
    return color.rgb_to_p010(rgb, matrix=matrix, full_range=full_range, out=out)


def _convert_depth(t: torch.Tensor, src: str, dst: str, full_range: bool) -> torch.Tensor:
    """An NV12 plane as P010 or back (limited range scales by 4, full range by 1023/255)."""
    import torch

    f = t.to(torch.float32)
    if src == "p010le":
        f = f / 64.0
        f = f * (255.0 / 1023.0) if full_range else f / 4.0
        return f.round_().clamp_(0, 255).to(torch.uint8)
    f = f * (1023.0 / 255.0) if full_range else f * 4.0
    return (f.round_().clamp_(0, 1023) * 64.0).to(torch.int32).to(torch.uint16)


# --- the transform ------------------------------------------------------------------------

class GpuVideoTransform:
    """Decoded frame -> (optional RGB model) -> resize -> NV12/P010 frame, on one device.

    device None keeps each frame where it is (CUDA frames on their GPU, software frames on the
    CPU); "cuda:N" uploads software frames; "cpu" downloads CUDA frames. The output keeps the
    source's matrix, range and colour metadata, and its pts/time_base.
    `model` takes and returns float RGB (3, H, W) in [0, 1] on the device (it may change the
    size, e.g. an upscaler); without a model, planes are resized directly (no RGB round trip),
    and a frame that needs no change at all is passed through untouched.
    """

    def __init__(self, *, device: str | None = None, max_height: int | None = None,
                 size: tuple[int, int] | None = None, out_format: str | None = "nv12",
                 mode: ResizeMode = "area",
                 model: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 chroma: str = "bilinear", tonemap: ToneMapPlan | None = None) -> None:
        """`tonemap`: HDR frames tone-mapped to SDR BT.709, limited range (media.tonemap)."""
        if out_format not in (None, *NV12_FAMILY):
            raise ValueError(f"out_format must be nv12, p010le or None, not {out_format!r}")
        if size is not None and (size[0] % 2 or size[1] % 2):
            raise ValueError(f"size must be even for 4:2:0, got {size[0]}x{size[1]}")
        self.device = device
        self.max_height = max_height
        self.size = size
        self.out_format = out_format
        self.mode = mode
        self.model = model
        self.chroma = chroma
        self.tonemap = tonemap

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """Output (width, height) for an input (or model output) of width x height."""
        if self.size is not None:
            return self.size
        return color.scaled_size(width, height, self.max_height)

    def planes(self, frame: av.VideoFrame) -> FramePlanes:
        """The frame's planes on this transform's device."""
        p = frame_to_planes(frame)
        return p if self.device is None else p.to(self.device)

    def rgb(self, frame: av.VideoFrame) -> torch.Tensor:
        """float RGB (3, H, W) in [0, 1] of a frame, on this transform's device (for models)."""
        return planes_to_rgb(self.planes(frame), self.chroma)

    def rgb_planes(self, rgb: torch.Tensor, like: FramePlanes) -> FramePlanes:
        """A model's float RGB output -> resized planes in `like`'s colour, ready to encode."""
        fmt = self.out_format or like.fmt
        width, height = self.target_size(int(rgb.shape[-1]), int(rgb.shape[-2]))
        rgb = color.resize(rgb.float(), height, width, mode=self.mode).clamp_(0.0, 1.0)
        out = alloc_planes(height, width, fmt, rgb.device)
        y, uv = rgb_to_planes(rgb, fmt, like.matrix, like.full_range, out=out)
        return replace(like, y=y, uv=uv, fmt=fmt)

    def output_planes(self, p: FramePlanes) -> FramePlanes:
        """Run model/resize/depth on planes, ready to encode (planes_to_frame packs CUDA planes
        into the one allocation NVENC needs; host planes need no packing, so no copy here)."""
        fmt = self.out_format or p.fmt
        if self.tonemap is not None:
            from mediad.media.tonemap import tonemap_rgb

            tm = self.tonemap
            hdr = replace(p, matrix=tm.matrix, full_range=tm.full_range)  # as the plan read them
            sdr = replace(p, matrix="bt709", full_range=False, colorspace=1,
                          color_range=color.AVCOL_RANGE_MPEG)
            return self.rgb_planes(tonemap_rgb(planes_to_rgb(hdr, self.chroma), tm), sdr)
        if self.model is not None:
            return self.rgb_planes(self.model(planes_to_rgb(p, self.chroma)), p)
        width, height = self.target_size(p.width, p.height)
        y, uv = p.y, p.uv
        if (width, height) != (p.width, p.height):
            y, uv = color.resize_yuv420(y, uv, height, width, shift=p.shift, mode=self.mode)
        if fmt != p.fmt:
            y = _convert_depth(y, p.fmt, fmt, p.full_range)
            uv = _convert_depth(uv, p.fmt, fmt, p.full_range)
        return replace(p, y=y, uv=uv.reshape(height // 2, width // 2, 2), fmt=fmt)

    def passes_through(self, frame: av.VideoFrame) -> bool:
        """True when the frame needs no work and can go to the encoder as it is."""
        if self.model is not None or self.tonemap is not None:
            return False
        name = frame.format.name
        fmt = frame.sw_format.name if name == "cuda" and frame.sw_format else name
        if fmt not in NV12_FAMILY or (self.out_format or fmt) != fmt:
            return False
        if self.device is not None and (self.device.startswith("cuda") != (name == "cuda")):
            return False
        return self.target_size(frame.width, frame.height) == (frame.width, frame.height)

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        """Transform one decoded frame into an encoder-ready frame on the same device."""
        if self.passes_through(frame):
            return frame  # FFmpeg's own frames are already in the layout NVENC wants
        return _encoder_frame(self.output_planes(self.planes(frame)), frame)

    def from_rgb(self, rgb: torch.Tensor, source: av.VideoFrame) -> av.VideoFrame:
        """An encoder-ready frame of a model's output for `source` (its colour and timestamp)."""
        return _encoder_frame(self.rgb_planes(rgb, frame_to_planes(source)), source)


def _encoder_frame(p: FramePlanes, source: av.VideoFrame) -> av.VideoFrame:
    """Planes as a VideoFrame with the source's timestamp and explicit colour tags."""
    colorspace = p.colorspace if p.colorspace is not None else color.AVCOL_SPC_OF[p.matrix]
    color_range = color.AVCOL_RANGE_JPEG if p.full_range else color.AVCOL_RANGE_MPEG
    frame = planes_to_frame(p.y, p.uv, p.fmt, source.pts, source.time_base,
                            colorspace=colorspace, color_range=color_range)
    frame.duration = source.duration  # a segmenter cuts by it (gap_fill)
    return frame
