"""The shots stage: TransNetV2 (packaged weights) on a real encoded clip with hard cuts."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mediad.models.base import FrameBatch, StageContext  # noqa: E402
from mediad.models.runner import StageRunner  # noqa: E402
from mediad.models.shots import ShotDetector, load_transnetv2, to_small  # noqa: E402
from mediad.profile_stages import ShotsStage  # noqa: E402

CUTS = (40, 80)  # first frame of the second and third scene
FRAMES = 120
FPS = 25


def scene_frame(scene: int, i: int, w: int = 160, h: int = 90) -> np.ndarray:
    """Frame i of one of three visually different scenes, each with something moving."""
    yy, xx = np.mgrid[0:h, 0:w]
    if scene == 0:  # warm gradient, a white disc moving right
        img = np.stack([xx * 255 // w, yy * 200 // h, np.full_like(xx, 60)], -1)
        img[((xx - 20 - 2 * i) ** 2 + (yy - 45) ** 2) < 150] = (255, 255, 255)
    elif scene == 1:  # blue and white checkerboard panning
        c = (((xx + 2 * i) // 12 + yy // 12) % 2).astype(bool)
        img = np.where(c[..., None], np.array([30, 60, 220]), np.array([240, 240, 240]))
    else:  # green field, a dark bar moving down
        img = np.stack([np.full_like(xx, 40), 120 + xx * 60 // w, np.full_like(xx, 50)], -1)
        img[(2 * i) % h:(2 * i) % h + 10] = (10, 10, 10)
    return img.astype(np.uint8)


def write_clip(path: Path, scenes: list[int]) -> Path:
    """An H.264 clip at 25 fps, one scene number per frame."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = 160, 90, "yuv420p"
        for n, scene in enumerate(scenes):
            f = av.VideoFrame.from_ndarray(scene_frame(scene, n), format="rgb24")
            f.pts = n
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))
    return path


def decode(path: Path) -> tuple[torch.Tensor, list[float]]:
    """(N,3,H,W) uint8 RGB frames and their pts in seconds, as the pipeline hands them over."""
    frames, pts = [], []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            frames.append(torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1))
            pts.append(float(f.pts * f.time_base))
    return torch.stack(frames), pts


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.Tensor, list[float]]:
    scenes = [sum(n >= c for c in CUTS) for n in range(FRAMES)]
    return decode(write_clip(tmp_path_factory.mktemp("shots") / "cuts.mp4", scenes))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_transnetv2()


def cpu_ctx() -> StageContext:
    return StageContext(index=0, device=torch.device("cpu"), dtype=torch.float32,
                        channels_last=False, compile=False, memory_budget=1 << 30, batch_size=None)


@pytest.fixture(scope="module")
def analysis(clip):
    """The shots stage run through the StageRunner, in batches that do not line up with windows."""
    frames, pts = clip
    runner = StageRunner.from_profile([ShotsStage(kind="shots", chapters=True)], fps_hint=FPS)
    for i in range(0, FRAMES, 17):
        out = runner.process(frames[i:i + 17], pts[i:i + 17])
        assert out.frames.data_ptr() == frames[i:i + 17].data_ptr()  # analysis only: untouched
        assert out.data == [{}] * len(out.data)
    return runner.finish()


def test_cuts_are_found_within_two_frames(clip, analysis) -> None:
    _, pts = clip
    shots = analysis.shots
    assert len(shots) == 3, shots
    assert shots[0].start_frame == 0 and shots[-1].end_frame == FRAMES - 1
    for shot, cut in zip(shots[1:], CUTS, strict=True):
        assert abs(shot.start_frame - cut) <= 2, shots
    for a, b in zip(shots, shots[1:], strict=False):
        assert a.end_frame < b.start_frame and a.end <= b.start + 1e-9
    for shot in shots:  # times are the frames' own pts
        assert shot.start == pytest.approx(pts[shot.start_frame])
    assert shots[-1].end == pytest.approx(FRAMES / FPS)
    assert analysis.frames == FRAMES and analysis.duration == pytest.approx(FRAMES / FPS)


def test_shots_become_chapters_that_a_container_keeps(analysis, model, tmp_path: Path) -> None:
    chapters = analysis.chapters()
    assert [c["metadata"]["title"] for c in chapters] == ["Shot 1", "Shot 2", "Shot 3"]
    assert chapters[0]["start"] == 0 and chapters[-1]["end"] == 4800
    assert all(c["time_base"] == Fraction(1, 1000) for c in chapters)
    for a, b in zip(chapters, chapters[1:], strict=False):
        assert a["end"] == b["start"]  # chapters tile the timeline
    # The lead's pipeline hands these to PyAV: check a real muxer keeps them.
    path = tmp_path / "chapters.mkv"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = 160, 90, "yuv420p"
        for n in range(5):
            f = av.VideoFrame.from_ndarray(scene_frame(0, n), format="rgb24")
            f.pts = n
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))
        out.set_chapters(chapters)  # after the frames: finish() comes at the end of the pass
    with av.open(str(path)) as c:
        back = [(float(ch["start"] * ch["time_base"]), ch["metadata"]["title"]) for ch in c.chapters()]
    assert back == [(0.0, "Shot 1"), (chapters[1]["start"] / 1000, "Shot 2"),
                    (chapters[2]["start"] / 1000, "Shot 3")]
    # Without chapters = true the runner asks for none.
    quiet = StageRunner([ShotDetector(cpu_ctx(), model=model)])
    assert not quiet.finish().chapters_enabled


@pytest.fixture(scope="module")
def reference(clip, model) -> np.ndarray:
    with torch.inference_mode():
        single, _ = model.predict_frames(to_small(clip[0]), quiet=True)
    return single.numpy()


@pytest.mark.parametrize("batches", [[1, 49, 50, 20], [33] * 4])
def test_streaming_windows_match_the_packages_own_prediction(clip, model, reference, batches) -> None:
    frames, pts = clip
    det = ShotDetector(cpu_ctx(), model=model)
    start = 0
    for size in batches:
        det.process(FrameBatch(frames[start:start + size], pts[start:start + size], start))
        start += size
    det.finish()
    got = det.predictions()
    assert got.shape == (FRAMES,)
    np.testing.assert_allclose(got, reference, atol=1e-5)
    assert got[CUTS[0] - 1] > 0.9 and got[CUTS[1] - 1] > 0.9  # the last frame before each cut


def test_one_frame_and_no_frames(model) -> None:
    det = ShotDetector(cpu_ctx(), model=model)
    assert det.finish() == {"shots": []}
    det = ShotDetector(cpu_ctx(), model=model)
    det.process(FrameBatch(torch.from_numpy(scene_frame(0, 0)).permute(2, 0, 1)[None], [3.0], 0))
    (shot,) = det.finish()["shots"]
    assert (shot.start_frame, shot.end_frame, shot.start) == (0, 0, 3.0)
    assert shot.end == pytest.approx(3.04)  # one frame at the 1/25 s fallback


def test_a_clip_without_cuts_is_one_shot(tmp_path: Path, model) -> None:
    frames, pts = decode(write_clip(tmp_path / "one.mp4", [0] * 60))
    det = ShotDetector(cpu_ctx(), model=model)
    det.process(FrameBatch(frames, pts, 0))
    (shot,) = det.finish()["shots"]
    assert (shot.start_frame, shot.end_frame) == (0, 59)
    assert det.predictions().max() < 0.5


def test_small_frames_are_transnet_input() -> None:
    frames = torch.zeros(2, 3, 1080, 1920, dtype=torch.uint8)
    frames[:, 0] = 200
    small = to_small(frames)
    assert small.shape == (2, 27, 48, 3) and small.dtype == torch.uint8
    assert small[..., 0].eq(200).all() and small[..., 1:].eq(0).all()
    assert torch.equal(to_small(frames.float() / 255), small)


def smooth_frames(h: int, w: int, device: str = "cpu") -> torch.Tensor:
    """(1,3,h,w) uint8 gradients and a soft blob: content with detail at every scale."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    blob = torch.exp(-((xx - 0.3) ** 2 + (yy - 0.6) ** 2) * 40)
    rgb = torch.stack([xx, yy, blob]) * 255
    return rgb.round().to(torch.uint8)[None].to(device)


@pytest.mark.parametrize(("h", "w"), [(2880, 5120), (4320, 7680)])
def test_huge_frames_shrink_like_one_antialiased_resize(h: int, w: int) -> None:
    """5K/8K frames (over CUDA's antialias limit) pass through a box average first; the result is
    what one antialiased resize gives, within a level."""
    frames = smooth_frames(h, w)
    direct = torch.nn.functional.interpolate(frames.float(), size=(27, 48), mode="bilinear",
                                             antialias=True).round().clamp(0, 255)
    got = to_small(frames).permute(0, 3, 1, 2).float()
    assert (got - direct).abs().max() <= 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_huge_frames_shrink_on_cuda_as_on_the_cpu() -> None:
    frames = smooth_frames(4320, 7680)
    on_gpu = to_small(frames.cuda()).cpu()
    assert (on_gpu.int() - to_small(frames).int()).abs().max() <= 1


def test_loading_transnetv2_leaves_global_torch_state_alone() -> None:
    torch.use_deterministic_algorithms(False)
    torch.manual_seed(1234)
    random.seed(99)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    random.seed(99)
    load_transnetv2()  # the package seeds 42 and turns on deterministic algorithms
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.equal(torch.rand(3), expected)
    assert random.random() == random.Random(99).random()
