"""The Ray executor's decisions without a cluster: what a job asks of a node, path maps, and the
`ray start` command `mediad node` becomes. (The cluster itself: test_cluster.py.)"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from conftest import run_cli

from mediad.config import ExecutorConfig, PathMap
from mediad.daemon.path_map import report_for_head, spec_for_node, to_head, to_node
from mediad.daemon.protocol import JobSpec, SourceCheck
from mediad.daemon.ray_executor import nvenc_sessions, request_for
from mediad.profiles import Profile, load_profile

SETTINGS = ExecutorConfig(kind="ray", address="10.0.0.1:6379")


def profile(**video: object) -> Profile:
    return Profile.model_validate({"container": "mp4", "video": {"codec": "h264", **video}})


def test_a_job_asks_for_nvenc_sessions_when_the_cluster_has_them_free() -> None:
    total, free = {"nvenc_h264": 3.0, "CPU": 8.0}, {"nvenc_h264": 1.0, "CPU": 8.0}
    r = request_for(profile(encoder="auto"), SETTINGS, "cpu", total, free)
    assert (r.resources, r.num_cpus, r.no_nvenc) == ({"nvenc_h264": 1.0}, 0.0, None)
    # All in use: software now (overflow cpu), with the reason; or wait in Ray's queue
    busy = {"CPU": 8.0}
    r = request_for(profile(encoder="auto"), SETTINGS, "cpu", total, busy)
    assert r.resources == {} and r.num_cpus == 1.0 and "in use" in (r.no_nvenc or "")
    assert request_for(profile(encoder="auto"), SETTINGS, "wait", total, busy).resources == \
        {"nvenc_h264": 1.0}
    # NVENC required: waits for a session whatever the overflow
    assert request_for(profile(encoder="gpu"), SETTINGS, "cpu", total, busy).resources == \
        {"nvenc_h264": 1.0}
    # No node declares NVENC (H100s, CPU nodes): software, said why
    r = request_for(profile(encoder="auto"), SETTINGS, "wait", {"CPU": 8.0, "GPU": 2.0}, busy)
    assert r.num_cpus == 1.0 and "no cluster node declares" in (r.no_nvenc or "")
    # A CPU profile never asks for NVENC
    r = request_for(profile(encoder="cpu"), SETTINGS, "cpu", total, free)
    assert (r.resources, r.num_cpus, r.no_nvenc) == ({}, 1.0, None)


def test_a_ladder_asks_for_a_session_per_rendition_and_model_stages_for_a_gpu_share() -> None:
    assert nvenc_sessions(load_profile("hls")) == {"h264": 4}
    ladder = load_profile("hls")
    r = request_for(ladder, SETTINGS, "cpu", {"nvenc_h264": 6.0}, {"nvenc_h264": 3.0})
    assert r.no_nvenc and r.num_cpus == 1.0  # 4 needed, 3 free
    r = request_for(ladder, SETTINGS, "cpu", {"nvenc_h264": 6.0}, {"nvenc_h264": 4.0})
    assert r.resources == {"nvenc_h264": 4.0}
    upscale = load_profile("upscale-2x")
    assert request_for(upscale, SETTINGS, "cpu", {"GPU": 1.0}, {"GPU": 1.0}).num_gpus == 0.5
    assert request_for(upscale, SETTINGS, "cpu", {"CPU": 4.0}, {"CPU": 4.0}).num_gpus == 0.0


MAPS = (PathMap(head=Path("/srv/media"), node=Path("/mnt/nas"), nodes=("10.0.0.3",)),
        PathMap(head=Path("/srv/media/archive"), node=Path("/archive"), nodes=()))


def test_paths_are_mapped_for_the_node_that_runs_the_job_and_back() -> None:
    assert to_node("/srv/media/in/a.mkv", MAPS, "10.0.0.3") == "/mnt/nas/in/a.mkv"
    assert to_node("/srv/media/in/a.mkv", MAPS, "10.0.0.2") == "/srv/media/in/a.mkv"  # not listed
    assert to_node("/srv/media/archive/x.ts", MAPS, "10.0.0.3") == "/archive/x.ts"  # longest wins
    assert to_node("/srv/mediaX/a.mkv", MAPS, "10.0.0.3") == "/srv/mediaX/a.mkv"  # a prefix of a name
    assert to_head("/mnt/nas/out/a.mp4", MAPS, "10.0.0.3") == "/srv/media/out/a.mp4"
    spec = JobSpec(input="/srv/media/in/a.mkv", output="/srv/media/out/a.mp4", profile={},
                   profile_name="h264", source=SourceCheck(watch="/srv/media/in", inode=1, size=2))
    mapped = spec_for_node(spec, MAPS, "10.0.0.3")
    assert (mapped.input, mapped.output, mapped.source.watch) == (  # type: ignore[union-attr]
        "/mnt/nas/in/a.mkv", "/mnt/nas/out/a.mp4", "/mnt/nas/in")
    report = {"output": "/mnt/nas/out/a.mp4", "outputs": [{"path": "/mnt/nas/out/a.mp4"}],
              "codec": "h264", "frames": 3}
    assert report_for_head(report, MAPS, "10.0.0.3") == {
        "output": "/srv/media/out/a.mp4", "outputs": [{"path": "/srv/media/out/a.mp4"}],
        "codec": "h264", "frames": 3}


def test_mediad_node_declares_what_it_found_and_what_it_was_told() -> None:
    pytest.importorskip("ray")
    res = run_cli("node", "--address", "10.0.0.1:6379", "--num-cpus", "2", "--declare",
                  "nvenc_h264=2", "--declare", "GPU=1", "--dry-run", "--", "--temp-dir=/tmp/r")
    assert res.returncode == 0, res.stderr
    command = shlex.split(res.stdout.strip())
    assert command[1:4] == ["start", "--block", "--disable-usage-stats"]
    assert "--num-gpus=1" in command and "--address=10.0.0.1:6379" in command
    assert "--num-cpus=2" in command and command[-1] == "--temp-dir=/tmp/r"
    resources = json.loads(next(c for c in command if c.startswith("--resources="))
                           .split("=", 1)[1])
    assert resources == {"nvenc_h264": 2.0}
    # No GPU on this machine: the probe says so
    assert "a CPU node" in res.stderr or "no NVENC" in res.stderr, res.stderr
    bad = run_cli("node", "--address", "x:1", "--declare", "nvenc_h264", "--dry-run")
    assert bad.returncode == 1 and "expected NAME=AMOUNT" in bad.stderr
    alone = run_cli("node", "--dry-run", "--no-probe")
    assert alone.returncode == 1 and "--address" in alone.stderr
