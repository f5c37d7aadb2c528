"""Tiled model application: geometry, seams, and the Upscaler's tiled paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from conftest import has_weight_package  # noqa: E402

from mediad.models import upscale  # noqa: E402
from mediad.models.srvgg import SRVGGNetCompact  # noqa: E402
from mediad.models.tiling import tiled_apply  # noqa: E402
from mediad.models.upconv7 import UpConv7  # noqa: E402
from mediad.models.upscale import Upscaler  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIAD_CACHE_DIR", str(tmp_path / "cache"))


def _net(num_conv: int = 3, upscale: int = 2) -> SRVGGNetCompact:
    torch.manual_seed(3)
    net = SRVGGNetCompact(num_feat=8, num_conv=num_conv, upscale=upscale).eval()
    return net.requires_grad_(False)


def _picture(n: int, h: int, w: int) -> torch.Tensor:
    """Smooth content plus detail, so that a wrong crop offset shows up as a large error."""
    yy = torch.linspace(0, 1, h).view(1, 1, h, 1)
    xx = torch.linspace(0, 1, w).view(1, 1, 1, w)
    base = torch.cat(
        [yy.expand(n, 1, h, w), xx.expand(n, 1, h, w), (yy * xx).expand(n, 1, h, w)], 1
    )
    torch.manual_seed(1)
    return (0.7 * base + 0.3 * torch.rand(n, 3, h, w)).contiguous()


@pytest.mark.parametrize(("h", "w", "tile"), [(37, 53, 16), (16, 16, 16), (5, 70, 9), (31, 29, 30)])
def test_geometry_is_exact_for_a_pointwise_fn(h: int, w: int, tile: int) -> None:
    x = _picture(2, h, w)

    def up3(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, scale_factor=3, mode="nearest") * 2 - 0.5

    assert torch.equal(tiled_apply(up3, x, scale=3, tile=tile, overlap=4), up3(x))


def test_overlap_covering_the_receptive_field_has_no_seams() -> None:
    net = _net(num_conv=3)  # 5 convs: each output pixel sees 5 input pixels on every side
    assert net.receptive_radius == 5
    x = _picture(1, 40, 57)
    whole = net(x)
    tiled = tiled_apply(net, x, scale=2, tile=16, overlap=net.receptive_radius)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)


def test_too_little_overlap_shows_seams() -> None:
    """The check above can fail: without overlap the tile edges differ."""
    net = _net(num_conv=3)
    x = _picture(1, 40, 57)
    seams = (tiled_apply(net, x, scale=2, tile=16, overlap=0) - net(x)).abs()
    assert float(seams.max()) > 1e-3
    assert float(seams[..., 40:60, :].max()) > 1e-3  # around the first horizontal cut (row 20)


def _upconv7() -> UpConv7:
    torch.manual_seed(4)
    net = UpConv7(channels=(4, 4, 6, 6, 8, 8)).eval()  # waifu2x's depth, narrow: fast
    return net.requires_grad_(False)


def test_upconv7_receptive_field_is_seven_pixels() -> None:
    """Six valid 3x3 convs and the 4x4 stride-2 deconvolution reach 7 input pixels a side:
    tiles with that overlap match the whole frame, one pixel less shows seams."""
    net = _upconv7()
    assert net.receptive_radius == 7
    x = _picture(1, 40, 57)
    whole = net(x)
    assert whole.shape == (1, 3, 80, 114)
    tiled = tiled_apply(net, x, scale=2, tile=16, overlap=7)
    assert float((tiled - whole).abs().max()) < 1e-6  # float rounding only
    # The outermost tap's influence is small through six narrow random layers, but it is there.
    short = (tiled_apply(net, x, scale=2, tile=16, overlap=6) - whole).abs()
    assert float(short.max()) > 1e-5


def test_fn_with_the_wrong_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="expected x2"):
        tiled_apply(lambda t: t, torch.zeros(1, 3, 8, 8), scale=2, tile=4, overlap=1)
    with pytest.raises(ValueError, match="bad tiling"):
        tiled_apply(lambda t: t, torch.zeros(1, 3, 8, 8), scale=1, tile=0, overlap=1)


@pytest.mark.parametrize(
    ("model", "scale"),
    [("realesr-animevideov3", 2), ("realesr-animevideov3", 4), ("waifu2x-photo", 2)],
)
def test_upscaler_tiled_equals_whole_frame(
    model: str, scale: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not has_weight_package(model):
        pytest.skip(f"the weight package of {model} is not installed")
    tiles: list[int] = []

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        tiles.append(kwargs["tile"])
        return tiled_apply(*args, **kwargs)

    monkeypatch.setattr(upscale, "tiled_apply", spy)
    x = _picture(2, 48, 72)
    whole = Upscaler(model, scale, CPU, torch.float32)(x)
    assert tiles == []
    fixed = Upscaler(model, scale, CPU, torch.float32, tile=32)(x)  # 2x3 tiles
    assert tiles == [32]
    # A budget below one frame's pixels forces the automatic path to tile too (at its 32-pixel
    # minimum), one frame at a time.
    auto = Upscaler(model, scale, CPU, torch.float32, max_pixels=40 * 40)(x)
    assert tiles == [32, 32, 32]
    assert whole.shape == fixed.shape == auto.shape == (2, 3, 48 * scale, 72 * scale)
    for tiled in (fixed, auto):
        # Everywhere, borders included: 1/255 is the contract away from borders.
        assert float((tiled - whole).abs().max()) < 1 / 255
        assert float((tiled - whole).abs().mean()) < 1e-5


def test_upscaler_splits_a_batch_that_exceeds_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "tiny-x2.pth"
    torch.save(_net(num_conv=2).state_dict(), path)
    x = _picture(5, 20, 30)
    whole = Upscaler(str(path), 2, CPU, torch.float32)(x)
    up = Upscaler(str(path), 2, CPU, torch.float32, max_pixels=2 * 20 * 30)
    calls: list[int] = []
    up.net.register_forward_hook(lambda _m, inputs, _out: calls.append(len(inputs[0])))
    per_two = up(x)
    assert calls == [2, 2, 1]  # frames per network call
    torch.testing.assert_close(per_two, whole, atol=1e-6, rtol=0)
