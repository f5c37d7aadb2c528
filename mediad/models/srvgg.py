"""Real-ESRGAN's compact upscaler (SRVGGNetCompact) and loading of its weight files.

Key names and layout match upstream `basicsr.archs.srvgg_arch.SRVGGNetCompact`, so `.pth` files
from the Real-ESRGAN releases load unchanged: `body.0` is the first conv, each conv is followed by
its activation (`body.1`, `body.3`, ...; only PReLU has weights), and the last `body.N` conv emits
3 * upscale**2 channels for the pixel shuffle.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mediad.errors import MediadError, Reason
from mediad.models.weights import layer_weights, load_checked, read_weight_file

ACT_TYPES = ("prelu", "relu", "leakyrelu")
_BODY_KEY = re.compile(r"^body\.(\d+)\.(weight|bias)$")


class SRVGGNetCompact(nn.Module):
    """A plain conv stack + pixel shuffle, added to a nearest-neighbour upsample of the input."""

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        upscale: int = 4,
        act_type: str = "prelu",
    ) -> None:
        super().__init__()
        if act_type not in ACT_TYPES:
            raise ValueError(f"act_type must be one of {ACT_TYPES}, not {act_type!r}")
        self.num_in_ch, self.num_out_ch = num_in_ch, num_out_ch
        self.num_feat, self.num_conv = num_feat, num_conv
        self.upscale, self.act_type = upscale, act_type
        self.body = nn.ModuleList([nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), self._act(num_feat)])
        for _ in range(num_conv):
            self.body.append(nn.Conv2d(num_feat, num_feat, 3, 1, 1))
            self.body.append(self._act(num_feat))
        self.body.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.upsampler = nn.PixelShuffle(upscale)

    def _act(self, num_feat: int) -> nn.Module:
        if self.act_type == "prelu":
            return nn.PReLU(num_parameters=num_feat)
        if self.act_type == "relu":
            return nn.ReLU(inplace=True)
        return nn.LeakyReLU(negative_slope=0.1, inplace=True)

    @property
    def receptive_radius(self) -> int:
        """Input pixels on each side that influence one output pixel (one per 3x3 conv)."""
        return self.num_conv + 2

    @property
    def working_channels(self) -> int:
        """Channels per input pixel alive at the peak: ~3 feature maps, the shuffle's input and
        output and the nearest-neighbour base."""
        return 3 * self.num_feat + 3 * self.num_out_ch * self.upscale**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,C,H,W) -> (N,C,H*upscale,W*upscale); values are not clamped."""
        out = x
        for layer in self.body:
            out = layer(out)
        out = self.upsampler(out)
        return out + F.interpolate(x, scale_factor=self.upscale, mode="nearest")


def infer_config(sd: Mapping[str, torch.Tensor], source: str) -> dict[str, int | str]:
    """SRVGGNetCompact constructor arguments read off the state dict's key names and shapes."""
    weights = layer_weights(sd, _BODY_KEY, source, "SRVGGNetCompact")
    convs = {i: w for i, w in weights.items() if w.dim() == 4}
    acts = {i: w for i, w in weights.items() if w.dim() != 4}  # PReLU's slopes
    if len(convs) < 2:
        raise MediadError(
            f"{source}: not an SRVGGNetCompact state dict (no body.N conv weights)",
            reason=Reason.BAD_MODEL,
        )
    first, last = convs[min(convs)], convs[max(convs)]
    num_feat, num_in_ch = int(first.shape[0]), int(first.shape[1])
    num_conv = len(convs) - 2
    num_out_ch = num_in_ch  # upstream models are RGB -> RGB; the channel count is not stored
    upscale = math.isqrt(int(last.shape[0]) // num_out_ch)
    if upscale < 1 or upscale * upscale * num_out_ch != last.shape[0]:
        raise MediadError(
            f"{source}: last conv has {last.shape[0]} outputs, not {num_out_ch} * upscale**2",
            reason=Reason.BAD_MODEL,
        )
    if acts:
        act_type = "prelu"
    else:
        # ReLU and LeakyReLU have no weights, so the file cannot tell them apart; every
        # released compact model uses PReLU, and guessing wrong would give silent garbage.
        raise MediadError(
            f"{source}: no PReLU weights; only PReLU SRVGGNetCompact models are supported",
            reason=Reason.BAD_MODEL,
        )
    return {
        "num_in_ch": num_in_ch,
        "num_out_ch": num_out_ch,
        "num_feat": num_feat,
        "num_conv": num_conv,
        "upscale": upscale,
        "act_type": act_type,
    }


def srvgg_from_state_dict(sd: Mapping[str, torch.Tensor], source: str) -> SRVGGNetCompact:
    """Build an SRVGGNetCompact (CPU, float32, eval mode) whose shape fits `sd` and load it."""
    cfg = infer_config(sd, source)
    net = SRVGGNetCompact(**cfg)  # type: ignore[arg-type]
    load_checked(net, sd, source, "SRVGGNetCompact")
    return net


def load_srvgg(path: Path) -> SRVGGNetCompact:
    """Load a Real-ESRGAN compact model from a `.pth` (params/params_ema/bare) or `.safetensors`."""
    return srvgg_from_state_dict(read_weight_file(path), str(path))
