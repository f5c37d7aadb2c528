"""Profile stages: the frame models a transcode runs in its pass (upscale, classify, shots),
as the `[[stages]]` tables of a profile give them."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, StrictBool, StrictInt, ValidationInfo, field_validator, model_validator

from mediad.models import registry
from mediad.profile_base import FiniteFloat, StrictModel

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]i?[bB]|[bB])?\s*$")
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
# Bitrate limits (bit/s) found by opening the encoders with PyAV. libx264 refuses under 1k and
# nothing is watchable near that; SVT-AV1 refuses a target over 100 Mbit/s.

BUILTIN_UPSCALERS = registry.builtin_names("upscale")
BUILTIN_CLASSIFIERS = ("efficientnet-lite0",)
# Suffixes of the user model files a classify stage accepts (TorchScript or torch.export).
CUSTOM_MODEL_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".pt2")
# Suffixes of the user model files an upscale stage accepts: Real-ESRGAN compact (or waifu2x
# upconv_7) weights as users have them (.pth state dicts, .safetensors) or an ncnn export
# (.param beside its .bin).
UPSCALE_MODEL_SUFFIXES = (".pth", ".safetensors", ".param")



def _builtin_or_file(value: str, info: ValidationInfo, builtins: tuple[str, ...],
                     suffixes: tuple[str, ...], files: str) -> str:
    """A stage's `model`: a built-in name, or a user file of a known kind (profile-relative)."""
    if value in builtins:
        return value
    if not value.lower().endswith(suffixes):
        raise ValueError(f"unknown model {value!r}: use {', '.join(builtins)} or {files}")
    return _profile_relative(value, info)


def _profile_relative(value: str, info: ValidationInfo) -> str:
    """A user file named relative to the profile: the same file whatever the working directory."""
    base = (info.context or {}).get("base")
    path = Path(value).expanduser()
    if base is None or path.is_absolute():
        return str(path)
    return os.path.normpath(Path(base) / path)


def parse_size(text: str) -> int:
    """'4GiB' -> 4 * 2**30, '512MiB' -> 512 * 2**20, '2GB' -> 2 * 10**9 (bytes; bare numbers are bytes)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. '4GiB' or '512MiB')")
    value = int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])
    if value <= 0:
        raise ValueError("must be > 0")
    return value


class _StageCommon(StrictModel):
    """Settings every stage shares; the stage runner applies them, not the models."""

    device: str = "auto"
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    compile: StrictBool = False
    max_gpu_memory: str | None = None
    batch_size: StrictInt | None = Field(default=None, ge=1, le=1024)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not _DEVICE.match(v):
            raise ValueError(f"must be auto, cpu, cuda or cuda:N, not {v!r}")
        return v

    @field_validator("max_gpu_memory")
    @classmethod
    def _memory(cls, v: str | None) -> str | None:
        if v is not None:
            parse_size(v)
        return v

    @model_validator(mode="after")
    def _cpu_precision(self) -> _StageCommon:
        if self.device == "cpu" and self.precision == "fp16":
            raise ValueError("fp16 is not supported on the CPU: use fp32 or bf16")
        return self

    @property
    def max_memory_bytes(self) -> int | None:
        """The working-memory cap in bytes (None: no cap beyond what is free)."""
        return parse_size(self.max_gpu_memory) if self.max_gpu_memory else None


class UpscaleStage(_StageCommon):
    """Super-resolution of every frame (changes the frame size)."""

    kind: Literal["upscale"]
    model: str = "realesr-animevideov3"
    scale: Literal[2, 3, 4] = 2

    @field_validator("model")
    @classmethod
    def _model(cls, v: str, info: ValidationInfo) -> str:
        return _builtin_or_file(v, info, BUILTIN_UPSCALERS, UPSCALE_MODEL_SUFFIXES,
                                "a Real-ESRGAN compact .pth / .safetensors file (or an ncnn "
                                ".param beside its .bin)")

    @model_validator(mode="after")
    def _builtin_scale(self) -> UpscaleStage:
        if self.model in BUILTIN_UPSCALERS:
            scales = registry.builtin_model(self.model).scales
            if self.scale not in scales:
                allowed = " or ".join(str(n) for n in scales)
                raise ValueError(f"{self.model} upscales x{allowed} only, not x{self.scale}: "
                                 f"set scale = {scales[-1]} or use realesr-animevideov3")
        return self


class ClassifyStage(_StageCommon):
    """ImageNet (or a user model's) labels for sampled frames, aggregated per shot."""

    kind: Literal["classify"]
    model: str = "efficientnet-lite0"
    labels: str | None = None
    input_size: StrictInt | tuple[StrictInt, StrictInt] | None = None
    # Finite: NaN passes every comparison and would reach the sidecar.
    mean: tuple[FiniteFloat, FiniteFloat, FiniteFloat] | None = None
    std: tuple[FiniteFloat, FiniteFloat, FiniteFloat] | None = None
    every: StrictInt | None = Field(default=None, ge=1)
    every_seconds: FiniteFloat | None = Field(default=None, gt=0)
    top_k: StrictInt = Field(default=5, ge=1, le=100)

    @field_validator("input_size", mode="before")
    @classmethod
    def _input_shape(cls, v: object) -> object:
        # Checked before the union, whose own message is "input_size.int: ... (and 1 more)".
        def is_int(x: object) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        if v is None or is_int(v) or (isinstance(v, list | tuple) and len(v) == 2
                                      and all(is_int(n) for n in v)):
            return v
        raise ValueError("must be one number or [height, width]")

    @field_validator("input_size")
    @classmethod
    def _input_size(cls, v: int | tuple[int, int] | None) -> int | tuple[int, int] | None:
        sizes = (v,) if isinstance(v, int) else (v or ())
        if any(not 8 <= n <= 4096 for n in sizes):
            raise ValueError("must be 8..4096 pixels (one number, or [height, width])")
        return v

    @field_validator("std")
    @classmethod
    def _std(cls, v: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if v is not None and any(x <= 0 for x in v):
            raise ValueError("must be > 0 for every channel")
        return v

    @field_validator("model")
    @classmethod
    def _model_file(cls, v: str, info: ValidationInfo) -> str:
        return _builtin_or_file(v, info, BUILTIN_CLASSIFIERS, CUSTOM_MODEL_SUFFIXES,
                                "a TorchScript (.pt) / torch.export (.pt2) file")

    @field_validator("labels")
    @classmethod
    def _labels_file(cls, v: str | None, info: ValidationInfo) -> str | None:
        return None if v is None else _profile_relative(v, info)

    @model_validator(mode="after")
    def _model(self) -> ClassifyStage:
        if self.every is not None and self.every_seconds is not None:
            raise ValueError("every and every_seconds are exclusive: set one")
        if self.is_custom and self.labels is None:
            raise ValueError("a custom classify model needs labels = \"path/to/labels.txt\"")
        return self

    @property
    def is_custom(self) -> bool:
        """True when `model` names a user file rather than a built-in model."""
        return self.model not in BUILTIN_CLASSIFIERS


class ShotsStage(_StageCommon):
    """Shot-boundary detection (TransNetV2); shots can become chapters in the output."""

    kind: Literal["shots"]
    model: Literal["transnetv2"] = "transnetv2"
    threshold: FiniteFloat = Field(default=0.5, gt=0, lt=1)
    chapters: StrictBool = False


Stage = Annotated[UpscaleStage | ClassifyStage | ShotsStage, Field(discriminator="kind")]
STAGE_KINDS = ("upscale", "classify", "shots")
