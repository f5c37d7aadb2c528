"""[video] max_size_ratio: an output that would be larger than its source (times the ratio) is
stopped as soon as that shows, as skipped_larger, the source untouched; by the command and by the
daemon (which neither retries it nor moves the source)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from conftest import camera_clip, packet_times, run_cli, write_profile
from test_daemon import Site, wait_for

from mediad.profiles import Profile

BIGGER = """
container = "mp4"
[video]
codec = "h264"
encoder = "cpu"
speed = "fastest"
quality = 4
max_size_ratio = 1.0
[audio]
codec = "none"
"""
SMALLER = BIGGER.replace("quality = 4", "quality = 40\nmax_height = 180")


@pytest.fixture(scope="module")
def lean_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A camera-like clip encoded lean (CRF 35): a near-lossless re-encode is many times bigger."""
    return camera_clip(tmp_path_factory.mktemp("media") / "lean.mp4", "-crf", "35",
                       seconds=10, size=(640, 360), audio=False)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_output_outgrowing_its_source_is_stopped_early(lean_source: Path, tmp_path: Path) -> None:
    before = digest(lean_source)
    out = tmp_path / "o.mp4"
    res = run_cli("transcode", str(lean_source), "-p", str(write_profile(tmp_path, BIGGER)),
                  "-o", str(out), "--no-progress", "--json")
    assert res.returncode == 1, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert "skipped:" in line and "max_size_ratio = 1" in line, line
    # Stopped part-way, not after the whole encode
    share = re.search(r"at (\d+)% of the frames", line)
    assert share is not None and int(share.group(1)) < 100, line
    assert json.loads(res.stdout)["reason"] == "skipped_larger"
    assert not out.exists() and list(tmp_path.glob(".*part*")) == []
    assert digest(lean_source) == before


def test_an_output_smaller_than_its_source_is_written(lean_source: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    res = run_cli("transcode", str(lean_source), "-p", str(write_profile(tmp_path, SMALLER)),
                  "-o", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert out.stat().st_size <= lean_source.stat().st_size
    assert len(packet_times(out, "0:v:0")) == 250


def test_the_ratio_is_checked_where_it_means_something() -> None:
    with pytest.raises(ValueError, match="max_size_ratio"):
        Profile.model_validate({"video": {"max_size_ratio": 0}})
    with pytest.raises(ValueError, match="a ladder's renditions are several"):
        Profile.model_validate({"container": "hls", "video": {"max_size_ratio": 1.0},
                                "renditions": [{"height": 360}]})


def test_the_daemon_records_a_skip_and_leaves_the_source(lean_source: Path, tmp_path: Path) -> None:
    site = Site(tmp_path)
    (tmp_path / "bigger.toml").write_text(BIGGER)
    site.watches = [{"path": "in", "output_dir": "out", "profile": "bigger.toml",
                     "failed_dir": "failed"}]
    try:
        site.start()
        source = site.drop(lean_source, "lean.mp4")
        job = site.wait_jobs("failed", 1, timeout=120)[0]
        assert job["reason"] == "skipped_larger" and job["attempts"] == 1, job  # one run: no retry
        assert "event=job_retry" not in site.log()
        # Disposed of without a move or a note: the source stays in the watched folder
        wait_for(lambda: site.jobs()[0]["disposed"], 30, "the job's disposition")
        assert source.exists() and digest(source) == digest(lean_source)
        assert not (tmp_path / "failed").exists() or not any((tmp_path / "failed").iterdir())
        assert not site.outputs() and not list(site.inbox.glob("*.error.json"))
        status = run_cli("status", "--config", str(site.config)).stdout
        assert "skipped_larger: " in status, status
        assert site.stop() == 0
    finally:
        if site.proc is not None and site.proc.poll() is None:
            site.proc.kill()
