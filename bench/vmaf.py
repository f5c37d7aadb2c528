"""VMAF benchmark: VMAF frames/s (vmaf-torch in mediad.models.vmaf vs the ffmpeg binary's
libvmaf) and the time of a target_vmaf search (media.vmaf_search.search) on a camera-like clip.

Usage: python bench/vmaf.py [--size 640x360] [--seconds 6] [--target 93] [--speed faster]

The clip is the tests' camera-like picture (tests/conftest.py camera_filter), written by the
imageio-ffmpeg binary nearly lossless (x264 crf 10); the distorted copy for the frames/s figures
is x264 crf 28. The search runs twice on the same clip: on the whole source (the default for
sources under 24 s) and with 3 samples of 1 s (as a long source is sampled, shortened). Wall
time and the process's CPU time are printed (on shared cores the CPU time moves less).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--target", type=float, default=93.0)
    parser.add_argument("--speed", default="faster")
    args = parser.parse_args()
    w, h = (int(x) for x in args.size.split("x"))

    from conftest import camera_clip, ffmpeg, ffmpeg_exe

    from mediad.gpu import no_gpu
    from mediad.media.plan import make_plan
    from mediad.media.probe import probe
    from mediad.media.vmaf_search import search
    from mediad.models.vmaf import vmaf_files
    from mediad.profiles import Profile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = camera_clip(folder / "s.mp4", "-crf", "10", seconds=args.seconds, size=(w, h),
                             audio=False)
        distorted = folder / "d.mp4"
        ffmpeg("-i", str(source), "-c:v", "libx264", "-crf", "28", str(distorted))
        frames = round(args.seconds * 25)
        t, c = time.monotonic(), _cpu()
        score = vmaf_files(source, distorted)
        wall, cpu = time.monotonic() - t, _cpu() - c
        print(f"vmaf-torch cpu {w}x{h}: {frames / wall:.1f} frames/s wall, "
              f"{cpu / frames * 1000:.0f} CPU ms/frame, VMAF {score.mean:.3f}")
        t = time.monotonic()
        out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(distorted),
                              "-i", str(source), "-lavfi", "[0:v][1:v]libvmaf=n_threads=2",
                              "-f", "null", "-"], capture_output=True, text=True, check=True)
        wall = time.monotonic() - t
        line = [x for x in out.stderr.splitlines() if "VMAF score" in x][-1]
        print(f"libvmaf (2 threads) {w}x{h}: {frames / wall:.1f} frames/s wall, "
              f"{line.split('VMAF score:')[1].strip()}")

        profile = Profile.model_validate({"container": "mp4", "audio": {"codec": "none"},
                                          "video": {"encoder": "cpu", "speed": args.speed,
                                                    "target_vmaf": args.target}})
        plan = make_plan(probe(source), profile, no_gpu("bench"), folder / "o.mp4")
        assert plan.video.vmaf is not None
        sampled = replace(plan, video=replace(plan.video, vmaf=replace(
            plan.video.vmaf, samples=3, sample_seconds=1.0, whole_under=1.0)))
        for name, p in (("whole source", plan), ("3 samples of 1 s", sampled)):
            t, c = time.monotonic(), _cpu()
            choice = search(p, args.seconds)
            wall, cpu = time.monotonic() - t, _cpu() - c
            trials = ", ".join(f"{tr.quality}:{tr.vmaf:.2f}" for tr in choice.trials)
            print(f"search ({name}, x264 {args.speed}, target {args.target:g}): crf "
                  f"{choice.quality} predicted {choice.predicted:.2f}, {len(choice.trials)} "
                  f"trials [{trials}], {wall:.1f}s wall, {cpu:.1f}s CPU")


if __name__ == "__main__":
    main()
