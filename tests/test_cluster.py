"""The daemon's Ray executor on a real Ray cluster: a head and two worker nodes started with
`mediad node`, each in a network namespace of its own (tests/cluster_net.py), the daemon in the
head's. CPU encodes stand in for NVENC: the nodes declare NVENC sessions by hand (1 and 2),
and the jobs hold them while they encode in software.

node2 mounts the media storage at another path (and cannot see the head's): every job it runs
goes through the daemon's path map.

The tests share one cluster and run in order; the last one kills a node.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_net import Cluster, can_make_namespaces
from conftest import packet_times
from test_daemon import FAST_PROFILE, Site, make_video, partials, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# The daemon tests' profile, but one that may use NVENC: it asks for a session
PROFILE = FAST_PROFILE.replace('encoder = "cpu"', 'encoder = "auto"')
# Several seconds on one CPU: still running when a test stops it, its node or the daemon.
LONG_PROFILE = PROFILE.replace('"fastest"', '"slow"')
SESSIONS = {"node1": 1, "node2": 2}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, media: Path) -> Iterator[Cluster]:
    why = can_make_namespaces()
    if why:
        pytest.skip(why)
    pytest.importorskip("ray")
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.make_network(3)
        c.mediad_node(c.head, num_cpus=0)  # the head places jobs, it runs none
        c.wait_nodes(1)
        node1, node2 = c.nodes[1:]
        c.mediad_node(node1, f"--declare=nvenc_h264={SESSIONS['node1']}", num_cpus=2)
        # node2 sees the media under another path, and not at the head's
        mapped = media.parent / f"{media.name}-on-node2"
        mapped.mkdir()
        c.mediad_node(node2, f"--declare=nvenc_h264={SESSIONS['node2']}", num_cpus=2,
                      mounts=f"mount --bind {media} {mapped} && mount -t tmpfs none {media}")
        c.wait_nodes(3)
        yield c
    finally:
        c.close()


class ClusterSite(Site):
    """A daemon site whose jobs run on the cluster (the daemon in the head's namespace)."""

    def __init__(self, root: Path, cluster: Cluster, media: Path, **daemon: object) -> None:
        super().__init__(root, **daemon)
        self.cluster = cluster
        self.media = media
        (root / "fast.toml").write_text(PROFILE)
        (root / "slow.toml").write_text(LONG_PROFILE)
        self.prefix = cluster.head.run_prefix()
        self.env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN_PATH": str(cluster.token_path)}
        self.overflow = "wait"

    def write_config(self) -> None:
        super().write_config()
        node2 = self.cluster.nodes[2]
        mapped = self.media.parent / f"{self.media.name}-on-node2"
        with open(self.config, "a") as f:
            f.write(f'\n[executor]\nkind = "ray"\naddress = "{self.cluster.address}"\n'
                    f'\n[[executor.path_map]]\nhead = "{self.media}"\nnode = "{mapped}"\n'
                    f'nodes = ["{node2.address}"]\n')

    def start(self, wait_ready: bool = True) -> subprocess.Popen:
        self.daemon_settings["nvenc_overflow"] = self.overflow
        proc = super().start(wait_ready=False)
        if wait_ready:
            self.wait_log("event=daemon_ready", timeout=180)
        return proc


@pytest.fixture
def site(request: pytest.FixtureRequest, cluster: Cluster, media: Path) -> Iterator[ClusterSite]:
    root = media / request.node.name
    root.mkdir()
    s = ClusterSite(root, cluster, media, workers=6, stall_timeout_seconds=120)
    yield s
    if s.proc is not None and s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait(timeout=30)


def node_names(cluster: Cluster) -> dict[str, str]:
    return {n.address: n.name for n in cluster.nodes}


# The daemon records a job's placement and its end as it reads them: a job ending and the next
# one starting on the same node, read in one turn of its loop, can look a few ms apart the wrong
# way round. A node running two jobs at once where it has one session overlaps them by most of
# a job's length (a second here), far more than this.
READ_SKEW = 0.25


def most_at_once(jobs: list[dict]) -> int:
    """The most of these jobs that ran at the same moment (started at placement on a node)."""
    ends = [max(j["started"], j["finished"] - READ_SKEW) for j in jobs]
    edges = sorted([(j["started"], 1) for j in jobs] + [(end, -1) for end in ends])
    most = running = 0
    for _, step in edges:  # at a tie an end sorts first: one ending as the next starts is fine
        running += step
        most = max(most, running)
    return most


def check_output(job: dict, frames: int) -> None:
    """The committed output, read by the independent ffmpeg: every frame there."""
    assert len(packet_times(Path(job["output"]), "0:v:0")) == frames


def test_jobs_go_to_nodes_with_free_nvenc_sessions_each_exactly_once(site: ClusterSite,
                                                                      cluster: Cluster,
                                                                      tmp_path: Path) -> None:
    site.start()
    for i in range(20):
        site.drop(make_video(tmp_path / f"v{i}.mp4", frames=48, size=(128, 96), seed=i),
                  f"clip {i}.mp4")
    done = site.wait_jobs("done", 20, timeout=600)
    assert len(site.outputs()) == 20 and not partials(site.out) and not partials(site.inbox)
    names = node_names(cluster)
    by_node: dict[str, list[dict]] = {}
    for job in done:
        assert job["attempts"] == 0 and job["output"].startswith(str(site.out))  # the head's path
        check_output(job, 48)
        by_node.setdefault(names[job["node"]], []).append(job)
    assert set(by_node) == {"node1", "node2"}, by_node.keys()  # node2 only through the path map
    for name, jobs in by_node.items():
        assert most_at_once(jobs) <= SESSIONS[name], (name, [(j["started"], j["finished"]) for j in jobs])
    # mediad status shows the nodes, their declared and used sessions, and each job's node
    def idle_status() -> str | None:
        shown = subprocess.run([sys.executable, "-m", "mediad", "status", "--config",
                                str(site.config)], capture_output=True, text=True, check=True).stdout
        # both nodes: each frees its session when Ray tells, not at the same record
        idle = all(f"CPU 0/2, nvenc_h264 0/{n}" in shown for n in (1, 2))
        return shown if idle else None

    # (recorded every few seconds: wait for the record after the last job's end)
    shown: str = wait_for(idle_status, 30, "the nodes shown idle")  # type: ignore[assignment]
    for node, sessions in ((cluster.nodes[1], 1), (cluster.nodes[2], 2)):
        assert f"{node.address}" in shown and f"CPU 0/2, nvenc_h264 0/{sessions}" in shown, shown
    assert f"(on {cluster.nodes[2].address})" in shown, shown
    assert site.stop() == 0


def placed_job(site: ClusterSite, job_id: int = 1) -> dict:
    """Wait until the job runs on a node and has encoded frames."""
    def encoding() -> dict | None:
        job = next((j for j in site.jobs() if j["id"] == job_id), None)
        ok = job and job["state"] == "running" and job["node"] and (job["frames_done"] or 0) > 0
        return job if ok else None

    return wait_for(encoding, 180, "the job to be encoding on a node")  # type: ignore[return-value]


def test_cancel_stops_a_cluster_job_and_frees_its_node(site: ClusterSite, tmp_path: Path) -> None:
    site.watches[0]["profile"] = "slow.toml"
    site.start()
    source = site.drop(make_video(tmp_path / "long.mkv", frames=300, size=(320, 240)), "long.mkv")
    placed_job(site)
    subprocess.run([sys.executable, "-m", "mediad", "cancel", "1", "--config", str(site.config)],
                   check=True, capture_output=True)
    site.wait_jobs("cancelled", 1, timeout=60)
    assert source.exists() and not site.outputs()
    wait_for(lambda: not partials(site.out), 30, "the cancelled job's temporary output removed")
    # Its sessions are free again: the next job runs
    site.drop(make_video(tmp_path / "next.mp4", frames=24, seed=99), "next.mp4")
    check_output(site.wait_jobs("done", 1, timeout=180)[0], 24)
    assert site.stop() == 0


def test_daemon_killed_mid_job_restarts_without_duplicates(site: ClusterSite, tmp_path: Path) -> None:
    site.watches[0]["profile"] = "slow.toml"
    site.start()
    site.drop(make_video(tmp_path / "long.mkv", frames=300, size=(320, 240)), "long.mkv")
    placed_job(site)
    site.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    site.proc.wait(30)  # type: ignore[union-attr]
    site.start()  # its old task dies with it (Ray ends an owner's tasks): the job runs again
    job = site.wait_jobs("done", 1, timeout=300)[0]
    check_output(job, 300)
    assert len(site.outputs()) == 1 and not partials(site.out)
    assert site.stop() == 0


def test_a_node_lost_mid_job_reruns_elsewhere_once(site: ClusterSite, cluster: Cluster,
                                                   tmp_path: Path) -> None:
    site.watches[0]["profile"] = "slow.toml"
    site.start()
    site.drop(make_video(tmp_path / "long.mkv", frames=300, size=(320, 240)), "long.mkv")
    job = placed_job(site)
    names = node_names(cluster)
    lost = next(n for n in cluster.nodes if n.address == job["node"])
    lost.kill()  # every process of that machine, at once
    done = site.wait_jobs("done", 1, timeout=300)[0]
    assert names[done["node"]] != lost.name and done["attempts"] == 1, done
    check_output(done, 300)
    assert len(site.outputs()) == 1
    # What the lost node's worker left (it never cleaned up) is gone once the job is done
    wait_for(lambda: not partials(site.out), 30, "the lost attempt's temporary output removed")
    site.wait_log(r"event=job_retry .*reason=worker_crashed")
    assert site.stop() == 0
