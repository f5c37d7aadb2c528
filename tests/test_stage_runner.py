"""StageRunner: device/precision decisions, batching within a memory cap, frames in and out,
analysis results, the JSON sidecar. Real models on the CPU; the `gpu` tests need CUDA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cuda_available

torch = pytest.importorskip("torch")

from mediad.errors import MediadError  # noqa: E402
from mediad.models.base import AnalysisResult, FrameLabels, Label, SegmentLabels, Shot  # noqa: E402
from mediad.models.runner import StageRunner, plan_stages  # noqa: E402
from mediad.models.sidecar import build_sidecar, sidecar_path, write_sidecar  # noqa: E402
from mediad.models.upscale import Upscaler  # noqa: E402
from mediad.profiles import parse_profile  # noqa: E402

NO_CUDA = not cuda_available()


@pytest.fixture(autouse=True)
def _model_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # The upscaler converts its ncnn weights into a cache once: keep that out of the user's home.
    monkeypatch.setenv("MEDIAD_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


def stages(text: str) -> list:
    return parse_profile(text, "x", "x").stages


def frames_u8(n: int, h: int = 24, w: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)


def test_no_gpu_for_the_job_means_cpu_and_fp32() -> None:
    cfg = stages('[[stages]]\nkind = "upscale"\n[[stages]]\nkind = "classify"\nprecision = "fp16"')
    for d in plan_stages(cfg, gpu=None):
        assert (d.device, d.precision, d.channels_last) == ("cpu", "fp32", False)
        assert "device auto: no GPU for this job" in d.reasons
    assert plan_stages(cfg, gpu=None)[1].reasons[-1] == "fp16 on the CPU is slow or missing: fp32"
    explicit = plan_stages(stages('[[stages]]\nkind = "shots"\ndevice = "cpu"\nprecision = "bf16"'))
    assert (explicit[0].device, explicit[0].precision, explicit[0].reasons) == ("cpu", "bf16", ())
    with pytest.raises(MediadError, match='stages.0: device = "cuda", but this job runs without a GPU'):
        plan_stages(stages('[[stages]]\nkind = "shots"\ndevice = "cuda"'), gpu=None)
    d = plan_stages(stages('[[stages]]\nkind = "shots"\nbatch_size = 7\nmax_gpu_memory = "1GiB"'))[0]
    assert d.to_dict()["batch_size"] == 7 and d.to_dict()["max_memory"] == 1 << 30


@pytest.mark.skipif(not NO_CUDA, reason="checks the behaviour without CUDA")
def test_auto_without_cuda_falls_back_and_says_why_but_explicit_cuda_fails() -> None:
    (d,) = plan_stages(stages('[[stages]]\nkind = "classify"'), gpu="auto")
    assert (d.device, d.precision) == ("cpu", "fp32")
    assert d.reasons == ("device auto: torch sees no CUDA device (CPU build or no GPU)",)
    with pytest.raises(MediadError, match=r'stages.1: device = "cuda:0", but torch sees no CUDA'):
        StageRunner.from_profile(stages('[[stages]]\nkind = "shots"\n[[stages]]\nkind = "classify"\n'
                                        'device = "cuda:0"'))


@pytest.fixture(scope="module")
def analysis_runner() -> StageRunner:
    return StageRunner.from_profile(stages(
        '[[stages]]\nkind = "shots"\ndevice = "cpu"\n[[stages]]\nkind = "classify"\ndevice = "cpu"\n'
        "every = 5\ntop_k = 2\nbatch_size = 3"), fps_hint=25)


def test_analysis_only_stages_return_the_frames_they_were_given(analysis_runner) -> None:
    runner = analysis_runner
    assert not runner.modifies_frames and runner.output_size(1280, 720) == (1280, 720)
    x = frames_u8(12)
    out = runner.process(x, [i / 25 for i in range(12)])
    assert out.frames is x
    assert [i for i, d in enumerate(out.data) if "classify" in d] == [0, 5, 10]
    top = out.data[5]["classify"]["top"]
    assert len(top) == 2 and {"label", "index", "score"} <= set(top[0]) and top[0]["score"] >= top[1]["score"]
    assert all("shots" not in d for d in out.data)  # shots come at finish()
    assert runner.describe()[1]["batch_size"] == {"32x24": 3}  # the profile's batch_size
    result = runner.finish()
    assert result is runner.finish()  # once
    assert result.frames == 12 and result.duration == pytest.approx(12 / 25)
    assert [s.frame for s in result.samples] == [0, 5, 10]
    assert len(result.shots) == 1 and [c.shot for c in result.classifications] == [0]
    assert result.classifications[0].samples == 3
    with pytest.raises(RuntimeError, match="after finish"):
        runner.process(x, [1.0] * 12)


def test_process_checks_its_input() -> None:
    runner = StageRunner([])
    with pytest.raises(ValueError, match=r"\(N,3,H,W\) RGB"):
        runner.process(torch.zeros(2, 24, 32, 3, dtype=torch.uint8), [0.0, 0.04])
    with pytest.raises(ValueError, match="2 frames but 3 timestamps"):
        runner.process(frames_u8(2), [0.0, 0.04, 0.08])
    x = frames_u8(2)
    assert runner.process(x, [0, 0.04]).frames is x
    empty = runner.finish()
    assert (empty.shots, empty.classifications, empty.samples, empty.chapters()) == ([], [], [], [])


def test_batch_size_follows_the_memory_cap() -> None:
    runner = StageRunner.from_profile(stages(
        '[[stages]]\nkind = "classify"\ndevice = "cpu"\nevery = 1\nmax_gpu_memory = "64MiB"'))
    stage = runner.stages[0]
    assert stage.ctx.memory_budget == 64 << 20
    # A 1080p frame needs ~25 MB as float plus the network's activations: one at a time.
    assert runner.batch_size(0, 1920, 1080) == 1
    # Small frames: as many as fit, up to the stage's own cap.
    small, per_frame = runner.batch_size(0, 64, 48), stage.bytes_per_frame(64, 48)
    assert 1 < small <= stage.max_batch() and small * per_frame <= 64 << 20
    assert small == stage.max_batch() or (small + 1) * per_frame > 64 << 20  # no room for one more
    out = runner.process(frames_u8(5, 48, 64), [i / 25 for i in range(5)])
    assert sum("classify" in d for d in out.data) == 5


@pytest.fixture(scope="module")
def upscaler() -> Upscaler:
    return Upscaler("realesr-animevideov3", 2, torch.device("cpu"), torch.float32)


def test_upscale_changes_size_keeps_dtype_and_feeds_later_stages(upscaler, tmp_path_factory) -> None:
    runner = StageRunner.from_profile(stages(
        '[[stages]]\nkind = "upscale"\nscale = 2\n[[stages]]\nkind = "classify"\nevery = 1'))
    assert runner.modifies_frames and runner.output_size(32, 24) == (64, 48)
    x = frames_u8(2)
    out = runner.process(x, [0.0, 0.04])
    assert out.frames.shape == (2, 3, 48, 64) and out.frames.dtype == torch.uint8
    expected = (upscaler(x.float() / 255) * 255).round().clamp(0, 255).to(torch.uint8)
    assert (out.frames.int() - expected.int()).abs().max() <= 1
    out.frames[0, 0, 0, 0] = 7  # a normal tensor the pipeline may change in place
    assert runner.describe()[1]["batch_size"] == {"64x48": 16}  # classify saw upscaled frames
    assert all("classify" in d for d in out.data)
    # Float frames in, float frames out (0..1).
    y = runner.process(x.float() / 255, [0.08, 0.12]).frames
    assert y.dtype == torch.float32 and y.shape == (2, 3, 48, 64) and y.min() >= 0 and y.max() <= 1


def test_a_tight_memory_cap_tiles_the_upscale_with_the_same_result(upscaler) -> None:
    runner = StageRunner.from_profile(stages(
        '[[stages]]\nkind = "upscale"\nscale = 2\nmax_gpu_memory = "1MiB"'))
    step = runner.stages[0]
    assert step.upscaler.max_pixels < 40 * 60  # fewer pixels per call than one frame has: tiles
    x = torch.rand(1, 3, 40, 60, generator=torch.Generator().manual_seed(3))
    tiled = runner.process(x, [0.0]).frames
    torch.testing.assert_close(tiled, upscaler(x), atol=2e-4, rtol=0)


def test_sidecar_document(tmp_path: Path) -> None:
    top = (Label("maze", 646, 0.9), Label("coil", 506, 0.05))
    result = AnalysisResult(
        frames=50, duration=2.0,
        shots=[Shot(0, 0.0, 1.2, 0, 29), Shot(1, 1.2, 2.0, 30, 49)],
        classifications=[SegmentLabels(0, 0.0, 1.2, 2, top)],
        samples=[FrameLabels(0, 0.0, top, 0), FrameLabels(25, 1.0, top, 0)],
        chapters_enabled=True)
    doc = build_sidecar(result, source="/in/a.mkv", output=tmp_path / "a.mkv", profile="tag",
                        stages=[{"kind": "shots"}, {"kind": "classify"}])
    path = write_sidecar(sidecar_path(tmp_path / "a.mkv"), doc)
    assert path == tmp_path / "a.mkv.mediad.json"
    back = json.loads(path.read_text())
    assert (back["schema"], back["version"], back["profile"], back["frames"]) == (
        "mediad.sidecar", 1, "tag", 50)
    assert back["shots"][1] == {"index": 1, "start": 1.2, "end": 2.0, "start_frame": 30, "end_frame": 49}
    assert back["classifications"]["per_shot"][0]["top"][0] == {"label": "maze", "index": 646, "score": 0.9}
    assert [f["frame"] for f in back["classifications"]["per_frame"]] == [0, 25]
    assert back["chapters"] == [{"title": "Shot 1: maze", "start": 0.0, "end": 1.2},
                                {"title": "Shot 2", "start": 1.2, "end": 2.0}]
    assert [p.name for p in tmp_path.iterdir()] == ["a.mkv.mediad.json"]  # no temp file left
    with pytest.raises(MediadError, match="cannot write the analysis sidecar"):
        write_sidecar(tmp_path / "missing" / "x.json", doc)


# -- on a CUDA GPU ---------------------------------------------------------------------------------


@pytest.mark.gpu
def test_gpu_auto_precision_and_layout() -> None:
    cfg = stages('[[stages]]\nkind = "upscale"\n[[stages]]\nkind = "classify"\n[[stages]]\nkind = "shots"')
    up, cls, shots = plan_stages(cfg, gpu=0)
    assert up.device == cls.device == shots.device == "cuda:0"
    assert up.precision == "fp16"  # pixels come out: not bf16
    assert cls.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert up.channels_last and cls.channels_last and up.reasons == ()
    assert not shots.channels_last  # a 3-D network: the layout is for 2-D convolutions


def all_stages(device: str) -> list:
    return stages(f'[[stages]]\nkind = "upscale"\nscale = 2\ndevice = "{device}"\n'
                  f'[[stages]]\nkind = "classify"\nevery = 1\ndevice = "{device}"\n'
                  f'[[stages]]\nkind = "shots"\ndevice = "{device}"\n')


def spirals(n: int, h: int = 90, w: int = 160) -> torch.Tensor:
    """Three-armed spirals (EfficientNet-Lite0 says "maze" with ~90%), slightly shifted per frame."""
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    out = []
    for i in range(n):
        r = ((yy - h / 2) ** 2 + (xx - w / 2 - i) ** 2).sqrt() * (224 / h)
        theta = torch.atan2(yy - h / 2, xx - w / 2 - i)
        out.append((torch.sin(r / 6 + theta * 3) > 0).expand(3, h, w))
    return (torch.stack(out).float() * 255).to(torch.uint8)


@pytest.mark.gpu
def test_gpu_runner_matches_the_cpu() -> None:
    gpu = StageRunner.from_profile(all_stages("cuda:0"))
    cpu = StageRunner.from_profile(all_stages("cpu"))
    x = spirals(4)
    pts = [i / 25 for i in range(4)]
    g = gpu.process(x.cuda(), pts)
    c = cpu.process(x, pts)
    assert g.frames.is_cuda and g.frames.dtype == torch.uint8 and g.frames.shape == (4, 3, 180, 320)
    assert (g.frames.cpu().int() - c.frames.int()).abs().float().mean() < 1.0  # fp16 vs fp32
    for a, b in zip(g.data, c.data, strict=True):
        assert a["classify"]["top"][0]["label"] == b["classify"]["top"][0]["label"] == "maze"
    assert [s.end_frame for s in gpu.finish().shots] == [s.end_frame for s in cpu.finish().shots]


@pytest.mark.gpu
def test_upscaled_frames_stay_on_the_gpu_when_an_analysis_stage_runs_on_the_cpu() -> None:
    runner = StageRunner.from_profile(stages(
        '[[stages]]\nkind = "upscale"\nscale = 2\ndevice = "cuda:0"\n'
        '[[stages]]\nkind = "classify"\nevery = 1\ndevice = "cpu"\n'))
    out = runner.process(spirals(2).cuda(), [0.0, 0.04])
    assert out.frames.is_cuda and out.frames.shape == (2, 3, 180, 320)
    assert [d["classify"]["top"][0]["label"] for d in out.data] == ["maze", "maze"]
