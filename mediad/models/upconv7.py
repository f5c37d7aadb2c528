"""waifu2x's upconv_7 network (the `waifu2x-photo*` built-in upscalers) and loading its weights.

upconv_7: six valid (unpadded) 3x3 convolutions 3->16->32->64->128->128->256, each followed by
LeakyReLU(0.1), then a 4x4 stride-2 transposed convolution (padding 3) to RGB. Each conv takes one
pixel off every side and the transposed convolution turns n pixels into 2n-4, so the input is
padded by 7 pixels first (waifu2x-ncnn-vulkan's "prepadding", replicating the edge pixels as its
preproc shader clamps coordinates): (H, W) in, exactly (2H, 2W) out, aligned with the input.
Input and output are RGB in 0..1 (the ncnn tool divides 8-bit RGB by 255); output is not clamped.

Key names follow the PyTorch ports (nunif's UpConv7): `net.0`, `net.2`, ... `net.10` are the
convolutions, `net.12` the ConvTranspose2d (weight [in][out][4][4]).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from mediad.errors import MediadError, Reason
from mediad.models.weights import layer_weights, load_checked

_KEY = re.compile(r"^net\.(\d+)\.(weight|bias)$")
SLOPE = 0.1


class UpConv7(nn.Module):
    """waifu2x upconv_7: (N,3,H,W) RGB 0..1 -> (N,3,2H,2W), not clamped."""

    upscale = 2

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128, 128, 256)) -> None:
        super().__init__()
        self.channels = tuple(channels)
        layers: list[nn.Module] = []
        in_ch = 3
        for out_ch in self.channels:
            layers += [nn.Conv2d(in_ch, out_ch, 3, 1, 0), nn.LeakyReLU(SLOPE, inplace=True)]
            in_ch = out_ch
        layers.append(nn.ConvTranspose2d(in_ch, 3, 4, 2, 3))
        self.net = nn.Sequential(*layers)
        # Valid convs shrink by one pixel a side each; the deconvolution takes 2 more output
        # pixels (one input pixel) a side: n -> 2(n - len(channels)) - 4 = 2(n - pad) for this pad.
        self.pad = len(self.channels) + 1

    @property
    def receptive_radius(self) -> int:
        """Input pixels on each side that influence one output pixel (the padding: 7)."""
        return self.pad

    @property
    def working_channels(self) -> int:
        """Channels of the feature maps alive at once at the peak (two widest neighbours)."""
        widths = (3, *self.channels)
        return max(a + b for a, b in zip(widths, widths[1:], strict=False)) + 3 * 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) -> (N,3,2H,2W): replicate-pad by 7, then the network."""
        p = self.pad
        return self.net(F.pad(x, (p, p, p, p), mode="replicate"))


def upconv7_from_state_dict(sd: Mapping[str, torch.Tensor], source: str) -> UpConv7:
    """Build an UpConv7 (CPU, float32, eval mode) whose widths fit `sd` and load it strictly."""
    convs = layer_weights(sd, _KEY, source, "upconv_7")
    order = sorted(convs)
    if len(order) < 2 or order != list(range(0, 2 * len(order), 2)):
        raise MediadError(f"{source}: not an upconv_7 state dict (net.N layout)", reason=Reason.BAD_MODEL)
    # Conv weights are [out][in][3][3]; the last layer's ConvTranspose2d weight is [in][out][4][4].
    channels = tuple(int(convs[i].shape[0]) for i in order[:-1])
    net = UpConv7(channels)
    load_checked(net, sd, source, "upconv_7")
    return net


def is_upconv7_state_dict(sd: Mapping[str, object]) -> bool:
    """True when the keys are upconv_7's `net.N.*` (SRVGGNetCompact's are `body.N.*`)."""
    return bool(sd) and all(isinstance(k, str) and k.startswith("net.") for k in sd)
