"""NVENC session budget: which `gpu=` a job runs with, given the sessions already in use."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from mediad.profiles import Profile


def wants_nvenc(profile: Profile) -> bool:
    """True when the profile may open an NVENC session (encodes video, GPU allowed)."""
    return profile.video.codec != "copy" and profile.video.encoder != "cpu"


def choose_gpu(profile: Profile, devices: Sequence[int], in_use: Mapping[int, int], budget: int,
               overflow: Literal["cpu", "wait"]) -> tuple[str | None, int | None]:
    """(gpu argument for transcode, device whose NVENC session it holds); (None, None): wait.

    `devices` are the GPUs that have NVENC; with none (no GPU, or only H100-class GPUs without
    an encoder) every job gets gpu="auto" and the engine decides (NVDEC decode, CPU encode).
    A job that may use NVENC goes to the least busy GPU with a free session. When every GPU is at
    its budget it runs on the CPU (`gpu="none"`, overflow "cpu") or waits (overflow "wait");
    a profile that requires NVENC (encoder = "gpu") always waits for a session.
    """
    if not wants_nvenc(profile) or not devices:
        return "auto", None
    if budget > 0:
        device = min(devices, key=lambda d: (in_use.get(d, 0), d))
        if in_use.get(device, 0) < budget:
            return str(device), device
        if profile.video.encoder == "gpu" or overflow == "wait":
            return None, None
    # NVENC off (budget 0) or over budget with overflow "cpu": the engine encodes in software
    # (a profile that requires NVENC then fails with the engine's reason, which says why).
    return "none", None
