"""What the dashboard's job page shows of a plan, from real plans `mediad plan --json` prints:
every decision with its reason, a ladder's renditions (no web stack needed)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import SAMPLES, run_cli, transcode_report, write_profile

from mediad.api import charts, reports, views
from mediad.daemon.schema import MAX_OUTPUT_SIZE

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
    assert {"decode", "gpu", "rendition 180p.video",
            "rendition 144p.video", "skipped"} <= set(where)
    assert all(d.why for d in found)
    gpu = next(d for d in found if d.where == "gpu")
    assert gpu.what == "no device" and gpu.why == "--gpu none"
    skipped = next(d for d in found if d.where == "skipped")
    assert "1080p" in skipped.why and "never upscaled" in skipped.why


def test_a_single_output_plan_has_no_renditions(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, "h264")
    assert views.renditions(plan, None) == []
    found = {d.where: d for d in views.decisions(plan)}
    assert found["video"].why == plan["outputs"][0]["video"]["reason"]
    assert found["audio[0]"].why == plan["audio"][0]["reason"]
    assert found["frames"].what == "host memory"


def test_charts_escape_their_text_and_scale_their_values() -> None:
    svg = charts.bars([("<b>", 2.0), ("x", 4.0)], label="a & b", unit=" MB")
    assert "<b>" not in svg and "&lt;b&gt;" in svg and 'aria-label="a &amp; b"' in svg
    assert svg.count('class="bar"') == 2 and "max 4 MB" in svg
    line = charts.sparkline([(0, 50), (1, None), (2, 100), (3, 0)], start=0, end=3, label="sm")
    assert line.count("<polyline") == 1 and line.count("<circle") == 1  # the gap splits it


def test_plans_and_reports_of_the_wrong_shape_are_read_as_far_as_they_go() -> None:
    odd_plans = [{"renditions": ["x", 5, {"name": 1, "video": 5, "gop": "x"}]},
                 {"renditions": 7, "notes": 7, "skipped": "one note", "fallbacks": [{"a": 1}]},
                 {"video": {"reasons": 5, "bit_rate": "fast", "reason": ""}},
                 {"video": {"reasons": "why", "bit_rate": 2_000_000, "width": [], "height": 2}},
                 {"frames_reason": 5, "video": {"reason": 7}}, None]
    for plan in odd_plans:
        views.decisions(plan)  # type: ignore[arg-type]
        views.renditions(plan, {"outputs": 5})  # type: ignore[arg-type]
    rows = views.renditions(odd_plans[0], {"outputs": ["x", {"name": "1", "size": "big"}]})
    assert rows == [{"name": "1", "size": "?", "codec": None, "encoder": None, "bit_rate": None,
                     "max_bit_rate": None, "quality": None, "gop": None, "bytes": None,
                     "reason": None}]
    found = views.decisions(odd_plans[1])
    assert [(d.where, d.why) for d in found] == [("skipped", "one note"),
                                                 ("fallback", '{"a": 1}')]
    [video] = views.decisions(odd_plans[3])
    assert video.why == "why" and "bit rate 2000 kb/s" in video.what


def test_a_report_is_read_clean_or_not_at_all() -> None:
    for text in ('{"outputs": [{"size": 1', "garbage", "[1, 2]", b"\xff\xfe", "", None,
                 '{"a": ' * 5000 + "1" + "}" * 5000, '{"a": ' * 70 + "1" + "}" * 70):
        assert reports.parse(text) is None, text
    report = reports.parse('{"\\udce9": NaN, "outputs": [{"path": "/o/caf\\udce9.mp4", '
                           '"size": 5, "duration": Infinity, "frames": 1.5}, "x", '
                           '{"size": "big", "width": 320, "height": 180, "codec": "h264"}], '
                           '"elapsed": "x", "fps": 25}')
    assert report is not None and report["\\xe9"] is None
    assert json.dumps(report, allow_nan=False)  # every float finite, every string UTF-8
    assert reports.outputs(report) == [
        reports.Output(name=None, file="caf\\xe9.mp4", video="", frames=None, duration=None,
                       size=5),
        reports.Output(name=None, file="", video="h264 320x180", frames=None, duration=None,
                       size=None)]
    assert reports.timing(report) == (None, 25)
    # A size past what the store takes for one is none; a frame count is not bound by it
    [huge] = reports.outputs({"outputs": [{"size": MAX_OUTPUT_SIZE + 1,
                                           "frames": MAX_OUTPUT_SIZE + 1, "width": True,
                                           "height": 2}]})
    assert (huge.size, huge.frames, huge.video) == (None, MAX_OUTPUT_SIZE + 1, "")


def test_an_analysis_job_has_a_contact_sheet_of_its_shots(tmp_path: Path) -> None:
    """The job page's pictures: a frame at each shot's start, read from the sidecar beside
    the output; each a JPEG of that scene (the three scenes differ)."""
    import av
    from test_models_shots import CUTS, FRAMES, write_clip

    from mediad.api import thumbs

    src = write_clip(tmp_path / "cuts.mp4", [sum(n >= c for c in CUTS) for n in range(FRAMES)])
    out = tmp_path / "tagged.mkv"
    report = transcode_report(str(src), "-p", "tag", "-o", str(out), "--gpu", "none")
    pics = views.pictures(report["plan"], str(out))
    assert pics.of == "output" and not pics.before_after
    assert pics.shots == [0.0, CUTS[0] / 25, CUTS[1] / 25]
    means = []
    for t in pics.shots:
        jpeg = thumbs.thumbnail(str(out), 320, t)
        assert jpeg is not None and jpeg[:2] == b"\xff\xd8"
        (tmp_path / "f.jpg").write_bytes(jpeg)
        with av.open(str(tmp_path / "f.jpg")) as c:
            frame = next(c.decode(video=0))
        assert frame.width == 320
        means.append(float(frame.to_ndarray(format="rgb24").mean()))
    assert len({round(m) for m in means}) == 3, means  # three different scenes
    assert thumbs.thumbnail(str(out), 320, 999.0) is not None  # past the end: the last frame
    assert views.pictures(None, str(tmp_path / "gone.mkv")).shots == []


def test_an_upscale_job_shows_before_and_after(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, "upscale-2x")
    out = tmp_path / "o.mp4"
    out.write_bytes(b"")  # a file: the output exists
    assert views.pictures(plan, str(out)).before_after
    assert not views.pictures(plan, str(tmp_path / "a-set-folder")).before_after
