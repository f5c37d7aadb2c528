"""Reading upscaler weight files and loading them into a network, for every family
(srvgg, upconv7): the file formats, the checkpoint wrappers, the key layout and the strict load.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from mediad.errors import MediadError, Reason, first_line


def read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    """The raw tensor dict of a `.safetensors` or torch `.pth`/`.pt` file (CPU, unwrapped)."""
    if not path.is_file():
        raise MediadError(f"{path}: model file not found", reason=Reason.BAD_MODEL)
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise MediadError(
                f"{path}: not a readable .safetensors file ({e})", reason=Reason.BAD_MODEL
            ) from e
        return unwrap_state_dict(tensors, str(path))
    try:
        # weights_only: a .pth is a pickle, and a downloaded model must not run code on load.
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many unrelated types for a corrupt/foreign pickle
        raise MediadError(
            f"{path}: not a readable PyTorch weight file ({first_line(e) or type(e).__name__})",
            reason=Reason.BAD_MODEL) from e
    return unwrap_state_dict(obj, str(path))


def unwrap_state_dict(obj: object, source: str) -> dict[str, torch.Tensor]:
    """The tensor dict inside a Real-ESRGAN checkpoint: `params_ema`, else `params`, else bare."""
    if not isinstance(obj, Mapping):
        raise MediadError(
            f"{source}: not a state dict (found {type(obj).__name__})", reason=Reason.BAD_MODEL
        )
    # Upstream RealESRGANer prefers the EMA weights when both are present.
    for key in ("params_ema", "params"):
        if key in obj:
            obj = obj[key]
            if not isinstance(obj, Mapping):
                raise MediadError(f"{source}: '{key}' is not a state dict", reason=Reason.BAD_MODEL)
            break
    sd: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise MediadError(
                f"{source}: not a state dict of tensors (entry {k!r})", reason=Reason.BAD_MODEL
            )
        # nn.DataParallel checkpoints prefix every key with "module.".
        sd[k.removeprefix("module.")] = v
    return sd


def layer_weights(sd: Mapping[str, torch.Tensor], key: re.Pattern[str], source: str,
                  family: str) -> dict[int, torch.Tensor]:
    """The `weight` tensor of each numbered layer, by number; `key` matches every key of the
    family (group 1: the layer's number, group 2: weight or bias), else a one-line error."""
    weights: dict[int, torch.Tensor] = {}
    for k, v in sd.items():
        m = key.match(k)
        if m is None:
            raise MediadError(f"{source}: not an {family} state dict (unexpected key {k!r})",
                              reason=Reason.BAD_MODEL)
        if m.group(2) == "weight":
            weights[int(m.group(1))] = v
    return weights


def load_checked(net: nn.Module, sd: Mapping[str, torch.Tensor], source: str,
                 family: str) -> nn.Module:
    """Load `sd` into `net` (float32, eval mode), or a one-line error naming the first key
    that is missing, unexpected, of another shape or not a float tensor."""
    expected = net.state_dict()
    missing = sorted(set(expected) - set(sd))
    extra = sorted(set(sd) - set(expected))
    if missing or extra:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
        raise MediadError(f"{source}: not a valid {family} state dict ({what})",
                          reason=Reason.BAD_MODEL)
    for k, v in expected.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise MediadError(
                f"{source}: {k} has shape {tuple(sd[k].shape)}, expected {tuple(v.shape)}",
                reason=Reason.BAD_MODEL,
            )
        if not sd[k].is_floating_point():
            raise MediadError(f"{source}: {k} is not a float tensor", reason=Reason.BAD_MODEL)
    net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    net.eval().requires_grad_(False)
    return net
