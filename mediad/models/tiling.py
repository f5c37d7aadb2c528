"""Run a scaling frame model on overlapping tiles when a whole frame does not fit in memory."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch stays a lazy import: the CPU transcode path may import this module
    import torch


def _spans(size: int, tile: int) -> list[tuple[int, int]]:
    # Equal-sized tiles (the last one is not a thin sliver): fewer wasted overlap pixels.
    count = math.ceil(size / tile)
    step = math.ceil(size / count)
    return [(start, min(start + step, size)) for start in range(0, size, step)]


def tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    frames: torch.Tensor,
    *,
    scale: int,
    tile: int,
    overlap: int,
) -> torch.Tensor:
    """Run fn on overlapping tiles of (N,C,H,W) frames and stitch the scaled result (no seams).

    Each tile's core (at most `tile` x `tile` input pixels) is extended by `overlap` pixels on
    every side that has image there, `fn` maps it to `scale` times the size, and only the core's
    part of the result is kept. When `overlap` covers fn's receptive field (SRVGGNetCompact:
    one pixel per 3x3 conv, plus what a resize inside fn reads) the result equals fn on the whole
    frame up to float rounding, because fn never sees the cut.
    """
    if frames.dim() != 4 or frames.shape[2] < 1 or frames.shape[3] < 1:
        raise ValueError(f"tiled_apply wants (N,C,H,W) frames, got shape {tuple(frames.shape)}")
    if tile < 1 or overlap < 0 or scale < 1:
        raise ValueError(f"bad tiling: tile={tile} overlap={overlap} scale={scale}")
    n, _, h, w = frames.shape
    out: torch.Tensor | None = None
    for y0, y1 in _spans(h, tile):
        for x0, x1 in _spans(w, tile):
            py0, py1 = max(y0 - overlap, 0), min(y1 + overlap, h)
            px0, px1 = max(x0 - overlap, 0), min(x1 + overlap, w)
            result = fn(frames[:, :, py0:py1, px0:px1])
            want = (n, (py1 - py0) * scale, (px1 - px0) * scale)
            if (result.shape[0], result.shape[2], result.shape[3]) != want:
                raise ValueError(f"fn returned {tuple(result.shape)} for a tile, expected x{scale}")
            if out is None:  # allocate once fn has told us its output channels and dtype
                out = result.new_empty((n, result.shape[1], h * scale, w * scale))
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            out[:, :, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = result[
                :, :, oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale
            ]
    assert out is not None  # h, w >= 1 gives at least one tile
    return out
