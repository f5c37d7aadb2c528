"""The GPU stage bridge, run on software frames and CPU tensors (the same code as on CUDA).

Frames the stages only look at must reach the encoder as their decoded planes (no RGB round
trip); a model's output must come back as encoder-ready NV12 in the source's colour.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from conftest import make_clip

torch = pytest.importorskip("torch")

from mediad.media.gpu_frames import frame_to_planes, planes_to_rgb  # noqa: E402
from mediad.media.stages import gpu_bridge  # noqa: E402
from mediad.models.runner import StageRunner  # noqa: E402
from mediad.profile_stages import ClassifyStage, UpscaleStage  # noqa: E402

W, H, N = 64, 48, 10


@pytest.fixture(scope="module")
def decoded(tmp_path_factory: pytest.TempPathFactory) -> list[av.VideoFrame]:
    clip = make_clip(tmp_path_factory.mktemp("bridge") / "c.mp4", frames=N, size=(W, H), audio=False)
    with av.open(str(clip)) as c:
        return list(c.decode(video=0))


def _run(bridge, frames: list[av.VideoFrame]) -> list[av.VideoFrame]:
    out: list[av.VideoFrame] = []
    for f in frames:
        out += bridge(f)
    return out + bridge(None)


def _yuv(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U, V planes of a 4:2:0 frame (nv12 or yuv420p), as arrays."""
    if frame.format.name == "nv12":
        y = frame.to_ndarray()[:frame.height]
        uv = frame.to_ndarray()[frame.height:].reshape(frame.height // 2, frame.width // 2, 2)
        return y, uv[..., 0], uv[..., 1]
    planes = frame.to_ndarray()
    return (planes[:frame.height], planes[frame.height:frame.height * 5 // 4].reshape(-1, frame.width // 2),
            planes[frame.height * 5 // 4:].reshape(-1, frame.width // 2))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def _encodes(frames: list[av.VideoFrame]) -> int:
    """Bytes libx264 makes of the frames as they are (they must be encoder-ready)."""
    cc = av.CodecContext.create("libx264", "w")
    cc.width, cc.height, cc.pix_fmt = frames[0].width, frames[0].height, frames[0].format.name
    cc.time_base = frames[0].time_base
    cc.options = {"preset": "ultrafast"}
    size = sum(p.size for f in frames for p in cc.encode(f))
    return size + sum(p.size for p in cc.encode(None))


@pytest.fixture(scope="module")
def classify() -> StageRunner:
    return StageRunner.from_profile([ClassifyStage(kind="classify", every=3)], gpu=None)


def test_analysis_only_frames_reach_the_encoder_as_decoded_planes(decoded, classify) -> None:
    out = _run(gpu_bridge(classify, size=(W, H), out_format="nv12", nvenc=True, post=None,
                          batch=4), decoded)
    assert [f.pts for f in out] == [f.pts for f in decoded]
    assert {f.format.name for f in out} == {"nv12"}
    for got, src in zip(out, decoded, strict=True):
        for g, s in zip(_yuv(got), _yuv(src), strict=True):
            np.testing.assert_array_equal(g, s)  # bit-exact: no trip through RGB
    assert _encodes(out) > 0
    assert [s.frame for s in classify.finish().samples] == [0, 3, 6, 9]


def test_analysis_only_without_nvenc_downloads_planes_for_the_software_path(decoded) -> None:
    runner = StageRunner.from_profile([ClassifyStage(kind="classify", every=5)], gpu=None)
    seen: list[str] = []

    def post(frame: av.VideoFrame | None) -> list[av.VideoFrame]:
        if frame is None:
            return []
        seen.append(frame.format.name)
        return [frame.reformat(format="yuv420p")]

    out = _run(gpu_bridge(runner, size=(W, H), out_format="nv12", nvenc=False, post=post,
                          batch=4), decoded)
    assert set(seen) == {"nv12"} and len(out) == N
    for got, src in zip(out, decoded, strict=True):
        np.testing.assert_array_equal(_yuv(got)[0], _yuv(src)[0])


def test_analysis_only_frames_are_resized_to_the_plan(decoded) -> None:
    runner = StageRunner.from_profile([ClassifyStage(kind="classify", every=5)], gpu=None)
    out = _run(gpu_bridge(runner, size=(32, 24), out_format="nv12", nvenc=True, post=None,
                          batch=3), decoded)
    assert {(f.width, f.height) for f in out} == {(32, 24)}
    for got, src in zip(out, decoded, strict=True):
        small = src.reformat(width=32, height=24, format="yuv420p", interpolation="AREA")
        assert _psnr(_yuv(got)[0], _yuv(small)[0]) > 35


def test_upscaled_frames_come_back_as_nv12_in_the_source_colour(decoded) -> None:
    runner = StageRunner.from_profile([UpscaleStage(kind="upscale", scale=2)], gpu=None)
    out = _run(gpu_bridge(runner, size=(2 * W, 2 * H), out_format="nv12", nvenc=True, post=None,
                          batch=4), decoded[:4])
    assert [(f.width, f.height, f.format.name) for f in out] == [(2 * W, 2 * H, "nv12")] * 4
    assert [f.pts for f in out] == [f.pts for f in decoded[:4]]
    # what the model makes of the same frames, straight from the runner
    rgb = torch.stack([planes_to_rgb(frame_to_planes(f)) for f in decoded[:4]])
    model = runner.process(rgb, [0.0] * 4).frames
    model_rgb = (model.float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    for got, want in zip(out, model_rgb, strict=True):
        # swscale's NV12 -> RGB against the model's own RGB: only 4:2:0 chroma and rounding differ
        assert _psnr(got.to_ndarray(format="rgb24"), want) > 30
    assert _encodes(out) > 0


# --- on a CUDA GPU: NVDEC frames ----------------------------------------------------------------

def _user_classifier(tmp_path: Path, device: str) -> StageRunner:
    """A classify stage with a user TorchScript model: no weight package needed."""
    from test_models_classify import ChannelMeans

    model, labels = tmp_path / "colours.pt", tmp_path / "labels.txt"
    torch.jit.script(ChannelMeans()).save(str(model))
    labels.write_text("red\ngreen\nblue\n")
    cfg = ClassifyStage(kind="classify", model=str(model), labels=str(labels), input_size=32,
                        mean=(0, 0, 0), std=(1, 1, 1), every=1, device=device)
    return StageRunner.from_profile([cfg], gpu=int(device.split(":")[1]))


@pytest.mark.gpu
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_gpu_bridge_on_nvdec_frames(tmp_path: Path) -> None:
    from mediad import gpu

    device, _ = gpu.choose_device("auto")
    assert device is not None
    clip = make_clip(tmp_path / "c.mp4", frames=6, size=(128, 96), audio=False)
    with av.open(str(clip)) as c:
        software = list(c.decode(video=0))
    with av.open(str(clip), hwaccel=gpu.cuda_hwaccel(device, allow_software_fallback=False)) as c:
        nvdec = list(c.decode(video=0))
    assert {f.format.name for f in nvdec} == {"cuda"}

    # analysis only, NVENC: FFmpeg's own CUDA frames go on to the encoder untouched
    runner = _user_classifier(tmp_path, f"cuda:{device}")
    out = _run(gpu_bridge(runner, size=(128, 96), out_format="nv12", nvenc=True, post=None,
                          batch=3), nvdec)
    assert len(out) == 6 and all(o is f for o, f in zip(out, nvdec, strict=True))
    assert runner.finish().samples[-1].top[0].label == "green"  # the clip's green ramp, on CUDA

    # analysis only, no NVENC (H100/H200): downloaded once, as decoded (bit-exact with software)
    runner = _user_classifier(tmp_path, f"cuda:{device}")
    out = _run(gpu_bridge(runner, size=(128, 96), out_format="nv12", nvenc=False,
                          post=lambda f: [] if f is None else [f], batch=3), nvdec)
    for got, ref in zip(out, software, strict=True):
        assert got.format.name == "nv12"
        np.testing.assert_array_equal(_yuv(got)[0], _yuv(ref)[0])

    # upscaled on the GPU, back as CUDA NV12 frames in one allocation for NVENC
    up = StageRunner.from_profile([UpscaleStage(kind="upscale", scale=2, device=f"cuda:{device}")],
                                  gpu=device)
    out = _run(gpu_bridge(up, size=(256, 192), out_format="nv12", nvenc=True, post=None,
                          batch=3), nvdec[:3])
    assert [(f.format.name, f.sw_format.name, f.width, f.height) for f in out] == \
        [("cuda", "nv12", 256, 192)] * 3
    assert out[0].planes[1].buffer_ptr == out[0].planes[0].buffer_ptr + out[0].planes[0].line_size * 192
    y = frame_to_planes(out[0]).y.cpu().numpy()
    ref = software[0].reformat(width=256, height=192, format="yuv420p", interpolation="BICUBIC")
    assert _psnr(y, _yuv(ref)[0]) > 25  # the model's x2 against bicubic: the same picture
