"""Surround audio re-encoded: the output's channel layout is one decoders name, with each
channel where ffmpeg puts it. Sources and checks by the independent ffmpeg binary."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from conftest import ffmpeg, ffmpeg_info, transcode_report, write_profile

# One tone per channel, so each channel can be followed through the encode.
TONES = (300, 500, 700, 60, 900, 1100)


def _surround(path: Path, layout: str) -> Path:
    """An AC-3 track (what DVD, Blu-ray and broadcast 5.1 is) of one tone per channel in
    `layout`."""
    count = av.AudioLayout(layout).nb_channels
    tones = [arg for f in TONES[:count] for arg in ("-f", "lavfi", "-i", f"sine=f={f}:r=48000")]
    inputs = "".join(f"[{i + 1}]" for i in range(count))
    ffmpeg("-y", "-f", "lavfi", "-i", "testsrc2=s=160x90:r=25", *tones, "-filter_complex",
           f"{inputs}join=inputs={count}:channel_layout={layout}[a]", "-map", "0:v", "-map", "[a]",
           "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "ac3", str(path))
    return path


def _channels(path: Path) -> tuple[str, list[str], list[int]]:
    """The first audio track's layout, its channel names and each channel's loudest tone."""
    with av.open(str(path)) as c:
        frames = list(c.decode(c.streams.audio[0]))
    data = np.concatenate([f.to_ndarray() for f in frames], axis=1)[:, :48000]
    tones = [int(np.argmax(np.abs(np.fft.rfft(ch)))) for ch in data]
    return frames[0].layout.name, [ch.name for ch in frames[0].layout.channels], tones


@pytest.mark.parametrize(("codec", "layout"), [
    ("aac", "5.1(side)"), ("aac", "5.0(side)"), ("aac", "5.1"), ("opus", "5.1(side)"),
    ("opus", "5.1"),
])
def test_surround_audio_has_a_layout_decoders_name(tmp_path: Path, layout: str,
                                                   codec: str) -> None:
    """QA: AC-3 5.1(side) (every DVD/Blu-ray/TV 5.1 track) re-encoded to AAC was written with
    a program config element decoders read as "6 channels" (ffmpeg: "Guessed Channel Layout");
    ffmpeg's CLI gives the encoder a layout it lists, 5.1, side channels mixed to the back."""
    src = _surround(tmp_path / "src.mkv", layout)
    out, theirs = tmp_path / "out.mkv", tmp_path / "theirs.mkv"
    profile = write_profile(tmp_path, f'[audio]\ncodec = "{codec}"\n')
    report = transcode_report(str(src), "-p", str(profile), "-o", str(out), "--gpu", "none")
    channels = av.AudioLayout(layout).nb_channels
    # Without a bitrate: 64k a channel above stereo (it was 128k for all of them).
    assert report["plan"]["audio"][0]["bit_rate"] == 64_000 * channels
    # ffmpeg's libopus refuses 5.1(side) outright ("Invalid channel layout"): users give it 5.1.
    encoder = ["aac"] if codec == "aac" else ["libopus", "-af", "aformat=channel_layouts=5.1"]
    ffmpeg("-y", "-i", str(src), "-c:v", "copy", "-c:a", *encoder, str(theirs))
    assert "Guessed Channel Layout" not in ffmpeg_info(out)
    assert _channels(out) == _channels(theirs)
    assert "channels" not in _channels(out)[0]  # a named layout
