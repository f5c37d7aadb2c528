"""Frames worked on the GPU (scaled, tone-mapped) and downloaded once, at their output size,
for a software encoder: what a GPU with NVDEC but no NVENC (or a rendition NVENC refused)
gets from the decoded frames that stay in GPU memory.

Downloading after the scale moves fewer bytes than downloading the decoded frame and scaling
it on the CPU, and takes the scaling off the cores the software encoders need. The same code
runs on software frames (CPU tensors), so it is tested without a GPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mediad.media import color
from mediad.media.gpu_frames import FramePlanes, GpuVideoTransform
from mediad.media.tonemap import tag_sdr

if TYPE_CHECKING:
    from collections.abc import Callable

    import av
    import torch

    from mediad.media.plan_records import VideoPlan

def host_frame(y: torch.Tensor, uv: torch.Tensor, bits: int,
               like: av.VideoFrame) -> av.VideoFrame:
    """A host yuv420p (8-bit) or yuv420p10le frame of whole code values Y (H, W) and UV
    (H/2, W/2, 2), on any device, with `like`'s time: one copy per plane, deinterleaving the
    chroma on the way (copy_ casts to the plane's uint8/uint16 and downloads itself)."""
    import av
    import torch

    frame = av.VideoFrame(int(y.shape[1]), int(y.shape[0]),
                          "yuv420p10le" if bits == 10 else "yuv420p")
    for plane, values in zip(frame.planes[:3], (y, uv[..., 0], uv[..., 1]), strict=True):
        torch.from_dlpack(plane).copy_(values)
    frame.pts, frame.time_base, frame.duration = like.pts, like.time_base, like.duration
    return frame


def planes_to_host_frame(p: FramePlanes, like: av.VideoFrame) -> av.VideoFrame:
    """NV12/P010 planes (on any device) as a host yuv420p/yuv420p10le frame, with `like`'s
    timestamp and the planes' colour."""
    import torch

    y, uv = p.y, p.uv
    if p.shift:  # P010 keeps the 10 bits high; yuv420p10le low
        y, uv = y.to(torch.int32) >> p.shift, uv.to(torch.int32) >> p.shift
    frame = host_frame(y, uv, 10 if p.shift else 8, like)
    frame.colorspace = p.colorspace if p.colorspace is not None else color.AVCOL_SPC_OF[p.matrix]
    frame.color_range = color.AVCOL_RANGE_JPEG if p.full_range else color.AVCOL_RANGE_MPEG
    return frame


def gpu_host_work(vp: VideoPlan) -> Callable[[av.VideoFrame | None], list[av.VideoFrame]]:
    """Decoded frames scaled (and tone-mapped, when the plan says) on their device to `vp`'s
    size, then host frames in `vp.pix_fmt` (yuv420p or yuv420p10le) for its software encoder."""
    ten_bit = "10" in vp.pix_fmt
    gpu = GpuVideoTransform(size=(vp.width, vp.height), out_format="p010le" if ten_bit else "nv12",
                            tonemap=vp.tonemap)

    def work(frame: av.VideoFrame | None) -> list[av.VideoFrame]:
        if frame is None:
            return []
        out = planes_to_host_frame(gpu.output_planes(gpu.planes(frame)), frame)
        if vp.tonemap is not None:
            tag_sdr(out)
        return [out]

    return work
