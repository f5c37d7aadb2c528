"""Colour conversion and resizing on torch tensors, checked against PyAV's own swscale."""

from __future__ import annotations

import av
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from av.video.reformatter import ColorRange, Colorspace  # noqa: E402
from av.video.reformatter import Interpolation as Interp  # noqa: E402

from mediad.media import color  # noqa: E402

H, W = 64, 96
SWS_CS = {"bt601": Colorspace.ITU601, "bt709": Colorspace.ITU709, "bt2020": Colorspace.BT2020}
# swscale's exact path: point-sampled chroma, accurate rounding. Its default path upsamples
# chroma its own way and rounds with ~2 LSB error, which would hide our mistakes.
EXACT = Interp.POINT | Interp.ACCURATE_RND | Interp.FULL_CHR_H_INT | Interp.BITEXACT
CASES = [(m, full) for m in ("bt601", "bt709", "bt2020") for full in (False, True)]


def pattern() -> np.ndarray:
    """Smooth float RGB (H, W, 3) in [0, 1] spanning most of the gamut."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    return np.stack([xx / (W - 1), yy / (H - 1), 0.5 + 0.5 * np.sin((xx + yy) / 7.0)], -1)


def rgb24() -> np.ndarray:
    return np.round(pattern() * 255).astype(np.uint8)


def sws_range(full: bool) -> ColorRange:
    return ColorRange.JPEG if full else ColorRange.MPEG


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (3, H, W) in [0, 1]."""
    return torch.from_numpy(img).permute(2, 0, 1).float() / 255.0


def pyav_yuv(fmt: str, matrix: str, full: bool, interpolation: object = EXACT) -> av.VideoFrame:
    """The pattern converted by swscale to `fmt` with the given matrix and range."""
    src = av.VideoFrame.from_ndarray(rgb24(), format="rgb24")
    return src.reformat(format=fmt, dst_colorspace=SWS_CS[matrix],
                        dst_color_range=sws_range(full), interpolation=interpolation)


def planes(frame: av.VideoFrame) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_dlpack(frame.planes[0]), torch.from_dlpack(frame.planes[1])


def to_rgb24(rgb: torch.Tensor) -> np.ndarray:
    return (rgb.permute(1, 2, 0) * 255.0).round().numpy()


# --- metadata -> matrix/range ---------------------------------------------------------------

def test_matrix_for_avcolorspace_values_and_names() -> None:
    assert color.matrix_for(1, 480) == "bt709"
    assert color.matrix_for(5, 1080) == "bt601"
    assert color.matrix_for(6, 1080) == "bt601"
    assert color.matrix_for(9, 480) == "bt2020"
    assert color.matrix_for("bt2020nc", 480) == "bt2020"
    assert color.matrix_for("smpte170m", 1080) == "bt601"
    assert color.matrix_for("BT.709", 480) == "bt709"


def test_matrix_for_unspecified_guesses_by_height() -> None:
    assert color.matrix_for(2, 1080) == "bt709"
    assert color.matrix_for(None, 720) == "bt709"
    assert color.matrix_for(2, 576) == "bt601"
    assert color.matrix_for("unknown", 480) == "bt601"


def test_full_range_from_metadata() -> None:
    assert color.is_full_range(2)
    assert color.is_full_range("pc")
    assert not color.is_full_range(1)
    assert not color.is_full_range(0)
    assert not color.is_full_range(None)
    assert color.is_full_range(0, "yuvj420p")
    assert not color.is_full_range(1, "yuvj420p")  # an explicit tv range wins


# --- YUV -> RGB ---------------------------------------------------------------------------

@pytest.mark.parametrize(("matrix", "full"), CASES)
def test_nv12_to_rgb_matches_swscale(matrix: str, full: bool) -> None:
    frame = pyav_yuv("nv12", matrix, full)
    y, uv = planes(frame)
    ours = to_rgb24(color.nv12_to_rgb(y, uv, matrix=matrix, full_range=full, chroma="nearest"))
    ref = frame.reformat(format="rgb24", src_colorspace=SWS_CS[matrix],
                         src_color_range=sws_range(full), interpolation=EXACT).to_ndarray()
    diff = np.abs(ours - ref)
    assert diff.mean() <= 0.05 and diff.max() <= 1


@pytest.mark.parametrize(("matrix", "full"), CASES)
def test_p010_to_rgb_matches_swscale(matrix: str, full: bool) -> None:
    frame = pyav_yuv("p010le", matrix, full)
    y, uv = planes(frame)
    assert y.dtype == torch.uint16
    ours = to_rgb24(color.p010_to_rgb(y, uv, matrix=matrix, full_range=full, chroma="nearest"))
    # 8-bit RGB out: swscale scales 10-bit limited white to 255/256 in its 16-bit outputs, a
    # quirk of its own (see test_standard_code_levels), which 8-bit output does not show.
    ref = frame.reformat(format="rgb24", src_colorspace=SWS_CS[matrix],
                         src_color_range=sws_range(full), interpolation=EXACT).to_ndarray()
    diff = np.abs(ours - ref)
    assert diff.mean() <= 0.5 and diff.max() <= 1


def test_standard_code_levels() -> None:
    """Black and white land on the code values of BT.709/BT.2100, in both depths."""
    for bits, shift, (black, white, mid) in ((8, 0, (16, 235, 128)), (10, 6, (64, 940, 512))):
        y = torch.tensor([[black, white], [black, white]], dtype=torch.int32) << shift
        uv = torch.full((1, 1, 2), mid << shift, dtype=torch.int32)
        rgb = color.yuv420_to_rgb(y, uv, bits=bits, shift=shift, matrix="bt709", chroma="nearest")
        assert torch.allclose(rgb[:, :, 0], torch.zeros(3, 2))
        assert torch.allclose(rgb[:, :, 1], torch.ones(3, 2))
        # and back
        y2, uv2 = color.rgb_to_yuv420(rgb, bits=bits, matrix="bt709")
        assert y2.tolist() == [[black, white], [black, white]]
        assert uv2.flatten().tolist() == [mid, mid]


def test_matrix_changes_colour() -> None:
    """The same YUV through different matrices gives different RGB (the matrix is honoured)."""
    y = torch.full((2, 2), 120, dtype=torch.uint8)
    uv = torch.tensor([[[90, 200]]], dtype=torch.uint8)
    a = color.nv12_to_rgb(y, uv, matrix="bt601")
    b = color.nv12_to_rgb(y, uv, matrix="bt709")
    c = color.nv12_to_rgb(y, uv, matrix="bt709", full_range=True)
    assert (a - b).abs().max() > 0.02 and (b - c).abs().max() > 0.02


def test_bilinear_chroma_agrees_with_nearest_where_chroma_is_flat() -> None:
    rng = np.random.default_rng(1)
    y = torch.from_numpy(rng.integers(16, 236, (H, W)).astype(np.uint8))
    blocks = torch.from_numpy(rng.integers(100, 156, (H // 16, W // 16, 2)).astype(np.uint8))
    uv = blocks.repeat_interleave(8, 0).repeat_interleave(8, 1)
    near = color.nv12_to_rgb(y, uv, chroma="nearest")
    bil = color.nv12_to_rgb(y, uv, chroma="bilinear")
    inner = (near - bil).abs().reshape(3, H // 8, 8, W // 8, 8)[:, :, 2:6, :, 2:6]
    assert float(inner.max()) < 1e-5
    assert float((near - bil).abs().max()) > 0.01  # and it does interpolate at block edges


def test_odd_sizes_convert() -> None:
    """Odd-sized yuv420p (chroma rounded up) converts; NV12 views of odd frames round down."""
    y = torch.full((5, 7), 128, dtype=torch.uint8)
    uv = torch.full((3, 4, 2), 128, dtype=torch.uint8)
    assert color.nv12_to_rgb(y, uv).shape == (3, 5, 7)
    assert color.nv12_to_rgb(y, uv[:2, :3]).shape == (3, 5, 7)


# --- RGB -> YUV ---------------------------------------------------------------------------

@pytest.mark.parametrize(("matrix", "full"), CASES)
def test_rgb_to_nv12_matches_swscale(matrix: str, full: bool) -> None:
    ref = pyav_yuv("nv12", matrix, full, interpolation=None)  # default: filtered chroma
    ref_y, ref_uv = planes(ref)
    y, uv = color.rgb_to_nv12(to_tensor(rgb24()), matrix=matrix, full_range=full)
    assert y.dtype == torch.uint8 and uv.shape == (H // 2, W // 2, 2)
    dy = (y.float() - ref_y.float()).abs()
    duv = (uv.float() - ref_uv.float()).abs()
    assert dy.mean() <= 0.05 and dy.max() <= 1
    assert duv.mean() <= 0.75 and duv.max() <= 3  # chroma filters differ slightly


@pytest.mark.parametrize(("matrix", "full"), CASES)
def test_rgb_to_p010_matches_swscale(matrix: str, full: bool) -> None:
    ref = pyav_yuv("p010le", matrix, full, interpolation=None)
    ref_y, ref_uv = planes(ref)
    y, uv = color.rgb_to_p010(to_tensor(rgb24()), matrix=matrix, full_range=full)
    assert y.dtype == torch.uint16
    assert int((y.to(torch.int32) & 63).max()) == 0  # P010 keeps the low 6 bits clear
    dy = (y.float() - ref_y.float()).abs() / 64  # in 10-bit steps
    duv = (uv.float() - ref_uv.float()).abs() / 64
    assert dy.mean() <= 0.1 and dy.max() <= 1
    assert duv.mean() <= 1.0 and duv.max() <= 8


def test_rgb_to_nv12_writes_into_out() -> None:
    buf = torch.zeros((H + H // 2, W), dtype=torch.uint8)
    out = (buf[:H], buf[H:].unflatten(1, (W // 2, 2)))
    y, uv = color.rgb_to_nv12(to_tensor(rgb24()), out=out)
    assert y.data_ptr() == buf.data_ptr()
    assert torch.equal(buf[:H], color.rgb_to_nv12(to_tensor(rgb24()))[0])
    assert int(buf[H:].max()) > 0


def test_rgb_to_yuv_rejects_odd_sizes() -> None:
    with pytest.raises(ValueError, match="even"):
        color.rgb_to_nv12(torch.zeros(3, 5, 6))


# --- round trips ---------------------------------------------------------------------------

@pytest.mark.parametrize(("matrix", "full"), CASES)
def test_nv12_rgb_nv12_round_trip_within_one_lsb(matrix: str, full: bool) -> None:
    src = pyav_yuv("nv12", matrix, full, interpolation=None)
    y, uv = planes(src)
    for chroma in ("nearest", "bilinear"):
        rgb = color.nv12_to_rgb(y, uv, matrix=matrix, full_range=full, chroma=chroma)
        y2, uv2 = color.rgb_to_nv12(rgb, matrix=matrix, full_range=full)
        assert (y2.float() - y.float()).abs().mean() <= 1.0
        assert (uv2.float() - uv.float()).abs().mean() <= 1.0
    # Point-sampled chroma followed by block averaging gives the chroma back exactly.
    rgb = color.nv12_to_rgb(y, uv, matrix=matrix, full_range=full, chroma="nearest")
    y3, uv3 = color.rgb_to_nv12(rgb, matrix=matrix, full_range=full)
    assert (y3.float() - y.float()).abs().mean() <= 0.1
    assert (uv3.float() - uv.float()).abs().mean() <= 0.1


@pytest.mark.parametrize(("matrix", "full"), [("bt2020", False), ("bt709", True)])
def test_p010_round_trip_within_one_lsb(matrix: str, full: bool) -> None:
    src = pyav_yuv("p010le", matrix, full, interpolation=None)
    y, uv = planes(src)
    rgb = color.p010_to_rgb(y, uv, matrix=matrix, full_range=full, chroma="nearest")
    y2, uv2 = color.rgb_to_p010(rgb, matrix=matrix, full_range=full)
    assert ((y2.float() - y.float()).abs() / 64).mean() <= 0.5
    assert ((uv2.float() - uv.float()).abs() / 64).mean() <= 0.5
    # Bilinear chroma smooths a little: within one 8-bit step (4 ten-bit steps).
    rgb = color.p010_to_rgb(y, uv, matrix=matrix, full_range=full)
    y3, uv3 = color.rgb_to_p010(rgb, matrix=matrix, full_range=full)
    assert ((y3.float() - y.float()).abs() / 64).mean() <= 1.0
    assert ((uv3.float() - uv.float()).abs() / 64).mean() <= 4.0


# --- resizing -------------------------------------------------------------------------------

def test_area_downscale_is_block_mean() -> None:
    x = torch.from_numpy(np.random.default_rng(2).random((3, 8, 12)).astype(np.float32))
    out = color.resize(x, 4, 6, mode="area")
    ref = x.reshape(3, 4, 2, 6, 2).mean(dim=(2, 4))
    assert torch.allclose(out, ref, atol=1e-6)


def test_resize_antialiases_downscale() -> None:
    """A one-pixel checkerboard shrunk 4x is flat grey with antialiasing, not aliased."""
    board = torch.from_numpy((np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8))
    for mode in ("bilinear", "bicubic", "area"):
        out = color.resize(board, 16, 16, mode=mode)
        assert out.dtype == torch.uint8
        assert int(out.max()) - int(out.min()) <= 8, mode
    # On noise, antialiasing averages many pixels per output pixel; plain bilinear takes ~2.
    noise = torch.from_numpy(np.random.default_rng(3).random((64, 64)).astype(np.float32))
    smooth = color.resize(noise, 16, 16, mode="bilinear").std()
    aliased = color.resize(noise, 16, 16, mode="bilinear", antialias=False).std()
    assert float(smooth) < 0.6 * float(aliased)


def test_resize_matches_swscale_area_on_luma() -> None:
    frame = pyav_yuv("nv12", "bt709", False, interpolation=None)
    y, _ = planes(frame)
    ours = color.resize(y, H // 2, W // 2, mode="area")
    ref = frame.reformat(width=W // 2, height=H // 2, format="nv12", interpolation="AREA")
    ref_y = torch.from_dlpack(ref.planes[0])
    assert (ours.float() - ref_y.float()).abs().mean() <= 0.6


def test_resize_shapes_dtypes_and_upscale() -> None:
    assert color.resize(torch.zeros(10, 20), 5, 10).shape == (5, 10)
    assert color.resize(torch.zeros(3, 10, 20), 20, 40, mode="area").shape == (3, 20, 40)
    assert color.resize(torch.zeros(2, 3, 10, 20), 4, 8).shape == (2, 3, 4, 8)
    x = torch.zeros(3, 4, 4)
    assert color.resize(x, 4, 4) is x  # no-op keeps the tensor
    # bicubic overshoot on a hard edge stays inside the uint8 range
    edge = torch.zeros(16, 16, dtype=torch.uint8)
    edge[:, 8:] = 255
    up = color.resize(edge, 48, 48, mode="bicubic")
    assert up.dtype == torch.uint8 and int(up.min()) == 0 and int(up.max()) == 255


@pytest.mark.parametrize("shift", [0, 6])
def test_resize_yuv420_planes(shift: int) -> None:
    frame = pyav_yuv("p010le" if shift else "nv12", "bt709", False, interpolation=None)
    y, uv = planes(frame)
    y2, uv2 = color.resize_yuv420(y, uv, 32, 48, shift=shift, mode="bicubic")
    assert y2.shape == (32, 48) and uv2.shape == (16, 24, 2)
    assert y2.dtype == y.dtype and uv2.dtype == uv.dtype
    if shift:
        assert int((y2.to(torch.int32) & 63).max()) == 0
    # The picture survives: mean level barely moves.
    assert abs(float(y2.float().mean()) - float(y.float().mean())) < float(1 << shift) * 2
    with pytest.raises(ValueError, match="even"):
        color.resize_yuv420(y, uv, 31, 48)


def test_scaled_size() -> None:
    assert color.scaled_size(1920, 1080, 720) == (1280, 720)
    assert color.scaled_size(1280, 720, 1080) == (1280, 720)  # never upscales
    assert color.scaled_size(1440, 1080, 480) == (640, 480)
    assert color.scaled_size(321, 181, None) == (320, 180)  # even for 4:2:0
    assert color.scaled_size(1000, 1001, 99) == (98, 98)
