"""Model stages inside the transcode pass: analysis with copied video, upscaling, sidecar, chapters."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import (
    ffmpeg,
    ffmpeg_info,
    ffmpeg_psnr,
    make_clip,
    read_back,
    run_cli,
    transcode_report,
    write_profile,
)

torch = pytest.importorskip("torch")

from test_models_shots import CUTS, FRAMES, write_clip  # noqa: E402

from mediad.media.job import transcode  # noqa: E402
from mediad.profiles import load_profile  # noqa: E402


@pytest.fixture(scope="module")
def cuts_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scenes = [sum(n >= c for c in CUTS) for n in range(FRAMES)]
    return write_clip(tmp_path_factory.mktemp("stages") / "cuts.mp4", scenes)


def test_tag_profile_copies_video_and_writes_chapters_and_sidecar(cuts_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "tagged.mkv"
    report = transcode(cuts_clip, load_profile("tag"), out, gpu="none").to_dict()
    src, got = read_back(cuts_clip), read_back(out)
    assert report["plan"]["outputs"][0]["video"]["action"] == "copy"
    assert (got.video_codec, got.frames, got.width) == (src.video_codec, src.frames, src.width)
    assert got.pts == pytest.approx(src.pts, abs=0.002)
    # three scenes -> three shots -> three chapters, titled with their top label
    assert report["analysis"]["shots"] == 3 and got.chapters == 3
    sidecar = json.loads((tmp_path / "tagged.mkv.mediad.json").read_text())
    assert report["analysis"]["sidecar"] == str(tmp_path / "tagged.mkv.mediad.json")
    assert [round(s["start"], 2) for s in sidecar["shots"]] == [0.0, round(CUTS[0] / 25, 2),
                                                                 round(CUTS[1] / 25, 2)]
    per_shot = sidecar["classifications"]["per_shot"]
    assert [c["shot"] for c in per_shot] == [0, 1, 2]
    assert all(len(c["top"]) == 5 for c in per_shot)
    # every_seconds = 1 over 4.8 s: 5 sampled frames, each placed in its shot
    assert [f["frame"] for f in sidecar["classifications"]["per_frame"]] == [0, 25, 50, 75, 100]
    assert len(sidecar["chapters"]) == 3
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["tagged.mkv", "tagged.mkv.mediad.json"]


def test_upscale_doubles_size_and_keeps_timing(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "small.mp4", frames=10, size=(64, 48))
    out = tmp_path / "big.mp4"
    report = transcode(src, load_profile("upscale-2x"), out, gpu="none")
    s, o = read_back(src), read_back(out)
    assert (o.width, o.height) == (128, 96)
    assert o.frames == s.frames and o.pts == pytest.approx(s.pts, abs=0.002)
    assert len(o.audio) == 1
    assert report.plan.stages[0].kind == "upscale" and report.plan.stages[0].device == "cpu"
    sidecar = json.loads((tmp_path / "big.mp4.mediad.json").read_text())
    assert sidecar["frames"] == s.frames and sidecar["shots"] == []


def test_user_upscale_model_from_a_profile(tmp_path: Path) -> None:
    """A user's Real-ESRGAN compact .safetensors file, named relative to its profile, upscales."""
    from safetensors.torch import save_file

    from mediad.models.srvgg import SRVGGNetCompact

    nets = tmp_path / "profiles" / "nets"
    nets.mkdir(parents=True)
    torch.manual_seed(0)
    net = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(nets / "mine-x2.safetensors"))
    prof = tmp_path / "profiles" / "mine.toml"
    prof.write_text("[video]\nspeed = 'fastest'\n[[stages]]\nkind = 'upscale'\n"
                    "model = 'nets/mine-x2.safetensors'\nscale = 2\n")
    src = make_clip(tmp_path / "small.mp4", frames=5, size=(64, 48))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    res = run_cli("transcode", str(src), "-p", str(prof), "-o", str(tmp_path / "big.mp4"),
                  "--gpu", "none", "--json", cwd=elsewhere)
    assert res.returncode == 0, res.stderr
    stage = json.loads(res.stdout)["plan"]["stages"][0]
    assert (stage["kind"], stage["model"]) == ("upscale", str(nets / "mine-x2.safetensors"))
    o = read_back(tmp_path / "big.mp4")
    assert (o.width, o.height, o.frames) == (128, 96, 5)


def test_upscale_then_max_height_with_rotation(tmp_path: Path) -> None:
    prof = tmp_path / "up.toml"
    prof.write_text("[video]\nspeed = 'fastest'\nmax_height = 400\n"
                    "[[stages]]\nkind = 'upscale'\nscale = 3\n")
    src = Path(__file__).resolve().parent.parent / "samples" / "rotated.mp4"
    out = tmp_path / "o.mp4"
    import av

    with av.open(str(src)) as c, av.open(str(tmp_path / "short.mp4"), "w") as short:
        # the first 5 frames, remuxed: enough to check geometry without a long CPU upscale
        ist = c.streams.video[0]
        ost = short.add_stream_from_template(ist)
        ost.set_display_rotation(90)
        for i, packet in enumerate(c.demux(ist)):
            if i >= 5 or packet.dts is None:
                break
            packet.stream = ost
            short.mux(packet)
    transcode(tmp_path / "short.mp4", load_profile(str(prof)), out, gpu="none")
    o = read_back(out)
    # 180x320 after rotation, x3 = 540x960, scaled to 400 lines: 225 wide, evened to 224
    assert (o.width, o.height) == (224, 400)
    assert o.rotation == 0


@pytest.mark.parametrize("setting", ["rotation", "interlaced"])
def test_analysis_stages_keep_rotation_and_deinterlacing_of_a_re_encode(setting: str,
                                                                       tmp_path: Path) -> None:
    """QA: frames the models only looked at went to the encoder as decoded: a rotated source
    came out unturned, squeezed into the turned size; an interlaced one left combed."""
    plain = tmp_path / "plain.mp4"
    if setting == "rotation":
        ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x96:r=25", "-t", "1", "-c:v", "libx264",
               "-preset", "ultrafast", str(tmp_path / "upright.mp4"))
        ffmpeg("-display_rotation", "90", "-i", str(tmp_path / "upright.mp4"), "-c", "copy",
               str(plain))
    else:  # flagged top-field-first interlaced, as a broadcast recording is
        ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x96:r=50", "-t", "1", "-vf",
               "tinterlace=mode=interleave_top", "-c:v", "libx264", "-preset", "ultrafast",
               "-flags", "+ilme+ildct", str(plain))
    shots = "[video]\nspeed = 'fastest'\n[audio]\ncodec = 'none'\n" \
            "[[stages]]\nkind = 'shots'\ndevice = 'cpu'\n"
    bare = "[video]\nspeed = 'fastest'\n[audio]\ncodec = 'none'\n"
    (tmp_path / "shots.toml").write_text(shots)
    (tmp_path / "bare.toml").write_text(bare)
    with_stage, without = tmp_path / "with.mp4", tmp_path / "without.mp4"
    transcode(plain, load_profile(str(tmp_path / "shots.toml")), with_stage, gpu="none")
    transcode(plain, load_profile(str(tmp_path / "bare.toml")), without, gpu="none")
    a, b = read_back(with_stage), read_back(without)
    assert (a.width, a.height, a.frames) == (b.width, b.height, b.frames)
    # The same picture as the transcode without the stage (which rotates and deinterlaces)
    assert ffmpeg_psnr(with_stage, without, frames=5) > 40
    # ... and as the independent ffmpeg makes it: turned upright (its autorotation), or
    # deinterlaced with the same bwdif (measured 39 dB; not deinterlaced: 29 dB)
    ref = tmp_path / "ref.mkv"
    ffmpeg("-i", str(plain), *(("-vf", "bwdif=mode=send_frame:parity=auto:deint=interlaced")
                               if setting == "interlaced" else ()),
           "-c:v", "libx264", "-crf", "10", str(ref))
    assert ffmpeg_psnr(with_stage, ref, frames=5) > 35


def test_stages_without_torch_fail_with_install_hint(tmp_path: Path) -> None:
    fake = tmp_path / "no_torch" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('torch is not installed here')\n")
    src = make_clip(tmp_path / "a.mp4", frames=5)
    res = run_cli("transcode", str(src), "-p", "upscale-2x", "-o", str(tmp_path / "o.mp4"),
                  env={"PYTHONPATH": str(tmp_path / "no_torch")})
    assert res.returncode == 1
    assert "pip install torch==2.13.0" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.mp4").exists()
    plain = run_cli("transcode", str(src), "-o", str(tmp_path / "p.mp4"), "--gpu", "none",
                    env={"PYTHONPATH": str(tmp_path / "no_torch")})
    assert plain.returncode == 0, plain.stderr  # a CPU transcode never needs torch


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_stage_failure_mid_stream_fails_the_job_and_ends_the_model_thread(tmp_path: Path) -> None:
    import threading

    from test_models_classify import ChannelMeans

    from mediad.errors import MediadError

    model = tmp_path / "models" / "colours.pt"
    model.parent.mkdir()
    torch.jit.script(ChannelMeans()).save(str(model))
    (tmp_path / "models" / "labels.txt").write_text("red\ngreen\n")  # the model has 3 outputs
    prof = tmp_path / "bad.toml"
    prof.write_text("[video]\nspeed = 'fastest'\n[[stages]]\nkind = 'classify'\n"
                    f"model = '{model}'\nlabels = '{tmp_path / 'models' / 'labels.txt'}'\n"
                    "input_size = 32\nmean = [0, 0, 0]\nstd = [1, 1, 1]\nevery = 1\n")
    (tmp_path / "in").mkdir()
    src = make_clip(tmp_path / "in" / "a.mp4", frames=40)
    before = src.read_bytes()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(MediadError, match="does not match 2 labels"):
        transcode(src, load_profile(str(prof)), out_dir / "a.mp4", gpu="none")
    assert [t.name for t in threading.enumerate() if t.name == "mediad-stages"] == []
    assert list(out_dir.iterdir()) == [] and src.read_bytes() == before


class _Crashes(torch.nn.Module):
    """A classifier that fails at run time, as a CUDA error or a shape bug in a user's model
    does (not a MediadError)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, 7)


def test_a_model_crashing_at_run_time_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """QA: a stage raising a plain exception (RuntimeError) printed a 40-line traceback."""
    model = tmp_path / "crash.pt"
    torch.jit.script(_Crashes()).save(str(model))
    (tmp_path / "labels.txt").write_text("a\nb\n")
    prof = tmp_path / "crash.toml"
    prof.write_text(f"[video]\nspeed = 'fastest'\n[[stages]]\nkind = 'classify'\n"
                    f"model = '{model}'\nlabels = '{tmp_path / 'labels.txt'}'\ninput_size = 32\n"
                    "mean = [0, 0, 0]\nstd = [1, 1, 1]\nevery = 1\n")
    src = make_clip(tmp_path / "a.mp4", frames=20)
    out = tmp_path / "out"
    out.mkdir()
    res = run_cli("transcode", str(src), "-p", str(prof), "-o", str(out / "a.mp4"), "--gpu",
                  "none", "--no-progress")
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    (line,) = res.stderr.splitlines()
    assert line.startswith("mediad: error: ") and "stage classify failed" in line \
        and "RuntimeError" in line, line
    assert list(out.iterdir()) == []


def test_stages_on_gpu_frames_then_software_encoder_wiring(tmp_path: Path) -> None:
    """The H100/H200 plan with stages: frames GPU-resident for the models, software encoder.

    Run here with the plan's residency forced on and software frames in: the same pipeline
    branches (GPU bridge, host download, libavfilter, libx264) as on NVDEC frames.
    """
    from dataclasses import replace

    from mediad.media.engine import run
    from mediad.media.job import plan_job
    from mediad.media.job_plan import single_output

    src = make_clip(tmp_path / "small.mp4", frames=6, size=(64, 48))
    profile = load_profile("upscale-2x")
    plan = plan_job(src, profile, tmp_path / "o.mp4", gpu="none")
    assert not plan.video.hardware
    plan = replace(plan, frames_on_gpu=True,
                   frames_reason="NVDEC -> stages on the GPU; result downloaded once for the software encoder")
    result = run(single_output(plan), tmp_path / "o.mp4", stages=profile.stages)
    o, s = read_back(tmp_path / "o.mp4"), read_back(src)
    assert result.frames_written == s.frames == o.frames
    assert (o.width, o.height, o.video_codec) == (128, 96, "h264")
    assert o.pts == pytest.approx(s.pts, abs=0.002)


@pytest.mark.parametrize("container", ["mkv", "mp4"])
def test_shot_chapters_replace_the_sources_chapters(cuts_clip: Path, tmp_path: Path,
                                                    container: str) -> None:
    """QA: a source with chapters of its own kept them (Intro, Main) although the shots stage
    was asked for chapters, which replace the source's (docs/models.md); the source's were
    written with the header, before the shots were known, and the muxers kept those."""
    meta = tmp_path / "meta.txt"
    meta.write_text(";FFMETADATA1\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=2000\ntitle=Intro\n"
                    "[CHAPTER]\nTIMEBASE=1/1000\nSTART=2000\nEND=4800\ntitle=Main\n")
    src = tmp_path / f"chaptered.{container}"
    ffmpeg("-y", "-i", str(cuts_clip), "-i", str(meta), "-map", "0", "-map_chapters", "1",
           "-c", "copy", str(src))
    assert "title           : Intro" in ffmpeg_info(src)
    profile = write_profile(tmp_path, f'container = "{container}"\n[video]\ncodec = "copy"\n'
                            '[[stages]]\nkind = "shots"\nchapters = true\n', "shots")
    out = tmp_path / f"out.{container}"
    report = transcode_report(str(src), "-p", str(profile), "-o", str(out), "--gpu", "none")
    assert report["analysis"]["shots"] == 3
    # The file's chapters as the independent ffmpeg exports them (its metadata file format)
    exported = ffmpeg("-i", str(out), "-f", "ffmetadata", "-").stdout
    chapters = exported.split("[CHAPTER]")[1:]
    titles = [re.search(r"^title=(.*)$", c, re.M)[1] for c in chapters]  # type: ignore[index]
    assert titles == ["Shot 1", "Shot 2", "Shot 3"], exported
