"""Benchmark of the daemon's Ray executor against its local one, on this one machine (not run by
the tests; needs root for the network namespaces, and the mediad[cluster] extra).

1. Per-job overhead: small files dropped one at a time into an idle daemon, each waited for
   until done; the time from a file's close to its job's end, with the local executor (warm
   worker processes) and with the Ray executor (a head and one worker node, each in a network
   namespace, tests/cluster_net.py), in alternating rounds. Target: Ray <= local + 0.5 s.
2. Scaling: N files dropped at once, drained by a cluster of one worker node, then of two
   (each node declaring one CPU): what a second node adds when both share this machine's cores.

    python bench/cluster.py [--files 8] [--rounds 3] [--drain-files 16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cluster_net import Cluster, can_make_namespaces  # noqa: E402
from daemon import PROFILE, Daemon, make_video  # noqa: E402


def cluster_env(cluster: Cluster) -> None:
    """The daemon (started with this process's environment) authenticates with the cluster's
    token."""
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(cluster.token_path),
                      RAY_USAGE_STATS_ENABLED="0")


def ray_section(cluster: Cluster) -> str:
    return f'\n[executor]\nkind = "ray"\naddress = "{cluster.address}"\n'


def one_at_a_time(files: list[Path], profile: Path, root: Path, extra: str,
                  prefix: tuple[str, ...]) -> list[float]:
    """Per file: seconds from its close in the watched folder to its job done."""
    d = Daemon(root, profile, 2, 0.2, extra=extra, prefix=prefix, ready_timeout=300)
    times = []
    try:
        for i, f in enumerate(files):
            dest = d.inbox / f.name
            dest.write_bytes(f.read_bytes())
            closed = time.monotonic()
            d.wait_done(i + 1, timeout=300)
            times.append(time.monotonic() - closed)
    finally:
        d.stop()
    return times


def drain(files: list[Path], profile: Path, root: Path, extra: str, prefix: tuple[str, ...],
          workers: int) -> float:
    """Seconds from the first file landing to the last job done."""
    d = Daemon(root, profile, workers, 0.2, extra=extra, prefix=prefix, ready_timeout=300)
    try:
        started = time.monotonic()
        for f in files:
            (d.inbox / f.name).write_bytes(f.read_bytes())
        d.wait_done(len(files), timeout=1800)
        return time.monotonic() - started
    finally:
        d.stop()


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def start_cluster(root: Path, nodes: int) -> Cluster:
    root.mkdir(parents=True, exist_ok=True)
    c = Cluster(root)
    try:
        c.make_network(nodes + 1)
        c.mediad_node(c.head, num_cpus=0)
        c.wait_nodes(1)
        for node in c.nodes[1:]:
            c.mediad_node(node, num_cpus=1)
        c.wait_nodes(nodes + 1)
        cluster_env(c)
    except BaseException:
        c.close()
        raise
    return c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=8, help="files per round, one at a time")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--drain-files", type=int, default=16)
    ap.add_argument("--frames", type=int, default=50)
    args = ap.parse_args()
    if why := can_make_namespaces():
        raise SystemExit(why)
    with tempfile.TemporaryDirectory(prefix="mediad-bench-cluster-") as tmp:
        base = Path(tmp)
        profile = base / "cpu.toml"
        profile.write_text(PROFILE.format(encoder="cpu"))
        media = base / "media"
        media.mkdir()
        count = args.files * args.rounds * 2 + args.drain_files
        clips = []
        for i in range(count):
            clips.append(media / f"c{i:03d}.mp4")
            make_video(clips[-1], seed=i, frames=args.frames, size=128)
        cluster = start_cluster(base / "c1", 1)
        local: list[float] = []
        ray: list[float] = []
        try:
            prefix = tuple(cluster.head.run_prefix())
            for r in range(args.rounds):  # alternating: local, ray, local, ray, ...
                batch = clips[r * 2 * args.files:(r * 2 + 2) * args.files]
                local += one_at_a_time(batch[:args.files], profile, base / f"local{r}", "", ())
                ray += one_at_a_time(batch[args.files:], profile, base / f"ray{r}",
                                     ray_section(cluster), prefix)
            rest = clips[-args.drain_files:]
            one_node = drain(rest, profile, base / "drain1", ray_section(cluster), prefix, 4)
        finally:
            cluster.close()
        cluster = start_cluster(base / "c2", 2)
        try:
            two_nodes = drain(rest, profile, base / "drain2", ray_section(cluster),
                              tuple(cluster.head.run_prefix()), 4)
        finally:
            cluster.close()
    print(f"per-job time, {args.frames}-frame 128x128 x264 clips, one at a time "
          f"({args.rounds} alternating rounds of {args.files}), min / median / max s:")
    print(f"  local executor: {spread(local)}")
    print(f"  ray executor:   {spread(ray)}")
    over = statistics.median(ray) - statistics.median(local)
    print(f"  overhead: {over:+.2f} s per job (target <= +0.5 s): {'PASS' if over <= 0.5 else 'MISS'}")
    print(f"drain of {args.drain_files} files: one node {one_node:.2f} s, two nodes {two_nodes:.2f} s "
          f"({one_node / two_nodes:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
