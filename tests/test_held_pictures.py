"""Held last pictures: a VFR screen or phone recording whose last picture stays up for
seconds. Each container writes the hold its own way (Matroska as the last block's duration, MP4
as the step after the sample decoded last); outputs keep it as ffmpeg does, or say what they
lost.

Sources are written by PyAV and the independent ffmpeg binary; outputs are read back by it.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import (
    FAST_PROFILE,
    camera_clip,
    ffmpeg,
    packet_times,
    stream_span,
    transcode_report,
    write_profile,
)

COPY_MKV = 'container = "mkv"\n[video]\ncodec = "copy"\n[audio]\ncodec = "copy"\n'
FAST = FAST_PROFILE


def _held_mkv(tmp_path: Path, camera: bool = False) -> Path:
    """A PyAV-made VFR MKV: 50 pictures at 25 fps, the last held 2 s; flat grey steps, or
    camera-like pictures (what an encoder gives B-frames)."""
    held = tmp_path / "held.mkv"
    pictures = [f.to_ndarray(format="rgb24") for f in av.open(str(camera_clip(
        tmp_path / "cam.mkv", seconds=2, size=(160, 90), audio=False))).decode(video=0)] \
        if camera else [np.full((90, 160, 3), i * 5, np.uint8) for i in range(50)]
    with av.open(str(held), "w") as out:
        stream = out.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 90, "yuvj420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(50):
            frame = av.VideoFrame.from_ndarray(pictures[i], format="rgb24").reformat(
                format="yuvj420p")
            frame.pts, frame.time_base = i * 40, Fraction(1, 1000)
            for packet in stream.encode(frame):
                packet.duration = 2000 if packet.pts == 49 * 40 else 40
                out.mux(packet)
        for packet in stream.encode(None):
            packet.duration = 2000
            out.mux(packet)
    return held


def test_a_held_last_picture_is_kept_encoded_and_copied(
        tmp_path: Path) -> None:
    """A VFR recording whose last picture is held 2 s (a screen or phone recording that
    stopped changing): the outputs gave it one frame's time (encoded packets carried no
    duration; a copied MKV stream has no frame rate for its muxer), so every job failed
    verification ("lasts 5.000s but 6.960s went into it"). It is kept now, as ffmpeg keeps
    it."""
    held = _held_mkv(tmp_path)
    assert abs(stream_span(held, "0:v:0") - 3.96) < 0.01  # the independent reader sees the hold
    copy, fast = write_profile(tmp_path, COPY_MKV, "copy"), write_profile(tmp_path, FAST)
    for name, profile in (("copied.mkv", copy), ("encoded.mp4", fast), ("encoded.mkv", fast)):
        out = tmp_path / name
        report = transcode_report(str(held), "-p", str(profile), "-o", str(out), "--gpu", "none")
        assert len(packet_times(out, "0:v:0")) == 50  # every picture
        # Encoded, each packet lasts what its frame lasted; copied into MKV, the stream has its
        # source's frame rate, so the muxer writes the last block's own duration (QA: it had
        # none, and the hold was lost).
        assert report["warnings"] == []
        assert abs(stream_span(out, "0:v:0") - 3.96) < 0.01


def _held_on_the_last_decoded_sample(tmp_path: Path) -> Path:
    """An MP4 with B-frames whose last 2 s are a held picture, written as an MP4 holds it: on
    the sample decoded last, which is not the one shown last."""
    src = camera_clip(tmp_path / "cam.mp4", "-bf", "2", seconds=2, audio=False)
    held = tmp_path / "held.mp4"
    with av.open(str(src)) as c, av.open(str(held), "w") as out:
        stream = out.add_stream_from_template(c.streams.video[0])
        packets = [p for p in c.demux(c.streams.video[0]) if p.dts is not None]
        last = packets[-1]
        assert last.pts < max(p.pts for p in packets)  # a B-frame: shown before the last
        last.duration += round(2 / last.time_base)
        for packet in packets:
            packet.stream = stream
            out.mux(packet)
    return held


@pytest.mark.parametrize("suffix", ["mp4", "mkv"])
def test_a_hold_on_an_mp4s_last_decoded_sample_is_kept_without_false_damage(
        tmp_path: Path, suffix: str) -> None:
    """QA: such an MP4 (ffmpeg keeps the hold through a B-frame encode) was refused, "the
    output's video lasts 6.960s but 5.000s went into it" (the frames went in shown order, the
    hold on one before the last), and before that said its last 1.960 s did not decode."""
    held = _held_on_the_last_decoded_sample(tmp_path)
    source = stream_span(held, "0:v:0")
    assert abs(source - 4.0) < 0.05  # the independent reader sees the hold
    out = tmp_path / f"out.{suffix}"
    profile = write_profile(tmp_path, 'container = "mp4"\n[video]\nspeed = "fast"\n')
    report = transcode_report(str(held), "-p", str(profile), "-o", str(out), "--gpu", "none")
    assert report["warnings"] == []
    assert len(packet_times(out, "0:v:0")) == 50
    assert abs(stream_span(out, "0:v:0") - source) < 0.05


def test_a_hold_on_an_mp4s_last_decoded_sample_lost_without_b_frames_is_said(
        tmp_path: Path) -> None:
    """QA: encoded without B-frames (speed "fastest"), the hold's frame is no longer decoded
    last, so the MP4 gives it a frame's time and the video ends 1.96 s sooner, as ffmpeg's
    does; the report said nothing (what went in was measured to the last frame shown)."""
    held = _held_on_the_last_decoded_sample(tmp_path)
    out, theirs = tmp_path / "out.mp4", tmp_path / "theirs.mp4"
    report = transcode_report(str(held), "-p", str(write_profile(tmp_path, FAST)), "-o",
                              str(out), "--gpu", "none")
    ffmpeg("-y", "-i", str(held), "-c:v", "libx264", "-preset", "ultrafast", str(theirs))
    assert abs(stream_span(out, "0:v:0") - stream_span(theirs, "0:v:0")) < 0.05
    assert stream_span(out, "0:v:0") < 2.1
    assert any(w.startswith("the source's last picture is held 1.9") for w in report["warnings"])
    assert 1.9 < report["outputs"][0]["hold_lost"] < 2.0


def test_a_hold_a_b_frame_encoder_puts_before_the_end_is_lost_as_with_ffmpeg_and_said(
        tmp_path: Path) -> None:
    """Into MP4 with B-frames, the last picture shown is decoded before the B-frames around
    it, so the step after the last sample decoded (an MP4's only place for a hold) is a B-frame's:
    the hold is lost, as ffmpeg loses it, and the report says how much."""
    held = _held_mkv(tmp_path, camera=True)
    out, theirs = tmp_path / "ours.mp4", tmp_path / "theirs.mp4"
    profile = write_profile(tmp_path, 'container = "mp4"\n[video]\nspeed = "fast"\n')
    report = transcode_report(str(held), "-p", str(profile), "-o", str(out), "--gpu", "none")
    ffmpeg("-y", "-i", str(held), "-c:v", "libx264", "-preset", "faster", str(theirs))
    assert abs(stream_span(out, "0:v:0") - stream_span(theirs, "0:v:0")) < 0.05
    assert stream_span(out, "0:v:0") < 2.1  # the B-frames' pictures end it, not the hold
    assert any(w.startswith("the source's last picture is held 1.9") for w in report["warnings"])
