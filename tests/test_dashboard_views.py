"""What the dashboard's job page shows of a plan, from real plans `mediad plan --json` prints:
every decision with its reason, a ladder's renditions (no web stack needed)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import SAMPLES, run_cli, write_profile

from mediad.api import charts, views

LADDER = """
container = "hls"
[video]
codec = "h264"
encoder = "cpu"
[[renditions]]
height = 1080
bitrate = "5M"
[[renditions]]
height = 180
bitrate = "400k"
[[renditions]]
height = 144
quality = 28
"""


def plan_of(tmp_path: Path, profile: str) -> dict:
    res = run_cli("plan", str(SAMPLES / "h264_aac.mp4"), "-p", profile, "--json", "--gpu", "none",
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_a_ladder_plan_shows_each_rendition_and_every_reason(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, str(write_profile(tmp_path, LADDER, "ladder")))
    rows = views.renditions(plan, {"outputs": [{"name": "180p", "size": 1234}]})
    assert [(r["name"], r["size"], r["bit_rate"], r["quality"], r["bytes"]) for r in rows] == [
        ("180p", "320x180", 400_000, None, 1234), ("144p", "256x144", None, 28, None)]
    found = views.decisions(plan)
    where = [d.where for d in found]
    assert {"base.decode", "base.video", "base.gpu", "rendition 180p.video",
            "rendition 144p.video", "skipped"} <= set(where)
    assert all(d.why for d in found)
    gpu = next(d for d in found if d.where == "base.gpu")
    assert gpu.what == "no device" and gpu.why == "--gpu none"
    skipped = next(d for d in found if d.where == "skipped")
    assert "1080p" in skipped.why and "never upscaled" in skipped.why


def test_a_single_output_plan_has_no_renditions(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, "h264")
    assert views.renditions(plan, None) == []
    found = {d.where: d for d in views.decisions(plan)}
    assert found["video"].why == plan["video"]["reason"]
    assert found["audio[0]"].why == plan["audio"][0]["reason"]
    assert found["frames"].what == "host memory"


def test_charts_escape_their_text_and_scale_their_values() -> None:
    svg = charts.bars([("<b>", 2.0), ("x", 4.0)], label="a & b", unit=" MB")
    assert "<b>" not in svg and "&lt;b&gt;" in svg and 'aria-label="a &amp; b"' in svg
    assert svg.count('class="bar"') == 2 and "max 4 MB" in svg
    line = charts.sparkline([(0, 50), (1, None), (2, 100), (3, 0)], start=0, end=3, label="sm")
    assert line.count("<polyline") == 1 and line.count("<circle") == 1  # the gap splits it
