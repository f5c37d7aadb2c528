"""`mediad gpus`: devices, telemetry, capabilities and the --gpu auto choice."""

from __future__ import annotations

import os
from typing import Any

from mediad.gpu.device import pick_device
from mediad.gpu.records import BUSY, ERROR, OK, UNAVAILABLE, UNSUPPORTED
from mediad.gpu.telemetry import _nvml_value, _text, read_telemetry
from mediad.gpu.trials import capabilities


def _system_versions() -> dict[str, str | None]:
    import pynvml

    driver = _nvml_value(pynvml.nvmlSystemGetDriverVersion)
    cuda = _nvml_value(pynvml.nvmlSystemGetCudaDriverVersion)
    return {
        "driver_version": _text(driver) if driver is not None else None,
        "cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else None,
    }


def gpus_report(probe: bool = True) -> dict:
    """Devices, telemetry, capabilities (when `probe`) and the --gpu auto choice, as plain data."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    report: dict[str, Any] = {"available": False, "reason": None, "driver_version": None,
                              "cuda_driver_version": None, "cuda_visible_devices": env,
                              "probed": probe, "devices": [], "auto": None}
    records, why = read_telemetry()
    if not records:
        report["reason"] = why
        report["auto"] = {"device": None, "reason": why}
        return report
    report.update(_system_versions())
    devices = []
    for r in records:
        entry = r.to_dict()
        entry["capabilities"] = (capabilities(r.cuda_index).to_dict()
                                 if probe and r.cuda_index is not None else None)
        devices.append(entry)
    report["devices"] = devices
    visible = [r for r in records if r.cuda_index is not None]
    report["available"] = bool(visible)
    if not visible:
        report["reason"] = "CUDA_VISIBLE_DEVICES hides every GPU"
        report["auto"] = {"device": None, "reason": report["reason"]}
    else:
        index, reason = pick_device(visible)
        report["auto"] = {"device": index, "reason": reason}
    return report


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / (1 << 30):.1f} GiB"


def _pct(n: int | None) -> str:
    return "n/a" if n is None else f"{n}%"


def _cap_cell(c: dict) -> str:
    status = c.get("status") or (OK if c.get("ok") else ERROR)
    return {OK: "yes", UNSUPPORTED: "no (not on this GPU)", BUSY: "busy (retry later)",
            UNAVAILABLE: "n/a"}.get(status, "error")


def format_gpus(report: dict) -> str:
    """Human-readable text of a gpus_report()."""
    if not report.get("devices"):
        return (f"No NVIDIA GPU: {report.get('reason') or 'none found'}.\n"
                "mediad will decode and encode on the CPU.")
    env = report.get("cuda_visible_devices")
    head = (f"NVIDIA driver {report.get('driver_version') or '?'}, "
            f"CUDA {report.get('cuda_driver_version') or '?'}; "
            f"{len(report['devices'])} GPU(s); CUDA_VISIBLE_DEVICES "
            + ("unset" if env is None else repr(env)))
    lines = [head]
    for d in report["devices"]:
        where = f"cuda:{d['cuda_index']}" if d["cuda_index"] is not None else "hidden"
        lines.append(f"GPU {d['index']} [{where}]  {d['name']}  {d['uuid']}")
        lines.append(f"  memory    {_gib(d['memory_free'])} free of {_gib(d['memory_total'])}")
        clock = (f"{d['clock_video_mhz']}/{d['clock_video_max_mhz']} MHz"
                 if d.get("clock_video_mhz") is not None else "n/a")
        lines.append(f"  load      SM {_pct(d['util_gpu'])}, encoder {_pct(d['util_encoder'])}, "
                     f"decoder {_pct(d['util_decoder'])}, video clock {clock}")
        if d.get("has_nvenc") is False:
            lines.append("  encoder   no NVENC engine on this GPU (decode-only: normal for "
                         "H100/H200/A100)")
        else:
            lines.append(f"  encoder   {d['encoder_sessions'] or 0} session(s), "
                         f"{d['encoder_fps'] or 0} fps average, capacity left "
                         f"{_pct(d['encoder_capacity'])}")
        for s in d.get("sessions") or []:
            lines.append(f"            pid {s['pid']} {s['codec']} {s['width']}x{s['height']} "
                         f"{s['fps']} fps")
        caps = d.get("capabilities")
        if caps:
            for kind in ("nvenc", "nvdec"):
                cells = "  ".join(f"{codec} {_cap_cell(c)}" for codec, c in caps[kind].items())
                lines.append(f"  {kind.upper():8}  {cells}")
                for codec, c in caps[kind].items():
                    if c.get("status") in (ERROR, BUSY):
                        lines.append(f"            {codec}: {c['reason']}")
        elif d["cuda_index"] is not None and not report.get("probed", True):
            lines.append("  NVENC/NVDEC not probed (--no-probe)")
    auto = report.get("auto") or {}
    if auto.get("device") is not None:
        lines.append(f"--gpu auto: {auto['reason']}")
    else:
        lines.append(f"--gpu auto: CPU ({auto.get('reason') or 'no visible GPU'})")
    return "\n".join(lines)
