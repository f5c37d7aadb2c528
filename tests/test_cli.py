"""The command line: exit codes, --json report shape, default output name, no torch on CPU paths."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLES, cuda_available, read_back, run_cli, transcode_report


def test_transcode_json_report_shape(tmp_path: Path) -> None:
    src = Path(shutil.copy(SAMPLES / "h264_aac.mp4", tmp_path / "movie.mp4"))
    report = transcode_report(str(src), "--gpu", "none")
    out = tmp_path / "movie.h264.mp4"  # default: <stem>.<profile>.<ext> beside the input
    assert out.is_file()
    assert set(report) >= {"input", "plan", "outputs", "elapsed", "fps", "warnings", "fallbacks"}
    assert report["input"]["path"] == str(src)
    assert report["input"]["video"][0]["codec"] == "h264"
    assert report["plan"]["outputs"][0]["video"]["encoder"] == "libx264"
    assert report["plan"]["decode"]["hardware"] is False
    (o,) = report["outputs"]
    rb = read_back(out)
    assert o["path"] == str(out) and o["size"] == out.stat().st_size
    assert (o["video_codec"], o["width"], o["height"], o["frames"]) == ("h264", rb.width, rb.height, rb.frames)
    assert abs(o["duration"] - rb.pts[-1] - 0.04) < 0.05
    assert o["encoder"] == "libx264" and o["container"] == "mp4" and o["audio_streams"] == 1
    assert report["elapsed"] > 0 and report["fps"] > 0


def test_transcode_text_output(tmp_path: Path) -> None:
    res = run_cli("transcode", str(SAMPLES / "noaudio.mp4"), "-p", "hevc", "-o",
                  str(tmp_path / "o.mp4"), "--gpu", "none")
    assert res.returncode == 0
    assert "wrote " in res.stdout and "via libx265" in res.stdout
    assert "fallback: video: software encoder because NVENC hevc not usable" not in res.stdout


@pytest.mark.skipif(cuda_available(), reason="a machine without an NVIDIA GPU")
def test_no_gpu_machine_is_no_fallback(tmp_path: Path) -> None:
    """Without any NVIDIA GPU, software encoding is the normal path: not printed as a fallback
    on every run; the plan, the report and an INFO log line say why."""
    res = run_cli("transcode", str(SAMPLES / "noaudio.mp4"), "-o", str(tmp_path / "o.mp4"),
                  "--json", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    report = json.loads(res.stdout)
    assert report["fallbacks"] == []
    assert report["plan"]["outputs"][0]["video"]["reason"].startswith("software encoder: no NVIDIA GPU here")
    text = run_cli("transcode", str(SAMPLES / "noaudio.mp4"), "-o", str(tmp_path / "t.mp4"),
                   "--no-progress")
    assert "fallback" not in text.stdout and text.stderr == ""
    info = run_cli("--log-level", "INFO", "transcode", str(SAMPLES / "noaudio.mp4"), "-o",
                   str(tmp_path / "i.mp4"), "--no-progress")
    assert "level=INFO event=software_only reason=" in info.stderr


def test_plan_shows_decisions_without_running(tmp_path: Path) -> None:
    res = run_cli("plan", str(SAMPLES / "subs.mkv"), "-p", "web", "-o", str(tmp_path / "o.mp4"))
    assert res.returncode == 0, res.stderr
    assert "libx264" in res.stdout and "subs:    #3 srt convert -> mov_text" in res.stdout
    assert not (tmp_path / "o.mp4").exists()
    data = json.loads(run_cli("plan", str(SAMPLES / "rotated.mp4"), "--json").stdout)
    video = data["outputs"][0]["video"]  # a single transcode's one output
    assert data["package"] == "file" and [o["name"] for o in data["outputs"]] == ["video"]
    assert video["rotate"] == 90 and (video["width"], video["height"]) == (180, 320)


def test_probe_json_and_errors() -> None:
    info = json.loads(run_cli("probe", str(SAMPLES / "tenbit_hevc.mkv"), "--json").stdout)
    assert info["video"][0]["bit_depth"] == 10 and info["audio"][0]["language"] == "eng"
    res = run_cli("probe", "/nonexistent.mkv")
    assert res.returncode == 1 and res.stderr.startswith("mediad: error: /nonexistent.mkv: no such file")


def test_usage_errors_exit_2() -> None:
    assert run_cli().returncode == 2
    assert run_cli("transcode").returncode == 2
    assert run_cli("transcode", "x.mp4", "--gpu").returncode == 2


def test_help_and_cpu_transcode_do_not_import_torch(tmp_path: Path) -> None:
    # nor Ray, nor the web stack: the daemon's modules (its local executor, without [api]) are
    # imported too, and must not pull them in
    code = (
        "import mediad.daemon.service, mediad.daemon.status\n"
        "import sys, contextlib, io\n"
        "from mediad.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        f"rc = main(['transcode', {str(SAMPLES / 'h264_aac.mp4')!r}, '-o', {str(tmp_path / 'o.mp4')!r},"
        " '--gpu', 'none', '--no-progress'])\n"
        "web = [m for m in ('fastapi', 'uvicorn', 'starlette', 'jinja2') if m in sys.modules]\n"
        "print(rc, 'torch' in sys.modules, 'ray' in sys.modules, bool(web))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.split()[-4:] == ["0", "False", "False", "False"], res.stderr


def test_start_up_pauses_the_collector_in_the_program_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from mediad import cli

    with cli._start_up():  # main() called by another program: its collector is left alone
        assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    monkeypatch.setattr(cli, "_program", True)
    monkeypatch.setattr(cli, "_fast_exit", True)
    try:
        with pytest.raises(ValueError), cli._start_up():
            assert not gc.isenabled()
            raise ValueError  # a failed start-up enables it again too
        assert gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_retry_usage_and_help(tmp_path: Path) -> None:
    assert "retry" in run_cli("--help").stdout
    assert run_cli("retry").returncode == 2  # nothing named
    assert run_cli("retry", "3", "--failed").returncode == 2  # both
    (tmp_path / "in").mkdir()
    cfg = tmp_path / "mediad.toml"
    cfg.write_text('[daemon]\nstate_dir = "state"\n[[watch]]\npath = "in"\noutput_dir = "out"\n')
    res = run_cli("retry", "--failed", "--config", str(cfg))  # the daemon never ran
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.splitlines() == [f"mediad: error: {tmp_path / 'state' / 'queue.sqlite3'}: no "
                                       f"state database yet (has the daemon run with {cfg}?)"]
