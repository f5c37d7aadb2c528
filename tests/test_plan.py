"""Plan decisions from (MediaInfo, Profile, Capabilities): encoders, decoders, fallbacks, sizes."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from conftest import SAMPLES

from mediad.errors import MediadError
from mediad.gpu import CODECS, Capabilities, Capability, no_gpu, without_nvenc
from mediad.media.job_plan import format_job_plan, single_output
from mediad.media.plan import make_plan
from mediad.media.probe import probe
from mediad.profiles import load_profile, parse_profile

OUT = Path("/tmp/out.mp4")


def h100_like() -> Capabilities:
    """NVDEC works, NVENC has no engine: what an H100/H200/A100 reports."""
    no_engine = Capability(False, "h264_nvenc did not open: Function not implemented")
    return Capabilities(0, {c: no_engine for c in CODECS},
                        {c: Capability(True, f"NVDEC {c} decoded a trial clip") for c in CODECS})


def full_gpu() -> Capabilities:
    ok = Capability(True, "opened")
    return Capabilities(1, {c: ok for c in CODECS}, {c: ok for c in CODECS})


def test_cpu_machine_plans_software_with_reasons() -> None:
    """With no NVIDIA GPU at all, software is the normal path: said in the plan, no fallback."""
    plan = make_plan(probe(SAMPLES / "h264_aac.mp4"), load_profile("hevc"),
                     no_gpu("no NVIDIA driver or GPU"), OUT)
    assert (plan.video.encoder, plan.decode.hardware) == ("libx265", False)
    assert plan.video.options["preset"] == "medium" and plan.video.options["crf"] == "28"
    assert plan.fallbacks == []
    assert plan.video.reason == "software encoder: no NVIDIA GPU here (no NVIDIA driver or GPU)"


def test_gpu_off_by_request_is_no_fallback() -> None:
    plan = make_plan(probe(SAMPLES / "h264_aac.mp4"), load_profile("h264"), no_gpu("--gpu none"),
                     OUT, gpu_allowed=False)
    assert plan.video.encoder == "libx264" and plan.fallbacks == []


def test_h100_decodes_with_nvdec_and_encodes_in_software() -> None:
    plan = make_plan(probe(SAMPLES / "h264_aac.mp4"), load_profile("h264"), h100_like(), OUT)
    assert plan.decode.hardware and plan.decode.device == 0
    assert plan.video.encoder == "libx264" and not plan.video.hardware
    assert "Function not implemented" in plan.fallbacks[0]
    assert "fallback: video: software encoder" in format_job_plan(single_output(plan))


def test_nvenc_withheld_by_the_daemon_keeps_nvdec() -> None:
    """Over the daemon's NVENC budget a job encodes in software but still decodes on the GPU."""
    caps = without_nvenc(full_gpu(), "NVENC is off (daemon.nvenc_sessions = 0)")
    plan = make_plan(probe(SAMPLES / "h264_aac.mp4"), load_profile("h264"), caps, OUT)
    assert plan.decode.hardware and plan.decode.device == 1
    assert (plan.video.encoder, plan.video.hardware) == ("libx264", False)
    assert plan.fallbacks == ["video: software encoder because NVENC h264 not usable "
                              "(NVENC is off (daemon.nvenc_sessions = 0))"]
    required = parse_profile("[video]\nencoder = 'gpu'\n", "p.toml", "p")
    with pytest.raises(MediadError, match=r"requires NVENC .*daemon.nvenc_sessions = 0"):
        make_plan(probe(SAMPLES / "h264_aac.mp4"), required, caps, OUT)


def test_nvenc_chosen_when_it_opens() -> None:
    plan = make_plan(probe(SAMPLES / "tenbit_hevc.mkv"), load_profile("hevc"), full_gpu(), OUT)
    v = plan.video
    assert (v.encoder, v.hardware, v.pix_fmt) == ("hevc_nvenc", True, "yuv420p")
    assert v.options == {"preset": "p4", "tune": "hq", "gpu": "1", "rc": "vbr", "cq": "28"}
    assert plan.decode.hardware and plan.fallbacks == []
    soft = plan.with_software_video("hevc_nvenc refused to open: out of memory")
    assert (soft.video.encoder, soft.video.hardware) == ("libx265", False)
    assert soft.video.options["crf"] == "28" and "out of memory" in soft.fallbacks[-1]


def test_encoder_gpu_without_nvenc_is_a_user_error() -> None:
    prof = parse_profile("[video]\nencoder = 'gpu'\n", "p.toml", "p")
    with pytest.raises(MediadError, match="requires NVENC"):
        make_plan(probe(SAMPLES / "noaudio.mp4"), prof, h100_like(), OUT)


def test_ten_bit_h264_never_goes_to_nvenc() -> None:
    prof = parse_profile("[video]\nbit_depth = 10\n", "p.toml", "p")
    plan = make_plan(probe(SAMPLES / "noaudio.mp4"), prof, full_gpu(), OUT)
    assert (plan.video.encoder, plan.video.pix_fmt) == ("libx264", "yuv420p10le")
    assert "NVENC has no 10-bit H.264" in plan.fallbacks[0]


@pytest.mark.parametrize(("sample", "profile", "size", "crop"), [
    ("odd_321x181.mkv", "h264", (320, 180), (320, 180)),
    ("odd_322x182.mp4", "h264", (322, 182), None),
    ("rotated.mp4", "h264", (180, 320), None),
    ("rotated.mp4", "h264-720p", (180, 320), None),
])
def test_output_geometry(sample: str, profile: str, size: tuple[int, int], crop: object) -> None:
    plan = make_plan(probe(SAMPLES / sample), load_profile(profile), no_gpu("none"), OUT)
    assert (plan.video.width, plan.video.height) == size and plan.video.crop == crop


def test_odd_max_height_is_never_exceeded() -> None:
    """max_height = 103 on a 180-line source: 102 lines (even, below the cap), not 104."""
    prof = parse_profile("[video]\nmax_height = 103\n", "p.toml", "p")
    plan = make_plan(probe(SAMPLES / "noaudio.mp4"), prof, no_gpu("none"), OUT)
    assert plan.video.height == 102 and plan.video.width % 2 == 0 and plan.video.width <= 182


def test_one_pixel_video_is_a_clear_error(tmp_path: Path) -> None:
    src = tmp_path / "line.mkv"
    with av.open(str(src), "w") as out:
        vs = out.add_stream("ffv1", rate=10)
        vs.width, vs.height, vs.pix_fmt = 16, 1, "yuv420p"
        for i in range(3):
            f = av.VideoFrame.from_ndarray(np.full((1, 16, 3), 40 * i, np.uint8), format="rgb24")
            f.pts = i
            out.mux(vs.encode(f.reformat(format="yuv420p")))
        out.mux(vs.encode(None))
    with pytest.raises(MediadError, match=r"video is 16x1: too small to encode") as err:
        make_plan(probe(src), load_profile("h264"), no_gpu("none"), OUT)
    assert err.value.reason == "unsupported"


def test_a_second_video_stream_is_named_as_not_kept(tmp_path: Path) -> None:
    src = tmp_path / "two.mkv"
    with av.open(str(SAMPLES / "noaudio.mp4")) as a, av.open(str(SAMPLES / "cartoon.mp4")) as b, \
            av.open(str(src), "w") as out:
        first = out.add_stream_from_template(a.streams.video[0])
        second = out.add_stream_from_template(b.streams.video[0])
        for inp, ost in ((a, first), (b, second)):
            for packet in inp.demux(inp.streams.video[0]):
                if packet.size:
                    packet.stream = ost
                    out.mux(packet)
    plan = make_plan(probe(src), load_profile("h264"), no_gpu("none"), OUT)
    assert plan.decode.stream == 0
    assert plan.warnings == ["video #1 (h264 320x180) not kept: mediad keeps one video stream, "
                             "#0 (as ffmpeg picks: by its pixels, the default flag counting 5 "
                             "million)"]


def test_opus_bitrate_is_capped_per_track_channels() -> None:
    """2048k of opus passes the profile (8 channels); a stereo track gets 512k, and says so."""
    prof = parse_profile("container = 'mkv'\n[audio]\ncodec = 'opus'\nbitrate = '2048k'\n", "p", "p")
    plan = make_plan(probe(SAMPLES / "h264_aac.mp4"), prof, no_gpu("none"), OUT)
    (track,) = plan.audio
    assert (track.codec, track.channels, track.bit_rate) == ("opus", 2, 512_000)
    assert "bitrate capped to 512k (opus takes at most 256k per channel)" in track.reason


def test_speed_maps_to_each_encoder_family() -> None:
    info = probe(SAMPLES / "noaudio.mp4")
    for speed, x26x, nv, svt in [("fastest", "ultrafast", "p1", "12"), ("fast", "faster", "p3", "9"),
                                 ("slowest", "veryslow", "p7", "2")]:
        for codec, expected in [("h264", x26x), ("av1", svt)]:
            container = "mkv"
            prof = parse_profile(f"container = '{container}'\n[video]\ncodec = '{codec}'\n"
                                 f"speed = '{speed}'\n", "p.toml", "p")
            assert make_plan(info, prof, no_gpu("x"), OUT).video.options["preset"] == expected
            assert make_plan(info, prof, full_gpu(), OUT).video.options["preset"] == nv


def test_audio_decisions() -> None:
    info = probe(SAMPLES / "subs.mkv")  # aac eng + opus fra
    plan = make_plan(info, load_profile("h264"), no_gpu("x"), OUT)
    assert [(a.action, a.codec) for a in plan.audio] == [("copy", "aac"), ("encode", "aac")]
    plan = make_plan(info, load_profile("av1"), no_gpu("x"), OUT)
    assert [(a.action, a.codec) for a in plan.audio] == [("encode", "opus"), ("copy", "opus")]
    assert plan.audio[0].sample_rate == 48000 and plan.audio[0].encoder == "libopus"
    plan = make_plan(info, load_profile("web"), no_gpu("x"), OUT)  # channels = 2: stereo fits
    assert plan.audio[0].action == "copy"


def test_subtitle_decisions() -> None:
    info = probe(SAMPLES / "subs.mkv")  # one SRT stream, eng
    decisions = {}
    for container, extra in [("mp4", ""), ("mov", ""), ("mkv", ""),
                             ("webm", "[video]\ncodec = 'av1'\n[audio]\ncodec = 'opus'\n")]:
        prof = parse_profile(f"container = '{container}'\n{extra}", "p.toml", "p")
        plan = make_plan(info, prof, no_gpu("x"), OUT)
        (sp,) = plan.subtitles
        decisions[container] = (sp.action, sp.codec, sp.language)
        assert not plan.warnings
    assert decisions == {"mp4": ("convert", "mov_text", "eng"), "mov": ("convert", "mov_text", "eng"),
                         "mkv": ("copy", "srt", "eng"), "webm": ("convert", "webvtt", "eng")}
    prof = parse_profile("[subtitles]\nmode = 'none'\n", "p.toml", "p")
    (sp,) = make_plan(info, prof, no_gpu("x"), OUT).subtitles
    assert (sp.action, sp.reason) == ("drop", "profile drops subtitles")


def test_frame_residency_decisions() -> None:
    plan = make_plan(probe(SAMPLES / "h264_aac.mp4"), load_profile("h264-720p"), full_gpu(), OUT)
    assert plan.frames_on_gpu and "no host copy" in plan.frames_reason
    assert not plan.with_software_video("busy").frames_on_gpu
    plan = make_plan(probe(SAMPLES / "h264_aac.mp4"), load_profile("h264"), h100_like(), OUT)
    assert not plan.frames_on_gpu and "downloaded once" in plan.frames_reason
    plan = make_plan(probe(SAMPLES / "rotated.mp4"), load_profile("h264"), full_gpu(), OUT)
    assert not plan.frames_on_gpu and "rotation" in plan.frames_reason
    plan = make_plan(probe(SAMPLES / "h264_aac.mp4"), load_profile("h264"), no_gpu("x"), OUT)
    assert not plan.frames_on_gpu and "software decode" in plan.frames_reason


def yuv422_clip(path: Path) -> Path:
    """A real 4:2:2 H.264 clip: the h264 profile's codec but not what it makes, and a stream
    NVDEC cannot decode."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv422p"
        for i in range(5):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 40, np.uint8), format="rgb24")
            f.pts = i
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))
    return path


@pytest.mark.parametrize(("sample", "video", "copied", "why"), [
    ("h264_aac.mp4", "codec = 'h264'", True, "source is already h264 within the profile's limits"),
    ("h264_aac.mp4", "codec = 'hevc'", False, "re-encoded, not copied: source is h264"),
    ("tenbit_hevc.mkv", "codec = 'hevc'", False, "source is 10-bit, the profile makes 8-bit"),
    ("tenbit_hevc.mkv", "codec = 'hevc'\nbit_depth = 10", True, "copied (copy_if_matching)"),
    ("h264_aac.mp4", "max_height = 160", False, "source has 180 lines, over max_height 160"),
    ("rotated.mp4", "max_height = 300", False, "source has 320 lines, over max_height 300"),
    ("rotated.mp4", "max_height = 320", True, "copied (copy_if_matching)"),
    ("h264_aac.mp4", "bitrate = '100k'", False, "source video is 177 kb/s, over bitrate 100k"),
    ("h264_aac.mp4", "bitrate = '200k'", True, "copied (copy_if_matching)"),
    ("subs.mkv", "bitrate = '300k'", False, "source video is 330 kb/s, over bitrate 300k"),
    ("yuv422", "codec = 'h264'", False, "source pixel format yuv422p is not 4:2:0"),
])
def test_copy_if_matching_copies_only_what_the_profile_would_not_change(
        sample: str, video: str, copied: bool, why: str, tmp_path: Path) -> None:
    src = yuv422_clip(tmp_path / "422.mp4") if sample == "yuv422" else SAMPLES / sample
    profile = parse_profile(f"container = 'mkv'\n[video]\n{video}\ncopy_if_matching = true\n", "x", "x")
    plan = make_plan(probe(src), profile, full_gpu(), OUT)
    assert plan.video.action == ("copy" if copied else "encode")
    assert why in plan.video.reason
    if copied:  # nothing decoded, nothing encoded, no GPU used
        assert not plan.decode.hardware and not plan.frames_on_gpu
        assert f"video:   copy {plan.video.codec} - source is already" in format_job_plan(single_output(plan))
    else:
        assert plan.video.encoder.endswith("_nvenc")


def test_copy_if_matching_off_by_default_and_meaningless_with_copy() -> None:
    plan = make_plan(probe(SAMPLES / "h264_aac.mp4"), load_profile("h264"), no_gpu("x"), OUT)
    assert plan.video.action == "encode" and "not copied" not in plan.video.reason
    with pytest.raises(MediadError, match=r"^x: video: copy_if_matching needs a codec to match"):
        parse_profile("[video]\ncodec = 'copy'\ncopy_if_matching = true\n", "x", "x")


def test_copy_if_matching_still_encodes_under_an_upscaling_stage() -> None:
    pytest.importorskip("torch")
    profile = parse_profile("[video]\ncopy_if_matching = true\n[[stages]]\nkind = 'upscale'\n"
                            "device = 'cpu'\n", "x", "x")
    plan = make_plan(probe(SAMPLES / "h264_aac.mp4"), profile, no_gpu("x"), OUT)
    assert plan.video.action == "encode"
    assert plan.video.reason.endswith("not copied: an upscaling stage changes the frames")


def test_frames_leave_the_gpu_for_sources_that_are_not_4_2_0(tmp_path: Path) -> None:
    """NVDEC gives 4:4:4 as planar YUV444 and no 4:2:2 at all: torch and NVENC take NV12/P010."""
    plan = make_plan(probe(yuv422_clip(tmp_path / "422.mp4")), load_profile("h264"), full_gpu(), OUT)
    assert plan.decode.hardware and plan.video.hardware
    assert (plan.frames_on_gpu, plan.frames_reason) == (False, "yuv422p is not 4:2:0: frames downloaded once")
    assert make_plan(probe(SAMPLES / "tenbit_hevc.mkv"), load_profile("hevc"), full_gpu(), OUT).frames_on_gpu


def test_software_decode_replan_keeps_the_encoder_and_records_why() -> None:
    plan = make_plan(probe(SAMPLES / "h264_aac.mp4"), load_profile("h264"), full_gpu(), OUT)
    soft = plan.with_software_decode("NVDEC failed: Generic error in an external library")
    assert (soft.decode.hardware, soft.decode.device, soft.frames_on_gpu) == (False, None, False)
    assert soft.video == plan.video  # NVENC still encodes, now from host frames
    assert soft.fallbacks == [*plan.fallbacks, "decode: NVDEC failed: Generic error in an external library"]
    assert "decode:  #0 h264 software - software decoder: NVDEC failed" in format_job_plan(single_output(soft))
