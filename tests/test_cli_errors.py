"""How the one-shot commands fail: every validation error listed, --json errors, usage errors
exit 2, and a full or failing output disk reported as a transient io_error, never as corrupt."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLES, make_clip, run_cli

BAD_PROFILE = """\
colour = "red"
[video]
codec = "h265"
speed = "warp"
[audio]
codec = "mp3"
"""
BAD_PROFILE_ERRORS = [  # in the order of the profile's fields, unknown keys last
    "video.codec: Input should be 'h264', 'hevc', 'av1' or 'copy'",
    "video.speed: Input should be 'fastest', 'faster', 'fast', 'medium', 'slow', 'slower' or "
    "'slowest'",
    "audio.codec: Input should be 'aac', 'opus', 'copy' or 'none'",
    "colour: unknown key",
]


def _one_line(res: subprocess.CompletedProcess) -> str:
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


# --- profiles validate lists every error ----------------------------------------------------

def test_profiles_validate_lists_every_error_of_every_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD_PROFILE)
    also_bad = tmp_path / "also-bad.toml"
    also_bad.write_text("[video]\nquality = 77\n")
    res = run_cli("profiles", "validate", "h264", str(bad), "web", str(also_bad))
    assert res.returncode == 1
    # A failing file does not stop the others: those that pass still say so.
    assert res.stdout.splitlines() == ["h264: ok", "web: ok"]
    assert res.stderr.splitlines() == [
        *(f"mediad: error: {bad}: {e}" for e in BAD_PROFILE_ERRORS),
        f"mediad: error: {also_bad}: video.quality: must be 0..51 for h264"]


def test_transcode_and_plan_keep_one_line_for_a_bad_profile(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD_PROFILE)
    first = f"mediad: error: {bad}: {BAD_PROFILE_ERRORS[0]} (and 3 more)"
    for cmd in ("transcode", "plan"):
        res = run_cli(cmd, str(SAMPLES / "noaudio.mp4"), "-p", str(bad), "-o",
                      str(tmp_path / "o.mp4"), "--gpu", "none")
        assert res.returncode == 1 and _one_line(res) == first, cmd
    assert not (tmp_path / "o.mp4").exists()


def test_config_validate_lists_every_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[daemon]\nworkers = 0\nbogus = 1\n[[watch]]\npath = "in"\n')
    res = run_cli("config", "validate", str(bad))
    assert res.returncode == 1 and res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) >= 3 and all(x.startswith(f"mediad: error: {bad}: ") for x in lines), lines
    assert f"mediad: error: {bad}: daemon.bogus: unknown key" in lines
    assert f"mediad: error: {bad}: watch.0.output_dir: Field required" in lines


# --- --json failures ------------------------------------------------------------------------

def _json_error(res: subprocess.CompletedProcess, path: Path | str, reason: str, cause: str) -> None:
    assert res.returncode == 1, res.stderr
    line = _one_line(res)
    assert line.startswith(f"mediad: error: {path}") and cause in line
    assert json.loads(res.stdout) == {"error": line.removeprefix("mediad: error: "),
                                      "reason": reason, "file": str(path)}


def test_json_commands_print_their_error_as_json(tmp_path: Path) -> None:
    missing = tmp_path / "missing.mp4"
    text = tmp_path / "notes.mp4"
    text.write_text("these are not the frames you are looking for\n")
    out = str(tmp_path / "o.mp4")
    for cmd, extra in (("transcode", ["-o", out, "--gpu", "none"]), ("plan", ["-o", out]),
                       ("probe", [])):
        _json_error(run_cli(cmd, str(missing), "--json", *extra), missing, "missing_input",
                    "no such file")
        _json_error(run_cli(cmd, str(text), "--json", *extra), text, "not_media",
                    "not a media file")
    # An error before the input is read still names the input as the job's file.
    res = run_cli("transcode", str(SAMPLES / "noaudio.mp4"), "--json", "-p", "nope", "-o", out)
    assert res.returncode == 1
    assert json.loads(res.stdout) == {
        "error": _one_line(res).removeprefix("mediad: error: "), "reason": "bad_profile",
        "file": str(SAMPLES / "noaudio.mp4")}
    assert not Path(out).exists()


# --- usage errors exit 2 --------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("transcode", "x.mp4", "--gpu", "banana"),
    ("transcode", "x.mp4", "--gpu", "-1"),
    ("transcode", "x.mp4", "--gpu", ""),
    ("plan", "x.mp4", "--gpu", "1.5"),
    ("profiles", "show"),
    ("profiles", "validate"),
    ("profiles", "list", "h264"),
    ("profiles", "schema", "h264"),
    # An empty file argument (an unset variable) is no file, nor the default one.
    ("transcode", ""),
    ("probe", ""),
    ("plan", ""),
    ("status", "--config", ""),
    ("retry", "--failed", "--config", ""),
    ("daemon", "--config", ""),
    ("config", "validate", ""),
])
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    res = run_cli(*args)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("usage: mediad") and "Traceback" not in res.stderr
    assert res.stdout == ""


def test_gpu_numbers_and_words_still_pass_argparse(tmp_path: Path) -> None:
    for gpu in ("auto", "none", "0", "7"):
        res = run_cli("plan", str(SAMPLES / "noaudio.mp4"), "--gpu", gpu)
        assert res.returncode in (0, 1), res.stderr  # 1: no such GPU, a user error, not usage
        assert "usage:" not in res.stderr


# --- storage failures are transient io_errors -----------------------------------------------

def _can_mount_namespaces() -> str | None:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "unshare or mount is not installed"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"mount namespaces are not permitted here: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 640x360 clip whose h264 output (~270 kB) cannot fit a 100 kB filesystem."""
    return make_clip(tmp_path_factory.mktemp("clip") / "long.mp4", frames=300, size=(640, 360))


def _in_full_tmpfs(folder: Path, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run argv with a 100 kB tmpfs mounted on `folder`, in a private mount namespace."""
    why = _can_mount_namespaces()
    if why:
        pytest.skip(why)
    script = f'mount -t tmpfs -o size=100k tmpfs "{folder}" && exec "$@"'
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *argv], input=stdin,
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_disk_full_is_a_transient_disk_full_not_corrupt(long_clip: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    out = full / "out.mp4"
    res = _in_full_tmpfs(full, [sys.executable, "-m", "mediad", "transcode", str(long_clip),
                                "-o", str(out), "--gpu", "none", "--json", "--no-progress"])
    assert res.returncode == 1
    line = _one_line(res)
    assert line == f"mediad: error: {out}: No space left on device", line
    assert json.loads(res.stdout) == {"error": line.removeprefix("mediad: error: "),
                                      "reason": "disk_full", "file": str(long_clip)}
    assert list(full.iterdir()) == []  # the mount is gone with its namespace; nothing leaked here

    # The daemon's worker: the same job fails transient (retried later), the source is not blamed.
    from mediad.profiles import load_profile

    profile = load_profile("h264")
    spec = {"input": str(long_clip), "output": str(out), "gpu": "none",
            "profile": profile.model_dump(mode="json"), "profile_name": profile.name}
    res = _in_full_tmpfs(full, [sys.executable, "-m", "mediad.daemon.worker"], json.dumps(spec))
    events = [json.loads(x) for x in res.stdout.splitlines()]
    assert events[-1] == {"event": "error", "version": 1,
                          "message": f"{out}: No space left on device",
                          "reason": "disk_full", "transient": True}, res.stderr


def test_file_size_limit_is_an_io_error(long_clip: Path, tmp_path: Path) -> None:
    """RLIMIT_FSIZE: Python ignores SIGXFSZ, so the write fails with EFBIG and is reported."""
    import resource

    out = tmp_path / "out.mp4"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    res = subprocess.run([sys.executable, "-m", "mediad", "transcode", str(long_clip), "-o",
                          str(out), "--gpu", "none", "--json", "--no-progress"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300, preexec_fn=limit)
    assert res.returncode == 1
    assert _one_line(res) == f"mediad: error: {out}: File too large"
    assert json.loads(res.stdout)["reason"] == "io_error"
    assert list(tmp_path.iterdir()) == []


def test_a_failing_commit_is_one_line_not_a_traceback(long_clip: Path, tmp_path: Path) -> None:
    """A folder created at the output name while encoding: the final rename fails (EISDIR)."""
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "mediad", "transcode", str(long_clip), "-o",
                             str(out), "--gpu", "none", "--json", "--overwrite", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.*.part.mp4")):  # encoding: the output name was checked
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    out.mkdir()
    (out / "keep").write_text("x")  # a non-empty folder: rename cannot replace it
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    assert stderr.splitlines() == [f"mediad: error: {out}: Is a directory"], stderr
    assert json.loads(stdout)["reason"] == "io_error"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no .part left
    assert os.listdir(out) == ["keep"]
