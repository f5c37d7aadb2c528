"""The classify stage: EfficientNet-Lite0 with the packaged weights, labels, sampling, per-shot
aggregation, and user TorchScript / torch.export models. Real weights, real tensors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from mediad.errors import MediadError  # noqa: E402
from mediad.models.base import FrameBatch, Shot, StageContext  # noqa: E402
from mediad.models.classify import Classifier, imagenet_labels  # noqa: E402
from mediad.models.efficientnet_lite import (  # noqa: E402
    EfficientNetLite0,
    load_efficientnet_lite0,
    weights_path,
)
from mediad.profile_stages import ClassifyStage  # noqa: E402

CPU = torch.device("cpu")
MAZE_LIKE = {"maze", "coil"}


def ctx(batch_size: int | None = None, dtype: torch.dtype = torch.float32) -> StageContext:
    return StageContext(index=0, device=CPU, dtype=dtype, channels_last=False,
                        compile=False, memory_budget=1 << 30, batch_size=batch_size)


def spiral(h: int = 224, w: int = 224) -> torch.Tensor:
    """A black-and-white three-armed spiral, (3,H,W) float 0..1."""
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    cy, cx = h / 2, w / 2
    r = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt() * (224 / min(h, w))
    theta = torch.atan2(yy - cy, xx - cx)
    return (torch.sin(r / 6 + theta * 3) > 0).float().expand(3, h, w).clone()


def window_grid(h: int = 224, w: int = 224) -> torch.Tensor:
    """Thin white lines every 16 px on black: a mesh screen."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((xx % 16 < 2) | (yy % 16 < 2)).float().expand(3, h, w).clone()


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def builtin() -> Classifier:
    return Classifier(ctx(), ClassifyStage(kind="classify", every=1))


def test_weights_load_strict_with_matching_keys() -> None:
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    assert set(model.state_dict()) == set(state)  # every name matches, none left over
    for k, v in model.state_dict().items():
        assert v.shape == state[k].shape, k
    model.load_state_dict(state, strict=True)
    params = sum(p.numel() for p in model.parameters())
    assert 4_600_000 < params < 4_700_000  # EfficientNet-Lite0 has 4.65M parameters
    assert len(model._blocks) == 16


def test_imagenet_labels_in_index_order() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000 and all(label.strip() == label and label for label in labels)
    known = {0: "tench", 1: "goldfish", 207: "golden retriever", 281: "tabby", 409: "analog clock",
             646: "maze", 904: "window screen", 954: "banana", 999: "toilet tissue"}
    assert {i: labels[i] for i in known} == known


def test_outputs_are_a_distribution_and_synthetic_images_get_sensible_labels(builtin) -> None:
    x = torch.stack([spiral(), window_grid(), torch.full((3, 224, 224), 0.5)])
    probs = builtin.probabilities(x)
    assert probs.shape == (3, 1000) and probs.dtype == torch.float32
    assert torch.all(probs >= 0)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3), atol=1e-4, rtol=0)
    spiral_top = builtin.top(probs[0], 2)
    assert spiral_top[0].label in MAZE_LIKE and spiral_top[0].score > 0.5, spiral_top
    assert builtin.top(probs[1])[0].label == "window screen"
    # A flat grey frame is nothing in particular: no confident answer.
    assert builtin.top(probs[2])[0].score < 0.5


def test_frame_size_dtype_and_batch_do_not_change_the_answer(builtin) -> None:
    alone = builtin.probabilities(spiral()[None])
    wide = builtin.probabilities(to_uint8(spiral(360, 640))[None])  # resized + uint8 input
    assert builtin.top(wide[0])[0].label in MAZE_LIKE
    together = builtin.probabilities(torch.stack([window_grid(), spiral()]))
    torch.testing.assert_close(together[1:], alone, atol=1e-5, rtol=1e-4)


def test_bf16_gives_the_same_answer(builtin) -> None:
    half = Classifier(ctx(dtype=torch.bfloat16), ClassifyStage(kind="classify", precision="bf16"))
    x = to_uint8(torch.stack([spiral(), window_grid()]))
    ref, got = builtin.probabilities(x), half.probabilities(x)
    assert got.dtype == torch.float32  # scores are float32 whatever the compute precision
    assert [builtin.top(p)[0].label for p in ref] == [half.top(p)[0].label for p in got]
    torch.testing.assert_close(got, ref, atol=0.05, rtol=0)


def test_sampling_every_n_frames() -> None:
    stage = Classifier(ctx(), ClassifyStage(kind="classify", every=4, top_k=3))
    frames = to_uint8(spiral(64, 96)).expand(6, 3, 64, 96)
    seen = []
    for first in (0, 6):
        out = stage.process(FrameBatch(frames, [(first + i) / 25 for i in range(6)], first))
        assert out.frames is None and len(out.data) == 6
        seen += [first + i for i, d in enumerate(out.data) if d is not None]
        for d in out.data:
            if d is not None:
                assert len(d["top"]) == 3 and d["top"][0]["label"] in MAZE_LIKE
    assert seen == [0, 4, 8]
    assert [f for f, _, _ in stage.samples] == [0, 4, 8]


def test_sampling_every_seconds_follows_pts_not_frame_count() -> None:
    stage = Classifier(ctx(), ClassifyStage(kind="classify", every_seconds=0.2))
    # Variable frame rate: 25 fps, then a 0.5 s gap, then 50 fps.
    pts = [i * 0.04 for i in range(10)] + [0.86 + i * 0.02 for i in range(15)]
    frames = torch.zeros(len(pts), 3, 32, 32, dtype=torch.uint8)
    for first in range(0, len(pts), 7):
        stage.process(FrameBatch(frames[first:first + 7], pts[first:first + 7], first))
    got = [round(t, 2) for _, t, _ in stage.samples]
    # 0.36 is before 0.4 (0.2 + 0.2); after the gap the clock restarts at the next frame.
    assert got == [0.0, 0.2, 0.86, 1.06]
    # Timestamps that start again from 0 (a reset) restart the clock too.
    stage.process(FrameBatch(frames[:3], [0.0, 0.1, 0.2], len(pts)))
    assert [round(t, 2) for _, t, _ in stage.samples][4:] == [0.0, 0.2]


def test_default_sampling_is_once_a_second() -> None:
    stage = Classifier(ctx(), ClassifyStage(kind="classify"))
    assert (stage.every, stage.every_seconds) == (None, 1.0)
    assert stage.describe()["every_seconds"] == 1.0


def test_labels_aggregate_per_shot(builtin) -> None:
    stage = Classifier(ctx(), ClassifyStage(kind="classify", every=2))
    frames = torch.stack([to_uint8(spiral())] * 6 + [to_uint8(window_grid())] * 6)
    pts = [i / 25 for i in range(12)]
    stage.process(FrameBatch(frames, pts, 0))
    shots = [Shot(0, 0.0, 0.24, 0, 5), Shot(1, 0.24, 0.48, 6, 11)]
    per_shot = stage.segments(shots, 0.0, 0.48)
    assert [(s.shot, s.samples) for s in per_shot] == [(0, 3), (1, 3)]
    assert per_shot[0].top[0].label in MAZE_LIKE and per_shot[1].top[0].label == "window screen"
    assert len(per_shot[0].top) == 5 and per_shot[0].top[0].score >= per_shot[0].top[4].score
    # Shot scores are the mean of the samples' distributions: still a distribution.
    assert 0 < sum(t.score for t in per_shot[1].top) <= 1.0001
    frames_out = stage.frame_labels(shots)
    assert [(f.frame, f.shot) for f in frames_out] == [(0, 0), (2, 0), (4, 0), (6, 1), (8, 1), (10, 1)]
    # Without shots the whole stream is one segment.
    whole = stage.segments([], 0.0, 0.48)
    assert len(whole) == 1 and whole[0].shot is None and whole[0].samples == 6


class ChannelMeans(torch.nn.Module):
    """A user model: logits are 10x the mean of each input channel (red, green, blue)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) * 10


def _colour_frames() -> torch.Tensor:
    frames = torch.zeros(3, 3, 40, 60, dtype=torch.uint8)
    for i in range(3):
        frames[i, i] = 255
    return frames


def _user_stage(tmp_path: Path, model_file: Path, labels: list[str]) -> Classifier:
    (tmp_path / "labels.txt").write_text("\n".join(labels) + "\n\n")
    cfg = ClassifyStage(kind="classify", model=str(model_file), labels=str(tmp_path / "labels.txt"),
                        input_size=32, mean=(0, 0, 0), std=(1, 1, 1), every=1, top_k=2)
    return Classifier(ctx(), cfg)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_user_torchscript_model(tmp_path: Path) -> None:
    path = tmp_path / "colours.pt"
    torch.jit.script(ChannelMeans()).save(str(path))
    stage = _user_stage(tmp_path, path, ["red", "green", "blue"])
    out = stage.process(FrameBatch(_colour_frames(), [0.0, 0.04, 0.08], 0))
    assert [d["top"][0]["label"] for d in out.data] == ["red", "green", "blue"]
    assert [d["top"][0]["index"] for d in out.data] == [0, 1, 2]
    p = 1 / (1 + 2 * math.exp(-10))  # softmax of (10, 0, 0)
    assert out.data[0]["top"][0]["score"] == pytest.approx(p, abs=1e-5)
    assert stage.describe()["classes"] == 3


def test_user_export_model_with_a_fixed_batch_runs_one_frame_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "colours.pt2"
    torch.export.save(torch.export.export(ChannelMeans(), (torch.rand(1, 3, 32, 32),)), str(path))
    stage = _user_stage(tmp_path, path, ["red", "green", "blue"])
    out = stage.process(FrameBatch(_colour_frames(), [0.0, 0.04, 0.08], 0))
    assert [d["top"][0]["label"] for d in out.data] == ["red", "green", "blue"]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_user_model_errors_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "colours.pt"
    torch.jit.script(ChannelMeans()).save(str(path))
    stage = _user_stage(tmp_path, path, ["red", "green"])
    with pytest.raises(MediadError, match=r"output shape \(3, 3\) does not match 2 labels"):
        stage.process(FrameBatch(_colour_frames(), [0.0, 0.04, 0.08], 0))
    with pytest.raises(MediadError, match="classify model file not found"):
        _user_stage(tmp_path, tmp_path / "missing.pt", ["a"])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(MediadError, match="not a loadable TorchScript file") as err:
        _user_stage(tmp_path, junk, ["a"])
    assert "\n" not in str(err.value)
    cfg = ClassifyStage(kind="classify", model=str(path), labels=str(tmp_path / "none.txt"))
    with pytest.raises(MediadError, match="cannot read labels"):
        Classifier(ctx(), cfg)


def test_load_is_eval_mode_and_deterministic() -> None:
    a, b = load_efficientnet_lite0(), load_efficientnet_lite0()
    assert not a.training
    x = spiral()[None] * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(a(x), b(x))
