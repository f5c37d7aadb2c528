"""NV12/P010 <-> RGB on torch tensors (BT.601/709/2020, limited/full range), and resizing.

Everything here is plain torch arithmetic, so it runs wherever its tensors live: on the GPU for
frames that stay there, on the CPU otherwise. Conventions:

- NV12: Y (H, W) uint8 and interleaved chroma UV (H/2, W/2, 2) uint8, Cb before Cr.
- P010 (FFmpeg "p010le"): the same layout in uint16 with the 10-bit value in the high bits
  (value << 6), which is what NVDEC hands out and NVENC takes.
- RGB: float32 (3, H, W) in [0, 1], channels first as models expect; non-linear (gamma-coded)
  R'G'B', i.e. exactly what the matrix maps to. No transfer function or primaries conversion.

torch is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

Matrix = Literal["bt601", "bt709", "bt2020"]
ResizeMode = Literal["bilinear", "bicubic", "area", "nearest"]

# Luma coefficients (Kr, Kb) of each matrix; Kg = 1 - Kr - Kb.
KR_KB: dict[str, tuple[float, float]] = {
    "bt601": (0.299, 0.114),
    "bt709": (0.2126, 0.0722),
    "bt2020": (0.2627, 0.0593),
}
# AVColorSpace values (libavutil/pixfmt.h) and the matrix we use for each.
_AVCOL_SPC = {
    1: "bt709",   # BT709
    4: "bt601",   # FCC: (0.30, 0.11), close enough to BT.601
    5: "bt601",   # BT470BG
    6: "bt601",   # SMPTE170M
    7: "bt709",   # SMPTE240M: (0.212, 0.087), close to BT.709
    9: "bt2020",  # BT2020_NCL
    10: "bt2020",  # BT2020_CL: approximated by the non-constant-luminance matrix
}
# AVColorSpace value to write on output frames for each matrix.
AVCOL_SPC_OF: dict[str, int] = {"bt601": 6, "bt709": 1, "bt2020": 9}
AVCOL_RANGE_MPEG, AVCOL_RANGE_JPEG = 1, 2


def matrix_for(colorspace: int | str | None, height: int) -> Matrix:
    """The YUV matrix for a frame's colorspace (AVColorSpace int or name); unknown: guess by size."""
    name: str | None = None
    if isinstance(colorspace, str):
        text = colorspace.lower().replace("-", "").replace("_", "").replace(".", "")
        if "2020" in text:
            name = "bt2020"
        elif "709" in text or "240" in text:
            name = "bt709"
        elif any(k in text for k in ("601", "470", "170", "fcc")):
            name = "bt601"
    elif colorspace is not None:
        name = _AVCOL_SPC.get(int(colorspace))
    if name is None:
        # Unspecified: what players assume - HD is BT.709, SD is BT.601.
        name = "bt709" if height >= 720 else "bt601"
    return name  # type: ignore[return-value]


def is_full_range(color_range: int | str | None, pix_fmt: str | None = None) -> bool:
    """Whether samples use the full code range (JPEG/pc); unspecified means limited (tv)."""
    if isinstance(color_range, str):
        return color_range.lower() in ("jpeg", "pc", "full")
    if color_range is not None and int(color_range) == AVCOL_RANGE_JPEG:
        return True
    # The deprecated yuvj* formats imply full range when the frame does not say.
    return bool(pix_fmt and pix_fmt.startswith("yuvj") and not color_range)


def _levels(bits: int, full_range: bool) -> tuple[float, float, float, float]:
    """(luma offset, luma scale, chroma centre, chroma scale) in code values of `bits`."""
    if full_range:
        top = float((1 << bits) - 1)
        return 0.0, top, float(1 << (bits - 1)), top
    step = float(1 << (bits - 8))
    return 16.0 * step, 219.0 * step, 128.0 * step, 224.0 * step


def _split_uv(uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cb and Cr (H/2, W/2) views of interleaved chroma given as (H/2, W/2, 2) or (H/2, W)."""
    if uv.dim() == 2:
        uv = uv.unflatten(1, (-1, 2))
    if uv.dim() != 3 or uv.shape[-1] != 2:
        raise ValueError(f"chroma must be (H/2, W/2, 2) or (H/2, W), got {tuple(uv.shape)}")
    return uv[..., 0], uv[..., 1]


def _code_values(t: torch.Tensor, shift: int) -> torch.Tensor:
    """float32 code values of a plane; `shift` drops P010's padding bits (exact in float)."""
    import torch

    f = t.to(torch.float32)
    return f / float(1 << shift) if shift else f


def yuv420_to_rgb(y: torch.Tensor, uv: torch.Tensor, *, bits: int = 8, shift: int = 0,
                  matrix: Matrix = "bt709", full_range: bool = False,
                  chroma: Literal["bilinear", "nearest"] = "bilinear") -> torch.Tensor:
    """Semi-planar 4:2:0 YUV code values -> float RGB (3, H, W) in [0, 1]."""
    import torch
    import torch.nn.functional as F

    kr, kb = KR_KB[matrix]
    kg = 1.0 - kr - kb
    y_off, y_scale, c_mid, c_scale = _levels(bits, full_range)
    height, width = y.shape[-2], y.shape[-1]
    cb, cr = _split_uv(uv)
    c = torch.stack((_code_values(cb, shift), _code_values(cr, shift)))  # (2, H/2, W/2)
    c = (c - c_mid) / c_scale
    if chroma == "nearest":
        c = c.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    else:
        # Centre-sited bilinear upsampling; edges replicate (align_corners=False clamps).
        c = F.interpolate(c[None], scale_factor=2, mode="bilinear", align_corners=False)[0]
    if c.shape[-2] < height or c.shape[-1] < width:
        # Odd sizes: the last luma row/column has no chroma sample below/right of it.
        pad = (0, max(0, width - c.shape[-1]), 0, max(0, height - c.shape[-2]))
        c = F.pad(c[None], pad, mode="replicate")[0]
    c = c[:, :height, :width]
    luma = (_code_values(y, shift) - y_off) / y_scale
    cb_n, cr_n = c[0], c[1]
    r = luma + (2.0 * (1.0 - kr)) * cr_n
    b = luma + (2.0 * (1.0 - kb)) * cb_n
    g = luma - (2.0 * kb * (1.0 - kb) / kg) * cb_n - (2.0 * kr * (1.0 - kr) / kg) * cr_n
    return torch.stack((r, g, b)).clamp_(0.0, 1.0)


def rgb_to_yuv420(rgb: torch.Tensor, *, bits: int = 8, matrix: Matrix = "bt709",
                  full_range: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """float RGB (3, H, W) in [0, 1] -> float code values: Y (H, W) and UV (H/2, W/2, 2), rounded.

    Chroma is the mean of each 2x2 block (centre-sited), the usual 4:2:0 downsampling.
    """
    import torch
    import torch.nn.functional as F

    if rgb.dim() != 3 or rgb.shape[0] != 3:
        raise ValueError(f"RGB must be (3, H, W), got {tuple(rgb.shape)}")
    if rgb.shape[1] % 2 or rgb.shape[2] % 2:
        raise ValueError(f"4:2:0 needs even width and height, got {rgb.shape[2]}x{rgb.shape[1]}")
    kr, kb = KR_KB[matrix]
    kg = 1.0 - kr - kb
    y_off, y_scale, c_mid, c_scale = _levels(bits, full_range)
    rgb = rgb.to(torch.float32).clamp(0.0, 1.0)
    r, g, b = rgb[0], rgb[1], rgb[2]
    luma = kr * r + kg * g + kb * b
    # Subsample before scaling: the chroma formulas are linear, so averaging RGB-derived
    # differences per block equals averaging the chroma itself.
    diff = F.avg_pool2d((rgb[[2, 0]] - luma)[None], 2)[0]  # (B-Y, R-Y) at half size
    cb = diff[0] / (2.0 * (1.0 - kb))
    cr = diff[1] / (2.0 * (1.0 - kr))
    top = float((1 << bits) - 1)
    y_code = (y_off + y_scale * luma).round_().clamp_(0.0, top)
    uv_code = (c_mid + c_scale * torch.stack((cb, cr), dim=-1)).round_().clamp_(0.0, top)
    return y_code, uv_code


def nv12_to_rgb(y: torch.Tensor, uv: torch.Tensor, *, matrix: Matrix = "bt709",
                full_range: bool = False,
                chroma: Literal["bilinear", "nearest"] = "bilinear") -> torch.Tensor:
    """NV12 planes (uint8) -> float RGB (3, H, W) in [0, 1]."""
    return yuv420_to_rgb(y, uv, bits=8, matrix=matrix, full_range=full_range, chroma=chroma)


def p010_to_rgb(y: torch.Tensor, uv: torch.Tensor, *, matrix: Matrix = "bt2020",
                full_range: bool = False,
                chroma: Literal["bilinear", "nearest"] = "bilinear") -> torch.Tensor:
    """P010 planes (uint16, 10 bits in the high bits) -> float RGB (3, H, W) in [0, 1]."""
    return yuv420_to_rgb(y, uv, bits=10, shift=6, matrix=matrix, full_range=full_range,
                         chroma=chroma)


def rgb_to_nv12(rgb: torch.Tensor, *, matrix: Matrix = "bt709", full_range: bool = False,
                out: tuple[torch.Tensor, torch.Tensor] | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """float RGB (3, H, W) in [0, 1] -> NV12 planes (uint8), written into `out` when given."""
    import torch

    y, uv = rgb_to_yuv420(rgb, bits=8, matrix=matrix, full_range=full_range)
    return _store(y, uv, torch.uint8, 0, out)


def rgb_to_p010(rgb: torch.Tensor, *, matrix: Matrix = "bt2020", full_range: bool = False,
                out: tuple[torch.Tensor, torch.Tensor] | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """float RGB (3, H, W) in [0, 1] -> P010 planes (uint16 << 6), written into `out` when given."""
    import torch

    y, uv = rgb_to_yuv420(rgb, bits=10, matrix=matrix, full_range=full_range)
    return _store(y, uv, torch.uint16, 6, out)


def _store(y: torch.Tensor, uv: torch.Tensor, dtype: torch.dtype, shift: int,
           out: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer planes from rounded float code values (shifted left for P010)."""
    import torch

    if shift:
        y, uv = y * float(1 << shift), uv * float(1 << shift)
    # Through int32: float -> uint16 casts are not implemented on every device.
    y_int, uv_int = y.to(torch.int32).to(dtype), uv.to(torch.int32).to(dtype)
    if out is None:
        return y_int, uv_int
    out_y, out_uv = out
    out_y.copy_(y_int)
    out_uv.copy_(uv_int.reshape(out_uv.shape))
    return out_y, out_uv


def scaled_size(width: int, height: int, max_height: int | None) -> tuple[int, int]:
    """Output (width, height) for a `max_height` cap: never upscales, keeps aspect, even sizes."""
    if max_height is None or height <= max_height:
        w, h = width, height
    else:
        h = max_height
        w = round(width * max_height / height)
    return max(2, w - w % 2), max(2, h - h % 2)


def resize(x: torch.Tensor, height: int, width: int, *, mode: ResizeMode = "bilinear",
           antialias: bool = True) -> torch.Tensor:
    """Resize (H, W), (C, H, W) or (N, C, H, W) to (height, width); integer dtypes stay integer.

    Downscaling is antialiased: bilinear/bicubic with torch's antialias filter, "area" by box
    averaging. "area" falls back to bilinear when upscaling (box averaging cannot enlarge).
    """
    import torch
    import torch.nn.functional as F

    if x.shape[-2:] == (height, width):
        return x
    dims = x.dim()
    if dims not in (2, 3, 4):
        raise ValueError(f"resize takes (H, W), (C, H, W) or (N, C, H, W), got {tuple(x.shape)}")
    batch = x.reshape((1,) * (4 - dims) + tuple(x.shape))
    dtype = x.dtype
    f = batch.to(torch.float32)
    downscale = height <= x.shape[-2] and width <= x.shape[-1]
    if mode == "area" and not downscale:
        mode = "bilinear"
    if mode == "area":
        out = F.interpolate(f, size=(height, width), mode="area")
    elif mode == "nearest":
        out = F.interpolate(f, size=(height, width), mode="nearest-exact")
    else:
        out = F.interpolate(f, size=(height, width), mode=mode, align_corners=False,
                            antialias=antialias and downscale)
    if dtype.is_floating_point:
        result = out.to(dtype)
    else:
        # Integer planes: bicubic overshoot is clamped to the dtype's range, then rounded.
        top = 65535.0 if dtype == torch.uint16 else float(torch.iinfo(dtype).max)
        bottom = 0.0 if dtype in (torch.uint8, torch.uint16) else float(torch.iinfo(dtype).min)
        result = out.round_().clamp_(bottom, top).to(torch.int32).to(dtype)
    return result.reshape(tuple(x.shape[:-2]) + (height, width))


def resize_yuv420(y: torch.Tensor, uv: torch.Tensor, height: int, width: int, *,
                  shift: int = 0, mode: ResizeMode = "area",
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize NV12 (shift 0) or P010 (shift 6) planes without going through RGB."""
    if height % 2 or width % 2:
        raise ValueError(f"4:2:0 needs even width and height, got {width}x{height}")
    import torch

    top = float((1 << (10 if shift else 8)) - 1)

    def plane(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
        # Resize code values, not the shifted container values, so P010 stays on its grid;
        # the clamp catches bicubic overshoot.
        out = resize(_code_values(t, shift), h, w, mode=mode).round_().clamp_(0.0, top)
        if shift:
            out = out * float(1 << shift)
        return out.to(torch.int32).to(t.dtype)

    cb, cr = _split_uv(uv)
    chroma = torch.stack((cb, cr))  # (2, H/2, W/2)
    out_uv = plane(chroma, height // 2, width // 2).permute(1, 2, 0).contiguous()
    return plane(y, height, width), out_uv
