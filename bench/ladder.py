#!/usr/bin/env python3
"""A three-rung x264 ladder (720p/480p/360p HLS from one 720p natural-content source) made by
mediad, against the ffmpeg command line doing the same work two ways:

  (a) one ffmpeg command: decode once, split, three scales, three libx264, one hls muxer
      (what mediad does);
  (b) three separate ffmpeg runs, one rendition each (what Unmanic, Tdarr and FileFlows do).

Same encoder settings on every side (libx264 preset faster, the rung's bit rate with a 1.5x
VBV peak, keyframes every 2 s with scene cuts off, 6 s fMP4 segments; audio AAC 128k once).
Runs alternate (a, b, mediad, a, b, mediad, ...); each side prints min/median/max wall time
and the ratios of the medians. Targets on the CPU: mediad <= 1.05 x (a), <= 0.85 x (b).
With --gpu, mediad runs with `--gpu auto` (NVDEC, each rendition scaled in torch on the GPU,
NVENC or, on a GPU without NVENC, libx264 fed frames downloaded at the rendition's size);
target there: <= 0.6 x (b).

    python bench/ladder.py                 # 3 runs each, 30 s source
    python bench/ladder.py --runs 5 --seconds 20
    python bench/ladder.py --gpu           # on a machine with an NVIDIA GPU
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transcode_vs_ffmpeg import (  # noqa: E402 - the sibling benchmark's clip and timing code
    ROOT,
    Run,
    _mediad,
    _versions,
    _warm_cache,
    ffmpeg_exe,
    make_natural,
    timed,
)

RUNGS = [(720, 1280, "3000k"), (480, 854, "1200k"), (360, 640, "800k")]
FPS = 30  # make_natural's rate
GOP = 2 * FPS
X264 = ["-preset", "faster", "-g", str(GOP), "-keyint_min", str(GOP), "-sc_threshold", "0",
        "-forced-idr", "1"]
HLS = ["-f", "hls", "-hls_time", "6", "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4",
       "-hls_flags", "independent_segments"]
TARGET_ONE_COMMAND, TARGET_SEPARATE, TARGET_GPU_SEPARATE = 1.05, 0.85, 0.6
PROFILE = "ladder-x264.toml"


def _rate(text: str) -> int:
    return int(text[:-1]) * 1000


def one_command(src: Path, out: Path) -> list[str]:
    """ffmpeg's own ladder: one decode, split into three scales and three encoders."""
    split = f"[0:v]split={len(RUNGS)}" + "".join(f"[s{i}]" for i in range(len(RUNGS))) + ";" + \
        ";".join(f"[s{i}]scale={w}:{h}:flags=bicubic[v{i}]" for i, (h, w, _) in enumerate(RUNGS))
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", str(src),
            "-filter_complex", split]
    for i, (_, _, rate) in enumerate(RUNGS):
        args += ["-map", f"[v{i}]", f"-c:v:{i}", "libx264", f"-b:v:{i}", rate,
                 f"-maxrate:v:{i}", str(int(_rate(rate) * 1.5)),
                 f"-bufsize:v:{i}", str(int(_rate(rate) * 3))]
    args += ["-map", "0:a:0", "-c:a", "aac", "-b:a", "128k", *X264, *HLS,
             "-master_pl_name", "master.m3u8",
             "-var_stream_map", "a:0,agroup:aud " + " ".join(f"v:{i},agroup:aud"
                                                            for i in range(len(RUNGS))),
             "-hls_segment_filename", str(out / "%v" / "seg%05d.m4s"), str(out / "%v" / "index.m3u8")]
    return args


def separate(src: Path, out: Path, rung: tuple[int, int, str]) -> list[str]:
    """One rendition per ffmpeg run, with its own audio, as a job-per-output tool does."""
    h, w, rate = rung
    return [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", str(src),
            "-vf", f"scale={w}:{h}:flags=bicubic", "-c:v", "libx264", "-b:v", rate,
            "-maxrate", str(int(_rate(rate) * 1.5)), "-bufsize", str(int(_rate(rate) * 3)),
            *X264, "-c:a", "aac", "-b:a", "128k", *HLS,
            "-hls_segment_filename", str(out / f"{h}p-%05d.m4s"), str(out / f"{h}p.m3u8")]


def _write_profile(folder: Path) -> Path:
    rungs = "".join(f'[[renditions]]\nheight = {h}\nbitrate = "{rate}"\n\n' for h, _, rate in RUNGS)
    path = folder / PROFILE
    # speed "fast" is libx264's preset "faster" (encoders.X26X_PRESETS), the CLI sides' preset.
    path.write_text('container = "hls"\n\n[video]\ncodec = "h264"\nspeed = "fast"\n\n'
                    f'{rungs}[audio]\ncodec = "aac"\nbitrate = "128k"\n\n'
                    "[package]\nsegment_seconds = 6\nkeyframe_seconds = 2\n")
    return path


def _bytes(folder: Path) -> int:
    """Segment bytes written (the same encoder work gives about the same size)."""
    return sum(p.stat().st_size for p in folder.rglob("*.m4s"))


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _summary(runs: list[Run]) -> str:
    walls = [r.wall for r in runs]
    return f"min {min(walls):.2f} / median {statistics.median(walls):.2f} / max {max(walls):.2f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--mediad-root", type=Path, default=ROOT)
    ap.add_argument("--gpu", action="store_true", help="mediad on the GPU (--gpu auto)")
    args = ap.parse_args()
    src = make_natural((1280, 720), args.seconds)
    _warm_cache(src)
    work = Path(tempfile.mkdtemp(prefix="mediad-ladder-"))
    profile = _write_profile(work)
    md_cmd, md_env = _mediad(src, str(profile), work / "mediad", args.mediad_root)
    md_cmd = [c for c in md_cmd if c != "--overwrite"]
    if args.gpu:
        md_cmd[md_cmd.index("--gpu") + 1] = "auto"
    a_runs, b_runs, md_runs = [], [], []
    for i in range(args.runs):
        a_runs.append(timed(one_command(src, _fresh(work / "one") / "")))
        b_out = _fresh(work / "separate")
        b = [timed(separate(src, b_out, rung)) for rung in RUNGS]
        b_runs.append(Run(sum(r.wall for r in b), sum(r.cpu for r in b), max(r.rss for r in b),
                          max(r.others for r in b)))
        shutil.rmtree(work / "mediad", ignore_errors=True)
        md_runs.append(timed(md_cmd, md_env, args.mediad_root))
        sizes = {k: _bytes(work / k) for k in ("one", "separate", "mediad")}
        print(f"  run {i + 1}/{args.runs}: one command {a_runs[-1].wall:.2f} s, three runs "
              f"{b_runs[-1].wall:.2f} s, mediad {md_runs[-1].wall:.2f} s; bytes written "
              f"{sizes['one']:,} / {sizes['separate']:,} / {sizes['mediad']:,}", flush=True)
    med = {k: statistics.median(r.wall for r in v)
           for k, v in (("a", a_runs), ("b", b_runs), ("md", md_runs))}
    print(f"\n== ladder 720/480/360 x264 HLS from {src.name} ({args.runs} alternating runs)")
    print(_versions())
    print(f"(a) ffmpeg, one command:   {_summary(a_runs)}, CPU {statistics.median(r.cpu for r in a_runs):.1f} s")
    print(f"(b) ffmpeg, three runs:    {_summary(b_runs)}, CPU {statistics.median(r.cpu for r in b_runs):.1f} s")
    print(f"mediad:                    {_summary(md_runs)}, CPU {statistics.median(r.cpu for r in md_runs):.1f} s")
    ra, rb = med["md"] / med["a"], med["md"] / med["b"]
    print(f"mediad / (a) = {ra:.3f} (target <= {TARGET_ONE_COMMAND}: "
          f"{'PASS' if ra <= TARGET_ONE_COMMAND else 'MISS'})")
    target_b = TARGET_GPU_SEPARATE if args.gpu else TARGET_SEPARATE
    print(f"mediad{' (--gpu auto)' if args.gpu else ''} / (b) = {rb:.3f} (target <= {target_b}: "
          f"{'PASS' if rb <= target_b else 'MISS'})")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
