"""Benchmark of the watch-folder daemon (not run by the tests).

1. Drain: N small files dropped at once into a watched folder; time until every job is done,
   against running `mediad transcode` on the same files one after another.
2. Latency: files dropped one at a time into an idle daemon; time from the file's close to its
   job starting (target: settle_seconds + 0.5 s).

    python bench/daemon.py [--files 100] [--workers 4] [--settle 1.0] [--latency-files 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PROFILE = """
container = "mp4"
[video]
codec = "h264"
encoder = "{encoder}"
speed = "fastest"
[audio]
codec = "none"
"""


def make_video(path: Path, seed: int, frames: int, size: int) -> None:
    """A distinct small H.264 clip (distinct, so the daemon does not treat copies as duplicates)."""
    y, x = np.mgrid[0:size, 0:size]
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.stack([(x + i * 3 + seed * 17) % 256, (y + i * 5 + seed * 29) % 256,
                            ((x ^ y) + i + seed) % 256], -1).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def serial(files: list[Path], profile: Path, out: Path) -> float:
    """Seconds to run `mediad transcode` on every file, one after another."""
    out.mkdir()
    started = time.monotonic()
    for f in files:
        subprocess.run([sys.executable, "-m", "mediad", "transcode", str(f), "-p", str(profile),
                        "-o", str(out / f.name), "--no-progress"], check=True, env=env(),
                       stdout=subprocess.DEVNULL)
    return time.monotonic() - started


class Daemon:
    """The real daemon on a scratch folder."""

    def __init__(self, root: Path, profile: Path, workers: int, settle: float, *,
                 extra: str = "", prefix: tuple[str, ...] = (), ready_timeout: float = 30) -> None:
        self.root = root
        self.inbox = root / "in"
        self.inbox.mkdir(parents=True)
        config = root / "mediad.toml"
        config.write_text(
            f'[daemon]\nstate_dir = "state"\nworkers = {workers}\nsettle_seconds = {settle}\n'
            f'log_level = "INFO"\n[[watch]]\npath = "in"\noutput_dir = "out"\n'
            f'profile = "{profile}"\n[metrics]\nlisten = ""\n{extra}')
        self.log = open(root / "daemon.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "mediad", "daemon", "--config",
                                      str(config)], env=env(), stdout=self.log, stderr=subprocess.STDOUT)
        self.db = root / "state" / "queue.sqlite3"
        self._wait(lambda: b"event=daemon_ready" in (root / "daemon.log").read_bytes(), ready_timeout)

    def _wait(self, predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                raise SystemExit(f"daemon exited {self.proc.returncode}; see {self.root / 'daemon.log'}")
            if time.monotonic() > deadline:
                raise SystemExit("timed out")
            time.sleep(0.02)

    def jobs(self) -> list[tuple]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT source, state, started FROM jobs").fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    def wait_done(self, count: int, timeout: float = 3600) -> None:
        def done() -> bool:
            jobs = self.jobs()
            failed = [j for j in jobs if j[1] == "failed"]
            if failed:
                raise SystemExit(f"{len(failed)} jobs failed: {failed[:3]}")
            return sum(j[1] == "done" for j in jobs) >= count

        self._wait(done, timeout)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)
        self.log.close()


def drain(files: list[Path], profile: Path, root: Path, workers: int, settle: float) -> float:
    """Seconds from the first file landing to the last job done."""
    d = Daemon(root, profile, workers, settle)
    try:
        started = time.monotonic()
        for f in files:
            shutil.copyfile(f, d.inbox / f.name)
        d.wait_done(len(files))
        return time.monotonic() - started
    finally:
        d.stop()


def latency(files: list[Path], profile: Path, root: Path, workers: int, settle: float) -> list[float]:
    """Per file, seconds from its close to its job's start, dropped one by one into an idle daemon."""
    d = Daemon(root, profile, workers, settle)
    result = []
    try:
        for i, f in enumerate(files):
            dest = d.inbox / f.name
            with open(dest, "wb") as out:
                out.write(f.read_bytes())
            closed = time.time()
            d._wait(lambda dest=dest: any(j[0] == str(dest) and j[2] for j in d.jobs()), 60)
            started = next(j[2] for j in d.jobs() if j[0] == str(dest))
            result.append(started - closed)
            d.wait_done(i + 1)
    finally:
        d.stop()
    return result


def main() -> int:
    """Run both measurements and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--latency-files", type=int, default=10)
    ap.add_argument("--encoder", choices=["cpu", "auto"], default="cpu")
    ap.add_argument("--skip-serial", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="mediad-bench-") as tmp:
        root = Path(tmp)
        profile = root / "bench.toml"
        profile.write_text(PROFILE.format(encoder=args.encoder))
        media = root / "media"
        media.mkdir()
        files = []
        for i in range(args.files + args.latency_files):
            files.append(media / f"clip{i:03d}.mp4")
            make_video(files[-1], i, args.frames, args.size)
        batch, singles = files[:args.files], files[args.files:]
        print(f"{args.files} files of {args.frames} frames {args.size}x{args.size}, "
              f"workers={args.workers}, settle={args.settle}s, encoder={args.encoder}")

        if not args.skip_serial:
            t = serial(batch, profile, root / "serial-out")
            print(f"serial `mediad transcode`, one after another: {t:7.2f} s "
                  f"({t / len(batch):.3f} s/file)")
        (root / "drain").mkdir()
        t = drain(batch, profile, root / "drain", args.workers, args.settle)
        print(f"daemon, all dropped at once, until drained:    {t:7.2f} s "
              f"({t / len(batch):.3f} s/file, includes the {args.settle}s settle)")

        if singles:
            (root / "latency").mkdir()
            lat = latency(singles, profile, root / "latency", args.workers, args.settle)
            target = args.settle + 0.5
            print(f"close -> job start, {len(lat)} files one by one: median {statistics.median(lat):.3f} s, "
                  f"max {max(lat):.3f} s (target <= settle + 0.5 = {target:.1f} s: "
                  f"{'met' if max(lat) <= target else 'MISSED'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
