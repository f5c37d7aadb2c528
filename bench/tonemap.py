"""Tone-mapping benchmark: frames/s of the HDR -> SDR torch operation (media.tonemap).

Usage: python bench/tonemap.py [--size 1920x1080] [--frames 20] [--cpu-only]

Times `tonemap.tonemap_planes` (P010 BT.2020 PQ planes -> BT.709 8-bit code values: YUV -> R'G'B',
PQ EOTF, gamut matrix, BT.2390 EETF on max(R,G,B), BT.1886, R'G'B' -> YUV 4:2:0), float32,
on planes already on the device: the torch operation alone, no decode, encode or host frame
copy. The planes are a PQ picture with highlights (a gradient from 0 to 4000 nits and noise).
After 2 warm-up calls, `--frames` calls are timed between two device synchronisations;
frames/s = frames / wall time; on the CPU also the process's CPU time per frame, which other
processes on shared cores hardly change (threads / CPU time: the rate on idle cores). CPU always (torch's default thread count); CUDA when
torch.cuda.is_available() and not --cpu-only (otherwise it says so and exits 0).
"""

from __future__ import annotations

import argparse
import os
import platform
import time


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _planes(width: int, height: int, device: str):  # noqa: ANN202
    import torch

    from mediad.media import color, tonemap
    from mediad.media.gpu_frames import FramePlanes

    gen = torch.Generator().manual_seed(1)
    ramp = torch.linspace(0.0, 4000.0, width).expand(height, width)
    nits = torch.stack([ramp, ramp * 0.8, ramp * 0.6]) * (0.5 + torch.rand(3, height, width,
                                                                             generator=gen))
    rgb = tonemap.pq_inverse_eotf(nits)
    y, uv = color.rgb_to_p010(rgb, matrix="bt2020")
    return FramePlanes(y.to(device), uv.to(device), "p010le", "bt2020", False)


def measure(device: str, width: int, height: int, frames: int) -> tuple[float, float]:
    """(frames/s, CPU seconds per frame) of tonemap_planes at width x height on `device`."""
    import torch

    from mediad.media import tonemap

    tm = tonemap.tonemap_plan("smpte2084", None)
    planes = _planes(width, height, device)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.inference_mode():
        for _ in range(2):
            tonemap.tonemap_planes(planes, tm)
        sync()
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(frames):
            tonemap.tonemap_planes(planes, tm)
        sync()
        return frames / (time.perf_counter() - start), (time.process_time() - cpu) / frames


def main() -> None:
    """Print frames/s on the CPU (and CUDA when there is one)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--cpu-only", action="store_true")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    import torch

    print(f"CPU: {_cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)")
    fps, cpu = measure("cpu", width, height, args.frames)
    threads = torch.get_num_threads()
    # CPU seconds per frame hardly change when other processes share the cores; wall time does.
    print(f"tonemap_planes cpu  {width}x{height} float32: {fps:.1f} frames/s "
          f"({1000 / fps:.0f} ms/frame wall, {cpu * 1000:.0f} ms CPU/frame: "
          f"{threads / cpu:.1f} frames/s on {threads} idle cores)")
    if args.cpu_only:
        return
    if not torch.cuda.is_available():
        print("no CUDA device: GPU figures not measured")
        return
    print(f"GPU: {torch.cuda.get_device_name(0)}")
    for w, h in ((width, height), (3840, 2160)):
        fps, _ = measure("cuda:0", w, h, max(args.frames, 100))
        print(f"tonemap_planes cuda {w}x{h} float32: {fps:.1f} frames/s")


if __name__ == "__main__":
    main()
