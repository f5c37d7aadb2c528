"""Full transcodes on the GPU path (NVDEC -> torch -> NVENC or software encode) against the CPU.

GPU only: skipped cleanly without CUDA (conftest.py). Run with `pytest -m gpu`.
"""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import SAMPLES, make_clip

from mediad import gpu
from mediad.media.job import transcode
from mediad.profiles import Profile, parse_profile

pytestmark = pytest.mark.gpu

# High quality on both sides, so the comparison measures the GPU path, not the rate control.
PROFILE_TOML = """
container = "mp4"
[video]
codec = "{codec}"
encoder = "auto"
quality = {quality}
{extra}
[audio]
codec = "none"
"""


def profile(codec: str = "h264", quality: int = 16, extra: str = "") -> Profile:
    text = PROFILE_TOML.format(codec=codec, quality=quality, extra=extra)
    return parse_profile(text, "test_gpu_transcode", f"gpu-test-{codec}")


def source(tmp_path: Path, name: str) -> Path:
    """A sample from samples/, or a clip made here when the samples are not there."""
    path = SAMPLES / name
    if path.is_file():
        return path
    encoder = "libx265" if "hevc" in name else "libx264"
    return make_clip(tmp_path / f"src-{name}.mkv", frames=48, size=(640, 360), audio=False,
                     encoder=encoder)


def luma(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.reformat(format="gray").to_ndarray() for f in c.decode(video=0)])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def gpu_and_cpu(src: Path, prof: Profile, tmp_path: Path) -> tuple[object, np.ndarray, np.ndarray]:
    on_gpu, on_cpu = tmp_path / "gpu.mp4", tmp_path / "cpu.mp4"
    report = transcode(src, prof, on_gpu, gpu="auto")
    transcode(src, prof, on_cpu, gpu="none")
    return report, luma(on_gpu), luma(on_cpu)


@pytest.mark.parametrize("sample", ["h264_aac.mp4", "tenbit_hevc.mkv"])
def test_gpu_transcode_matches_software(sample: str, tmp_path: Path) -> None:
    src = source(tmp_path, sample)
    report, a, b = gpu_and_cpu(src, profile(), tmp_path)
    assert report.plan.decode.hardware, report.plan.decode.reason  # NVDEC really decoded
    device, _ = gpu.choose_device("auto")
    nvenc = gpu.capabilities(device).nvenc["h264"]
    assert report.plan.video.encoder == ("h264_nvenc" if nvenc.ok else "libx264"), nvenc.reason
    assert a.shape == b.shape
    assert psnr(a, b) >= 40.0


def test_gpu_transcode_scales_like_software(tmp_path: Path) -> None:
    src = source(tmp_path, "h264_aac.mp4")
    with av.open(str(src)) as c:
        height = c.streams.video[0].codec_context.height
    target = max(32, (height // 2) - (height // 2) % 2)
    report, a, b = gpu_and_cpu(src, profile(extra=f"max_height = {target}"), tmp_path)
    assert report.plan.decode.hardware
    assert a.shape == b.shape and a.shape[1] == target
    assert psnr(a, b) >= 35.0  # two different scalers, then two encoders


LADDER_TOML = """
container = "mkv"
[video]
codec = "h264"
encoder = "auto"
quality = 16
[[renditions]]
height = 360
[[renditions]]
height = 180
[audio]
codec = "none"
"""


def test_ladder_decodes_with_nvdec_and_matches_the_cpu(tmp_path: Path) -> None:
    """A ladder on a GPU decodes once with NVDEC, keeps the frames in GPU memory, scales each
    rendition from them in torch (then NVENC, or a download at the rendition's size for the
    software encoder of a GPU without NVENC), and every rendition matches the CPU ladder's
    (torch's area filter against libavfilter's bicubic: 41.5-44.3 dB on CPU tensors,
    tests/test_ladder_gpu_fanout.py)."""
    from mediad.media.ladder_job import transcode_ladder

    src = source(tmp_path, "h264_aac.mp4")
    prof = parse_profile(LADDER_TOML, "test_gpu_transcode", "gpu-ladder")
    on_gpu = transcode_ladder(src, prof, tmp_path / "gpu", gpu="auto")
    on_cpu = transcode_ladder(src, prof, tmp_path / "cpu", gpu="none")
    assert on_gpu.plan.base.decode.hardware and not on_gpu.plan.fallbacks, on_gpu.plan.fallbacks
    assert on_gpu.plan.base.frames_on_gpu, on_gpu.plan.base.frames_reason
    assert all(r.frames.startswith("scaled on the GPU") for r in on_gpu.plan.outputs)
    for made, ref in zip(on_gpu.files, on_cpu.files, strict=True):
        a, b = luma(Path(made.path)), luma(Path(ref.path))
        assert a.shape == b.shape and psnr(a, b) >= 38, (made.path, psnr(a, b))


def test_a_gap_in_nvdec_frames_is_filled_on_the_gpu(tmp_path: Path) -> None:
    """An HLS ladder on the GPU from a recording that lost 1.1 s of frames: the frame before
    the gap (copied on the GPU, so no NVDEC surface is held) is shown until the next, and the
    set keeps 30 fps throughout, as on the CPU (tests/test_ladder.py)."""
    from conftest import camera_filter, ffmpeg, packet_times

    from mediad.media.ladder_job import transcode_ladder

    src = tmp_path / "dropout.mp4"
    ffmpeg("-f", "lavfi", "-i", camera_filter((320, 180), 30), "-t", "6", "-vf",
           r"select='not(between(t\,1.5\,2.6))'", "-fps_mode", "passthrough", "-c:v",
           "libx264", "-preset", "veryfast", "-g", "30", str(src))
    prof = parse_profile('container = "hls"\n[video]\ncodec = "h264"\nencoder = "auto"\n'
                         '[[renditions]]\nheight = 180\nbitrate = "300k"\n[audio]\ncodec = "none"\n'
                         '[package]\nsegment_seconds = 2\nkeyframe_seconds = 1\n',
                         "test_gpu_transcode", "gpu-gap")
    report = transcode_ladder(src, prof, tmp_path / "set", gpu="auto")
    assert report.plan.base.frames_on_gpu and not report.plan.fallbacks, report.plan.fallbacks
    assert any("gap(s) in the source's frames filled" in w for w in report.warnings)
    assert len(packet_times(tmp_path / "set" / "master.m3u8", "0:v:0")) == 180
