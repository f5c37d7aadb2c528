"""Recordings whose clock jumps: DVR and HLS segments joined with `cat` (forward, back, with
an overlap), splices and a garbled timestamp in a damaged header. ffmpeg's demuxer front-end
joins these into one timeline; so does mediad, and says so.

Sources are written by the independent ffmpeg binary; outputs are read back by it too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import (
    FAST_PROFILE,
    camera_clip,
    container_duration,
    packet_times,
    run_cli,
    stream_span,
    transcode_report,
    write_profile,
)

COPY_MKV = 'container = "mkv"\n[video]\ncodec = "copy"\n[audio]\ncodec = "copy"\n'
FAST = FAST_PROFILE


def _segments(tmp_path: Path, offsets: list[float], *args: str, seconds: float = 4,
              audio_codec: str = "aac", **kw: object) -> Path:
    """A recording made of MPEG-TS segments, each with its own clock, joined with `cat` as
    DVRs and HLS downloads do; `args` are more output options for each."""
    joined = tmp_path / "joined.ts"
    with open(joined, "wb") as out:
        for i, offset in enumerate(offsets):
            seg = camera_clip(tmp_path / f"seg{i}.ts", "-c:a", audio_codec, "-output_ts_offset",
                              str(offset), "-f", "mpegts", *args, seconds=seconds,
                              **kw)  # type: ignore[arg-type]
            out.write(seg.read_bytes())
    return joined


@pytest.mark.parametrize("offsets", [[10, 5000], [1000, 50]], ids=["forward", "backward"])
@pytest.mark.parametrize("profile", [FAST, COPY_MKV], ids=["encode", "copy"])
def test_a_clock_jump_in_a_joined_recording_is_joined_up(tmp_path: Path, offsets: list[float],
                                                          profile: str) -> None:
    """Two segments whose clocks differ by ±1 hour: one 8 s output, as ffmpeg makes (it was
    an 83-minute hole forward, 26 hours through libavformat's wrap correction backward)."""
    src = _segments(tmp_path, offsets)
    out = tmp_path / "out.mkv"
    report = transcode_report(str(src), "-p", str(write_profile(tmp_path, profile)), "-o",
                              str(out), "--gpu", "none")
    assert container_duration(out) < 8.2
    assert abs(stream_span(out, "0:v:0") - 8.0) < 0.1 and abs(stream_span(out, "0:a:0") - 8.0) < 0.1
    assert len(packet_times(out, "0:v:0")) == 200
    jumped = [w for w in report["warnings"] if w.startswith("the source's clock jumped 1 time(s)")]
    assert jumped, report["warnings"]
    # QA: the step back was reported as libavformat's wrap reading of it, "+91937.745s".
    by = float(re.search(r"by ([+-][\d.]+)s", jumped[0])[1])  # type: ignore[index]
    assert abs(by - (offsets[1] - (offsets[0] + 4))) < 0.5, jumped


@pytest.mark.parametrize("kind", ["with_audio", "video_only_lossless"])
def test_probe_of_a_recording_whose_clock_went_back_does_not_promise_26_hours(
        tmp_path: Path, kind: str) -> None:
    """QA: an 8 s recording joined an hour back was probed as 91949 s long (libavformat reads
    the step back as a 33-bit wrap; ffprobe says the same), and the progress bar's total came
    from it. Its length is unknown until it is read; a forward join keeps its length.
    QA again: a video-only TS (H.264 in TS declares no rate) of any real size still showed
    25 hours: the file's own rate, measured over its first seconds, decides."""
    # Lossless camera grain: a few MB a second, so its file holds more than 25 hours of
    # 1 kb/s (the old test's floor) and no stream declares a rate.
    extra = ("-qp", "0") if kind == "video_only_lossless" else ()
    back = _segments(tmp_path, [3600, 10], *extra, seconds=6 if extra else 4,
                     audio=kind == "with_audio")
    assert container_duration(back) > 90000  # the independent reader's header says 25 h
    info = json.loads(run_cli("probe", str(back), "--json").stdout)
    assert info["duration"] is None and info["bit_rate"] is None
    assert info["video"][0]["duration"] is None and info["video"][0]["frames"] is None
    assert all(a["duration"] is None for a in info["audio"])
    assert "duration" not in run_cli("probe", str(back)).stdout.splitlines()[0]
    (tmp_path / "forward").mkdir()
    forward = _segments(tmp_path / "forward", [10, 3600])
    info = json.loads(run_cli("probe", str(forward), "--json").stdout)
    assert info["duration"] > 3000  # a forward jump is the file's own measure, as ffprobe's


def _one_timeline(src: Path, tmp_path: Path, profile: str, seconds: float) -> list[str]:
    """Transcode a joined recording into MKV: one timeline of `seconds`, video and audio; the
    report's warnings."""
    out = tmp_path / "out.mkv"
    report = transcode_report(str(src), "-p", str(write_profile(tmp_path, profile)), "-o",
                              str(out), "--gpu", "none")
    for stream in ("0:v:0", "0:a:0"):
        assert abs(stream_span(out, stream) - seconds) < 0.1, stream
    return report["warnings"]


@pytest.mark.parametrize("profile", [FAST, COPY_MKV], ids=["encode", "copy"])
def test_a_splice_whose_last_audio_comes_after_the_next_video_is_one_jump(
        tmp_path: Path, profile: str) -> None:
    """QA: AC-3 recordings an hour apart, joined: the muxer put the first recording's last
    audio packet after the second's first video, and the report said the clock jumped 3 times
    (a jump back for that straggler, then forward again, moving everything between). It is
    one jump; the straggler keeps the clock of its own recording."""
    src = _segments(tmp_path, [3600, 10800], seconds=4, audio_codec="ac3")
    warnings = _one_timeline(src, tmp_path, profile, seconds=8.0)
    assert any(w.startswith("the source's clock jumped 1 time(s)") for w in warnings), warnings


def test_a_recording_back_near_an_earlier_clock_is_a_jump_not_a_straggler(tmp_path: Path) -> None:
    """QA: a third recording whose clock came back to within 10 s of the first's was kept on
    that clock as if it were the first's straggler: a 6 s hole ffmpeg does not make, blamed
    on damage. Only a stream that has had nothing on the new clock can have a straggler."""
    src = _segments(tmp_path, [100, 7300, 110], seconds=2)
    warnings = _one_timeline(src, tmp_path, COPY_MKV, seconds=6.0)
    assert any(w.startswith("the source's clock jumped 2 time(s)") for w in warnings), warnings
    assert not any("missing" in w for w in warnings), warnings


def _end(times: list[tuple[float, float]]) -> float:
    return max(t + d for t, d in times)


@pytest.mark.parametrize("second", [1003.92, 1003.9203], ids=["exact", "ticks_apart"])
@pytest.mark.parametrize("audio", ["copy", "encode"])
def test_recordings_joined_with_an_overlap_keep_the_sources_timeline(tmp_path: Path, audio: str,
                                                                     second: float) -> None:
    """Two recordings joined, the second's clock starting two frames (80 ms) before the
    first's video ends: each repeated frame was moved one frame on, so every frame after the
    join came 80 ms late, against copied audio for good (and re-encoded audio, counted on by
    samples, went late with it: the whole output 80 ms longer than the source's timeline).
    What the join repeats is dropped, video frames and, re-encoded, audio: the source's timeline
    kept. (ffmpeg drops one of the two frames and moves the other on: 40 ms late from there.)
    QA: a join at a rounded offset repeats the times 27 ticks of 1/90000 apart: those frames
    were kept, two frames 0.3 ms apart, and ffmpeg's reader of the HLS set saw their dts
    collide."""
    src = _segments(tmp_path, [1000, second])
    profile = FAST if audio == "copy" else FAST + '[audio]\ncodec = "opus"\n'
    out = tmp_path / "out.mkv"
    warnings = transcode_report(str(src), "-p", str(write_profile(tmp_path, profile)), "-o",
                                str(out), "--gpu", "none")["warnings"]
    sv, sa = packet_times(src, "0:v:0"), packet_times(src, "0:a:0")
    v, a = packet_times(out, "0:v:0"), packet_times(out, "0:a:0")
    start = min(t for t, _ in sv + sa)
    assert len(v) == len(sv) - 2  # the two frames the join repeats
    assert abs(_end(v) - (_end(sv) - start)) < 0.01  # where the source's video ends
    assert abs((_end(v) - _end(a)) - (_end(sv) - _end(sa))) < 0.025  # in sync as there
    assert any(w.startswith("2 video frame(s) repeating the times") for w in warnings), warnings
    if audio == "encode":
        assert any(re.match(r"\d+ audio frame\(s\) of stream #1 within the time already "
                            r"written were dropped", w) for w in warnings), warnings


def test_overlapping_segments_are_copied_with_timestamps_moved_forward(tmp_path: Path) -> None:
    """HLS/DVR segments whose audio overlaps by a few ms: the muxer refused the copy (EINVAL,
    naming the temporary file); ffmpeg moves the packets forward, and so does mediad."""
    import av

    src = _segments(tmp_path, [1000, 1004])
    with av.open(str(src)) as c:  # the raw demuxer's view (ffmpeg's framecrc fixes it up)
        dts = [p.dts for p in c.demux(c.streams.audio[0]) if p.dts is not None]
    assert any(b < a for a, b in zip(dts, dts[1:], strict=False))  # it steps back
    for profile, suffix in ((FAST, ".mp4"), (COPY_MKV, ".mkv")):
        out = tmp_path / f"out{suffix}"
        warnings = transcode_report(str(src), "-p", str(write_profile(tmp_path, profile)), "-o",
                                    str(out), "--gpu", "none")["warnings"]
        assert any(re.match(r"\d+ copied packet\(s\) whose timestamps went back were moved "
                            r"forward \(stream #1", w) for w in warnings), warnings
        assert abs(stream_span(out, "0:a:0") - 8.0) < 0.1


def test_a_garbled_timestamp_in_a_damaged_recording_is_repaired(tmp_path: Path) -> None:
    """A reception drop-out that hits a PES header leaves a presentation time hours away from
    its decoding time: the output was 26 hours long."""
    import av

    clean = camera_clip(tmp_path / "clean.ts", "-f", "mpegts", seconds=4)
    garbled = tmp_path / "garbled.ts"
    with av.open(str(clean)) as src, av.open(str(garbled), "w", format="mpegts") as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for n, packet in enumerate(src.demux()):
            if packet.dts is None:
                continue
            if packet.stream.type == "video" and n == 40:
                packet.pts += 90000 * 25000  # seven hours after its decoding time
            packet.stream = streams[packet.stream.index]
            dst.mux(packet)
    assert max(p for p, _ in packet_times(garbled, "0:v:0")) > 20000
    for profile in (COPY_MKV, FAST):
        out = tmp_path / "out.mkv"
        report = transcode_report(str(garbled), "-p", str(write_profile(tmp_path, profile)),
                                  "-o", str(out), "--gpu", "none", "--overwrite")
        assert container_duration(out) < 4.2
        assert "1 packet(s) had a garbled presentation time (a damaged header): given their " \
               "decoding time" in report["warnings"]
