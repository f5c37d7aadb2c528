"""NVENC session budget: how a job may use the GPU, given the NVENC sessions already in use."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from mediad.profiles import Profile


@dataclass(frozen=True)
class Slot:
    """How one job runs: its `gpu` argument, the NVENC session it holds, and NVENC withheld."""

    gpu: str  # the transcode's --gpu value: "auto" or a device index
    nvenc_device: int | None = None  # the GPU whose NVENC session the job holds
    no_nvenc: str | None = None  # why the job must not open NVENC (the budget); None: it may


def wants_nvenc(profile: Profile) -> bool:
    """True when the profile may open an NVENC session (encodes video, GPU allowed)."""
    return profile.video.codec != "copy" and profile.video.encoder != "cpu"


def choose_gpu(profile: Profile, devices: Sequence[int], in_use: Mapping[int, int], budget: int,
               overflow: Literal["cpu", "wait"]) -> Slot | None:
    """The job's slot; None: wait for an NVENC session.

    `devices` are the GPUs that have NVENC; with none (no GPU, or only H100-class GPUs without
    an encoder) every job gets gpu="auto" and the engine decides (NVDEC decode, CPU encode).
    A job that may use NVENC goes to the least busy GPU with a free session. When every GPU is at
    its budget it encodes in software now (overflow "cpu") or waits (overflow "wait"); a profile
    that requires NVENC (encoder = "gpu") always waits for a session. Only NVENC is withheld:
    NVDEC and model stages still use the GPU.
    """
    if not wants_nvenc(profile) or not devices:
        return Slot("auto")
    if budget > 0:
        device = min(devices, key=lambda d: (in_use.get(d, 0), d))
        if in_use.get(device, 0) < budget:
            return Slot(str(device), device)
        if profile.video.encoder == "gpu" or overflow == "wait":
            return None
        return Slot("auto", no_nvenc=f"every GPU has its {budget} NVENC sessions in use "
                                     "(daemon.nvenc_sessions)")
    # NVENC off: a profile that requires it then fails with this reason.
    return Slot("auto", no_nvenc="NVENC is off (daemon.nvenc_sessions = 0)")
