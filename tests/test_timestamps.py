"""Timestamps and durations of real-world sources: DVR recordings that start hours in, streams
of different lengths, AAC priming, truncated and growing sources, damaged recordings.

Sources are written by the independent ffmpeg binary; outputs are read back by it too.
"""

from __future__ import annotations

import json
import re
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import (
    FAST_PROFILE,
    camera_clip,
    camera_filter,
    container_duration,
    damaged_ts,
    decoded_frames,
    ffmpeg,
    ffmpeg_bytes,
    ffmpeg_info,
    packet_times,
    run_cli,
    stream_span,
    stream_start,
    transcode_report,
    write_profile,
)

from mediad.errors import MediadError
from mediad.media.job import transcode
from mediad.profiles import load_profile

COPY_MKV = 'container = "mkv"\n[video]\ncodec = "copy"\n[audio]\ncodec = "copy"\n'
COPY_MP4 = 'container = "mp4"\n[video]\ncodec = "copy"\n[audio]\ncodec = "copy"\n'
FAST = FAST_PROFILE


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
    report = transcode_report(str(src), "-p", str(write_profile(tmp_path, profile)), "-o",
                              str(out), "--gpu", "none")
    out_v, out_a = stream_start(out, "0:v:0"), stream_start(out, "0:a:0")
    # Like the ffmpeg CLI: the earliest stream starts at 0 (an AAC encoder's priming may show
    # as a first packet a few ms early), and video keeps its offset to audio.
    assert abs(min(out_v, out_a)) < 0.03, (out_v, out_a)
    assert abs((out_v - out_a) - (src_v - src_a)) < 0.025, (out_v, out_a, src_v, src_a)
    # No empty stretch in front: the file lasts as long as its content, which the report gives.
    assert container_duration(out) < 3.2
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
    res = run_cli("transcode", str(src), "-p", str(write_profile(tmp_path, FAST)), "-o", str(out),
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
        res = run_cli("transcode", str(src), "-p", str(write_profile(tmp_path, FAST)), "-o", str(out),
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
    res = run_cli("transcode", str(cut), "-p", str(write_profile(tmp_path, FAST)), "-o", str(out),
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


def test_frames_lost_to_corruption_are_reported(tmp_path: Path) -> None:
    damaged, _ = damaged_ts(tmp_path)
    out = tmp_path / "out.mp4"
    warnings = transcode_report(str(damaged), "-p", str(write_profile(tmp_path, FAST)), "-o",
                                str(out), "--gpu", "none")["warnings"]
    assert any(re.match(r"\d+ corrupt packet\(s\) in the source \(stream #0: \d+", w)
               for w in warnings), warnings
    missing = [w for w in warnings if "video frame(s) missing" in w]
    assert missing, warnings
    # The estimate is the frames really lost: 6 s at 25 fps less what the output holds.
    lost = int(re.search(r"about (\d+)", missing[0])[1])
    kept = len(packet_times(out, "0:v:0"))
    assert abs(150 - kept - lost) <= 2, (kept, lost)
    text = run_cli("transcode", str(damaged), "-p", str(write_profile(tmp_path, FAST)), "-o",
                   str(tmp_path / "again.mp4"), "--gpu", "none", "--no-progress")
    assert "warning: " in text.stdout and "corrupt packet" in text.stdout


def test_a_recording_with_a_stretch_of_garbage_is_read_on_past_it(tmp_path: Path) -> None:
    """160 KiB zeroed mid-way through a TS (a damaged sector, a drop-out written as zeros):
    FFmpeg's demuxer gives up its resync after 64 KiB and answers "try again", which ended
    PyAV's demux and failed the job ("Resource temporarily unavailable") where the ffmpeg CLI
    reads on. mediad reads on too, encoding or copying, and says so; a strict profile stops."""
    clean = camera_clip(tmp_path / "clean.ts", "-f", "mpegts", seconds=6, size=(320, 180))
    data = bytearray(clean.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 160 * 1024] = bytes(160 * 1024)
    zeroed = tmp_path / "zeroed.ts"
    zeroed.write_bytes(bytes(data))
    left = len(packet_times(zeroed, "0:v:0"))  # the independent ffmpeg's count of what is left
    assert 60 < left < 145, left  # the damage cost frames; most are there
    for name, text in (("encoded", FAST), ("copied", COPY_MP4)):
        out = tmp_path / f"{name}.mp4"
        report = transcode_report(str(zeroed), "-p", str(write_profile(tmp_path, text, name)),
                                  "-o", str(out), "--gpu", "none")
        assert any(re.match(r"the demuxer lost its sync 1 time\(s\) in damaged data", w)
                   for w in report["warnings"]), report["warnings"]
        kept = len(packet_times(out, "0:v:0"))  # the independent ffmpeg counts the output
        assert abs(kept - left) <= 2, (name, kept, left)
        assert abs(container_duration(out) - 6.0) < 0.1  # the gap kept: the timeline is whole
        assert report["outputs"][0]["frames"] == kept
    # Garbage before the first packet (the probe's first frame read on past it too)
    start = tmp_path / "start.ts"
    start.write_bytes(bytes(256 * 1024) + clean.read_bytes())
    report = transcode_report(str(start), "-p", str(tmp_path / "copied.toml"), "-o",
                              str(tmp_path / "start.mp4"), "--gpu", "none")
    assert len(packet_times(tmp_path / "start.mp4", "0:v:0")) == \
        len(packet_times(clean, "0:v:0")) == 150
    assert any(w.startswith("the demuxer lost its sync") for w in report["warnings"])
    strict = write_profile(tmp_path, 'on_decode_error = "fail"\n' + COPY_MP4, "strict")
    res = run_cli("transcode", str(zeroed), "-p", str(strict), "-o", str(tmp_path / "s.mp4"),
                  "--gpu", "none", "--no-progress")
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert "lost its sync in damaged data" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "s.mp4").exists()


def test_on_decode_error_fail_stops_at_the_damage(tmp_path: Path) -> None:
    damaged, _ = damaged_ts(tmp_path)
    strict = write_profile(tmp_path, 'on_decode_error = "fail"\n' + FAST, "strict")
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


def test_damaged_packets_of_a_re_encoded_audio_track_are_skipped_and_counted(
        tmp_path: Path) -> None:
    """AC-3 (re-encoded to AAC on the audio sink's thread) with five packets wiped: the job
    goes on, says how many packets it skipped and where, and the audio lasts as long as the
    video; the strict policy stops at the first."""
    clean = camera_clip(tmp_path / "clean.mkv", "-c:a", "ac3", seconds=4, size=(320, 180))
    data = bytearray(clean.read_bytes())
    with av.open(str(clean)) as c:
        payloads = [bytes(p) for p in c.demux(audio=0) if p.size]
    for payload in payloads[40:45]:  # ~1.3 s in: sync words gone, the decoder refuses them
        at = data.find(payload)
        assert at > 0
        data[at:at + len(payload)] = bytes(len(payload))
    damaged = tmp_path / "damaged.mkv"
    damaged.write_bytes(bytes(data))
    out = tmp_path / "out.mp4"
    warnings = transcode_report(str(damaged), "-p", str(write_profile(tmp_path, FAST)), "-o",
                                str(out), "--gpu", "none")["warnings"]
    assert any(re.match(r"5 damaged packet\(s\) could not be decoded or copied and were skipped "
                        r"\(stream #1: 5\); the first: decode error in stream #1 at 1\.\d+s", w)
               for w in warnings), warnings
    assert abs(stream_span(out, "a:0") - stream_span(out, "v:0")) < 0.1
    strict = write_profile(tmp_path, 'on_decode_error = "fail"\n' + FAST, "strict")
    res = run_cli("transcode", str(damaged), "-p", str(strict), "-o", str(tmp_path / "no.mp4"),
                  "--gpu", "none", "--no-progress")
    assert res.returncode == 1 and "decode error in stream #1" in res.stderr, res.stderr
    assert not list(tmp_path.glob("*no.mp4*"))


def test_a_recording_cut_between_keyframes_says_what_did_not_decode(tmp_path: Path) -> None:
    clean = camera_clip(tmp_path / "clean.ts", "-f", "mpegts", "-g", "50", seconds=4)
    data = clean.read_bytes()
    n = len(data) // 188
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[int(n * 0.3) * 188:])  # starts mid-GOP, as recordings do
    warnings = transcode_report(str(cut), "-p", str(write_profile(tmp_path, FAST)), "-o",
                                str(tmp_path / "out.mp4"), "--gpu", "none")["warnings"]
    assert any(re.match(r"the first 0\.\d+s of video \(~\d+ frames\) did not decode: the source "
                        "starts between keyframes", w) for w in warnings), warnings


def test_clean_sources_have_no_decode_warnings(tmp_path: Path) -> None:
    src = shutil.copy(camera_clip(tmp_path / "clean.mkv", seconds=2), tmp_path / "c.mkv")
    assert transcode_report(str(src), "-p", str(write_profile(tmp_path, FAST)), "-o",
                            str(tmp_path / "out.mp4"), "--gpu", "none")["warnings"] == []


def test_audio_that_changes_layout_mid_stream_is_converted(tmp_path: Path) -> None:
    """DVB: stereo adverts, then a 5.1 film. The encoder refused the new frames with a
    Python traceback ("Frame does not match AudioResampler setup")."""
    joined = tmp_path / "joined.ts"
    with open(joined, "wb") as out:
        for i, channels in enumerate(("2", "6")):
            seg = tmp_path / f"seg{i}.ts"
            ffmpeg("-y", "-f", "lavfi", "-i", camera_filter(), "-f", "lavfi", "-i",
                   "sine=f=440:r=48000", "-t", "3", "-ac", channels, "-c:v", "libx264",
                   "-preset", "veryfast", "-c:a", "ac3", "-output_ts_offset", str(1000 + 3 * i),
                   "-f", "mpegts", str(seg))
            out.write(seg.read_bytes())
    res = run_cli("transcode", str(joined), "-p", str(write_profile(tmp_path, FAST)), "-o",
                  str(tmp_path / "out.mp4"), "--gpu", "none", "--json", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    warnings = json.loads(res.stdout)["warnings"]
    assert any(w.startswith("audio stream #1 changed from stereo 48000 Hz to 5.1") for w in warnings)
    assert abs(stream_span(tmp_path / "out.mp4", "0:a:0") - 6.0) < 0.1
    assert "stereo" in next(ln for ln in ffmpeg_info(tmp_path / "out.mp4").splitlines()
                            if "Audio:" in ln)


def test_subtitles_after_a_long_gap_keep_their_time(tmp_path: Path) -> None:
    """Cues converted to mov_text were timed in microseconds; MP4 stores durations in 32 bits of
    the track's tick, so a gap of more than 35.8 minutes wrapped and the cues landed near 0."""
    video = camera_clip(tmp_path / "v.mp4", seconds=2)
    srt = tmp_path / "forced.srt"
    srt.write_text("1\n00:00:01,000 --> 00:00:02,000\nfirst\n\n"
                   "2\n00:40:00,000 --> 00:40:02,500\nforty minutes in\n\n"
                   "3\n00:41:00,000 --> 00:41:02,000\nforty-one\n")
    src = tmp_path / "in.mkv"
    ffmpeg("-y", "-i", str(video), "-i", str(srt), "-map", "0", "-map", "1", "-c", "copy",
           "-c:s", "srt", str(src))
    out = tmp_path / "out.mp4"
    res = run_cli("transcode", str(src), "-p", str(write_profile(tmp_path, COPY_MP4)), "-o", str(out),
                  "--gpu", "none", "--no-progress")
    assert res.returncode == 0, res.stderr
    cues = [ln for ln in ffmpeg("-v", "error", "-i", str(out), "-map", "0:s", "-f", "srt",
                                "-").stdout.splitlines() if "-->" in ln]
    assert cues == ["00:00:01,000 --> 00:00:02,000", "00:40:00,000 --> 00:40:02,500",
                    "00:41:00,000 --> 00:41:02,000"]


def test_a_late_matroska_files_rate_is_over_its_content(tmp_path: Path) -> None:
    """Matroska's duration counts from 0: a file starting at 100 s looked 13 times slower, and
    copy_if_matching's bitrate limit let a 734 kb/s video through under 300k."""
    from mediad.media.probe import probe

    plain = camera_clip(tmp_path / "plain.mkv", seconds=4)
    late = camera_clip(tmp_path / "late.mkv", "-output_ts_offset", "100", seconds=4)
    a, b = probe(plain), probe(late)
    assert b.duration == pytest.approx(a.duration, abs=0.05)
    assert b.main_video.bit_rate_estimate == pytest.approx(  # type: ignore[union-attr]
        a.main_video.bit_rate_estimate, rel=0.02)  # type: ignore[union-attr]
    limit = a.main_video.bit_rate_estimate // 2  # type: ignore[union-attr]
    profile = write_profile(tmp_path, f'container = "mkv"\n[video]\ncopy_if_matching = true\n'
                                 f'bitrate = "{limit}"\nspeed = "fastest"\n')
    plan = run_cli("plan", str(late), "-p", str(profile), "-o", str(tmp_path / "o.mkv"),
                   "--gpu", "none")
    assert "re-encoded, not copied: source video is" in plan.stdout, plan.stdout


@pytest.mark.parametrize("audio", ["copy", "encode"])
def test_an_mp4_cut_with_an_edit_list_transcodes_without_false_damage(tmp_path: Path,
                                                                      audio: str) -> None:
    """QA: an MP4 cut as `ffmpeg -ss 0.5 -c copy` makes (an edit list; the packets before its
    start marked discard, the decoders' pre-roll) failed with its audio re-encoded ("the
    output's audio track 1 lasts 3.518s but 4.021s went into it": the pre-roll was counted as
    what went in), and the discarded video pre-roll was reported as frames that did not decode
    (with on_decode_error = "fail", a failure)."""
    base = camera_clip(tmp_path / "base.mp4", seconds=4)
    cut = tmp_path / "cut.mp4"
    ffmpeg("-y", "-ss", "0.5", "-i", str(base), "-c", "copy", str(cut))
    profile = 'on_decode_error = "fail"\n' + FAST + \
        ('[audio]\ncodec = "opus"\n' if audio == "encode" else "")
    out = tmp_path / "out.mkv"
    report = transcode_report(str(cut), "-p", str(write_profile(tmp_path, profile)), "-o",
                              str(out), "--gpu", "none")
    assert not any("did not decode" in w for w in report["warnings"]), report["warnings"]
    frames = ffmpeg("-i", str(cut), "-map", "0:v:0", "-f", "framemd5", "-").stdout
    assert report["outputs"][0]["frames"] == sum(1 for ln in frames.splitlines()
                                                 if ln and not ln.startswith("#"))
    # Both from the edit list's start, in sync: the audio's pre-roll is not played, copied
    # (QA: an HLS set or a Matroska file played the 0.52 s the cut had taken off) or encoded;
    # copied, one AAC frame of it stays, the decoder's priming
    first = {s: min(t for t, _ in packet_times(out, s)) for s in ("0:v:0", "0:a:0")}
    assert abs(first["0:v:0"] - first["0:a:0"]) < 0.045, first
    assert abs(stream_span(out, "0:a:0") - stream_span(out, "0:v:0")) < 0.1


@pytest.mark.parametrize(("times", "out", "dropped"), [
    ([0, 1, 1, 3, 4], [0, 1, 2, 3, 4], 0),  # a repeated time whose slot is free: moved on
    ([0, 1, 2, 1, 2, 3, 4], [0, 1, 2, 3, 4], 2),  # a join repeating two frames: dropped
    ([0, 1, 2, 1.01, 2.01, 3.01], [0, 1, 2, 3.01], 2),  # the same, a few ticks apart
    ([0, 2, 1, 4, 3, 5], [0, 1, 2, 3, 4, 5], 0),  # scrambled (AVI): put back in order
    ([0, 1, 2, 150, 151], [0, 1, 2, 150, 151], 0),  # a dropout: the frame before it lasts 148
], ids=["free_slot", "join", "join_ticks_apart", "reordered", "dropout"])
def test_the_video_timer_moves_a_repeat_into_a_free_slot_else_drops_it(
        times: list[float], out: list[float], dropped: int) -> None:
    from mediad.media.timing import VideoTimer

    timer = VideoTimer()
    frames = []
    for i, t in enumerate(times):  # in frames of 3600 ticks of 1/90000
        frame = av.VideoFrame(16, 16, "yuv420p")
        frame.pts, frame.time_base = round(t * 3600), Fraction(1, 90000)
        # One frame each; before a dropout, as MP4 has it, until the next frame (CI: such a
        # frame, lasting the dropout, was taken for a repeat and dropped)
        after = times[i + 1] if i + 1 < len(times) else t + 1
        frame.duration = round((after - t) * 3600) if after - t > 2 else 3600
        frames.append(frame)
    timed = timer(frames) + timer(None)
    assert [f.pts for f in timed] == [round(t * 3600) for t in out]
    assert timer.dropped == dropped


def test_a_span_ends_where_its_last_shown_frame_ends() -> None:
    """An MP4's durations are its decode times' steps: with B-frames across a gap in the
    pictures (the damaged recording above), a frame shown after the gap but decoded before it
    carries the gap's seconds. The span ends with the last frame shown, not at the largest
    pts + duration (the encoded video seemed to last 8.04 s of 6 and was refused), or with the
    last one decoded where that ends later (a held last picture)."""
    from mediad.media.timing import Span

    span = Span()
    ms = Fraction(1, 1000)
    # decode order: ...before the gap, a frame shown at 5541 decoded before it (2520 ms step)
    for pts, duration in ((21, 40), (3021, 40), (5541, 2520), (5941, 40), (5981, 40),
                          (5901, 40)):
        span.add(pts, duration, ms)
    assert span.start_seconds == 0.021 and span.end_seconds == 6.021
    span.add(5981, 80, ms)  # the same last time twice: the longer
    assert span.end_seconds == 6.061
    # The last one decoded ends the stream where it ends later: a last picture held 2 s (its
    # duration is the track's last step), though a B-frame shown before the last one
    span.add(5961, 2000, ms)
    assert span.end_seconds == 7.961


def _packets(path: Path) -> list[str]:
    """The independent ffmpeg's framecrc line of every video packet (F=0x0: not a keyframe)."""
    return [ln for ln in ffmpeg("-v", "error", "-i", str(path), "-map", "0:v", "-c", "copy",
                                "-copyinkf", "-f", "framecrc", "-").stdout.splitlines()
            if ln and not ln.startswith("#")]


def test_copied_video_from_a_cut_recording_loses_nothing_and_reports_what_is_shown(
        tmp_path: Path) -> None:
    """Copied video from TS recordings cut mid-GOP: every packet is copied (leaving out those
    before the first marked keyframe, as `ffmpeg -c copy` does, lost pictures that decode when
    the I-frames are no IDR and carry no recovery point: broadcast H.264), and a warning says
    where the first marked keyframe is. From an MP4 cut with `-ss` (an edit list), the report
    counts what the output shows (it counted the pre-roll): hidden in MP4, shown in MKV."""
    clip = camera_clip(tmp_path / "clip.mp4", "-bf", "2", seconds=6, fps=30)
    cuts = []
    for name, codec in (("closed", ["-c", "copy"]),
                        ("no_idr", ["-c:a", "copy", "-c:v", "libx264", "-preset", "veryfast",
                                    "-x264-params", "keyint=60:min-keyint=60:open-gop=1:"
                                    "bframes=2:scenecut=0", "-bsf:v",
                                    "filter_units=remove_types=6"])):  # no SEI: no recovery point
        ts = tmp_path / f"{name}.ts"
        ffmpeg("-i", str(clip), *codec, "-f", "mpegts", str(ts))
        data = ts.read_bytes()
        cuts.append(tmp_path / f"{name}_cut.ts")
        cuts[-1].write_bytes(data[len(data) * 15 // 100 // 188 * 188:])  # cut on a TS packet
    edited = tmp_path / "edited.mp4"
    ffmpeg("-ss", "1.3", "-i", str(clip), "-c", "copy", str(edited))  # an edit list from 1.3 s
    copy = write_profile(tmp_path, COPY_MP4, "copy")
    for source in cuts:
        out = tmp_path / f"{source.stem}.mp4"
        report = transcode_report(str(source), "-p", str(copy), "-o", str(out), "--gpu", "none")
        assert len(_packets(out)) == len(_packets(source))  # every packet copied
        assert decoded_frames(out) == decoded_frames(source) > 60  # no picture lost
        # Counted as shown where an edit list hides the first (reordered) ones; a packet
        # before the first keyframe may not decode, which a copy cannot know
        assert decoded_frames(out) <= report["outputs"][0]["frames"] <= len(_packets(out))
        assert any("come before the first keyframe the source marks" in w
                   for w in report["warnings"]), report["warnings"]
    for out in ("e.mp4", "e.mkv"):
        report = transcode_report(str(edited), "-p", str(copy), "-o", str(tmp_path / out),
                                  "--gpu", "none")
        shown = decoded_frames(tmp_path / out)
        assert report["outputs"][0]["frames"] == shown, (out, report["outputs"][0], shown)
        assert abs(report["outputs"][0]["duration"] - shown / 30) < 0.05  # 30 fps, no gaps
        assert not any("keyframe" in w for w in report["warnings"]), report["warnings"]
    assert decoded_frames(tmp_path / "e.mp4") == decoded_frames(edited)  # the cut, as it shows
    assert decoded_frames(tmp_path / "e.mkv") > decoded_frames(edited)  # Matroska shows all


def test_a_copied_intra_refresh_recording_cut_mid_stream_is_not_refused(
        tmp_path: Path) -> None:
    """H.264 with intra refresh (no IDR: the picture builds up over a refresh period from each
    recovery point) cut mid-stream and copied: the read-back drained the decoder at every
    recovery point, so no picture ever completed and a good copy was refused ("output video
    does not decode"). It decodes on after one drain, as the independent ffmpeg does."""
    ts = camera_clip(tmp_path / "refresh.ts", "-intra-refresh", "1", "-bf", "0", "-f", "mpegts",
                     seconds=6)
    data = ts.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[len(data) * 30 // 100 // 188 * 188:])
    out = tmp_path / "copied.mkv"
    report = transcode_report(str(cut), "-p", str(write_profile(tmp_path, COPY_MKV, "copy")),
                              "-o", str(out), "--gpu", "none")
    assert decoded_frames(out) == decoded_frames(cut) > 30  # what ffmpeg shows of the cut
    assert report["outputs"][0]["frames"] == len(_packets(out))
