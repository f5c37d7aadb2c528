"""[video] target_vmaf: VMAF in torch checked against the independent ffmpeg's libvmaf, the
search's policy, and real searches and transcodes whose output libvmaf measures again."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import camera_clip, ffmpeg, ffmpeg_bytes, run_cli, transcode_report, write_profile

from mediad.errors import InvalidFile
from mediad.media.plan_records import Plan
from mediad.media.vmaf_target import Trial, VmafTarget, choose, next_quality, sample_windows
from mediad.models.vmaf import Motion
from mediad.profiles import Profile, parse_profile

pytest.importorskip("torch")
pytest.importorskip("vmaf_torch")
pytestmark = pytest.mark.ml

PROFILE = """
container = "mp4"
[video]
codec = "h264"
encoder = "cpu"
speed = "faster"
{rate}
[audio]
codec = "none"
"""


def libvmaf(distorted: Path, reference: Path) -> list[float]:
    """Per-frame VMAF (vmaf_v0.6.1) by the independent ffmpeg's libvmaf."""
    log = distorted.with_suffix(".vmaf.json")
    ffmpeg("-i", str(distorted), "-i", str(reference), "-lavfi",
           f"[0:v][1:v]libvmaf=log_fmt=json:log_path={log}:n_threads=2", "-f", "null", "-")
    return [f["metrics"]["vmaf"] for f in json.loads(log.read_text())["frames"]]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two camera-like sources (different sizes, so different pictures), nearly lossless."""
    folder = tmp_path_factory.mktemp("vmaf")
    return {"small": camera_clip(folder / "small.mp4", "-crf", "10", seconds=2,
                                 size=(320, 180), audio=False),
            "wide": camera_clip(folder / "wide.mp4", "-crf", "10", seconds=2,
                                size=(480, 272), audio=False)}


# -- the profile -------------------------------------------------------------------------------

@pytest.mark.parametrize(("video", "message"), [
    ('target_vmaf = 95\nquality = 23', "exclusive with quality"),
    ('target_vmaf = 95\nbitrate = "2M"', "exclusive with bitrate"),
    ("target_vmaf = 0", "video.target_vmaf: Input should be greater than 0"),
    ("target_vmaf = 100.5", "video.target_vmaf: Input should be less than or equal to 100"),
    ('target_vmaf = "95"', "video.target_vmaf"),
    ('codec = "copy"\ntarget_vmaf = 95', 'video.target_vmaf: not used with codec = "copy"'),
    ("min_quality = 20", "set target_vmaf too"),
    ("target_vmaf = 95\nmin_quality = 30\nmax_quality = 20", "must be below max_quality"),
    ("target_vmaf = 95\nmax_quality = 52", "video.max_quality: must be 0..51 for h264"),
])
def test_profile_errors(video: str, message: str) -> None:
    with pytest.raises(InvalidFile) as e:
        parse_profile(f"[video]\n{video}\n", "p.toml", "p")
    assert message in str(e.value), str(e.value)


def test_ladders_and_upscaling_are_refused_and_bounds_apply() -> None:
    with pytest.raises(ValueError, match="a ladder's renditions are not searched yet"):
        Profile.model_validate({"container": "hls", "video": {"target_vmaf": 93},
                                "renditions": [{"height": 360}]})
    with pytest.raises(ValueError, match="upscale stage"):
        Profile.model_validate({"video": {"target_vmaf": 93},
                                "stages": [{"kind": "upscale"}]})
    assert Profile.model_validate({"video": {"target_vmaf": 93}}).video.search_range == (10, 46)
    av1 = Profile.model_validate({"container": "mkv",
                                  "video": {"codec": "av1", "target_vmaf": 93.5,
                                            "min_quality": 20}})
    assert av1.video.search_range == (20, 55)


# -- VMAF against libvmaf -----------------------------------------------------------------------

@pytest.mark.parametrize(("clip", "crf"), [("small", 20), ("small", 34), ("wide", 27)])
def test_vmaf_torch_agrees_with_libvmaf(clips: dict[str, Path], tmp_path: Path, clip: str,
                                       crf: int) -> None:
    from mediad.models.vmaf import vmaf_files

    source = clips[clip]
    distorted = tmp_path / "d.mp4"
    ffmpeg("-i", str(source), "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf),
           str(distorted))
    ours = vmaf_files(source, distorted)
    theirs = libvmaf(distorted, source)
    assert len(ours.frames) == len(theirs) == 50
    print(f"{clip} crf {crf}: vmaf-torch {ours.mean:.3f} libvmaf {np.mean(theirs):.3f}")
    assert abs(ours.mean - np.mean(theirs)) < 1.0
    assert np.max(np.abs(np.array(ours.frames) - theirs)) < 1.0  # frame by frame too
    assert 5 < ours.mean < 99  # a real distortion, not a trivial score


def test_batches_keep_the_motion_of_their_neighbours(clips: dict[str, Path], tmp_path: Path) -> None:
    from mediad.models.vmaf import VmafMeter, luma_planes, vmaf_files

    distorted = tmp_path / "d.mp4"
    ffmpeg("-i", str(clips["small"]), "-c:v", "libx264", "-crf", "30", str(distorted))
    whole = vmaf_files(clips["small"], distorted)
    meter = VmafMeter(batch=3)  # 50 frames: 16 batch boundaries
    for r, d in zip(luma_planes(clips["small"]), luma_planes(distorted), strict=True):
        meter.add(r, d)
    batched = meter.finish()
    assert np.allclose(batched.frames, whole.frames, atol=1e-3)


# -- the search's policy ------------------------------------------------------------------------

def _search(vmaf_of_quality, target: VmafTarget) -> tuple[Trial, list[Trial]]:
    trials: list[Trial] = []
    while (q := next_quality(trials, target)) is not None:
        assert q not in {t.quality for t in trials} and target.low <= q <= target.high
        trials.append(Trial(q, vmaf_of_quality(q), 1000 * (60 - q), 2.0))
    return choose(trials, target)[0], trials


@pytest.mark.parametrize("goal", [97.0, 93.0, 88.5, 80.0, 60.0])
def test_the_search_finds_the_highest_quality_value_reaching_the_target(goal: float) -> None:
    def curve(q: int) -> float:  # steeper lower down, as real encoders are
        return 100 - 0.04 * (q - 5) ** 2

    target = VmafTarget(goal, 10, 46, 23)
    chosen, trials = _search(curve, target)
    best = max(q for q in range(10, 47) if curve(q) >= goal)
    assert chosen.quality == best, [(t.quality, round(t.vmaf, 2)) for t in trials]
    assert len(trials) <= target.max_trials


def test_the_search_stops_at_the_ends_of_the_range() -> None:
    target = VmafTarget(99.5, 18, 30, 23)
    chosen, trials = _search(lambda q: 90.0 - q / 10, target)
    assert chosen.quality == 18 and choose(trials, target)[1] is not None  # not reached: said
    target = VmafTarget(50, 18, 30, 23)
    chosen, _ = _search(lambda q: 99.0 - q / 10, target)
    assert chosen.quality == 30  # any value passes: the smallest output


def test_samples_are_spread_over_the_source() -> None:
    target = VmafTarget(93, 10, 46, 23)
    assert sample_windows(10.0, target) == [(0.0, float("inf"))]  # short: the whole source
    windows = sample_windows(600.0, target)
    assert len(windows) == 4 and all(abs((e - s) - 2.0) < 1e-9 for s, e in windows)
    assert windows[0][0] > 60 and windows[-1][1] < 540  # spread, not at the very ends


# -- real searches -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sampled_plan(tmp_path_factory: pytest.TempPathFactory) -> Plan:
    """A plan to search over three half-second samples of a 4 s clip, as a long source gets
    them (the whole source is only measured under 1 s)."""
    from mediad.gpu import no_gpu
    from mediad.media.plan import make_plan
    from mediad.media.probe import probe

    folder = tmp_path_factory.mktemp("sampled")
    source = camera_clip(folder / "s.mp4", "-crf", "10", seconds=4, size=(320, 180),
                         audio=False)
    profile = Profile.model_validate({"container": "mp4", "audio": {"codec": "none"},
                                      "video": {"encoder": "cpu", "speed": "fastest",
                                                "target_vmaf": 90}})
    plan = make_plan(probe(source), profile, no_gpu("test"), folder / "o.mp4")
    assert plan.video.vmaf is not None
    return replace(plan, video=replace(plan.video, vmaf=replace(
        plan.video.vmaf, samples=3, sample_seconds=0.5, whole_under=1.0)))


def test_a_sampled_search_on_a_real_clip(sampled_plan: Plan) -> None:
    from mediad.media.vmaf_search import search

    choice = search(sampled_plan, 4.0)
    assert not choice.whole_source and choice.samples == 3
    assert 1.4 <= choice.sample_seconds <= 1.6  # 3 x 12-13 frames at 25 fps
    assert choice.predicted >= 90 and choice.warning is None
    passing = [t for t in choice.trials if t.vmaf >= 90]
    assert choice.quality == max(t.quality for t in passing)
    # The next value up was tried and failed: the search bracketed its answer to one step.
    assert any(t.quality == choice.quality + 1 and t.vmaf < 90 for t in choice.trials)


def test_trials_score_as_with_the_reference_decoded_each_time(sampled_plan: Plan,
                                                               tmp_path: Path) -> None:
    """The search keeps each sample's Y planes, and the motion feature its first trial
    computed, for all its trials: every trial encode scores exactly as when the reference was
    decoded from the sample file and its motion computed afresh (the search before).
    (The same encode is scored both ways: libx264 through PyAV does not repeat its bytes.)"""
    from mediad.media.vmaf_search import _encode_trial, _trial_plan, extract_samples
    from mediad.models.vmaf import vmaf_files

    plan = sampled_plan
    assert plan.video.vmaf is not None
    samples = extract_samples(plan, plan.video.vmaf, 4.0, tmp_path)
    assert len(samples) == 3
    for sample in samples:  # the kept planes are what the independent ffmpeg decodes
        raw = ffmpeg_bytes("-i", str(sample.path), "-f", "rawvideo", "-pix_fmt", "yuv420p", "-")
        decoded = np.frombuffer(raw, np.uint8).reshape(-1, 270 * 320)[:, :180 * 320]
        kept = np.stack(list(sample.reference()))
        assert kept.shape == (sample.frames, 180, 320)
        assert np.array_equal(kept, decoded.reshape(kept.shape))
    motion: list[Motion] = [{} for _ in samples]
    for quality in (23, 19, 30):  # as a search's trials
        for n, sample in enumerate(samples):
            dest = tmp_path / f"q{quality}-{n}.mkv"
            _encode_trial(sample, _trial_plan(plan.video, quality), dest, plan.input)
            afresh = vmaf_files(sample.path, dest)
            assert 40 < afresh.mean < 100
            assert sample.score(dest, motion[n], "cpu") == afresh.frames
        assert all(motion)  # kept by the first trial, used by the next


def test_an_output_under_its_prediction_is_reported(clips: dict[str, Path], tmp_path: Path) -> None:
    from mediad.gpu import no_gpu
    from mediad.media.plan import make_plan
    from mediad.media.probe import probe
    from mediad.media.vmaf_search import VmafChoice, measure_output, report_entry

    source = clips["small"]
    output = tmp_path / "o.mp4"
    ffmpeg("-i", str(source), "-c:v", "libx264", "-crf", "30", str(output))
    profile = Profile.model_validate({"video": {"encoder": "cpu", "target_vmaf": 95}})
    plan = make_plan(probe(source), profile, no_gpu("test"), output)
    # As if samples had predicted 95 for crf 30: the whole output measures far less.
    choice = VmafChoice(95, 30, "crf", "libx264", 95.0, (Trial(30, 95.0, 1, 1.0),), 4, 8.0,
                        False, "cpu", 1.0)
    check = measure_output(plan, output, choice)
    assert abs(check.measured - float(np.mean(libvmaf(output, source)))) < 1.0
    assert check.frames == 50 and check.measured < 90
    assert len(check.warnings) == 1 and "sampled VMAF disagreed" in check.warnings[0]
    assert report_entry(choice, check)["agrees"] is False


def _transcode(source: Path, folder: Path, rate: str, name: str) -> tuple[dict, Path]:
    """Transcode with PROFILE and the video `rate` line (target_vmaf or quality)."""
    out = folder / f"{name}.mp4"
    profile = write_profile(folder, PROFILE.format(rate=rate), name=name)
    return transcode_report(str(source), "-p", str(profile), "-o", str(out)), out


def _smallest_reaching(source: Path, folder: Path, target: int) -> tuple[dict, Path]:
    """Transcode to `target` and check the output with the independent libvmaf: it agrees with
    mediad's measure, reaches the target, and not by much: one quality step smaller (crf + 1)
    falls under it, so the search chose the smallest output that meets the target."""
    report, out = _transcode(source, folder, f"target_vmaf = {target}", f"t{target}")
    v = report["vmaf"]
    independent = float(np.mean(libvmaf(out, source)))
    _, smaller = _transcode(source, folder, f"quality = {v['quality'] + 1}", f"q{target}")
    under = float(np.mean(libvmaf(smaller, source)))
    print(f"target {target}: crf {v['quality']}, predicted {v['predicted']}, measured "
          f"{v['measured']}, libvmaf {independent:.3f} (crf {v['quality'] + 1}: {under:.3f}), "
          f"search {v['search_seconds']}s")
    assert v["measured_frames"] == 50
    assert abs(independent - v["measured"]) < 1.0  # as test_vmaf_torch_agrees_with_libvmaf
    # Within that point of the target, and under one crf step above it (1-2 points here).
    assert target - 1 <= independent < target + 2
    assert under < target and smaller.stat().st_size < out.stat().st_size
    return report, out


def test_transcode_to_a_target_vmaf(clips: dict[str, Path], tmp_path: Path) -> None:
    source = clips["small"]
    plan = run_cli("plan", str(source), "-p", str(write_profile(
        tmp_path, PROFILE.format(rate="target_vmaf = 93"), "p"))).stdout
    assert "VMAF search: target 93" in plan, plan
    report, out = _smallest_reaching(source, tmp_path, 93)
    v = report["vmaf"]
    assert v["target"] == 93 and v["option"] == "crf" and v["samples"] == 0  # 2 s: whole source
    assert report["plan"]["outputs"][0]["video"]["quality"] == v["quality"]
    assert f"crf {v['quality']} chosen by VMAF search" in " ".join(report["plan"]["notes"])
    # A lower target: a higher crf, a smaller file.
    low, low_out = _smallest_reaching(source, tmp_path, 85)
    assert low["vmaf"]["quality"] > v["quality"]
    assert low_out.stat().st_size < out.stat().st_size
    res = run_cli("transcode", str(source), "-p", str(tmp_path / "t85.toml"), "-o",
                  str(tmp_path / "again.mp4"), "--no-progress")
    assert re.search(r"vmaf: crf \d+ chosen for target 85 \(predicted [\d.]+ from the whole "
                     r"source, \d+ trial encodes", res.stdout), res.stdout


@pytest.mark.gpu
def test_cuda_and_cpu_agree(clips: dict[str, Path], tmp_path: Path) -> None:
    from mediad.models.vmaf import vmaf_files

    distorted = tmp_path / "d.mp4"
    ffmpeg("-i", str(clips["wide"]), "-c:v", "libx264", "-crf", "28", str(distorted))
    cpu = vmaf_files(clips["wide"], distorted, "cpu")
    cuda = vmaf_files(clips["wide"], distorted, "cuda:0")
    assert cuda.device == "cuda:0"
    assert np.max(np.abs(np.array(cpu.frames) - cuda.frames)) < 0.05
