"""mediad transcode vs the ffmpeg command line doing the same job: wall time and peak memory.

Usage: python bench/transcode_vs_ffmpeg.py [--rows ROW,...] [--runs 3] [--seconds 30] [--quick]
                                           [--mediad-root DIR] [--baseline-root DIR]
                                           [--wait-idle S] [--keep] [--list]

Rows (all CPU-only: mediad runs with --gpu none; profiles in bench/profiles/):
  x264-720p    natural 1280x720, libx264 preset faster crf 23, audio copied    time <= 1.03x
  x264-1080p   natural 1920x1080, same job                                      time <= 1.03x
  x265-720p    natural 1280x720, libx265 preset faster crf 28, audio copied    time <= 1.05x
  av1-720p     natural 1280x720, SVT-AV1 preset 9 crf 32, audio copied         time <= 1.05x
  audio-720p   natural 1280x720 MKV with AC-3 audio, video copied, audio
               re-encoded to AAC 128k (mediad copies AAC that is already AAC)  time <= 1.2x
  fixed-360p   natural 640x360, 5 s (always), the x264 job: the per-file cost,
               reported as median(mediad) - median(ffmpeg)                      <= 0.15 s
  testsrc2-720p  the old synthetic row (testsrc2 + sine), the x264 job, for comparison
Every row also has the target peak RSS <= 1.2x ffmpeg's.

Each row runs ffmpeg and mediad alternately (ffmpeg, mediad, ffmpeg, ...) `--runs` times (the
fixed-cost row 3x as often, after one untimed pair, since its differences are tenths of a
second) and prints min/median/max wall time of each side, the ratio of the medians, peak RSS
(ru_maxrss of the child from os.wait4; max over runs) and its ratio, the output sizes, and
PASS/MISS against the row's targets. mediad's time includes everything a user waits for:
Python start-up, probe, plan, the read-back verification of the output and the fsync'd commit.
Shared machines are noisy, so each row also prints the median CPU seconds (user + system) of
each side and how many CPUs other processes kept busy during the runs (/proc/stat busy time
less the child's own CPU time); --wait-idle S waits up to S seconds before each run for them
to go quiet. "others" cannot see other virtual machines on the same host, which on the machine
these figures were first taken on moved the same ffmpeg run by up to 40%: repeat a row, compare
the minimums as well as the medians, and use --baseline-root for before/after comparisons.

"Natural" inputs stand in for camera footage, which this machine has none of: a 3840x2160
photo-like still (multi-octave Perlin terrain, hard-edged regions, fine texture, a vertical
gradient, smooth colour fields) filmed by a virtual camera that pans and zooms slowly (sub-pixel
steps after the downscale), with per-frame film grain, encoded H.264 High at a camera-like bit
rate (6 Mb/s at 720p, scaled by pixel count: 13.5 Mb/s at 1080p; preset medium, B-frames, 2 s
GOP) and stereo 48 kHz AAC of amplitude-modulated tones with noise. It costs about twice as much
to decode as testsrc2 at the same size. Inputs are generated with the imageio-ffmpeg binary once
and cached under bench/_work/ (git-ignored).

The ffmpeg binary (imageio-ffmpeg, FFmpeg 9) is not the FFmpeg build inside PyAV (8.1, with its
own libx264/libx265/SVT-AV1 builds): both sides use the same encoder settings, not the same
library binaries.

--mediad-root DIR runs mediad from another source tree (e.g. a `git archive` of HEAD);
--baseline-root DIR adds a third side, mediad from DIR, to the same alternation, for
before/after figures under the same machine load. --quick: 1 run, 10 s clips. --keep: keep the
outputs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROFILES = HERE / "profiles"
WORK = HERE / "_work"
STILL_SIZE = (3840, 2160)  # the scene is filmed from a still larger than every output size
RSS_TARGET = 1.2
FIXED_SECONDS = 5
FIXED_RUNS_FACTOR = 3

# Same work as bench/profiles/cpu-x264-fast.toml etc. (mediad's speed "fast" is x26x preset
# "faster" and SVT-AV1 preset 9); -nostdin/-v error keep ffmpeg from blocking or chattering.
X264 = ["-c:v", "libx264", "-preset", "faster", "-crf", "23", "-c:a", "copy"]
X265 = ["-c:v", "libx265", "-preset", "faster", "-crf", "28", "-x265-params", "log-level=error",
        "-tag:v", "hvc1", "-c:a", "copy"]
AV1 = ["-c:v", "libsvtav1", "-preset", "9", "-crf", "32", "-svtav1-params",
       "enable-stat-report=0", "-c:a", "copy"]
AUDIO = ["-c:v", "copy", "-c:a", "aac", "-b:a", "128k"]


@dataclass(frozen=True)
class Row:
    """One comparison: an input, a mediad profile and the ffmpeg arguments doing the same job."""

    name: str
    source: str  # natural | testsrc2
    size: tuple[int, int]
    profile: str
    ffmpeg_args: list[str]
    target: float  # time ratio (or seconds over ffmpeg for the fixed-cost row)
    fixed_seconds: int | None = None  # the clip length when --seconds does not apply
    source_audio: str = "aac"  # aac (MP4) | ac3 (MKV): audio the profile's AAC must re-encode

    @property
    def is_fixed_cost(self) -> bool:
        return self.fixed_seconds is not None


ROWS = [
    Row("x264-720p", "natural", (1280, 720), "cpu-x264-fast.toml", X264, 1.03),
    Row("x264-1080p", "natural", (1920, 1080), "cpu-x264-fast.toml", X264, 1.03),
    Row("x265-720p", "natural", (1280, 720), "cpu-x265-fast.toml", X265, 1.05),
    Row("av1-720p", "natural", (1280, 720), "cpu-av1-fast.toml", AV1, 1.05),
    Row("audio-720p", "natural", (1280, 720), "audio-aac.toml", AUDIO, 1.2, source_audio="ac3"),
    Row("fixed-360p", "natural", (640, 360), "cpu-x264-fast.toml", X264, 0.15, FIXED_SECONDS),
    Row("testsrc2-720p", "testsrc2", (1280, 720), "cpu-x264-fast.toml", X264, 1.05),
]


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped by imageio-ffmpeg, or the one IMAGEIO_FFMPEG_EXE names
    (imageio-ffmpeg's own override; the GPU machine has the binary carried but not the package)."""
    if exe := os.environ.get("IMAGEIO_FFMPEG_EXE"):
        return exe
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg(args: list[str], out: Path) -> None:
    """Run the generator ffmpeg into a temporary name, then rename: no half-made cache entry."""
    part = out.with_name(f".{out.name}.part{out.suffix}")
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", *args,
                    str(part)], check=True)
    part.rename(out)


# The still: 1) base terrain, Perlin noise with 10 octaves down to ~1 px detail; 2) regions with
# hard edges, low-frequency noise cut into three levels; 3) fine anisotropic texture (grass,
# fabric); 4) a vertical light gradient (sky to ground); U and V are smooth, mildly saturated
# colour fields. Contrast is stretched because Perlin noise alone stays near mid-grey.
_STILL_GRAPH = (
    "[0]lut=y='clip((val-128)*3.2+128,0,255)'[base];"
    "[1]lut=y='if(gt(val,140),215,if(lt(val,115),35,120))'[obj];"
    "[2]lut=y='clip((val-128)*4+128,0,255)'[fine];"
    "[base][obj]blend=all_expr='A*0.55+B*0.45'[y1];"
    "[y1][fine]blend=all_expr='A*0.85+B*0.15'[y2];"
    "[y2]geq=lum='clip(p(X,Y)*0.8+50*(1-Y/H),0,255)'[y];"
    "[3]lut=y='clip((val-128)*1.3+120,0,255)'[u];"
    "[4]lut=y='clip((val-128)*1.3+134,0,255)'[v];"
    "[y][u][v]mergeplanes=0x001020:yuv444p"
)
_PERLIN = [  # (octaves, persistence, xscale, yscale, seed)
    (10, 0.62, 5, 5, 11), (4, 0.5, 3, 3, 22), (3, 0.6, 240, 120, 33), (4, 0.5, 2, 2, 44),
    (4, 0.5, 2, 2, 55),
]

# Camera: slow zoom breathing 1.16-1.28x, a pan across the still with slightly irregular speed
# and a little hand-held wobble; zoompan's integer crop on the 4K still is a fraction of an
# output pixel, and the changing zoom resamples every frame. Then per-frame grain.
_CAMERA = (
    "format=yuv420p,loop=loop=-1:size=1,"
    "zoompan=z='1.22+0.06*sin(2*PI*on/420)'"
    ":x='(iw-iw/zoom)*(0.5+0.42*sin(2*PI*on/1100)+0.01*sin(2*PI*on/37))'"
    ":y='(ih-ih/zoom)*(0.5+0.35*sin(2*PI*on/1700+1)+0.01*sin(2*PI*on/29))'"
    ":d=1:s={w}x{h}:fps=30,noise=alls=9:allf=t+u,format=yuv420p"
)
# Stereo: two tones per channel, amplitude- and frequency-modulated, plus modulated noise.
_AUDIO = (
    "aevalsrc=exprs='0.22*sin(2*PI*220*t)*(0.55+0.45*sin(2*PI*0.7*t))"
    "+0.12*sin(2*PI*(330+25*sin(2*PI*0.3*t))*t)+0.06*(2*random(0)-1)*(0.5+0.5*sin(2*PI*2.3*t))"
    "|0.2*sin(2*PI*277*t)*(0.55+0.45*sin(2*PI*0.45*t))"
    "+0.1*sin(2*PI*(415+30*sin(2*PI*0.25*t))*t)+0.06*(2*random(1)-1)*(0.5+0.5*sin(2*PI*1.7*t))'"
    ":s=48000:c=stereo"
)


def _recipe_tag(*parts: object) -> str:
    """Short hash of a generator recipe: a changed recipe makes a new cache file."""
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:8]


def make_still() -> Path:
    """The 4K photo-like still (cached)."""
    w, h = STILL_SIZE
    path = WORK / f"still-{w}x{h}-{_recipe_tag(_PERLIN, _STILL_GRAPH)}.png"
    if path.exists():
        return path
    WORK.mkdir(parents=True, exist_ok=True)
    inputs: list[str] = []
    for octaves, persistence, xs, ys, seed in _PERLIN:
        inputs += ["-f", "lavfi", "-i", f"perlin=s={w}x{h}:octaves={octaves}:persistence="
                   f"{persistence}:xscale={xs}:yscale={ys}:random_mode=seed:seed={seed}"]
    print(f"generating {path.name} ...", file=sys.stderr, flush=True)
    _ffmpeg([*inputs, "-filter_complex", _STILL_GRAPH, "-frames:v", "1"], path)
    return path


def make_natural(size: tuple[int, int], seconds: int) -> Path:
    """Camera-like H.264 High + AAC clip of the still (cached)."""
    w, h = size
    bitrate = round(6_000_000 * w * h / (1280 * 720))  # 6 Mb/s at 720p, by pixel count
    still = make_still()
    camera = _CAMERA.format(w=w, h=h)
    tag = _recipe_tag(still.name, camera, _AUDIO, bitrate)
    path = WORK / f"natural-{w}x{h}-{seconds}s-{tag}.mp4"
    if path.exists():
        return path
    print(f"generating {path.name} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    _ffmpeg(["-i", str(still), "-f", "lavfi", "-i", _AUDIO, "-filter_complex", f"[0]{camera}[v]",
             "-map", "[v]", "-map", "1:a", "-frames:v", str(seconds * 30), "-t", str(seconds),
             "-c:v", "libx264", "-preset", "medium", "-profile:v", "high", "-b:v", str(bitrate),
             "-maxrate", str(bitrate * 3 // 2), "-bufsize", str(bitrate * 2), "-g", "60",
             "-c:a", "aac", "-b:a", "160k", "-movflags", "+faststart"], path)
    print(f"  {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return path


def with_ac3_audio(clip: Path) -> Path:
    """The clip as MKV with its audio as AC-3 stereo 192k, as a camcorder or TV recording has.

    mediad copies audio that already is the profile's codec, so an AAC source would not be
    re-encoded by mediad while ffmpeg re-encodes it; AC-3 must be re-encoded on both sides.
    """
    path = clip.with_name(f"{clip.stem}-ac3.mkv")
    if not path.exists():
        _ffmpeg(["-i", str(clip), "-map", "0", "-c:v", "copy", "-c:a", "ac3", "-b:a", "192k"],
                path)
    return path


def make_testsrc2(size: tuple[int, int], seconds: int) -> Path:
    """The old synthetic clip (testsrc2 + a 440 Hz tone, H.264 veryfast crf 18 + AAC; cached)."""
    w, h = size
    path = WORK / f"testsrc2-{w}x{h}-{seconds}s.mp4"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        _ffmpeg(["-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate=30", "-f", "lavfi", "-i",
                 "sine=frequency=440", "-t", str(seconds), "-c:v", "libx264", "-preset",
                 "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k"],
                path)
    return path


@dataclass
class Run:
    """One timed child process."""

    wall: float  # seconds
    cpu: float  # user + system seconds (contention inflates these too, less than wall time)
    rss: float  # peak resident set, MiB
    others: float  # CPUs busy with other processes meanwhile (average): the noise of this run


def _busy_seconds() -> float:
    """CPU seconds all CPUs have been busy since boot (/proc/stat; 0 where there is none)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_idle(limit_s: float, others_max: float = 0.25) -> None:
    """Wait (at most limit_s) until other processes use under `others_max` CPUs for 1 s."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = _busy_seconds()
        time.sleep(1.0)
        if _busy_seconds() - before < others_max:
            return


def timed(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Run:
    """Wall seconds and peak RSS of one child process (its own ru_maxrss, from wait4)."""
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a chatty child cannot block
        busy = _busy_seconds()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        busy = _busy_seconds() - busy
        proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait on it again
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n"
                     f"{err.read().decode(errors='replace')}")
    cpu = usage.ru_utime + usage.ru_stime
    return Run(wall, cpu, usage.ru_maxrss / 1024, max(0.0, busy - cpu) / wall)


def _warm_cache(path: Path) -> None:
    """Read the input once so neither side pays for the first read from disk."""
    with open(path, "rb") as f:
        while f.read(1 << 22):
            pass


@dataclass
class Result:
    """Both sides of one row."""

    row: Row
    input: Path
    ffmpeg: list[Run]
    mediad: list[Run]
    ffmpeg_size: int
    mediad_size: int
    baseline: list[Run] | None = None  # mediad from --baseline-root, in the same alternation
    baseline_size: int | None = None

    @staticmethod
    def _stats(runs: list[Run]) -> tuple[float, float, float]:
        walls = [r.wall for r in runs]
        return min(walls), statistics.median(walls), max(walls)

    @property
    def time_ratio(self) -> float:
        return self._stats(self.mediad)[1] / self._stats(self.ffmpeg)[1]

    @property
    def time_delta(self) -> float:
        return self._stats(self.mediad)[1] - self._stats(self.ffmpeg)[1]

    @property
    def rss(self) -> tuple[float, float]:
        return max(r.rss for r in self.ffmpeg), max(r.rss for r in self.mediad)

    @property
    def time_ok(self) -> bool:
        if self.row.is_fixed_cost:
            return self.time_delta <= self.row.target
        return self.time_ratio <= self.row.target

    @property
    def rss_ok(self) -> bool:
        ff, md = self.rss
        return md / ff <= RSS_TARGET


def _mediad(src: Path, profile: str, out: Path, root: Path) -> tuple[list[str], dict[str, str]]:
    """The mediad command and environment that run the mediad package of source tree `root`."""
    cmd = [sys.executable, "-m", "mediad", "transcode", str(src), "-p", str(PROFILES / profile),
           "-o", str(out), "--gpu", "none", "--overwrite", "--no-progress"]
    # An installed package has its bytecode compiled (pip does it at install time); a shell
    # with PYTHONDONTWRITEBYTECODE set would have every run compile mediad from source (~50 ms
    # of a 5 s job), a cost no user pays. Compile it once, and let the runs read it.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "mediad")], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return cmd, {**env, "PYTHONPATH": os.pathsep.join(
        [str(root), *filter(None, [os.environ.get("PYTHONPATH")])])}


def run_row(row: Row, runs: int, seconds: int, work: Path, mediad_root: Path,
            idle_wait: float, baseline_root: Path | None = None) -> Result:
    """Alternate ffmpeg and mediad (and the baseline mediad) on the row's input; first an
    untimed round for the fixed-cost row."""
    length = row.fixed_seconds or seconds
    if row.source == "natural":
        src = make_natural(row.size, length)
        if row.source_audio == "ac3":
            src = with_ac3_audio(src)
    else:
        src = make_testsrc2(row.size, length)
    _warm_cache(src)
    ff_out, md_out = work / f"{row.name}.ffmpeg.mp4", work / f"{row.name}.mediad.mp4"
    ff_cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", str(src),
              *row.ffmpeg_args, str(ff_out)]
    # mediad from the chosen trees, whatever is installed in the virtualenv.
    md_cmd, md_env = _mediad(src, row.profile, md_out, mediad_root)
    base_out = work / f"{row.name}.baseline.mp4"
    base = _mediad(src, row.profile, base_out, baseline_root) if baseline_root else None
    n = runs * FIXED_RUNS_FACTOR if row.is_fixed_cost else runs
    if row.is_fixed_cost:  # untimed: page cache, .pyc files, the dynamic loader's caches
        timed(ff_cmd)
        timed(md_cmd, md_env, mediad_root)
        if base:
            timed(*base, baseline_root)
    ff: list[Run] = []
    md: list[Run] = []
    bl: list[Run] = []
    for i in range(n):
        wait_idle(idle_wait)
        ff.append(timed(ff_cmd))
        wait_idle(idle_wait)
        md.append(timed(md_cmd, md_env, mediad_root))
        line = (f"  {row.name} run {i + 1}/{n}: ffmpeg {ff[-1].wall:.2f} s (others "
                f"{ff[-1].others:.1f} CPUs), mediad {md[-1].wall:.2f} s "
                f"(others {md[-1].others:.1f})")
        if base:
            wait_idle(idle_wait)
            bl.append(timed(*base, baseline_root))
            line += f", baseline {bl[-1].wall:.2f} s (others {bl[-1].others:.1f})"
        print(line, file=sys.stderr, flush=True)
    return Result(row, src, ff, md, ff_out.stat().st_size, md_out.stat().st_size,
                  bl or None, base_out.stat().st_size if base else None)


def _describe_input(path: Path) -> str:
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        mbps = (c.bit_rate or 0) / 1e6
        return (f"{path.name}: {v.codec_context.width}x{v.codec_context.height} "
                f"{v.codec_context.name} {c.duration / 1e6:.1f} s, {mbps:.1f} Mb/s")


def print_result(r: Result) -> None:
    """The row's figures, one block."""
    ff_min, ff_med, ff_max = r._stats(r.ffmpeg)
    md_min, md_med, md_max = r._stats(r.mediad)
    ff_rss, md_rss = r.rss
    print(f"\n== {r.row.name}  ({len(r.ffmpeg)} alternating runs; profile {r.row.profile})")
    print(f"input: {_describe_input(r.input)}")
    ff_cpu, md_cpu = (statistics.median(x.cpu for x in runs) for runs in (r.ffmpeg, r.mediad))
    print(f"ffmpeg: min {ff_min:.2f} / median {ff_med:.2f} / max {ff_max:.2f} s, "
          f"CPU {ff_cpu:.2f} s, peak {ff_rss:.0f} MiB, output {r.ffmpeg_size:,} B")
    print(f"mediad: min {md_min:.2f} / median {md_med:.2f} / max {md_max:.2f} s, "
          f"CPU {md_cpu:.2f} s, peak {md_rss:.0f} MiB, output {r.mediad_size:,} B")
    if r.row.is_fixed_cost:
        print(f"time: mediad - ffmpeg = {r.time_delta:+.3f} s (ratio {r.time_ratio:.3f}); "
              f"target <= {r.row.target:.2f} s: {'PASS' if r.time_ok else 'MISS'}")
    else:
        print(f"time ratio mediad/ffmpeg: {r.time_ratio:.3f}; target <= {r.row.target:.2f}: "
              f"{'PASS' if r.time_ok else 'MISS'}")
    print(f"peak RSS ratio: {md_rss / ff_rss:.2f}; target <= {RSS_TARGET:.1f}: "
          f"{'PASS' if r.rss_ok else 'MISS'}")
    if r.baseline:
        b_min, b_med, b_max = r._stats(r.baseline)
        b_rss = max(x.rss for x in r.baseline)
        b_cpu = statistics.median(x.cpu for x in r.baseline)
        vs = (f"mediad - ffmpeg {b_med - ff_med:+.3f} s" if r.row.is_fixed_cost
              else f"ratio {b_med / ff_med:.3f}")
        print(f"baseline: min {b_min:.2f} / median {b_med:.2f} / max {b_max:.2f} s, "
              f"CPU {b_cpu:.2f} s, peak {b_rss:.0f} MiB, output {r.baseline_size:,} B; {vs}, "
              f"peak RSS ratio {b_rss / ff_rss:.2f}")
    others = [x.others for x in r.ffmpeg + r.mediad + (r.baseline or [])]
    print(f"noise: other processes kept {statistics.median(others):.2f} CPUs busy during a run "
          f"(median; max {max(others):.2f}) of {os.cpu_count()}")


def print_summary(results: list[Result]) -> None:
    """A Markdown table of every row, for docs/benchmarks.md."""
    print("\n| row | input | ffmpeg s (min/med/max) | mediad s (min/med/max) | time | target "
          "| peak MiB ffmpeg / mediad | RSS ratio | output B ffmpeg / mediad | others' CPUs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ff, md = r._stats(r.ffmpeg), r._stats(r.mediad)
        ff_rss, md_rss = r.rss
        if r.row.is_fixed_cost:
            time_cell, target = f"{r.time_delta:+.3f} s", f"<= +{r.row.target:.2f} s"
        else:
            time_cell, target = f"{r.time_ratio:.3f}", f"<= {r.row.target:.2f}"
        w, h = r.row.size
        length = r.row.fixed_seconds or int(round(_duration(r.input)))
        print(f"| {r.row.name} | {r.row.source} {w}x{h} {length} s "
              f"| {ff[0]:.2f} / {ff[1]:.2f} / {ff[2]:.2f} "
              f"| {md[0]:.2f} / {md[1]:.2f} / {md[2]:.2f} "
              f"| **{time_cell}** {'PASS' if r.time_ok else 'MISS'} | {target} "
              f"| {ff_rss:.0f} / {md_rss:.0f} | {md_rss / ff_rss:.2f} "
              f"{'PASS' if r.rss_ok else 'MISS'} | {r.ffmpeg_size:,} / {r.mediad_size:,} "
              f"| {statistics.median(x.others for x in r.ffmpeg + r.mediad):.2f} |")


def _duration(path: Path) -> float:
    import av

    with av.open(str(path)) as c:
        return c.duration / 1e6 if c.duration else 0.0


def _versions() -> str:
    import av

    ff = subprocess.run([ffmpeg_exe(), "-hide_banner", "-version"], capture_output=True,
                        text=True).stdout.split()[2]
    return (f"{platform.machine()}, {os.cpu_count()} CPUs; Python {platform.python_version()}, "
            f"PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}); ffmpeg CLI {ff}")


def main() -> int:
    """Parse the options, run the chosen rows, print each row and a summary table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n")[2])
    ap.add_argument("--rows", default=",".join(r.name for r in ROWS),
                    help="comma-separated rows (default: all)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per side (default 3)")
    ap.add_argument("--seconds", type=int, default=30,
                    help="clip length in seconds, except the fixed-cost row (default 30)")
    ap.add_argument("--quick", action="store_true", help="1 run, 10 s clips")
    ap.add_argument("--mediad-root", type=Path, default=ROOT,
                    help="source tree whose mediad package runs (default: this checkout)")
    ap.add_argument("--baseline-root", type=Path, metavar="DIR",
                    help="also run mediad from this source tree in the same alternation "
                    "(ffmpeg, mediad, baseline, ...): before/after figures from one run")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                    help="before each run wait up to S seconds for other processes to leave the "
                    "CPUs idle (default 0: do not wait)")
    ap.add_argument("--keep", action="store_true", help="keep the outputs (path printed)")
    ap.add_argument("--list", action="store_true", help="list the rows and exit")
    args = ap.parse_args()
    if args.list:
        for r in ROWS:
            print(f"{r.name:14} {r.source} {r.size[0]}x{r.size[1]} {r.profile}  "
                  f"ffmpeg {' '.join(r.ffmpeg_args)}")
        return 0
    if args.quick:
        args.runs, args.seconds = 1, 10
    by_name = {r.name: r for r in ROWS}
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        ap.error(f"unknown rows {', '.join(unknown)} (known: {', '.join(by_name)})")
    if args.runs < 1 or args.seconds < 1:
        ap.error("--runs and --seconds must be at least 1")
    root = args.mediad_root.resolve()
    baseline = args.baseline_root.resolve() if args.baseline_root else None
    for opt, tree in (("--mediad-root", root), ("--baseline-root", baseline)):
        if tree is not None and not (tree / "mediad" / "__init__.py").is_file():
            ap.error(f"{opt} {tree}: no mediad package there")
    print(_versions())
    print(f"mediad from {root}" + (f"; baseline mediad from {baseline}" if baseline else ""))
    tmp = tempfile.mkdtemp(prefix="mediad-bench-")
    results = []
    try:
        for name in names:
            results.append(run_row(by_name[name], args.runs, args.seconds, Path(tmp), root,
                                   args.wait_idle, baseline))
            print_result(results[-1])
        print_summary(results)
    finally:
        if args.keep:
            print(f"outputs kept in {tmp}")
        else:
            for f in Path(tmp).iterdir():
                f.unlink()
            os.rmdir(tmp)
    return 0 if all(r.time_ok and r.rss_ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
