"""A ladder whose decoded frames stay in GPU memory: each rendition scaled from the one decoded
frame in torch, then NVENC (CUDA frames) or a software encoder (downloaded at the rendition's
size). The fan-out code runs as it is on CPU tensors here (software frames: the same torch
code, no CUDA plumbing); the CUDA run is tests/test_gpu_transcode.py's `gpu` test."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import ROOT, camera_clip, ffmpeg, ffmpeg_psnr, packet_times, write_profile

from mediad.gpu import CODECS, Capabilities, Capability
from mediad.media.job_plan import format_job_plan, resided
from mediad.media.ladder_job import commit_ladder, plan_ladder_job
from mediad.media.ladder_plan import plan_ladder
from mediad.media.probe import probe
from mediad.profiles import load_profile

pytestmark = pytest.mark.slow

FILES = """
container = "mkv"
[video]
codec = "{codec}"
speed = "fastest"
quality = 18
[[renditions]]
height = 360
[[renditions]]
height = 240
[[renditions]]
height = 180
[audio]
codec = "none"
"""
SECONDS, FPS = 3, 25

# A GPU with NVDEC but no NVENC engine (the H100/H200 this project is lent), and one with both.
_NVDEC = {c: Capability(True, "NVDEC decoded a trial clip") for c in CODECS}
NO_NVENC = Capabilities(0, {c: Capability(False, "h264_nvenc did not open: Function not "
                                                 "implemented") for c in CODECS}, _NVDEC)
NVENC = Capabilities(0, {c: Capability(True, "NVENC encoded a trial clip") for c in CODECS},
                     _NVDEC)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fanout")
    return camera_clip(folder / "cam.mp4", seconds=SECONDS, size=(640, 360), fps=FPS,
                       audio=False)


def _run(clip: Path, tmp_path: Path, codec: str, on_gpu: bool, name: str):
    """The ladder of `clip`, its frames kept as torch tensors (on_gpu) or not."""
    profile = load_profile(str(write_profile(tmp_path, FILES.format(codec=codec), f"f-{codec}")))
    plan = plan_ladder_job(clip, profile, tmp_path / name, gpu="none")
    if on_gpu:  # what the planner decides with NVDEC; the decode itself stays software here
        plan = replace(plan, base=replace(plan.base, frames_on_gpu=True),
                       outputs=[resided(r, True) for r in plan.outputs])
    return commit_ladder(clip, probe(clip), plan, name, time.monotonic(), stamp=None,
                         overwrite=False, profile=profile)


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_renditions_scaled_in_torch_match_the_libavfilter_ladder(clip: Path, tmp_path: Path,
                                                                 codec: str) -> None:
    torch_made = _run(clip, tmp_path, codec, True, "torch")
    host_made = _run(clip, tmp_path, codec, False, "host")
    assert [r.frames for r in torch_made.plan.outputs] == [
        f"scaled on the GPU, downloaded at {w}x{h} for lib{'x264' if codec == 'h264' else 'x265'}"
        for w, h in ((640, 360), (426, 240), (320, 180))]
    for made, ref in zip(torch_made.files, host_made.files, strict=True):
        a, b = Path(made.path), Path(ref.path)
        assert len(packet_times(a, "0:v:0")) == SECONDS * FPS
        size = ffmpeg("-i", str(a), check=False).stderr
        assert f"{made.width}x{made.height}" in size and "yuv420p" in size, size
        between = ffmpeg_psnr(a, b)
        if made.height == 360:  # the source's size: the decoded pictures, untouched by either
            assert between == float("inf")
            continue
        # Another scaler really ran: torch's area filter and libavfilter's bicubic differ a
        # little on camera texture (41.5-44.3 dB measured), and each matches the source
        # scaled by the independent ffmpeg (41.8-45.2 dB)
        assert 38.0 <= between < float("inf"), (a.name, between)
        ref_scaled = tmp_path / f"ref-{made.height}.mkv"
        ffmpeg("-y", "-i", str(clip), "-vf", f"scale={made.width}:{made.height}:flags=area",
               "-c:v", "ffv1", str(ref_scaled))
        assert ffmpeg_psnr(a, ref_scaled) >= 40.0, (a.name, ffmpeg_psnr(a, ref_scaled))


def test_ten_bit_frames_stay_ten_bit_through_the_torch_fan_out(tmp_path: Path) -> None:
    src = ROOT / "samples" / "tenbit_hevc.mkv"  # 320x180: the 180p rendition only
    text = FILES.format(codec="hevc").replace('quality = 18', 'quality = 18\nbit_depth = 10')
    profile = load_profile(str(write_profile(tmp_path, text, "ten")))
    plan = plan_ladder_job(src, profile, tmp_path / "set", gpu="none")
    plan = replace(plan, base=replace(plan.base, frames_on_gpu=True),
                   outputs=[resided(r, True) for r in plan.outputs])
    report = commit_ladder(src, probe(src), plan, "k", time.monotonic(), stamp=None,
                           overwrite=False, profile=profile)
    (made,) = report.files
    assert "yuv420p10le" in ffmpeg("-i", made.path, check=False).stderr
    assert ffmpeg_psnr(Path(made.path), src) >= 40.0  # P010 -> yuv420p10le kept its bits


def test_the_plan_keeps_frames_on_the_gpu_where_it_can(clip: Path, tmp_path: Path) -> None:
    profile = load_profile(str(write_profile(tmp_path, FILES.format(codec="h264"), "p")))
    info = probe(clip)
    plan = plan_ladder(info, profile, NO_NVENC, tmp_path / "set")
    assert plan.base.decode.hardware and plan.base.frames_on_gpu, plan.base.frames_reason
    assert [r.frames for r in plan.outputs] == [
        "scaled on the GPU, downloaded at 640x360 for libx264",
        "scaled on the GPU, downloaded at 426x240 for libx264",
        "scaled on the GPU, downloaded at 320x180 for libx264"]
    printed = format_job_plan(plan)
    assert "frames: scaled on the GPU, downloaded at 426x240 for libx264" in printed, printed
    with_nvenc = plan_ladder(info, profile, NVENC, tmp_path / "set")
    assert {r.video.encoder for r in with_nvenc.outputs} == {"h264_nvenc"}
    assert {r.frames for r in with_nvenc.outputs} == {"scaled on the GPU -> NVENC, no host copy"}
    # NVENC refusing one rendition at run time: that one is downloaded, the others stay
    one = with_nvenc.with_software_output("240p", "h264_nvenc refused to open")
    assert [r.frames for r in one.outputs] == [
        "scaled on the GPU -> NVENC, no host copy",
        "scaled on the GPU, downloaded at 426x240 for libx264",
        "scaled on the GPU -> NVENC, no host copy"]
    # NVDEC refusing at run time: host frames everywhere
    software = plan.with_software_decode("NVDEC failed")
    assert not software.base.frames_on_gpu
    assert {r.frames for r in software.outputs} == {"host frames, scaled in libavfilter"}


def test_a_rotated_source_is_downloaded_once(tmp_path: Path) -> None:
    src = ROOT / "samples" / "rotated.mp4"
    profile = load_profile(str(write_profile(tmp_path, FILES.format(codec="h264"), "r")))
    plan = plan_ladder(probe(src), profile, NO_NVENC, tmp_path / "set")
    assert plan.base.decode.hardware and not plan.base.frames_on_gpu
    assert "rotation" in plan.base.frames_reason
    assert {r.frames for r in plan.outputs} == {"host frames, scaled in libavfilter"}
