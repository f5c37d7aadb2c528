"""Sources of unusual kinds users have: raw elementary streams (dashcam and DVR exports), DV
camcorder files, Ogg (Theora/Vorbis) from media archives. Each is written by the independent
ffmpeg binary and its output read back by it, against what ffmpeg itself makes."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    FAST_PROFILE,
    camera_filter,
    container_duration,
    decoded_frames,
    ffmpeg,
    ffmpeg_bytes,
    ffmpeg_info,
    packet_times,
    run_cli,
    stream_span,
    transcode_report,
    write_profile,
)


@pytest.mark.parametrize("codec,suffix", [("libx264", "h264"), ("libx265", "hevc")])
def test_a_raw_elementary_stream_keeps_its_frame_rate(tmp_path: Path, codec: str,
                                                      suffix: str) -> None:
    """QA: a raw .h264/.hevc stream (no container, no timestamps) came out as all its frames
    within 40 ms (2495 fps), reported as a success; ffmpeg times each frame by its rate."""
    src = tmp_path / f"raw.{suffix}"
    ffmpeg("-y", "-f", "lavfi", "-i", camera_filter((320, 180), 25), "-t", "3", "-c:v", codec,
           "-bf", "2", str(src))
    out = tmp_path / "out.mp4"
    report = transcode_report(str(src), "-p", str(write_profile(tmp_path, FAST_PROFILE)), "-o",
                              str(out), "--gpu", "none")
    assert len(packet_times(out, "0:v:0")) == 75
    assert abs(stream_span(out, "0:v:0") - 3.0) < 0.05
    assert abs(report["outputs"][0]["duration"] - 3.0) < 0.05


def _clicks(path: Path) -> np.ndarray:
    """Where each click (a loud 10 ms burst, one a second) starts, in seconds, as the
    independent ffmpeg decodes the file's audio."""
    pcm = np.frombuffer(ffmpeg_bytes("-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", "48000",
                                     "-f", "f32le", "-"), np.float32)
    loud = np.flatnonzero(np.abs(pcm) > 0.5)
    starts = loud[np.insert(np.diff(loud) > 4800, 0, True)]
    return starts / 48000


def test_ogg_vorbis_audio_keeps_every_sample_in_sync(tmp_path: Path) -> None:
    """QA: a Theora/Vorbis .ogv (media archives) lost 9 % of its audio, drifting 64 ms a second
    out of sync, with a false "recordings joined with an overlap" warning: Ogg times the frame
    after each long-to-short Vorbis block switch a short block late, then early again; the
    late one was taken as a gap and the early ones dropped. ffmpeg keeps every sample."""
    src = tmp_path / "archive.ogv"
    ffmpeg("-y", "-f", "lavfi", "-i", camera_filter((160, 90), 25), "-f", "lavfi", "-i",
           "aevalsrc='0.8*lt(mod(t\\,1)\\,0.01)+0.2*lt(mod(t\\,0.125)\\,0.004)"
           "*sin(2*PI*3000*t)':s=48000", "-t", "6", "-c:v", "libtheora", "-c:a", "libvorbis",
           str(src))
    out, theirs = tmp_path / "out.mp4", tmp_path / "theirs.mp4"
    report = transcode_report(str(src), "-p", str(write_profile(tmp_path, FAST_PROFILE)), "-o",
                              str(out), "--gpu", "none")
    ffmpeg("-y", "-i", str(src), "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
           str(theirs))
    assert report["warnings"] == []
    ours, ref = _clicks(out), _clicks(theirs)
    assert len(ours) == len(ref) == 6
    assert np.max(np.abs(ours - ref)) < 0.002  # every click where ffmpeg puts it
    assert abs(stream_span(out, "0:a:0") - stream_span(src, "0:a:0")) < 0.03


def _dv(path: Path) -> Path:
    """A PAL DV camcorder file (raw DV: its demuxer's average rate reads 60000 fps)."""
    ffmpeg("-y", "-f", "lavfi", "-i", camera_filter((720, 576), 25), "-f", "lavfi", "-i",
           "sine=r=48000", "-t", "2", "-c:v", "dvvideo", "-pix_fmt", "yuv420p", "-c:a",
           "pcm_s16le", "-ac", "2", "-f", "dv", str(path))
    return path


def test_a_dv_camcorder_file_is_encoded_at_its_frame_rate_with_its_timecode(
        tmp_path: Path) -> None:
    """QA: a DV file into MP4 failed as `corrupt` (the daemon would have filed a good tape
    capture as broken): its 60000 fps average went to the timecode track, which the MP4
    muxer refuses. ffmpeg encodes it at 25 fps, its timecode kept."""
    src = _dv(tmp_path / "tape.dv")
    out = tmp_path / "tape.mp4"
    report = transcode_report(str(src), "-p", str(write_profile(tmp_path, FAST_PROFILE)), "-o",
                              str(out), "--gpu", "none")
    assert report["input"]["video"][0]["fps"] == 25
    assert len(packet_times(out, "0:v:0")) == 50
    assert abs(stream_span(out, "0:v:0") - 2.0) < 0.05
    info = ffmpeg_info(out)
    assert "25 fps" in info and "timecode        : 00:00:00:00" in info


def test_copying_dv_into_mkv_is_refused_in_one_line(tmp_path: Path) -> None:
    """Matroska's muxer has no DV mapping: the copy failed with a traceback at the muxer."""
    src = _dv(tmp_path / "tape.dv")
    profile = write_profile(tmp_path, 'container = "mkv"\n[video]\ncodec = "copy"\n')
    res = run_cli("transcode", str(src), "-p", str(profile), "-o", str(tmp_path / "t.mkv"),
                  "--gpu", "none")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        f"mediad: error: {src}: video #0 (dvvideo, copied) does not fit mkv (profile p: use "
        "another container or re-encode)"]
    assert not list(tmp_path.glob("*.mkv")) and not list(tmp_path.glob(".*part*"))


@pytest.mark.parametrize(("flags", "sizes"), [
    ("first_default", ((160, 120), (320, 240))),
    ("none_default", ((160, 120), (320, 240))),
    ("first_default", ((160, 120), (2600, 2000))),  # 5.2 million pixels beat the flag
], ids=["flagged_small", "unflagged", "flagged_small_vs_huge"])
def test_of_two_video_streams_the_one_ffmpeg_picks_is_kept(
        tmp_path: Path, flags: str, sizes: tuple[tuple[int, int], ...]) -> None:
    """QA: of a 160x120 preview and the 320x240 picture, mediad kept the first stream; ffmpeg
    scores each by its pixels, with 5 million more for the default flag."""
    src = tmp_path / "two.mkv"
    dispositions = ("-disposition:v:0", "0", "-disposition:v:1", "0") \
        if flags == "none_default" else ()
    ffmpeg("-y", "-f", "lavfi", "-i", camera_filter(sizes[0], 25), "-f", "lavfi", "-i",
           camera_filter(sizes[1], 25), "-t", "0.2", "-map", "0", "-map", "1", "-c:v",
           "libx264", "-preset", "ultrafast", *dispositions, str(src))
    out, theirs = tmp_path / "out.mp4", tmp_path / "theirs.mp4"
    report = transcode_report(str(src), "-p", str(write_profile(tmp_path, FAST_PROFILE)), "-o",
                              str(out), "--gpu", "none")
    ffmpeg("-y", "-i", str(src), "-c:v", "libx264", "-preset", "ultrafast", str(theirs))
    size = re.compile(r"Video: .*?, (\d+x\d+)")
    assert size.search(ffmpeg_info(out))[1] == size.search(ffmpeg_info(theirs))[1]  # type: ignore[index]
    assert any("not kept: mediad keeps one video stream" in w for w in report["warnings"])


def _end_trimmed(path: Path, seconds: float) -> Path:
    """A 4 s MP4 whose edit list shows only its first `seconds` (a clip trimmed on a phone,
    which rewrites the edit list and leaves the samples): the independent ffmpeg writes it,
    and the edit list's, the movie's and the track's durations are set to the cut."""
    whole = path.with_name("whole.mp4")
    ffmpeg("-y", "-f", "lavfi", "-i", camera_filter((320, 180), 25), "-t", "4", "-c:v", "libx264",
           "-preset", "veryfast", "-bf", "2", str(whole))
    data = bytearray(whole.read_bytes())
    ms = struct.pack(">I", round(seconds * 1000))  # ffmpeg's MP4s count the movie in ms
    at = data.find(b"elst")
    data[at + 12:at + 16] = ms  # the one edit's duration (version 0)
    for box, offset in ((b"mvhd", 20), (b"tkhd", 24)):
        at = data.find(box)
        data[at + offset:at + offset + 4] = ms
    path.write_bytes(bytes(data))
    return path


def test_an_mp4_trimmed_at_the_end_by_its_edit_list_copies_into_mp4(tmp_path: Path) -> None:
    """QA: copied into MP4 it was refused ("the output's video lasts 4.000s but 2.520s went
    into it"): every sample was copied, and the output's edit list hid the pre-roll only. What
    the edit list leaves out at the end is not copied now; ffmpeg keeps those samples behind
    an edit list of its own: the same pictures show."""
    src = _end_trimmed(tmp_path / "trimmed.mp4", 2.5)
    out, theirs = tmp_path / "out.mp4", tmp_path / "theirs.mp4"
    profile = write_profile(tmp_path, 'container = "mp4"\n[video]\ncodec = "copy"\n')
    report = transcode_report(str(src), "-p", str(profile), "-o", str(out), "--gpu", "none")
    ffmpeg("-y", "-i", str(src), "-c", "copy", str(theirs))
    assert report["warnings"] == []
    assert abs(container_duration(out) - container_duration(theirs)) < 0.1
    shown = [decoded_frames(p) for p in (src, out, theirs)]
    assert shown[0] <= shown[1] <= shown[2] and shown[2] - shown[0] <= 3



@pytest.mark.parametrize("suffix", ["mp4", "mkv"])
def test_a_raw_stream_without_b_frames_is_copied_at_its_frame_rate(tmp_path: Path,
                                                                   suffix: str) -> None:
    """QA: a raw .h264 (a dashcam's, no B-frames) remuxed with a copy profile came out with
    its packets one tick apart: 50 frames in 0.04 s, reported a success. ffmpeg -c copy times
    them by the frame rate."""
    src = tmp_path / "dashcam.h264"
    ffmpeg("-y", "-f", "lavfi", "-i", camera_filter((320, 180), 25), "-t", "2", "-c:v",
           "libx264", "-bf", "0", str(src))
    out = tmp_path / f"out.{suffix}"
    profile = write_profile(tmp_path, f'container = "{suffix}"\n[video]\ncodec = "copy"\n')
    report = transcode_report(str(src), "-p", str(profile), "-o", str(out), "--gpu", "none")
    assert len(packet_times(out, "0:v:0")) == 50
    assert abs(stream_span(out, "0:v:0") - 2.0) < 0.05
    assert abs(report["outputs"][0]["duration"] - 2.0) < 0.05


def test_a_raw_stream_with_b_frames_is_refused_for_copying_in_one_line(tmp_path: Path) -> None:
    """With B-frames a raw stream has no timestamps to copy it by (ffmpeg writes MKV not at
    all and MP4 with pictures lost): it was a 'corrupt' failure (EINVAL at the muxer)."""
    src = tmp_path / "b.h264"
    ffmpeg("-y", "-f", "lavfi", "-i", camera_filter((320, 180), 25), "-t", "1", "-c:v",
           "libx264", "-bf", "2", str(src))
    profile = write_profile(tmp_path, '[video]\ncodec = "copy"\n')
    res = run_cli("transcode", str(src), "-p", str(profile), "-o", str(tmp_path / "o.mp4"),
                  "--gpu", "none", "--json")
    assert res.returncode != 0
    assert json.loads(res.stdout)["reason"] == "unsupported"
    assert "raw stream with B-frames" in res.stderr and "Traceback" not in res.stderr
