"""GPU path benchmark: NVDEC decode vs software decode vs ffmpeg's CUDA decode, and a GPU-resident
frame pipeline vs the same pipeline with a host round trip per frame.

Usage: python bench/gpu.py [--seconds 10] [--codec h264|hevc] [--runs 3] [--device auto|N]
                           [--ffmpeg PATH] [--json FILE] [--strict]

The input is a 1920x1080 30 fps clip made here with PyAV (moving pattern, libx264/libx265).
Decode: frames/s of PyAV + NVDEC (frames left on the GPU), PyAV software decode (all cores), and
`ffmpeg -hwaccel cuda -hwaccel_output_format cuda -i IN -f null -` (its own -benchmark rtime);
ffmpeg is imageio_ffmpeg.get_ffmpeg_exe() unless --ffmpeg names another.
Pipeline: decode -> RGB -> resize to 1280x720 -> NV12 frame, (a) with every step on the GPU
(NVDEC frames through DLPack, out as CUDA frames ready for NVENC) and (b) with NVDEC frames
downloaded, uploaded for the same torch work, and the result downloaded again.
Targets: NVDEC >= 0.90 x ffmpeg's CUDA decode rate; GPU-resident >= 2.0 x host round trip.
Without CUDA it says so and exits 0. --strict exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

WIDTH, HEIGHT, FPS = 1920, 1080, 30
OUT_W, OUT_H = 1280, 720
NVDEC_TARGET, RESIDENT_TARGET = 0.90, 2.0


def cuda_or_reason(request: str) -> tuple[int | None, str]:
    """The CUDA device to use, or None and why there is none."""
    try:
        import torch
    except ImportError:
        return None, "torch is not installed"
    if not torch.cuda.is_available():
        return None, f"torch {torch.__version__} sees no CUDA device"
    from mediad import gpu

    device, why = gpu.choose_device(request)
    return device, why


def make_input(path: Path, frames: int, codec: str) -> None:
    """A 1080p clip with motion everywhere, so decoders do real work."""
    import av
    import numpy as np

    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([xx * 255 // WIDTH, yy * 255 // HEIGHT,
                     (128 + 90 * np.sin((xx + yy) / 23.0))], -1).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 24, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    encoder = {"h264": "libx264", "hevc": "libx265"}[codec]
    with av.open(str(path), "w") as out:
        s = out.add_stream(encoder, rate=FPS)
        s.width, s.height, s.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        s.options = {"preset": "veryfast", "crf": "20"} if codec == "h264" else {
            "preset": "veryfast", "crf": "22", "x265-params": "log-level=error"}
        for i in range(frames):
            img = np.roll(base, 8 * i, axis=1)
            img = img + np.roll(noise, 3 * i, axis=0)  # texture so the bitrate is realistic
            box = (i * 13) % (WIDTH - 200)
            img[400:600, box:box + 200] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            out.mux(s.encode(frame))
        out.mux(s.encode(None))


def timed_decode(path: Path, hwaccel: Any, thread_type: str | None) -> tuple[int, float, str]:
    """(frames, seconds, first frame's format) of decoding every frame with PyAV."""
    import av
    import torch

    start = time.perf_counter()
    frames, fmt = 0, "?"
    with av.open(str(path), hwaccel=hwaccel) as src:
        stream = src.streams.video[0]
        if thread_type:
            stream.thread_type = thread_type
        for frame in src.decode(stream):
            if frames == 0:
                fmt = frame.format.name
            frames += 1
    torch.cuda.synchronize()  # NVDEC's last copies are asynchronous
    return frames, time.perf_counter() - start, fmt


def ffmpeg_exe(explicit: str | None) -> tuple[str | None, str]:
    """The ffmpeg binary: --ffmpeg, else imageio-ffmpeg's, else one on PATH."""
    if explicit:
        return explicit, "--ffmpeg"
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe(), "imageio-ffmpeg"
    except (ImportError, RuntimeError) as e:
        found = shutil.which("ffmpeg")
        return (found, "PATH") if found else (None, f"no ffmpeg ({e})")


def ffmpeg_decode(exe: str, path: Path, device: int | None) -> float:
    """Seconds ffmpeg reports (-benchmark rtime) for decoding `path` into the null muxer."""
    cmd = [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-benchmark"]
    if device is not None:
        cmd += ["-hwaccel", "cuda", "-hwaccel_output_format", "cuda",
                "-hwaccel_device", str(device)]
    cmd += ["-i", str(path), "-f", "null", "-"]
    start = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    if run.returncode != 0:
        raise RuntimeError(run.stderr.strip().splitlines()[-1] if run.stderr.strip() else
                           f"exit {run.returncode}")
    m = re.search(r"rtime=([\d.]+)s", run.stderr)
    return float(m.group(1)) if m else wall


def pipeline_resident(path: Path, device: int) -> tuple[int, float]:
    """decode -> RGB -> resize -> NV12 CUDA frame, all on the GPU."""
    import av
    import torch

    from mediad import gpu
    from mediad.media.gpu_frames import GpuVideoTransform

    t = GpuVideoTransform(model=lambda rgb: rgb, size=(OUT_W, OUT_H), mode="bilinear")
    start = time.perf_counter()
    frames = 0
    with av.open(str(path), hwaccel=gpu.cuda_hwaccel(device, allow_software_fallback=False)) as src:
        stream = src.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in src.decode(stream):
            out = t(frame)
            if frames == 0 and out.format.name != "cuda":
                raise RuntimeError(f"GPU-resident pipeline produced {out.format.name} frames")
            frames += 1
    torch.cuda.synchronize()
    return frames, time.perf_counter() - start


def pipeline_round_trip(path: Path, device: int) -> tuple[int, float]:
    """The same work, but every frame goes GPU -> host -> GPU -> host."""
    import av
    import torch
    from av.codec.hwaccel import HWAccel

    from mediad.media.gpu_frames import GpuVideoTransform, planes_to_frame

    t = GpuVideoTransform(device=f"cuda:{device}", model=lambda rgb: rgb, size=(OUT_W, OUT_H),
                          mode="bilinear")
    # Not hw-owned: PyAV downloads each NVDEC frame to a software frame (the first copy).
    hw = HWAccel("cuda", device=device, allow_software_fallback=False)
    start = time.perf_counter()
    frames = 0
    with av.open(str(path), hwaccel=hw) as src:
        stream = src.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in src.decode(stream):
            p = t.output_planes(t.planes(frame))  # .planes() uploads to the GPU
            planes_to_frame(p.y.cpu(), p.uv.cpu(), p.fmt, frame.pts, frame.time_base)
            frames += 1
    torch.cuda.synchronize()
    return frames, time.perf_counter() - start


def best_fps(runs: list[tuple[int, float]]) -> float:
    """Median frames/s over runs."""
    return statistics.median(n / s for n, s in runs)


def main() -> int:
    """Run the benchmark and print rates and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10, help="input length (30 fps)")
    ap.add_argument("--codec", choices=["h264", "hevc"], default="h264")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="auto", help="auto or a CUDA device number")
    ap.add_argument("--ffmpeg", default=None, help="ffmpeg binary (default: imageio-ffmpeg's)")
    ap.add_argument("--input", type=Path, help="use this file instead of generating one")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()

    device, why = cuda_or_reason(args.device)
    if device is None:
        print(f"bench/gpu.py: no CUDA GPU ({why}); nothing to measure.")
        return 0

    import av
    import torch

    from mediad import gpu

    results: dict[str, Any] = {"device": device, "device_name": torch.cuda.get_device_name(device),
                               "torch": torch.__version__, "pyav": av.__version__,
                               "ffmpeg_libs": str(av.ffmpeg_version_info),
                               "codec": args.codec, "runs": args.runs, "cpus": os.cpu_count()}
    records, _ = gpu.read_telemetry()
    for r in records:
        if r.cuda_index == device:
            results["nvml"] = {"name": r.name, "has_nvenc": r.has_nvenc}
    with tempfile.TemporaryDirectory(prefix="mediad-gpu-bench-") as tmp:
        src = args.input or Path(tmp) / f"input-{args.codec}.mkv"
        if args.input is None:
            t0 = time.perf_counter()
            make_input(src, args.seconds * FPS, args.codec)
            print(f"input: {WIDTH}x{HEIGHT} {args.codec}, {args.seconds * FPS} frames "
                  f"(made in {time.perf_counter() - t0:.1f}s)")
        results["input"] = str(src.name)

        # Decode rates. NVDEC is measured with PyAV's default threading and with frame
        # threads (what the ffmpeg CLI uses); the better one counts.
        nvdec: dict[str, float] = {}
        for label, threads in (("default", None), ("auto", "AUTO")):
            runs = []
            for _ in range(args.runs):
                n, s, fmt = timed_decode(src, gpu.cuda_hwaccel(device, allow_software_fallback=False),
                                         threads)
                if fmt != "cuda":
                    print(f"NVDEC did not produce CUDA frames ({fmt}): {gpu.capabilities(device).nvdec}")
                    return 1
                runs.append((n, s))
            nvdec[label] = best_fps(runs)
        frames = n
        results["frames"] = frames
        nvdec_fps = max(nvdec.values())
        results["nvdec_fps"] = nvdec_fps
        results["nvdec_fps_by_threading"] = nvdec
        sw_runs = [timed_decode(src, None, "AUTO")[:2] for _ in range(args.runs)]
        results["software_fps"] = best_fps(sw_runs)

        exe, where = ffmpeg_exe(args.ffmpeg)
        results["ffmpeg"] = {"binary": exe, "from": where}
        ff_cuda = ff_sw = None
        if exe:
            try:
                ff_cuda = statistics.median(frames / ffmpeg_decode(exe, src, device)
                                            for _ in range(args.runs))
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                results["ffmpeg"]["cuda_error"] = str(e)
            try:
                ff_sw = statistics.median(frames / ffmpeg_decode(exe, src, None)
                                          for _ in range(args.runs))
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                results["ffmpeg"]["software_error"] = str(e)
        results["ffmpeg_cuda_fps"], results["ffmpeg_software_fps"] = ff_cuda, ff_sw

        resident = best_fps([pipeline_resident(src, device) for _ in range(args.runs)])
        trip = best_fps([pipeline_round_trip(src, device) for _ in range(args.runs)])
        results["pipeline_resident_fps"], results["pipeline_round_trip_fps"] = resident, trip

    ratio_ff = nvdec_fps / ff_cuda if ff_cuda else None
    ratio_res = resident / trip if trip else None
    results["nvdec_vs_ffmpeg"] = ratio_ff
    results["nvdec_vs_software"] = nvdec_fps / results["software_fps"]
    results["resident_vs_round_trip"] = ratio_res
    results["targets"] = {
        "nvdec_vs_ffmpeg": {"target": NVDEC_TARGET,
                            "met": None if ratio_ff is None else ratio_ff >= NVDEC_TARGET},
        "resident_vs_round_trip": {"target": RESIDENT_TARGET,
                                   "met": None if ratio_res is None else ratio_res >= RESIDENT_TARGET},
    }

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1f}"

    def verdict(ratio: float | None, target: float) -> str:
        return "not measured" if ratio is None else ("PASS" if ratio >= target else "MISS")

    print(f"GPU: {results['device_name']} (cuda:{device}), torch {torch.__version__}, "
          f"PyAV {av.__version__}, {os.cpu_count()} CPUs, {frames} frames, median of {args.runs}")
    print(f"decode fps: NVDEC (PyAV) {fmt(nvdec_fps)} [default threads {fmt(nvdec['default'])}, "
          f"frame threads {fmt(nvdec['auto'])}]; software (PyAV) {fmt(results['software_fps'])}; "
          f"ffmpeg -hwaccel cuda {fmt(ff_cuda)}; ffmpeg software {fmt(ff_sw)}")
    if ff_cuda is None:
        print(f"  ffmpeg CUDA decode not measured: {results['ffmpeg'].get('cuda_error', where)}")
    ratio_txt = "n/a" if ratio_ff is None else f"{ratio_ff:.3f}"
    print(f"  NVDEC / ffmpeg -hwaccel cuda: {ratio_txt} (target >= {NVDEC_TARGET}) "
          f"{verdict(ratio_ff, NVDEC_TARGET)}")
    print(f"  NVDEC / software decode: {results['nvdec_vs_software']:.2f}")
    print(f"pipeline fps (decode -> RGB -> resize {OUT_W}x{OUT_H} -> NV12): "
          f"GPU-resident {fmt(resident)}; host round trip {fmt(trip)}")
    res_txt = "n/a" if ratio_res is None else f"{ratio_res:.2f}"
    print(f"  GPU-resident / host round trip: {res_txt} (target >= {RESIDENT_TARGET}) "
          f"{verdict(ratio_res, RESIDENT_TARGET)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"results: {args.json}")
    missed = any(t["met"] is False for t in results["targets"].values())
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
