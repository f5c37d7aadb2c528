"""Pipeline fixes, each checked on real files encoded and decoded with PyAV: colour range of
RGB sources, audio timestamps from coarse time bases, AVI B-frame timestamps, channel layouts."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from conftest import read_back

from mediad.media.job import transcode
from mediad.profiles import load_profile

RED = (200, 10, 10)


def _bars(pix: str, color_range: int = 0) -> av.VideoFrame:
    """64x48: black | white | red columns, as `pix` (full range when color_range is 2)."""
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, 16:32] = 255
    img[:, 32:] = RED
    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
    if pix != "rgb24":
        frame = frame.reformat(format=pix, dst_color_range=color_range)
    if color_range:
        frame.color_range = color_range
    return frame


def _video(path: Path, codec: str, pix: str, color_range: int = 0) -> Path:
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=10)
        vs.width, vs.height, vs.pix_fmt = 64, 48, pix
        if color_range:
            vs.codec_context.color_range = color_range
        for i in range(3):
            frame = _bars(pix, color_range)
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
    return path


def _patches(path: Path) -> list[np.ndarray]:
    """RGB of the middle of each bar in the first frame, as FFmpeg decodes it (honouring tags)."""
    with av.open(str(path)) as c:
        rgb = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    return [rgb[24, x] for x in (8, 24, 48)]


def test_colours_survive_rgb_and_full_range_sources(tmp_path: Path) -> None:
    sources = [
        _video(tmp_path / "rgb.mov", "png", "rgb24"),  # was (189, 22, 23) red, (16, 16, 16) black
        _video(tmp_path / "mjpeg.avi", "mjpeg", "yuvj420p"),  # full-range camera video
        _video(tmp_path / "full.mkv", "libx264", "yuv420p", color_range=2),
        _video(tmp_path / "tv.mkv", "libx264", "yuv420p"),
    ]
    for src in sources:
        out = tmp_path / f"{src.stem}.out.mp4"
        transcode(src, load_profile("h264"), out, gpu="none")
        for want, got in zip(_patches(src), _patches(out), strict=True):
            assert np.abs(want - got).max() <= 4, (src.name, want, got)
        # The red is also right against the drawn colour, not only against a wrong decode.
        assert np.abs(_patches(out)[2] - np.array(RED)).max() <= 6, src.name


def _avi_h264_mp3(path: Path) -> Path:
    """libx264 (with B-frames) + MP3 in AVI: no pts in the container, one audio tick per MP3
    frame (time base 1152/44100)."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        aus = out.add_stream("libmp3lame", rate=44100)
        aus.layout = "stereo"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, np.uint8),
                                               format="rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        rng = np.random.default_rng(1)
        for k in range(40):
            samples = ((rng.random((2, 1152)) - 0.5) * 0.2).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = 44100, k * 1152
            out.mux(aus.encode(frame))
        out.mux(aus.encode(None))
    return path


def test_avi_with_mp3_and_b_frames_transcodes_to_mp4(tmp_path: Path) -> None:
    src = _avi_h264_mp3(tmp_path / "mp3.avi")
    out = tmp_path / "out.mp4"
    transcode(src, load_profile("h264"), out, gpu="none")  # failed: non-monotonic dts
    o = read_back(out)
    assert o.frames == 10 and [codec for codec, _ in o.audio] == ["aac"]
    assert o.pts == sorted(o.pts) and len(set(o.pts)) == 10
    assert np.allclose(np.diff(o.pts), 0.1)
    with av.open(str(out)) as c:
        packets = [p for p in c.demux(c.streams.audio[0]) if p.size]
        pts = [p.pts for p in packets]
        assert pts == sorted(set(pts))  # strictly increasing
        seconds = float(sum(p.duration for p in packets) * c.streams.audio[0].time_base)
    assert abs(seconds - 40 * 1152 / 44100) < 0.05  # every sample kept, nothing invented


def _pcm(path: Path, layout: str) -> Path:
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        aus = out.add_stream("pcm_s16le", rate=48000)
        aus.layout = layout
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        channels = av.AudioLayout(layout).nb_channels
        for k in range(24):
            samples = np.zeros((channels, 1000), np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = 48000, k * 1000, Fraction(1, 48000)
            out.mux(aus.encode(frame))
        out.mux(aus.encode(None))
    return path


def test_channel_layout_kept_when_encoding_audio(tmp_path: Path) -> None:
    for layout in ("3.0", "quad"):  # were encoded as 2.1 (centre as LFE) and 4.0
        src = _pcm(tmp_path / f"{layout}.mov", layout)
        out = tmp_path / f"{layout}.mp4"
        transcode(src, load_profile("h264"), out, gpu="none")
        with av.open(str(out)) as c:
            cc = c.streams.audio[0].codec_context
            assert (cc.name, cc.layout.name) == ("aac", layout)
