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

    from mediad.media.plan import VideoPlan

# The host formats software encoders take, by the depth of the planes made on the GPU.
_HOST_FORMAT = {"nv12": "yuv420p", "p010le": "yuv420p10le"}


def planes_to_host_frame(p: FramePlanes, like: av.VideoFrame) -> av.VideoFrame:
    """NV12/P010 planes (on any device) as a host yuv420p/yuv420p10le frame, with `like`'s
    timestamp and the planes' colour: one copy per plane, deinterleaving the chroma on the way."""
    import av
    import torch

    fmt = _HOST_FORMAT[p.fmt]
    frame = av.VideoFrame(p.width, p.height, fmt)
    dtype = torch.uint16 if p.shift else torch.uint8
    for plane, values in zip(frame.planes[:3], (p.y, p.uv[..., 0], p.uv[..., 1]), strict=True):
        if p.shift:  # P010 keeps the 10 bits high; yuv420p10le low
            values = values.to(torch.int32) >> p.shift
        torch.from_dlpack(plane).copy_(values.to(dtype))
    frame.pts, frame.time_base, frame.duration = like.pts, like.time_base, like.duration
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
