"""Bad input: one-line error naming the file and cause, non-zero exit, no traceback, no leftovers."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import SAMPLES, make_clip, run_cli, transcode_report

from mediad.realtime import undo_realtime


def _bad_files(d: Path) -> dict[str, tuple[Path, str]]:
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("these are not the frames you are looking for\n")
    data = (SAMPLES / "h264_aac.mp4").read_bytes()
    (d / "cut.mp4").write_bytes(data[: len(data) // 2])  # the index (moov) is at the end
    mkv = (SAMPLES / "subs.mkv").read_bytes()
    (d / "cut.mkv").write_bytes(mkv[: len(mkv) // 2])  # readable header, half the frames
    make_clip(d / "song.m4a", video=False)
    (d / "talk.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nHello\n")
    return {
        "missing": (d / "missing.mp4", "no such file"),
        "empty": (d / "empty.mp4", "file is empty (0 bytes)"),
        "not media": (d / "notes.mp4", "not a media file"),
        "truncated header": (d / "cut.mp4", "truncated or corrupt MP4/MOV file"),
        "truncated body": (d / "cut.mkv", "truncated source: its header says stream #0 lasts "
                           "until 2.400s, but its data ends at"),
        "audio only": (d / "song.m4a", "audio-only file, but profile h264 makes video"),
        "subtitles only": (d / "talk.srt", "file with no video stream, but profile h264 makes "
                           "video"),
        "directory": (d, "is a directory"),
    }


@pytest.mark.parametrize("case", ["missing", "empty", "not media", "truncated header",
                                  "truncated body", "audio only", "subtitles only",
                                  "directory"])
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


def _one_line_error(res: subprocess.CompletedProcess, cause: str) -> None:
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and cause in lines[0] and "Traceback" not in res.stderr, res.stderr


def test_output_that_is_no_regular_file_is_refused_before_encoding(tmp_path: Path) -> None:
    """`-o /dev/null --overwrite` must not rename a file over the device; a folder is no name."""
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    src = str(SAMPLES / "noaudio.mp4")
    _one_line_error(run_cli("transcode", src, "-o", str(fifo), "--overwrite", "--gpu", "none"),
                    "not a regular file")
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    folder = tmp_path / "out.mp4"
    folder.mkdir()
    _one_line_error(run_cli("transcode", src, "-o", str(folder), "--overwrite", "--gpu", "none"),
                    "is a folder")
    _one_line_error(run_cli("transcode", src, "-o", "", "--gpu", "none"), "is a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "pipe.mp4"]
    assert list(folder.iterdir()) == []


def test_output_name_must_be_a_container_mediad_writes(tmp_path: Path) -> None:
    """The extension picks the container (see test_streams.py); unknown ones are refused."""
    src = str(SAMPLES / "noaudio.mp4")
    _one_line_error(run_cli("transcode", src, "-o", str(tmp_path / "o.avi"), "--gpu", "none"),
                    "name the output .mp4, .m4v, .mov, .qt, .mkv or .webm")
    assert not (tmp_path / "o.avi").exists()
    res = run_cli("transcode", src, "-o", str(tmp_path / "o.m4v"), "--gpu", "none")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "o.m4v").read_bytes()[4:8] == b"ftyp"


def test_text_and_still_image_files_are_not_media(tmp_path: Path) -> None:
    """FFmpeg reads .txt/.nfo as ANSI art and a PNG as a one-frame video: neither is a video."""
    notes = tmp_path / "release.nfo"
    notes.write_text("Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n" * 60)
    png = tmp_path / "poster.png"
    with av.open(str(png), "w", format="image2") as out:
        s = out.add_stream("png")
        s.width, s.height, s.pix_fmt = 32, 24, "rgb24"
        out.mux(s.encode(av.VideoFrame.from_ndarray(np.zeros((24, 32, 3), np.uint8), "rgb24")))
        out.mux(s.encode(None))
    for path, cause in ((notes, "a text file"), (png, "a still image")):
        _one_line_error(run_cli("probe", str(path)), cause)
        _one_line_error(run_cli("transcode", str(path), "-o", str(tmp_path / "o.mp4"),
                                "--gpu", "none"), cause)
    assert not (tmp_path / "o.mp4").exists()


def test_invalid_utf8_metadata_does_not_stop_a_transcode(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "clip.mp4", frames=5, audio=False)
    titled = tmp_path / "titled.mkv"
    with av.open(str(src)) as inp, av.open(str(titled), "w") as out:
        out.metadata["title"] = "QQQQQQQQ"
        ost = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = ost
                out.mux(packet)
    titled.write_bytes(titled.read_bytes().replace(b"QQQQQQQQ", b"\xff\xfe\xc3(\x80abc"))
    res = run_cli("probe", str(titled))
    assert res.returncode == 0 and "video #0: h264 64x48" in res.stdout, res.stderr
    res = run_cli("transcode", str(titled), "-o", str(tmp_path / "o.mp4"), "--gpu", "none")
    assert res.returncode == 0, res.stderr


def test_probe_names_codecs_not_decoders(tmp_path: Path) -> None:
    """AV1 is decoded by libdav1d and MP3 by mp3float: probe and copy decisions use av1 and mp3."""
    src = tmp_path / "av1_mp3.mkv"
    with av.open(str(src), "w") as out:
        vs = out.add_stream("libsvtav1", rate=10, options={"preset": "12"})
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        aus = out.add_stream("libmp3lame", rate=44100)
        aus.layout = "stereo"
        for i in range(5):
            img = np.full((48, 64, 3), i * 40, np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))
        undo_realtime()  # PyAV's SVT-AV1 as root made the test process real-time
        for i in range(20):
            a = av.AudioFrame.from_ndarray(np.zeros((2, 1152), np.float32), format="fltp",
                                           layout="stereo")
            a.sample_rate, a.pts = 44100, i * 1152
            out.mux(aus.encode(a))
        out.mux(aus.encode(None))
    res = run_cli("probe", str(src))
    assert "video #0: av1 64x48" in res.stdout and "audio #1: mp3 2ch" in res.stdout, res.stdout
    prof = tmp_path / "copy.toml"
    prof.write_text("[video]\ncodec = 'copy'\n[audio]\ncodec = 'copy'\n")
    report = transcode_report(str(src), "-p", str(prof), "-o", str(tmp_path / "o.mp4"))
    assert report["plan"]["outputs"][0]["video"]["action"] == "copy"
    assert [a["action"] for a in report["plan"]["audio"]] == ["copy"]
    assert report["outputs"][0]["video_codec"] == "av1"


def test_a_track_without_packets_is_a_warning_and_video_without_frames_an_error(
        tmp_path: Path) -> None:
    silent = tmp_path / "silent_track.mkv"
    with av.open(str(SAMPLES / "noaudio.mp4")) as inp, av.open(str(silent), "w") as out:
        ost = out.add_stream_from_template(inp.streams.video[0])
        aus = out.add_stream("aac", rate=48000)  # declared, never given a packet
        aus.layout = "stereo"
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = ost
                out.mux(packet)
    report = transcode_report(str(silent), "-o", str(tmp_path / "o.mp4"), "--gpu", "none")
    assert report["outputs"][0]["audio_streams"] == 0
    assert any("kept 1 audio stream(s) but the output has 0" in w for w in report["warnings"])
    empty_video = tmp_path / "no_frames.mkv"
    make_clip(empty_video, frames=10)
    with av.open(str(tmp_path / "no_frames.mkv")) as inp, \
            av.open(str(tmp_path / "no_frames2.mkv"), "w") as out:
        out.add_stream_from_template(inp.streams.video[0])  # declared, never given a packet
        ast = out.add_stream_from_template(inp.streams.audio[0])
        for packet in inp.demux(inp.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = ast
                out.mux(packet)
    _one_line_error(run_cli("transcode", str(tmp_path / "no_frames2.mkv"), "-o",
                            str(tmp_path / "p.mp4"), "--gpu", "none"), "gave no frames")
    assert not (tmp_path / "p.mp4").exists()
