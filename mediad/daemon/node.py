"""`mediad node`: join (or start) the Ray cluster the daemon's Ray executor places jobs on,
declaring what this machine really has, as `mediad gpus` finds it by trying:

- `num_gpus`: the CUDA devices;
- `nvenc_<codec>` (h264, hevc, av1): NVENC sessions per codec, the per-GPU budget times the
  GPUs whose NVENC opened for that codec (0 on an H100/H200/A100: they have no NVENC);
- `nvdec`: the GPUs whose NVDEC decoded.

It is a thin wrapper: it builds the `ray start --block` command and becomes it (exec), so
systemd supervises Ray itself (systemd/mediad-node.service).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mediad.errors import MediadError, Reason
from mediad.gpu.records import CODECS

NVDEC_RESOURCE = "nvdec"


def nvenc_resource(codec: str) -> str:
    """The custom resource a node declares per NVENC session for `codec`."""
    return f"nvenc_{codec}"


@dataclass(frozen=True)
class Declared:
    """What a node declares to the cluster, and how each figure was found."""

    num_gpus: int = 0
    resources: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def probe_machine(sessions: int) -> Declared:
    """This machine's GPUs, NVENC sessions per codec (`sessions` per GPU that opened it) and
    NVDEC, found as `mediad gpus` finds them."""
    from mediad.gpu import capabilities, read_telemetry

    records, why = read_telemetry()
    devices = sorted(r.cuda_index for r in records if r.cuda_index is not None)
    if not devices:
        return Declared(notes=(f"no NVIDIA GPU ({why or 'none found'}): a CPU node",))
    resources: dict[str, float] = {}
    notes = []
    for device in devices:
        caps = capabilities(device)
        for codec in CODECS:
            cap = caps.nvenc.get(codec)
            if cap is not None and cap.ok:
                resources[nvenc_resource(codec)] = resources.get(nvenc_resource(codec), 0) + sessions
        if any(c.ok for c in caps.nvdec.values()):
            resources[NVDEC_RESOURCE] = resources.get(NVDEC_RESOURCE, 0) + 1
        if not any(c.ok for c in caps.nvenc.values()):
            notes.append(f"GPU {device}: no NVENC (jobs here encode in software)")
    return Declared(num_gpus=len(devices), resources=resources, notes=tuple(notes))


def parse_declare(items: Sequence[str]) -> dict[str, float]:
    """`name=amount` pairs (--declare) as resources; a one-line error for anything else."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, amount = item.partition("=")
        try:
            value = float(amount)
        except ValueError:
            value = -1.0
        if not sep or not name or value < 0:
            raise MediadError(f"--declare {item!r}: expected NAME=AMOUNT (e.g. nvenc_h264=3)",
                              reason=Reason.BAD_REQUEST)
        out[name] = value
    return out


def ray_start_command(declared: Declared, *, address: str | None, head: bool, port: int,
                      node_ip: str | None, num_cpus: int | None, extra: Sequence[str]) -> list[str]:
    """The `ray start --block` command that makes this machine a node declaring `declared`."""
    ray = shutil.which("ray", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if ray is None:
        raise MediadError("the `ray` command is not installed: pip install 'mediad[cluster]'",
                          reason=Reason.BAD_CONFIG)
    command = [ray, "start", "--block", "--disable-usage-stats", f"--num-gpus={declared.num_gpus}",
               f"--resources={json.dumps(declared.resources, sort_keys=True)}"]
    if head:
        command += ["--head", f"--port={port}", "--include-dashboard=false"]
    elif address:
        command.append(f"--address={address}")
    else:
        raise MediadError("give the cluster's --address (host:port of its head), or --head",
                          reason=Reason.BAD_REQUEST)
    if node_ip:
        command.append(f"--node-ip-address={node_ip}")
    if num_cpus is not None:
        command.append(f"--num-cpus={num_cpus}")
    return command + list(extra)


def declared_for(sessions: int, declare: dict[str, float], probe: bool) -> Declared:
    """The probe's findings with --declare's figures over them (by hand, or a CPU stand-in)."""
    found = probe_machine(sessions) if probe else Declared(notes=("probe skipped (--no-probe)",))
    num_gpus = int(declare.pop("GPU", found.num_gpus))
    return Declared(num_gpus=num_gpus, resources={**found.resources, **declare},
                    notes=found.notes + tuple(f"{k}={v:g} declared by hand" for k, v in declare.items()))
