"""Bad input: one-line error naming the file and cause, non-zero exit, no traceback, no leftovers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import SAMPLES, make_clip, run_cli


def _bad_files(d: Path) -> dict[str, tuple[Path, str]]:
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("these are not the frames you are looking for\n")
    data = (SAMPLES / "h264_aac.mp4").read_bytes()
    (d / "cut.mp4").write_bytes(data[: len(data) // 2])  # the index (moov) is at the end
    mkv = (SAMPLES / "subs.mkv").read_bytes()
    (d / "cut.mkv").write_bytes(mkv[: len(mkv) // 2])  # readable header, half the frames
    make_clip(d / "song.m4a", video=False)
    return {
        "missing": (d / "missing.mp4", "no such file"),
        "empty": (d / "empty.mp4", "file is empty (0 bytes)"),
        "not media": (d / "notes.mp4", "not a media file"),
        "truncated header": (d / "cut.mp4", "truncated or corrupt MP4/MOV file"),
        "truncated body": (d / "cut.mkv", "truncated or corrupt source"),
        "audio only": (d / "song.m4a", "audio-only file, but profile h264 makes video"),
        "directory": (d, "is a directory"),
    }


@pytest.mark.parametrize("case", ["missing", "empty", "not media", "truncated header",
                                  "truncated body", "audio only", "directory"])
def test_bad_input_fails_cleanly(case: str, tmp_path: Path) -> None:
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    path, cause = _bad_files(src_dir)[case]
    before = {p.name: p.read_bytes() for p in src_dir.iterdir() if p.is_file()}
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    res = run_cli("transcode", str(path), "-o", str(out_dir / "x.mp4"), "--gpu", "none")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"mediad: error: {path}") and cause in lines[0]
    assert "Traceback" not in res.stderr
    assert list(out_dir.iterdir()) == []  # no partial output
    assert {p.name: p.read_bytes() for p in src_dir.iterdir() if p.is_file()} == before


def test_refuses_existing_output_without_overwrite(tmp_path: Path) -> None:
    src = shutil.copy(SAMPLES / "noaudio.mp4", tmp_path / "clip.mp4")
    out = tmp_path / "clip.h264.mp4"
    out.write_bytes(b"precious")
    res = run_cli("transcode", str(src), "--gpu", "none")
    assert res.returncode == 1 and "already exists (use --overwrite" in res.stderr
    assert out.read_bytes() == b"precious"
    res = run_cli("transcode", str(src), "--gpu", "none", "--overwrite")
    assert res.returncode == 0, res.stderr
    assert out.stat().st_size > 1000 and out.read_bytes()[4:8] == b"ftyp"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.h264.mp4", "clip.mp4"]


def test_refuses_output_equal_to_input(tmp_path: Path) -> None:
    src = Path(shutil.copy(SAMPLES / "noaudio.mp4", tmp_path / "clip.mp4"))
    before = src.read_bytes()
    for args in (["-o", str(src)], ["-o", str(src), "--overwrite"]):
        res = run_cli("transcode", str(src), "--gpu", "none", *args)
        assert res.returncode == 1 and "output is the input file" in res.stderr
    assert src.read_bytes() == before


def test_bad_profile_and_gpu_arguments(tmp_path: Path) -> None:
    res = run_cli("transcode", str(SAMPLES / "noaudio.mp4"), "-p", "nope")
    assert res.returncode == 1 and "unknown profile 'nope'" in res.stderr
    res = run_cli("transcode", str(SAMPLES / "noaudio.mp4"), "-o", str(tmp_path / "o.mp4"),
                  "--gpu", "7")
    assert res.returncode == 1 and "--gpu 7: no such GPU" in res.stderr
    prof = tmp_path / "needs-gpu.toml"
    prof.write_text("[video]\nencoder = 'gpu'\n")
    res = run_cli("transcode", str(SAMPLES / "noaudio.mp4"), "-p", str(prof), "-o",
                  str(tmp_path / "o.mp4"))
    assert res.returncode == 1 and "requires NVENC (h264) but it is not usable here" in res.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_missing_output_folder(tmp_path: Path) -> None:
    res = run_cli("transcode", str(SAMPLES / "noaudio.mp4"), "-o", str(tmp_path / "no" / "o.mp4"))
    assert res.returncode == 1 and "output folder does not exist" in res.stderr
