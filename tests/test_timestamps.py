"""Timestamps and durations of real-world sources: DVR recordings that start hours in, streams
of different lengths, AAC priming, truncated and growing sources, damaged recordings.

Sources are written by the independent ffmpeg binary; outputs are read back by it too.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    camera_clip,
    ffmpeg,
    ffmpeg_bytes,
    ffmpeg_info,
    packet_times,
    run_cli,
    stream_span,
    stream_start,
)

from mediad.errors import MediadError
from mediad.media.job import transcode
from mediad.profiles import load_profile

COPY_MKV = 'container = "mkv"\n[video]\ncodec = "copy"\n[audio]\ncodec = "copy"\n'
COPY_MP4 = 'container = "mp4"\n[video]\ncodec = "copy"\n[audio]\ncodec = "copy"\n'
FAST = '[video]\nspeed = "fastest"\n'


def _profile(tmp_path: Path, text: str, name: str = "p") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def _container_duration(path: Path) -> float:
    m = re.search(r"Duration: (\d+):(\d+):([\d.]+)", ffmpeg_info(path))
    assert m, ffmpeg_info(path)
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])


@pytest.fixture(scope="module")
def late_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Sources whose clock does not start at 0: a broadcast MPEG-TS an hour in, an MPEG-PS
    (its muxer starts at 0.5 s), a Matroska file and an MP4 (an empty edit) starting at 7 s."""
    d = tmp_path_factory.mktemp("late")
    return {
        "ts-1h": camera_clip(d / "rec.ts", "-output_ts_offset", "3600", "-f", "mpegts",
                             seconds=3),
        "ps": camera_clip(d / "rec.mpg", "-c:v", "mpeg2video", "-q:v", "4", "-c:a", "mp2",
                          "-f", "mpeg", seconds=3),
        "mkv-7s": camera_clip(d / "late.mkv", "-output_ts_offset", "7", seconds=3),
        "mp4-7s": camera_clip(d / "late.mp4", "-output_ts_offset", "7", seconds=3),
    }


@pytest.mark.parametrize("source,profile,suffix", [
    ("ts-1h", FAST, ".mp4"), ("ts-1h", FAST, ".mkv"), ("ts-1h", COPY_MP4, ".mp4"),
    ("ts-1h", COPY_MKV, ".mkv"), ("ps", FAST, ".mp4"), ("mkv-7s", FAST, ".mp4"),
    ("mkv-7s", COPY_MKV, ".mkv"), ("mp4-7s", FAST, ".mkv"), ("mp4-7s", COPY_MP4, ".mp4"),
], ids=["ts-encode-mp4", "ts-encode-mkv", "ts-copy-mp4", "ts-copy-mkv", "ps-encode-mp4",
        "mkv-encode-mp4", "mkv-copy-mkv", "mp4-encode-mkv", "mp4-copy-mp4"])
def test_a_late_source_starts_at_zero_in_sync(late_sources: dict[str, Path], tmp_path: Path,
                                             source: str, profile: str, suffix: str) -> None:
    src = late_sources[source]
    src_v, src_a = stream_start(src, "0:v:0"), stream_start(src, "0:a:0")
    assert min(src_v, src_a) > 0.4
    out = tmp_path / f"out{suffix}"
    res = run_cli("transcode", str(src), "-p", str(_profile(tmp_path, profile)), "-o",
                  str(out), "--gpu", "none", "--json", "--no-progress")
    assert res.returncode == 0, res.stderr
    out_v, out_a = stream_start(out, "0:v:0"), stream_start(out, "0:a:0")
    # Like the ffmpeg CLI: the earliest stream starts at 0 (an AAC encoder's priming may show
    # as a first packet a few ms early), and video keeps its offset to audio.
    assert abs(min(out_v, out_a)) < 0.03, (out_v, out_a)
    assert abs((out_v - out_a) - (src_v - src_a)) < 0.025, (out_v, out_a, src_v, src_a)
    # No empty stretch in front: the file lasts as long as its content, which the report gives.
    assert _container_duration(out) < 3.2
    report = json.loads(res.stdout)
    assert abs(report["outputs"][0]["duration"] - 3.0) < 0.1
    assert any("rebased to start at 0" in n for n in report["plan"]["notes"])


def _click_clip(path: Path, at: float = 1.0) -> Path:
    """Video plus mono audio that is silent but for one click at `at` seconds."""
    rate = 48000
    pcm = np.zeros(rate * 2, np.int16)
    pcm[int(at * rate)] = 30000
    raw = path.with_suffix(".pcm")
    raw.write_bytes(pcm.tobytes())
    ffmpeg("-y", "-f", "lavfi", "-i", "testsrc2=s=160x90:r=25:d=2", "-f", "s16le", "-ar",
           str(rate), "-ac", "1", "-i", str(raw), "-c:v", "libx264", "-preset", "veryfast",
           "-c:a", "pcm_s16le", str(path))
    return path


def _click_time(path: Path) -> float:
    """Where the independent ffmpeg hears the click after decoding (edit lists applied)."""
    pcm = ffmpeg_bytes("-i", str(path), "-map", "0:a:0", "-f", "s16le", "-ac", "1", "-ar",
                       "48000", "-")
    samples = np.frombuffer(pcm, np.int16).astype(np.int32)
    return float(np.argmax(np.abs(samples))) / 48000


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_aac_priming_is_accounted_for(tmp_path: Path, suffix: str) -> None:
    """The AAC encoder's 1024 priming samples are hidden (MP4 edit list): sound is not late."""
    src = _click_clip(tmp_path / "click.mov")
    assert abs(_click_time(src) - 1.0) < 0.001
    out = tmp_path / f"out{suffix}"
    res = run_cli("transcode", str(src), "-p", str(_profile(tmp_path, FAST)), "-o", str(out),
                  "--gpu", "none", "--no-progress")
    assert res.returncode == 0, res.stderr
    # 1024 samples of priming left in would put the click 21 ms late.
    assert abs(_click_time(out) - 1.0) < 0.003, _click_time(out)


def test_audio_longer_than_video_is_compared_like_with_like(tmp_path: Path) -> None:
    """Matroska has no per-stream durations: the check was the file's 5.3 s against 4 s of
    video. Video is compared with video, audio with audio."""
    src = tmp_path / "long_audio.mkv"
    ffmpeg("-y", "-f", "lavfi", "-i", "testsrc2=s=160x90:r=25:d=4", "-f", "lavfi", "-i",
           "sine=f=440:d=5.3", "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", str(src))
    for suffix in (".mp4", ".mkv"):
        out = tmp_path / f"out{suffix}"
        res = run_cli("transcode", str(src), "-p", str(_profile(tmp_path, FAST)), "-o", str(out),
                      "--gpu", "none", "--no-progress")
        assert res.returncode == 0, res.stderr
        assert abs(stream_span(out, "0:v:0") - 4.0) < 0.05
        assert abs(stream_span(out, "0:a:0") - 5.3) < 0.05


def test_a_header_that_promises_more_than_the_data_is_truncated(tmp_path: Path) -> None:
    """An MP4 with its index in front (faststart) cut in half: the index promises 4 s."""
    src = camera_clip(tmp_path / "full.mp4", "-movflags", "+faststart", seconds=4)
    data = src.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.mp4"
    res = run_cli("transcode", str(cut), "-p", str(_profile(tmp_path, FAST)), "-o", str(out),
                  "--gpu", "none", "--no-progress")
    assert res.returncode == 1
    assert re.fullmatch(rf"mediad: error: {re.escape(str(cut))}: truncated source: its header "
                        r"says stream #\d lasts until 4\.\d+s, but its data ends at [0-3]\.\d+s\n",
                        res.stderr), res.stderr
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_a_source_still_being_written_is_named_as_such(tmp_path: Path) -> None:
    """A recording in progress: the file grows while mediad reads it."""
    src = camera_clip(tmp_path / "rec.ts", "-f", "mpegts", seconds=4)
    data = src.read_bytes()
    growing = tmp_path / "growing.ts"
    growing.write_bytes(data[: len(data) // 2])
    appended = []

    def writer_goes_on(_progress: object) -> None:
        if not appended:  # the recorder appends while the first frames are encoded
            with open(growing, "ab") as f:
                f.write(data[len(data) // 2:])
            appended.append(True)

    out = tmp_path / "out.mp4"
    with pytest.raises(MediadError) as err:
        transcode(growing, load_profile("h264"), out, gpu="none", on_progress=writer_goes_on)
    assert appended
    assert err.value.reason == "source_changed" and err.value.transient
    assert f"grew from {len(data) // 2} to {len(data)} bytes during the transcode" \
        in str(err.value)
    assert "still being written" in str(err.value)
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def _damaged_ts(tmp_path: Path) -> tuple[Path, int]:
    """A TS recording with a run of packets lost mid-way (reception drop-out), and the number
    of frames the independent ffmpeg decodes from it."""
    clean = camera_clip(tmp_path / "clean.ts", "-f", "mpegts", "-g", "50", seconds=6,
                        size=(320, 180))
    data = clean.read_bytes()
    n = len(data) // 188
    a, b = int(n * 0.4), int(n * 0.45)
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(data[: a * 188] + data[b * 188:])
    frames = len(ffmpeg("-v", "error", "-i", str(damaged), "-map", "0:v", "-f", "framecrc",
                        "-").stdout.strip().splitlines())
    return damaged, frames


def test_frames_lost_to_corruption_are_reported(tmp_path: Path) -> None:
    damaged, _ = _damaged_ts(tmp_path)
    out = tmp_path / "out.mp4"
    res = run_cli("transcode", str(damaged), "-p", str(_profile(tmp_path, FAST)), "-o", str(out),
                  "--gpu", "none", "--json", "--no-progress")
    assert res.returncode == 0, res.stderr
    warnings = json.loads(res.stdout)["warnings"]
    assert any(re.match(r"\d+ corrupt packet\(s\) in the source \(stream #0: \d+", w)
               for w in warnings), warnings
    missing = [w for w in warnings if "video frame(s) missing" in w]
    assert missing, warnings
    # The estimate is the frames really lost: 6 s at 25 fps less what the output holds.
    lost = int(re.search(r"about (\d+)", missing[0])[1])
    kept = len(packet_times(out, "0:v:0"))
    assert abs(150 - kept - lost) <= 2, (kept, lost)
    text = run_cli("transcode", str(damaged), "-p", str(_profile(tmp_path, FAST)), "-o",
                   str(tmp_path / "again.mp4"), "--gpu", "none", "--no-progress")
    assert "warning: " in text.stdout and "corrupt packet" in text.stdout


def test_on_decode_error_fail_stops_at_the_damage(tmp_path: Path) -> None:
    damaged, _ = _damaged_ts(tmp_path)
    strict = _profile(tmp_path, 'on_decode_error = "fail"\n' + FAST, "strict")
    out = tmp_path / "out.mp4"
    res = run_cli("transcode", str(damaged), "-p", str(strict), "-o", str(out), "--gpu", "none",
                  "--no-progress")
    assert res.returncode == 1
    assert re.fullmatch(rf"mediad: error: {re.escape(str(damaged))}: corrupt packet in stream #[01] "
                        r"at \d+\.\d+s \(on_decode_error = \"fail\"\)\n", res.stderr), res.stderr
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    # A clean recording passes the strict profile.
    clean = tmp_path / "clean.ts"
    res = run_cli("transcode", str(clean), "-p", str(strict), "-o", str(tmp_path / "ok.mp4"),
                  "--gpu", "none", "--no-progress")
    assert res.returncode == 0, res.stderr


def test_a_recording_cut_between_keyframes_says_what_did_not_decode(tmp_path: Path) -> None:
    clean = camera_clip(tmp_path / "clean.ts", "-f", "mpegts", "-g", "50", seconds=4)
    data = clean.read_bytes()
    n = len(data) // 188
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[int(n * 0.3) * 188:])  # starts mid-GOP, as recordings do
    res = run_cli("transcode", str(cut), "-p", str(_profile(tmp_path, FAST)), "-o",
                  str(tmp_path / "out.mp4"), "--gpu", "none", "--json", "--no-progress")
    assert res.returncode == 0, res.stderr
    warnings = json.loads(res.stdout)["warnings"]
    assert any(re.match(r"the first 0\.\d+s of video \(~\d+ frames\) did not decode: the source "
                        "starts between keyframes", w) for w in warnings), warnings


def test_clean_sources_have_no_decode_warnings(tmp_path: Path) -> None:
    src = shutil.copy(camera_clip(tmp_path / "clean.mkv", seconds=2), tmp_path / "c.mkv")
    res = run_cli("transcode", str(src), "-p", str(_profile(tmp_path, FAST)), "-o",
                  str(tmp_path / "out.mp4"), "--gpu", "none", "--json", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["warnings"] == []
