"""Sources of unusual kinds users have: raw elementary streams (dashcam and DVR exports), DV
camcorder files, Ogg (Theora/Vorbis) from media archives. Each is written by the independent
ffmpeg binary and its output read back by it, against what ffmpeg itself makes."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import (
    FAST_PROFILE,
    camera_filter,
    ffmpeg,
    packet_times,
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
