"""HDR -> SDR tone mapping as a torch frame operation (CPU tensors, or CUDA tensors when the
frames are on the GPU: the same arithmetic, wherever the tensors live).

PyAV's FFmpeg has no zscale, tonemap_cuda or libplacebo, so the chain is written here, in
float32, on one frame's R'G'B' (3, H, W):

1. YUV (10-bit, BT.2020 non-constant luminance, limited range) -> R'G'B' (`color.yuv420_to_rgb`).
2. To display light in cd/m² (nits): the SMPTE ST 2084 (PQ) EOTF; for HLG (ARIB STD-B67) the
   inverse OETF and the BT.2100 OOTF of a 1000-nit reference display (system gamma 1.2),
   as zimg (ffmpeg's zscale) does.
3. BT.2020 -> BT.709 primaries: a 3x3 matrix in linear light (BT.2087).
4. The tone curve: the BT.2390 EETF (the Hermite-spline knee of ITU-R BT.2390 §5.4, black lift
   left out: source and target black are 0) applied to the PQ-encoded max(R, G, B) of each
   pixel; the three components are scaled by the same ratio, so hue and saturation are kept
   (as ffmpeg's `tonemap` filter does with desat=0). The source peak is the content's MaxCLL
   when the stream has it, else its mastering display's maximum luminance, else 1000 nits
   (HLG: its 1000-nit reference display); the target is a 100-nit SDR display.
5. Out of gamut: colours BT.709 cannot show (negative components after step 3) are clipped.
6. The BT.1886 inverse EOTF (gamma 1/2.4, black at 0: display light back to a signal, as
   zscale does for t=bt709), then BT.709 YUV, limited range, tagged bt709/bt709/bt709.

Pure arithmetic; torch is imported inside the functions, so importing this module costs nothing
(the plan imports `ToneMapPlan`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mediad.media import color

if TYPE_CHECKING:
    import av
    import torch

    from mediad.media.gpu_frames import FramePlanes
    from mediad.media.hdr import HdrMetadata

Transfer = Literal["pq", "hlg"]

TARGET_PEAK = 100.0  # nits: the SDR reference display (BT.1886 / BT.2035 practice)
DEFAULT_PEAK = 1000.0  # nits: a PQ source without mastering/MaxCLL metadata; HLG's reference
HLG_PEAK = 1000.0  # nits: the HLG reference display the OOTF assumes (BT.2100)
CURVE = "BT.2390 EETF"

# SMPTE ST 2084 constants.
_M1 = 2610.0 / 16384.0
_M2 = 2523.0 / 4096.0 * 128.0
_C1 = 3424.0 / 4096.0
_C2 = 2413.0 / 4096.0 * 32.0
_C3 = 2392.0 / 4096.0 * 32.0
_PQ_MAX = 10000.0
# ARIB STD-B67 (HLG) constants.
_HLG_A = 0.17883277
_HLG_B = 1.0 - 4.0 * _HLG_A
_HLG_C = 0.55991073
_HLG_GAMMA = 1.2
# Linear BT.2020 RGB -> linear BT.709 RGB (ITU-R BT.2087, rows: R, G, B).
BT2020_TO_BT709 = (
    (1.660491, -0.587641, -0.072850),
    (-0.124550, 1.132900, -0.008349),
    (-0.018151, -0.100579, 1.118730),
)
_BT2020_LUMA = (0.2627, 0.6780, 0.0593)


@dataclass(frozen=True)
class ToneMapPlan:
    """What the tone mapping of one video does: the plan records it, the frame operation runs it."""

    transfer: Transfer
    source_peak: float  # nits: the top of the source the curve maps onto the target's peak
    peak_from: str  # where source_peak comes from ("MaxCLL", "mastering display", "default")
    target_peak: float = TARGET_PEAK
    curve: str = CURVE
    matrix: str = "bt2020"  # the source's YUV matrix
    full_range: bool = False  # the source's YUV range
    mastering_peak: float | None = None
    max_cll: int | None = None

    def describe(self) -> str:
        """One line for the plan: what was tone-mapped, with which curve and peak."""
        if self.transfer == "pq":
            meta = ["PQ"]
            if self.mastering_peak is not None:
                meta.append(f"mastering {self.mastering_peak:g} nits")
            if self.max_cll is not None:
                meta.append(f"MaxCLL {self.max_cll}")
            source = f"HDR10 ({', '.join(meta)})"
        else:
            source = "HLG (1000-nit reference display)"
        return (f"tone-mapped {source} to SDR BT.709 with the {self.curve}, "
                f"{self.target_peak:g}-nit target (source peak {self.source_peak:g} nits from "
                f"{self.peak_from})")


def tonemap_plan(transfer: str | None, metadata: HdrMetadata | None, *,
                 colorspace: str | None = None, full_range: bool = False) -> ToneMapPlan:
    """The tone mapping for a source with this transfer ("smpte2084"/"arib-std-b67") and metadata."""
    kind: Transfer = "hlg" if transfer == "arib-std-b67" else "pq"
    mastering = metadata.mastering.max_luminance if metadata and metadata.mastering \
        and metadata.mastering.max_luminance > 0 else None
    max_cll = metadata.max_cll if metadata and metadata.max_cll else None
    if kind == "hlg":
        peak, peak_from = HLG_PEAK, "the HLG reference display"
    elif max_cll is not None:
        # MaxCLL says what the content really reaches; a display that could show more does not
        # matter, one that shows less cannot have been graded above its own peak.
        peak = float(min(max_cll, mastering)) if mastering else float(max_cll)
        peak_from = "MaxCLL" if peak == max_cll else "the mastering display (below MaxCLL)"
    elif mastering is not None:
        peak, peak_from = mastering, "the mastering display"
    else:
        peak, peak_from = DEFAULT_PEAK, "the default (no mastering/MaxCLL metadata)"
    matrix = color.matrix_for(colorspace, 2160) if colorspace else "bt2020"
    return ToneMapPlan(kind, peak, peak_from, matrix=matrix, full_range=full_range,
                       mastering_peak=mastering, max_cll=max_cll)


# --- transfer functions (tensors in, tensors out) -------------------------------------------

def pq_eotf(e: torch.Tensor) -> torch.Tensor:
    """PQ signal [0, 1] -> display light in nits (SMPTE ST 2084)."""
    p = e.clamp(0.0, 1.0).pow(1.0 / _M2)
    return ((p - _C1).clamp_(min=0.0) / (_C2 - _C3 * p)).pow_(1.0 / _M1).mul_(_PQ_MAX)


def pq_inverse_eotf(nits: torch.Tensor) -> torch.Tensor:
    """Display light in nits -> PQ signal [0, 1]."""
    y = (nits / _PQ_MAX).clamp_(0.0, 1.0).pow_(_M1)
    return ((_C1 + _C2 * y) / (1.0 + _C3 * y)).pow_(_M2)


def _pq(nits: float) -> float:
    y = (nits / _PQ_MAX) ** _M1
    return float(((_C1 + _C2 * y) / (1.0 + _C3 * y)) ** _M2)


def hlg_eotf(rgb: torch.Tensor, peak: float = HLG_PEAK) -> torch.Tensor:
    """HLG R'G'B' [0, 1] (3, H, W) -> display light in nits: inverse OETF, then the BT.2100
    OOTF (Fd = Lw * Ys^(gamma-1) * E, gamma 1.2, black level 0)."""
    import torch

    e = rgb.clamp(0.0, 1.0)
    low = e * e / 3.0
    high = (torch.exp((e - _HLG_C) / _HLG_A) + _HLG_B) / 12.0
    scene = torch.where(e <= 0.5, low, high)
    ys = (_BT2020_LUMA[0] * scene[0] + _BT2020_LUMA[1] * scene[1]
          + _BT2020_LUMA[2] * scene[2])
    return scene * (peak * ys.clamp(min=1e-12).pow(_HLG_GAMMA - 1.0))


def bt2390_eetf(pq: torch.Tensor, source_peak: float, target_peak: float) -> torch.Tensor:
    """BT.2390 EETF on PQ-encoded values (black 0): identity below the knee, a Hermite spline
    from there that reaches `target_peak` at `source_peak`. Returns PQ-encoded values."""
    import torch

    src = _pq(source_peak)
    e1 = (pq / src).clamp_(0.0, 1.0)  # anything above the source's peak is the peak
    max_lum = _pq(target_peak) / src
    if max_lum >= 1.0:  # the source fits the target: nothing to compress
        return e1 * src
    ks = 1.5 * max_lum - 0.5
    t = ((e1 - ks) / (1.0 - ks)).clamp_(min=0.0)
    t2, t3 = t * t, t * t * t
    spline = (2 * t3 - 3 * t2 + 1) * ks + (t3 - 2 * t2 + t) * (1 - ks) + (-2 * t3 + 3 * t2) * max_lum
    return torch.where(e1 < ks, e1, spline) * src


_LUT_SIZE = 4096
_LUTS: dict[tuple[float, float, str], torch.Tensor] = {}
_PQ_LUT_SIZE = 16384
_PQ_LUTS: dict[str, torch.Tensor] = {}
_MATRICES: dict[str, torch.Tensor] = {}


def _lerp(lut: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """lut at fractional positions `pos` (already in [0, len - 1]; consumed), interpolated."""
    import torch

    idx = pos.to(torch.int32).clamp_(max=lut.numel() - 2)  # floor: pos is not negative
    frac = pos.sub_(idx)
    flat = idx.reshape(-1)
    g0 = lut.index_select(0, flat)
    g1 = lut.index_select(0, flat.add_(1))
    return g0.lerp_(g1, frac.reshape(-1)).reshape(pos.shape)


def pq_eotf_fast(e: torch.Tensor) -> torch.Tensor:
    """pq_eotf through a 16384-level table made in float64, linearly interpolated (no pow on
    every sample): measured within 1e-6 relative of the formula above 1 nit, 1e-7 nits below."""
    import torch

    lut = _PQ_LUTS.get(str(e.device))
    if lut is None:
        x = torch.linspace(0.0, 1.0, _PQ_LUT_SIZE, dtype=torch.float64)
        lut = _PQ_LUTS.setdefault(str(e.device),
                                  pq_eotf(x).to(device=e.device, dtype=torch.float32))
    return _lerp(lut, e.clamp(0.0, 1.0).mul_(_PQ_LUT_SIZE - 1.0))


def _gain_lut(tm: ToneMapPlan, device: torch.device) -> torch.Tensor:
    """The curve's gain (mapped / input) at _LUT_SIZE input levels evenly spread over
    [0, source_peak] nits, computed once per (peak, target, device) in float64 with the exact
    PQ/EETF formulas."""
    import torch

    key = (tm.source_peak, tm.target_peak, str(device))
    lut = _LUTS.get(key)
    if lut is None:
        nits = torch.linspace(0.0, tm.source_peak, _LUT_SIZE, dtype=torch.float64)
        mapped = pq_eotf(bt2390_eetf(pq_inverse_eotf(nits), tm.source_peak, tm.target_peak))
        gain = mapped / nits.clamp(min=1e-9)
        gain[0] = gain[1]  # 0 nits: the limit (1 below the knee)
        lut = _LUTS.setdefault(key, gain.to(device=device, dtype=torch.float32))
    return lut


def _gain(sig: torch.Tensor, tm: ToneMapPlan) -> torch.Tensor:
    """mapped(sig) / sig for max(R, G, B) in nits: the LUT, linearly interpolated (below the
    knee it is exactly 1; the curve is smooth above it, so 4096 levels are far below a code
    value); above the source's peak, the peak's (content is clipped to the peak)."""
    import torch

    pos = (sig * ((_LUT_SIZE - 1) / tm.source_peak)).clamp_(0.0, _LUT_SIZE - 1.0)
    gain = _lerp(_gain_lut(tm, sig.device), pos)
    top = min(tm.source_peak, tm.target_peak)  # what the curve gives the source's peak
    return torch.where(sig > tm.source_peak, top / sig, gain)


def tonemap_rgb(rgb: torch.Tensor, tm: ToneMapPlan) -> torch.Tensor:
    """HDR R'G'B' (BT.2020, PQ or HLG) (3, H, W) in [0, 1] -> SDR R'G'B' (BT.709, BT.1886) in
    [0, 1], on rgb's device, in float32."""
    import torch

    rgb = rgb.to(torch.float32)
    linear = hlg_eotf(rgb) if tm.transfer == "hlg" else pq_eotf_fast(rgb)  # nits
    m = _MATRICES.get(str(rgb.device))
    if m is None:  # once per device: no host-to-device copy per frame
        m = _MATRICES.setdefault(str(rgb.device), torch.tensor(
            BT2020_TO_BT709, dtype=torch.float32, device=rgb.device))
    linear = torch.einsum("ij,jhw->ihw", m, linear)
    # max(R, G, B) through the curve; every component scaled alike (hue kept).
    sig = linear.amax(dim=0).clamp_(min=1e-6)
    linear = linear.mul_(_gain(sig, tm))
    # Out of BT.709's gamut (negative components): clipped. Then the target's 100 nits = 1.0.
    sdr = linear.clamp_(0.0, tm.target_peak).div_(tm.target_peak)
    return sdr.pow_(1.0 / 2.4)  # BT.1886 inverse EOTF with black at 0


def tonemap_planes(p: FramePlanes, tm: ToneMapPlan, bits: int = 8,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """HDR planes -> float SDR code values (Y (H, W), UV (H/2, W/2, 2)) in BT.709, limited range."""
    rgb = color.yuv420_to_rgb(p.y, p.uv, bits=10 if p.shift else 8, shift=p.shift,
                              matrix=tm.matrix, full_range=tm.full_range)  # type: ignore[arg-type]
    return color.rgb_to_yuv420(tonemap_rgb(rgb, tm), bits=bits, matrix="bt709", full_range=False)


# --- host frames ------------------------------------------------------------------------------

BT709 = 1  # AVColorPrimaries / AVColorTransferCharacteristic / AVColorSpace BT.709


def tag_sdr(frame: av.VideoFrame | av.video.codeccontext.VideoCodecContext) -> None:
    """Tag a frame (or the encoder that takes it) as what tone mapping wrote: BT.709
    primaries, transfer, matrix; limited range."""
    frame.colorspace = BT709
    frame.color_primaries = BT709
    frame.color_trc = BT709
    frame.color_range = color.AVCOL_RANGE_MPEG


def sdr_frame(y: torch.Tensor, uv: torch.Tensor, bits: int, like: av.VideoFrame) -> av.VideoFrame:
    """A host yuv420p (8-bit) or yuv420p10le frame from whole code values (float or int, in
    range: no rounding or wrapping to do), tagged SDR BT.709."""
    from mediad.media.gpu_host import host_frame

    frame = host_frame(y, uv, bits, like)
    tag_sdr(frame)
    return frame


FrameWork = Callable[["av.VideoFrame | None"], "list[av.VideoFrame]"]


class HostToneMap:
    """Host frames: geometry and deinterlacing in libavfilter (kept 10-bit), then tone mapping in
    torch on the CPU, then 8- or 10-bit BT.709 frames for the software encoder."""

    def __init__(self, geometry: FrameWork, tm: ToneMapPlan, bits: int = 8) -> None:
        self.geometry = geometry
        self.tm = tm
        self.bits = bits

    def __call__(self, frame: av.VideoFrame | None) -> list[av.VideoFrame]:
        """One decoded frame (None: the end) -> tone-mapped frames ready to encode."""
        from mediad.media.gpu_frames import frame_to_planes

        out = []
        for f in self.geometry(frame):
            p = frame_to_planes(f)
            y, uv = tonemap_planes(p, self.tm, self.bits)
            out.append(sdr_frame(y, uv, self.bits, f))
        return out


def host_tone_map(geometry: FrameWork, tm: ToneMapPlan, pix_fmt: str) -> HostToneMap:
    """The host tone-mapping step for an encoder taking `pix_fmt` (yuv420p or yuv420p10le)."""
    return HostToneMap(geometry, tm, bits=10 if "10" in pix_fmt else 8)

