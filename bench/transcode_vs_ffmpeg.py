"""mediad transcode vs the ffmpeg command line on the same input: wall time and peak memory.

Usage: python bench/transcode_vs_ffmpeg.py [--seconds 20] [--size 1280x720] [--runs 3] [--input FILE]

Both sides do the same work: libx264 preset `faster` (mediad speed = "fast"), crf 23, audio copied,
MP4 out. The ffmpeg binary comes from the imageio-ffmpeg package. Target: mediad within 5% of
ffmpeg's wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROFILE = HERE / "profiles" / "cpu-x264-fast.toml"


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped by imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def make_input(path: Path, seconds: int, size: str) -> None:
    """A synthetic clip with motion (testsrc2) and a tone, encoded H.264 + AAC."""
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={size}:rate=30", "-f", "lavfi", "-i", "sine=frequency=440",
                    "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", str(path)], check=True)


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode() if proc.stderr else ''}")
    return wall, usage.ru_maxrss / 1024


def main() -> int:
    """Run both sides `--runs` times, alternating, and print medians and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--input", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mediad-bench-") as tmp:
        work = Path(tmp)
        src = args.input or work / "input.mp4"
        if args.input is None:
            make_input(src, args.seconds, args.size)
        ff_out, md_out = work / "ffmpeg.mp4", work / "mediad.mp4"
        ff_cmd = [ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), "-c:v", "libx264",
                  "-preset", "faster", "-crf", "23", "-c:a", "copy", str(ff_out)]
        md_cmd = [sys.executable, "-m", "mediad", "transcode", str(src), "-p", str(PROFILE),
                  "-o", str(md_out), "--gpu", "none", "--overwrite", "--no-progress"]
        ff, md = [], []
        for _ in range(args.runs):
            ff.append(timed(ff_cmd))
            md.append(timed(md_cmd))
        ff_t, md_t = statistics.median(t for t, _ in ff), statistics.median(t for t, _ in md)
        ff_m, md_m = max(m for _, m in ff), max(m for _, m in md)
        print(f"input: {src.name} {args.size} {args.seconds}s, {args.runs} runs, {os.cpu_count()} CPUs")
        print(f"ffmpeg: {ff_t:.2f}s wall, peak {ff_m:.0f} MiB")
        print(f"mediad: {md_t:.2f}s wall, peak {md_m:.0f} MiB")
        print(f"wall-time ratio mediad/ffmpeg: {md_t / ff_t:.3f} (target <= 1.05)")
        print(f"peak-memory ratio mediad/ffmpeg: {md_m / ff_m:.2f}")
        print(f"output sizes: ffmpeg {ff_out.stat().st_size} B, mediad {md_out.stat().st_size} B")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
