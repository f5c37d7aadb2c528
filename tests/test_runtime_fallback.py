"""NVDEC/NVENC failing at run time: the job runs again with that part in software and says why.

The CPU tests plan for a GPU this machine does not have (capabilities as an H100 or an NVENC card
would report them), so the real CUDA set-up fails inside PyAV exactly where it fails when a GPU
falls off the bus or its driver breaks between the capability trial and the job.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SAMPLES, cuda_available, read_back
from test_plan import full_gpu, h100_like, yuv422_clip

from mediad import gpu
from mediad.errors import MediadError
from mediad.media.job import run_with_fallbacks, transcode
from mediad.media.plan import make_plan
from mediad.media.probe import probe
from mediad.profiles import Profile, parse_profile

NO_GPU = gpu.cuda_device_count()[0] == 0
SOURCE = SAMPLES / "h264_aac.mp4"


def profile(encoder: str = "auto") -> Profile:
    return parse_profile(f"[video]\nencoder = '{encoder}'\nspeed = 'fastest'\n", "x", "x")


@pytest.mark.skipif(not NO_GPU, reason="needs the CUDA set-up to fail (no GPU here)")
def test_nvdec_failing_at_open_reruns_with_the_software_decoder(tmp_path: Path) -> None:
    prof = profile()
    plan = make_plan(probe(SOURCE), prof, h100_like(), tmp_path / "out.mp4")
    assert plan.decode.hardware and plan.video.encoder == "libx264"
    tmp = tmp_path / "tmp.mp4"
    ran, result = run_with_fallbacks(plan, tmp, prof)
    assert not ran.decode.hardware and ran.decode.device is None
    assert ran.decode.reason.startswith("software decoder: NVDEC cannot be set up: ")
    assert ran.fallbacks[-1].startswith("decode: NVDEC cannot be set up: ")
    assert result.frames_written == read_back(SOURCE).frames == read_back(tmp).frames


@pytest.mark.skipif(not NO_GPU, reason="needs the CUDA set-up to fail (no GPU here)")
def test_nvdec_and_nvenc_both_failing_fall_back_one_after_the_other(tmp_path: Path) -> None:
    prof = profile()
    plan = make_plan(probe(SOURCE), prof, full_gpu(), tmp_path / "out.mp4")
    assert plan.frames_on_gpu and plan.video.encoder == "h264_nvenc"
    tmp = tmp_path / "tmp.mp4"
    ran, result = run_with_fallbacks(plan, tmp, prof)
    assert [f.split(":")[0] for f in ran.fallbacks] == ["decode", "video"]
    assert (ran.decode.hardware, ran.video.hardware, ran.frames_on_gpu) == (False, False, False)
    assert ran.video.encoder == "libx264" and "h264_nvenc" in ran.fallbacks[-1]
    got = read_back(tmp)
    assert (got.video_codec, got.frames, got.pix_fmt) == ("h264", read_back(SOURCE).frames, "yuv420p")


@pytest.mark.skipif(not NO_GPU, reason="needs the CUDA set-up to fail (no GPU here)")
def test_required_nvenc_failing_at_run_time_is_a_transient_failure(tmp_path: Path) -> None:
    prof = profile("gpu")
    plan = make_plan(probe(SOURCE), prof, full_gpu(), tmp_path / "out.mp4")
    with pytest.raises(MediadError) as err:
        run_with_fallbacks(plan, tmp_path / "tmp.mp4", prof)
    assert err.value.transient and err.value.reason == "encoder_busy"
    assert "requires NVENC" in str(err.value)


# --- on a GPU --------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU")
def test_stream_nvdec_cannot_decode_is_rerun_in_software_and_says_so(tmp_path: Path) -> None:
    src = yuv422_clip(tmp_path / "422.mp4")
    out = tmp_path / "out.mp4"
    report = transcode(src, profile(), out)
    if not report.plan.gpu.nvdec["h264"].ok:
        pytest.skip("NVDEC h264 not usable here: nothing to fall back from")
    decode_fallbacks = [f for f in report.plan.fallbacks if f.startswith("decode:")]
    if report.plan.decode.hardware:  # a GPU whose NVDEC decodes 4:2:2 (Blackwell and later)
        assert decode_fallbacks == []
    else:  # H100/H200/A100 and older: FFmpeg's quiet software decode was caught
        assert decode_fallbacks[0].startswith("decode: NVDEC does not decode this h264 stream")
    assert read_back(out).frames == read_back(src).frames
