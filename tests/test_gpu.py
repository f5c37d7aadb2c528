"""The GPU path: telemetry, device choice, capability probing, frames <-> tensors, the transform.

Everything above the "GPU only" line runs on any machine (real PyAV frames, real tensors, NVML-
shaped records). Tests marked `gpu` need CUDA and are skipped cleanly without it (conftest.py).
"""

from __future__ import annotations

import io
import json
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mediad import gpu  # noqa: E402
from mediad.cli import main  # noqa: E402
from mediad.errors import MediadError  # noqa: E402
from mediad.gpu import Capabilities, Capability, DeviceTelemetry  # noqa: E402
from mediad.media import color  # noqa: E402
from mediad.media.gpu_frames import (  # noqa: E402
    GpuVideoTransform,
    alloc_planes,
    frame_to_planes,
    planes_to_frame,
)

GIB = 1 << 30
NO_GPU = gpu.cuda_device_count()[0] == 0


def test_gpu_modules_import_neither_torch_nor_pynvml() -> None:
    """The CPU path imports these modules; torch and NVML load only when used."""
    import subprocess
    import sys

    code = ("import sys, mediad.gpu, mediad.media.color, mediad.media.gpu_frames; "
            "print(sorted(m for m in ('torch', 'pynvml') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


# --- NVENC failure classification (messages as FFmpeg/NVENC/CUDA print them) ----------------

SESSION_LIMIT = ("[Errno 542398533] Generic error in an external library: "
                 "'avcodec_open2(\"h264_nvenc\", {})'; OpenEncodeSessionEx failed: out of memory "
                 "(10): (no details); No capable devices found")
H100_NO_NVENC = ("[Errno 542398533] Generic error in an external library: "
                 "'avcodec_open2(\"h264_nvenc\", {'gpu': '0'})'; OpenEncodeSessionEx failed: "
                 "unsupported device (2): (no details); No capable devices found")


@pytest.mark.parametrize(("message", "status"), [
    (SESSION_LIMIT, "busy"),
    ("OpenEncodeSessionEx failed: incompatible client key (21): (no details)", "busy"),
    ("[Errno 12] Cannot allocate memory: 'avcodec_open2(\"hevc_nvenc\", {})'", "busy"),
    ("EncodePicture failed!: encoder busy (19)", "busy"),
    (H100_NO_NVENC, "unsupported"),
    ("No capable devices found", "unsupported"),
    ("Codec not supported", "unsupported"),
    ("Driver does not support the required nvenc API version. Required: 13.0 Found: 12.1",
     "unsupported"),
    ("[h264_nvenc] Cannot load libcuda.so.1", "unavailable"),
    ("[h264] Cannot load libnvcuvid.so.1; Failed loading nvcuvid.", "unavailable"),
    ("Generic error in an external library", "error"),
])
def test_classify_nvenc_error(message: str, status: str) -> None:
    assert gpu.classify_nvenc_error(message) == status
    assert gpu.is_transient_nvenc_error(message) == (status == "busy")


def test_capability_status_defaults_and_no_gpu() -> None:
    assert Capability(True, "fine").status == "ok"
    assert Capability(False, "broken").status == "error"
    busy = Capability(False, "session limit", "busy")
    assert busy.transient and not Capability(False, "x", "unsupported").transient
    caps = gpu.no_gpu("no driver")
    assert caps.device is None
    assert {c.status for c in (*caps.nvenc.values(), *caps.nvdec.values())} == {"unavailable"}
    data = caps.to_dict()
    assert data["nvenc"]["h264"] == {"ok": False, "status": "unavailable", "reason": "no driver"}
    assert gpu.capabilities(None).device is None


def test_av1_nvdec_is_a_lack_pyav_decodes_it_with_libdav1d() -> None:
    """PyAV takes FFmpeg's first AV1 decoder, libdav1d, which has no CUDA path on any GPU."""
    cap = gpu.trials._trial_nvdec("av1", 0)
    assert (cap.ok, cap.status) == (False, "unsupported")
    assert cap.reason == ("NVDEC av1 not reachable: PyAV decodes av1 with libdav1d, which has "
                          "no CUDA path")


@pytest.mark.skipif(not NO_GPU, reason="checks behaviour on a machine without a GPU")
def test_capability_trials_of_a_failing_device_never_raise() -> None:
    gpu.forget_capabilities()
    try:
        caps = gpu.capabilities(0)  # a device index with no device behind it
    finally:
        gpu.forget_capabilities()
    assert not any(c.ok for c in (*caps.nvenc.values(), *caps.nvdec.values()))
    assert caps.nvdec["av1"].status == "unsupported" and caps.nvdec["h264"].status == "unavailable"


def test_missing_encode_library_on_a_gpu_without_nvenc_is_a_lack(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """NVENC's libraries failing to load where NVML says the GPU has no encoder (an H100 in a
    container without libnvidia-encode): a lack, not a broken driver. NVML's answer is the
    H100's; the trial and its failure are real."""
    monkeypatch.setattr(gpu.trials, "_nvml_has_nvenc", lambda device: False)
    cap = gpu.trials._trial_nvenc("h264", 0)
    if cap.ok:
        pytest.skip("NVENC works here")
    assert cap.status == "unsupported" and "not supported on this GPU" in cap.reason


def test_busy_or_failed_capabilities_are_not_settled() -> None:
    ok = Capability(True, "ok")
    lack = Capability(False, "unsupported device", "unsupported")
    h100 = Capabilities(0, {c: lack for c in gpu.CODECS}, {c: ok for c in gpu.CODECS})
    assert h100.settled  # no NVENC engine is a fact: keep it
    busy = Capabilities(0, {"h264": Capability(False, SESSION_LIMIT, "busy")}, {"h264": ok})
    assert not busy.settled  # a session limit is a moment: probe again later
    assert not Capabilities(0, {"h264": Capability(False, "?")}, {}).settled


def test_capture_ffmpeg_log_collects_lines_and_restores_level() -> None:
    before = av.logging.get_level()
    with gpu.capture_ffmpeg_log() as lines:
        av.logging.log(av.logging.ERROR, "h264_nvenc",
                       "OpenEncodeSessionEx failed: out of memory (10): (no details)")
    assert any("out of memory" in ln for ln in lines)
    assert gpu.is_transient_nvenc_error(" ".join(lines))
    assert av.logging.get_level() == before


@pytest.mark.skipif(not NO_GPU, reason="checks behaviour on a machine without a GPU")
def test_trials_without_gpu_say_why_and_are_not_transient() -> None:
    for cap in (gpu.trials._trial_nvenc("h264", 0), gpu.trials._trial_nvdec("h264", 0)):
        assert not cap.ok
        assert cap.status in ("unavailable", "unsupported")
        assert cap.reason


# --- CUDA_VISIBLE_DEVICES and device choice ----------------------------------------------------

UUIDS = ["GPU-aaaa1111-0000", "GPU-bbbb2222-0000", "GPU-cccc3333-0000"]


@pytest.mark.parametrize(("env", "expected"), [
    (None, [0, 1, 2]),
    ("", []),
    ("-1", []),
    ("2,0", [2, 0]),
    ("1,7,0", [1]),  # CUDA stops at the first entry that names no device
    ("GPU-bbbb", [1]),
    ("GPU-cccc3333-0000,0", [2, 0]),
    ("GPU-", []),  # ambiguous prefix
    ("MIG-1234", []),
    ("0,0,1", [0, 1]),
    (" 1 , 2 ", [1, 2]),
])
def test_resolve_visible(env: str | None, expected: list[int]) -> None:
    assert gpu.resolve_visible(env, UUIDS) == expected


def tele(cuda: int | None, name: str = "NVIDIA L4", *, free_gib: float = 20, enc_cap: int | None = 100,
         sessions: int = 0, util: int = 0, has_nvenc: bool | None = True) -> DeviceTelemetry:
    """An NVML-shaped record."""
    return DeviceTelemetry(
        index=cuda if cuda is not None else 9, cuda_index=cuda, name=name, uuid=f"GPU-{cuda}",
        memory_total=24 * GIB, memory_free=int(free_gib * GIB), util_gpu=util,
        util_encoder=None if enc_cap is None else 100 - enc_cap, util_decoder=0,
        encoder_sessions=sessions, encoder_fps=0, encoder_latency_us=0,
        encoder_capacity=enc_cap, has_nvenc=has_nvenc)


def test_pick_prefers_free_encoder() -> None:
    index, why = gpu.pick_device([tele(0, enc_cap=20, sessions=3), tele(1, enc_cap=90, sessions=1)])
    assert index == 1
    assert "GPU 1" in why and "90%" in why


def test_pick_prefers_a_gpu_with_nvenc_over_a_bigger_one_without() -> None:
    h100 = tele(0, "NVIDIA H100 80GB HBM3", free_gib=79, enc_cap=None, has_nvenc=False)
    assert gpu.pick_device([h100, tele(1, free_gib=3)])[0] == 1
    only, why = gpu.pick_device([h100])
    assert only == 0 and "only visible" in why


def test_pick_avoids_devices_without_memory() -> None:
    full = tele(0, enc_cap=100, free_gib=0.2)
    assert gpu.pick_device([full, tele(1, enc_cap=40)])[0] == 1


def test_pick_tie_breaks_memory_then_load_then_index() -> None:
    assert gpu.pick_device([tele(0, free_gib=5), tele(1, free_gib=15)])[0] == 1
    assert gpu.pick_device([tele(0, util=90), tele(1, util=10)])[0] == 1
    assert gpu.pick_device([tele(0), tele(1)])[0] == 0
    # Sampling noise inside one 10% step does not flip the choice.
    assert gpu.pick_device([tele(0, enc_cap=91), tele(1, enc_cap=99, free_gib=2)])[0] == 0


def test_pick_ignores_hidden_devices_and_needs_one() -> None:
    assert gpu.pick_device([tele(None, enc_cap=100), tele(0, enc_cap=10)])[0] == 0
    with pytest.raises(ValueError):
        gpu.pick_device([tele(None)])


def test_choose_device_requests() -> None:
    assert gpu.choose_device("none") == (None, "--gpu none")
    index, why = gpu.choose_device("auto")
    assert (index is None) == (not gpu.visible_devices()) and why
    with pytest.raises(MediadError, match="expected auto, none or a device number"):
        gpu.choose_device("fast")
    with pytest.raises(MediadError, match="no such GPU"):
        gpu.choose_device("97")


# --- `mediad gpus` -------------------------------------------------------------------------

@pytest.mark.skipif(not NO_GPU, reason="checks behaviour on a machine without a GPU")
def test_gpus_without_gpu_says_so_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gpus"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("No NVIDIA GPU:") and "CPU" in out
    assert main(["gpus", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["available"] is False and data["devices"] == [] and data["reason"]
    assert data["auto"]["device"] is None


def h100_report() -> dict:
    """A gpus_report() as an H100 machine gives it: NVDEC yes, NVENC absent by design."""
    lack = Capability(False, "h264_nvenc not supported on this GPU: " + H100_NO_NVENC,
                      gpu.classify_nvenc_error(H100_NO_NVENC))
    caps = Capabilities(0, {c: lack for c in gpu.CODECS},
                        {c: Capability(True, "decoded") for c in gpu.CODECS})
    rec = tele(0, "NVIDIA H100 80GB HBM3", free_gib=79, enc_cap=None, has_nvenc=False)
    device = rec.to_dict()
    device["capabilities"] = caps.to_dict()
    return {"available": True, "reason": None, "driver_version": "580.159.04",
            "cuda_driver_version": "13.0", "cuda_visible_devices": None, "probed": True,
            "devices": [device], "auto": {"device": 0, "reason": "the only visible GPU"}}


def test_no_nvenc_gpu_shows_unsupported_not_error() -> None:
    report = h100_report()
    assert report["devices"][0]["capabilities"]["nvenc"]["h264"]["status"] == "unsupported"
    text = gpu.format_gpus(report)
    assert "no NVENC engine" in text
    assert "NVENC     h264 no (not on this GPU)" in text
    assert "NVDEC     h264 yes" in text
    assert "error" not in text.lower()
    json.dumps(report)  # --json must serialise it


def test_format_gpus_shows_busy_with_reason() -> None:
    report = h100_report()
    report["devices"][0]["has_nvenc"] = True
    report["devices"][0]["capabilities"]["nvenc"]["h264"] = {
        "ok": False, "status": "busy", "reason": "h264_nvenc busy, retry later: " + SESSION_LIMIT}
    text = gpu.format_gpus(report)
    assert "h264 busy (retry later)" in text and "out of memory" in text


# --- frames <-> tensors (CPU) ----------------------------------------------------------------

def rgb_pattern(i: int, w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // max(w - 1, 1) + 5 * i) % 256, yy * 255 // max(h - 1, 1),
                    128 + 100 * np.sin((xx + yy + 3 * i) / 9.0)], -1)
    return img.astype(np.uint8)


def make_clip(encoder: str, w: int = 320, h: int = 240, frames: int = 8,
              pix_fmt: str = "yuv420p") -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        s = out.add_stream(encoder, rate=25)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if encoder == "libx264":
            s.options = {"crf": "12"}
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(rgb_pattern(i, w, h), format="rgb24")
            f.pts = i
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    return buf.getvalue()


def software_frames(clip: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(clip)) as src:
        return list(src.decode(video=0))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def test_nv12_frame_to_planes_is_zero_copy() -> None:
    frame = av.VideoFrame.from_ndarray(rgb_pattern(0, 64, 48), format="rgb24").reformat(
        format="nv12")
    p = frame_to_planes(frame)
    assert p.fmt == "nv12" and p.y.shape == (48, 64) and p.uv.shape == (24, 32, 2)
    assert p.y.data_ptr() == frame.planes[0].buffer_ptr
    p.y[0, 0] = 7  # writes land in the frame: it is a view
    assert frame.to_ndarray()[0, 0] == 7


def test_yuv420p_and_10bit_frames_become_nv12_and_p010() -> None:
    src = av.VideoFrame.from_ndarray(rgb_pattern(1, 64, 48), format="rgb24")
    for fmt, want in (("yuv420p", "nv12"), ("yuv420p10le", "p010le"), ("yuv444p", "nv12")):
        frame = src.reformat(format=fmt)
        p = frame_to_planes(frame)
        ref = frame.reformat(format=want)
        assert p.fmt == want
        assert torch.equal(p.y, torch.from_dlpack(ref.planes[0]))
        if fmt != "yuv444p":  # 4:4:4 goes through swscale's own subsampling filter
            assert torch.equal(p.uv, torch.from_dlpack(ref.planes[1]))


def test_frame_colour_metadata_chooses_matrix_and_range() -> None:
    frame = av.VideoFrame(64, 48, "nv12")
    frame.colorspace, frame.color_range = 9, 2  # BT2020_NCL, JPEG
    p = frame_to_planes(frame)
    assert (p.matrix, p.full_range, p.colorspace, p.color_range) == ("bt2020", True, 9, 2)
    plain = frame_to_planes(av.VideoFrame(1280, 720, "yuvj420p"))
    assert plain.matrix == "bt709" and plain.full_range and plain.colorspace is None


def test_alloc_planes_is_one_allocation_with_uv_after_y() -> None:
    for fmt, itemsize in (("nv12", 1), ("p010le", 2)):
        y, uv = alloc_planes(36, 50, fmt)
        pitch = y.stride(0)
        assert y.shape == (36, 50) and uv.shape == (18, 25, 2)
        assert (pitch * itemsize) % 64 == 0 and pitch >= 50
        assert uv.data_ptr() == y.data_ptr() + pitch * 36 * itemsize
        assert uv.stride() == (pitch, 2, 1)
    with pytest.raises(ValueError, match="even"):
        alloc_planes(35, 50)


def test_planes_to_frame_on_cpu() -> None:
    y, uv = alloc_planes(48, 64, "nv12")
    y.copy_(torch.arange(64, dtype=torch.uint8).expand(48, 64))
    uv.fill_(128)
    frame = planes_to_frame(y, uv, "nv12", pts=12, time_base=Fraction(1, 25),
                            colorspace=1, color_range=1)
    assert frame.format.name == "nv12" and (frame.width, frame.height) == (64, 48)
    assert frame.pts == 12 and frame.time_base == Fraction(1, 25)
    assert (frame.colorspace, frame.color_range) == (1, 1)
    arr = frame.to_ndarray()
    assert np.array_equal(arr[:48], y.numpy()) and np.all(arr[48:] == 128)
    # The frame owns a reference: it outlives the tensors' names.
    del y, uv
    assert frame.to_ndarray()[10, 63] == 63
    p10 = planes_to_frame(*alloc_planes(16, 16, "p010le"), "p010le")
    assert p10.format.name == "p010le"


def test_planes_to_frame_rejects_bad_planes() -> None:
    y, uv = alloc_planes(16, 16)
    with pytest.raises(ValueError, match="must be torch.uint16"):
        planes_to_frame(y, uv, "p010le")
    with pytest.raises(ValueError, match="UV must be"):
        planes_to_frame(y, uv[:4], "nv12")
    with pytest.raises(ValueError, match="nv12 or p010le"):
        planes_to_frame(y, uv, "yuv420p")


def test_transform_passes_untouched_frames_through() -> None:
    frame = av.VideoFrame(64, 48, "nv12")
    assert GpuVideoTransform()(frame) is frame
    assert GpuVideoTransform(max_height=48)(frame) is frame
    assert GpuVideoTransform(max_height=24)(frame) is not frame


def test_transform_resizes_like_swscale_and_keeps_timing_and_colour() -> None:
    frames = software_frames(make_clip("libx264"))
    t = GpuVideoTransform(max_height=120)
    for frame in frames[:3]:
        frame.colorspace, frame.color_range = 1, 1
        out = t(frame)
        assert (out.width, out.height, out.format.name) == (160, 120, "nv12")
        assert out.pts == frame.pts and out.time_base == frame.time_base
        assert (out.colorspace, out.color_range) == (1, 1)
        ref = frame.reformat(width=160, height=120, format="nv12", interpolation="AREA")
        assert np.abs(out.to_ndarray().astype(int) - ref.to_ndarray()).mean() <= 0.6


def test_transform_runs_the_model_on_rgb() -> None:
    frame = software_frames(make_clip("libx264"))[0]
    seen: list[tuple[int, ...]] = []

    def darken(rgb: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(rgb.shape))
        assert rgb.dtype == torch.float32 and float(rgb.min()) >= 0 and float(rgb.max()) <= 1
        return rgb * 0.5

    out = GpuVideoTransform(model=darken)(frame)
    assert seen == [(3, 240, 320)]
    # Luma of half-bright RGB: 16 + (Y - 16) / 2 in limited range.
    y_in = frame_to_planes(frame).y.float()
    y_out = frame_to_planes(out).y.float()
    assert (y_out - (16 + (y_in - 16) / 2)).abs().mean() <= 1.0
    identity = GpuVideoTransform(model=lambda rgb: rgb)(frame)
    assert np.abs(identity.to_ndarray().astype(int) - frame.reformat(format="nv12")
                  .to_ndarray()).mean() <= 1.0


def test_transform_model_may_change_size() -> None:
    frame = software_frames(make_clip("libx264", 64, 48, frames=1))[0]

    def upscale(rgb: torch.Tensor) -> torch.Tensor:
        return color.resize(rgb, 96, 128)

    assert (GpuVideoTransform(model=upscale)(frame).width, ) == (128,)
    capped = GpuVideoTransform(model=upscale, max_height=72)(frame)
    assert (capped.width, capped.height) == (96, 72)


def test_transform_converts_bit_depth() -> None:
    src = av.VideoFrame.from_ndarray(rgb_pattern(2, 64, 48), format="rgb24")
    ten = src.reformat(format="p010le")
    eight = GpuVideoTransform(out_format="nv12")(ten)
    assert eight.format.name == "nv12"
    ref = src.reformat(format="nv12")
    assert np.abs(eight.to_ndarray().astype(int) - ref.to_ndarray()).mean() <= 1.0
    back = GpuVideoTransform(out_format="p010le")(ref)
    assert back.format.name == "p010le"
    y10 = frame_to_planes(back).y
    assert torch.equal(y10.to(torch.int32), frame_to_planes(ref).y.to(torch.int32) << 8)


def test_cpu_transcode_loop_through_the_transform(tmp_path: Path) -> None:
    """decode -> transform -> libx264 -> decode: the loop the pipeline runs, on the CPU."""
    clip = make_clip("libx264", frames=10)
    t = GpuVideoTransform(max_height=120)
    out_path = tmp_path / "out.mkv"
    refs = []
    with av.open(io.BytesIO(clip)) as src, av.open(str(out_path), "w") as out:
        vs = src.streams.video[0]
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
        s.time_base = vs.time_base
        s.options = {"crf": "10"}
        for frame in src.decode(vs):
            refs.append(frame.reformat(width=160, height=120, format="gray",
                                       interpolation="AREA").to_ndarray())
            out.mux(s.encode(t(frame)))
        out.mux(s.encode(None))
    with av.open(str(out_path)) as chk:
        got = [f.reformat(format="gray").to_ndarray() for f in chk.decode(video=0)]
    assert len(got) == len(refs) == 10
    assert psnr(np.stack(got), np.stack(refs)) >= 38.0


# --- GPU only -------------------------------------------------------------------------------
# Run on a machine with CUDA: `pytest -m gpu` (see docs/gpu-validation.md).

def cuda_device() -> int:
    index, _ = gpu.choose_device("auto")
    assert index is not None, "torch sees CUDA but mediad finds no visible GPU"
    return index


def nvdec_frames(clip: bytes, device: int) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(clip), hwaccel=gpu.cuda_hwaccel(
            device, allow_software_fallback=False)) as src:
        return list(src.decode(video=0))


@pytest.mark.gpu
@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_nvdec_decodes_into_cuda_frames(codec: str) -> None:
    device = cuda_device()
    assert gpu.capabilities(device).nvdec[codec].ok, gpu.capabilities(device).nvdec[codec].reason
    clip = make_clip({"h264": "libx264", "hevc": "libx265"}[codec], frames=6)
    frames = nvdec_frames(clip, device)
    assert len(frames) == 6
    assert all(f.format.name == "cuda" and f.sw_format.name == "nv12" for f in frames)


@pytest.mark.gpu
def test_nvdec_planes_in_torch_match_software_decode() -> None:
    device = cuda_device()
    clip = make_clip("libx264", frames=4)
    torch.zeros(1, device=f"cuda:{device}")  # torch owns the context first: the hard order
    for hw, sw in zip(nvdec_frames(clip, device), software_frames(clip), strict=True):
        p = frame_to_planes(hw)
        assert p.y.is_cuda and p.y.device.index == device
        ref = frame_to_planes(sw)
        # H.264 decoding is bit-exact: NVDEC and libavcodec agree to the last bit.
        assert torch.equal(p.y.cpu(), ref.y) and torch.equal(p.uv.cpu(), ref.uv)


@pytest.mark.gpu
def test_gpu_rgb_round_trip_within_one_lsb_of_software() -> None:
    device = cuda_device()
    clip = make_clip("libx264", frames=3)
    for hw, sw in zip(nvdec_frames(clip, device), software_frames(clip), strict=True):
        p = frame_to_planes(hw)
        y, uv = color.rgb_to_nv12(color.nv12_to_rgb(p.y, p.uv, matrix=p.matrix),
                                  matrix=p.matrix)
        ref = frame_to_planes(sw)
        ref_y, ref_uv = color.rgb_to_nv12(color.nv12_to_rgb(ref.y, ref.uv, matrix=ref.matrix),
                                          matrix=ref.matrix)
        assert (y.cpu().float() - ref.y.float()).abs().mean() <= 1.0  # round trip
        assert (uv.cpu().float() - ref.uv.float()).abs().mean() <= 1.0
        assert (y.cpu().float() - ref_y.float()).abs().max() <= 1  # GPU == CPU maths
        assert (uv.cpu().float() - ref_uv.float()).abs().max() <= 1


@pytest.mark.gpu
def test_planes_to_frame_on_cuda_repacks_into_one_allocation() -> None:
    device = cuda_device()
    dev = torch.device("cuda", device)
    y = torch.randint(16, 235, (64, 96), dtype=torch.uint8, device=dev)
    uv = torch.randint(16, 240, (32, 48, 2), dtype=torch.uint8, device=dev)  # separate memory
    frame = planes_to_frame(y, uv, "nv12", pts=3, time_base=Fraction(1, 25))
    assert frame.format.name == "cuda" and frame.sw_format.name == "nv12"
    assert frame.planes[1].buffer_ptr == frame.planes[0].buffer_ptr + frame.planes[0].line_size * 64
    back = frame_to_planes(frame)
    assert torch.equal(back.y, y) and torch.equal(back.uv, uv)


@pytest.mark.gpu
def test_nvenc_encodes_transformed_cuda_frames(tmp_path: Path) -> None:
    device = cuda_device()
    caps = gpu.capabilities(device)
    if not caps.nvenc["h264"].ok:
        pytest.skip(f"no NVENC here: {caps.nvenc['h264'].status}: {caps.nvenc['h264'].reason}")
    clip = make_clip("libx264", frames=12)
    t = GpuVideoTransform(max_height=120)
    out_path = tmp_path / "nvenc.mkv"
    refs = []
    with av.open(str(out_path), "w") as out:
        s = out.add_stream("h264_nvenc", rate=25, hwaccel=gpu.cuda_hwaccel(device))
        s.width, s.height, s.pix_fmt = 160, 120, "nv12"  # pix_fmt: the hw frames' sw_format
        s.time_base = Fraction(1, 1000)
        s.options = {"cq": "18"}
        for hw, sw in zip(nvdec_frames(clip, device), software_frames(clip), strict=True):
            refs.append(sw.reformat(width=160, height=120, format="gray",
                                    interpolation="AREA").to_ndarray())
            frame = t(hw)
            assert frame.format.name == "cuda"  # never left the GPU
            out.mux(s.encode(frame))
        out.mux(s.encode(None))
    with av.open(str(out_path)) as chk:
        got = [f.reformat(format="gray").to_ndarray() for f in chk.decode(video=0)]
    assert len(got) == 12
    assert psnr(np.stack(got), np.stack(refs)) >= 35.0


@pytest.mark.gpu
def test_gpu_without_nvenc_reports_unsupported_not_error() -> None:
    records, _ = gpu.read_telemetry()
    device = cuda_device()
    name = next(r.name for r in records if r.cuda_index == device)
    if not any(k in name for k in ("H100", "H200", "A100", "H800", "A800")):
        pytest.skip(f"{name} may have NVENC; this checks decode-only GPUs")
    caps = gpu.capabilities(device)
    for codec, cap in caps.nvenc.items():
        assert not cap.ok and cap.status == "unsupported", (codec, cap)
    assert caps.nvdec["h264"].ok and caps.nvdec["hevc"].ok
    text = gpu.format_gpus(gpu.gpus_report(probe=True))
    assert "not on this GPU" in text


HANDSHAKE = """
import io, sys, torch
torch.zeros(1, device="cuda:{device}")  # torch creates the primary context first
import av
from mediad import gpu
from mediad.media.gpu_frames import frame_to_planes
clip = bytes.fromhex(sys.stdin.read())
with av.open(io.BytesIO(clip), hwaccel=gpu.cuda_hwaccel({device}, allow_software_fallback=False)) as s:
    frames = list(s.decode(video=0))
assert frames and all(f.format.name == "cuda" for f in frames), [f.format.name for f in frames]
assert float(frame_to_planes(frames[0]).y.float().mean()) > 0
print("shared")
"""


@pytest.mark.gpu
def test_nvdec_after_torch_created_the_context() -> None:
    """FFmpeg's primary_ctx=1 refuses a context torch made first unless the flags are aligned."""
    import subprocess
    import sys

    device = cuda_device()
    clip = make_clip("libx264", frames=3)
    run = subprocess.run([sys.executable, "-c", HANDSHAKE.format(device=device)],
                         input=clip.hex(), capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert run.returncode == 0 and "shared" in run.stdout, run.stderr[-2000:]
