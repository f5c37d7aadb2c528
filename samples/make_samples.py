"""(Re)create the tiny sample media in samples/ with PyAV + numpy only.

Run: python samples/make_samples.py [OUT_DIR]

Every file has a test pattern that changes every frame (a scrolling gradient, a moving box and a
frame-counter bar) so that PSNR/quality checks on transcodes of it mean something, and a sine tone
whose pitch differs per audio track so that track mapping can be checked by ear or by FFT.
Output is deterministic: single-threaded encoders and bitexact muxing (no random Matroska UIDs,
no library version strings), so re-running the script gives byte-identical files.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.video.stream import VideoStream

SAMPLES_DIR = Path(__file__).resolve().parent
FPS = 25
DURATION_S = 2.4  # 60 frames at 25 fps: long enough for a few GOPs, short enough to stay tiny
SAMPLE_RATE = 48000
AUDIO_FRAME = 1024  # AAC frame size; PyAV re-chunks for other encoders (Opus wants 960)
# Bitexact keeps output reproducible: Matroska otherwise writes random segment/track UIDs
# and every muxer stamps the libavformat version.
BITEXACT = {"fflags": "+bitexact"}
SRT_TEXT = """1
00:00:00,200 --> 00:00:00,900
Hello from mediad.

2
00:00:01,000 --> 00:00:01,600
Second cue, <i>italic</i>.

3
00:00:01,700 --> 00:00:02,300
Third cue: the end.
"""


# --- content -------------------------------------------------------------------------------


def pattern(index: int, width: int, height: int, deep: bool = False) -> np.ndarray:
    """RGB test pattern for frame `index`: uint8 (H, W, 3), or uint16 full-range if `deep`."""
    # Float maths first so the 10-bit sample gets real >8-bit gradients instead of 8-bit steps.
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    t = float(index)
    img = np.empty((height, width, 3), dtype=np.float32)
    img[..., 0] = (x / max(width - 1, 1) + t * 0.013) % 1.0  # red scrolls right
    img[..., 1] = (y / max(height - 1, 1) + t * 0.021) % 1.0  # green scrolls down
    img[..., 2] = 0.5 + 0.5 * np.sin((x + y) / 17.0 + t * 0.3)  # blue ripples
    # A white box bouncing across the frame gives sharp moving edges (motion estimation work).
    bw, bh = max(width // 6, 4), max(height // 5, 4)
    span_x, span_y = max(width - bw, 1), max(height - bh, 1)
    bx = abs((index * 7) % (2 * span_x) - span_x)
    by = abs((index * 5) % (2 * span_y) - span_y)
    img[by : by + bh, bx : bx + bw] = 1.0
    # A black bar whose length is the frame number: every frame differs, even if motion stalls.
    img[height - 4 :, : min(index * 3, width)] = 0.0
    if deep:
        return np.round(img * 65535.0).astype(np.uint16)
    return np.round(img * 255.0).astype(np.uint8)


def cartoon(index: int, width: int, height: int) -> np.ndarray:
    """Line-art frame: flat-coloured discs with dark outlines drifting over a plain background.

    The content animation upscalers are made for (the built-in upscaler is an anime model), so
    upscaling quality can be judged on a sample of the kind it serves.
    """
    rng = np.random.default_rng(7)  # same discs every frame; only their positions move
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    img[:] = (0.9, 0.85, 0.7)
    for k in range(18):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r, colour = rng.uniform(10, 36), rng.uniform(0, 1, 3)
        vx, vy = rng.uniform(-2, 2), rng.uniform(-1.5, 1.5)
        cx, cy = (cx + vx * index) % width, (cy + vy * index + k) % height
        dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        img[dist < r] = colour
        img[np.abs(dist - r) < 1.2] = 0.05
    return np.round(img * 255.0).astype(np.uint8)


def video_frames(
    width: int, height: int, count: int, deep: bool = False
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield (index, frame) of the test pattern; pts are left to the caller."""
    fmt = "rgb48le" if deep else "rgb24"
    for i in range(count):
        yield i, av.VideoFrame.from_ndarray(pattern(i, width, height, deep), format=fmt)


def tone_frames(freq: float, seconds: float) -> Iterator[av.AudioFrame]:
    """Yield stereo fltp frames of a sine at `freq` Hz (right channel a fifth up, quieter)."""
    total = int(round(seconds * SAMPLE_RATE))
    for start in range(0, total, AUDIO_FRAME):
        n = min(AUDIO_FRAME, total - start)
        t = (np.arange(start, start + n, dtype=np.float64)) / SAMPLE_RATE
        left = 0.4 * np.sin(2 * np.pi * freq * t)
        right = 0.25 * np.sin(2 * np.pi * freq * 1.5 * t)
        data = np.stack([left, right]).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(data, format="fltp", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = start
        frame.time_base = Fraction(1, SAMPLE_RATE)
        yield frame


# --- streams -------------------------------------------------------------------------------


def add_video(
    out: OutputContainer,
    codec: str = "libx264",
    width: int = 320,
    height: int = 180,
    pix_fmt: str = "yuv420p",
    time_base: Fraction | None = None,
    options: dict[str, str] | None = None,
) -> VideoStream:
    """Add a small, single-threaded (hence deterministic) software video encoder stream."""
    stream = out.add_stream(codec, rate=FPS, options=options or {})
    assert isinstance(stream, VideoStream)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    stream.thread_count = 1
    stream.codec_context.gop_size = 25  # keyframe each second, so seeking tests have targets
    if time_base is not None:
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
    return stream


def x264_opts() -> dict[str, str]:
    """libx264 options: small files, still clearly textured, and reproducible."""
    # mbtree=0: with it on, this x264 build's SIMD lookahead gives run-to-run different output
    # even single-threaded (asm=0 also cures it); mbtree only tunes bit allocation anyway.
    return {"preset": "medium", "crf": "26", "x264-params": "log-level=error:mbtree=0"}


def add_audio(
    out: OutputContainer, codec: str = "aac", language: str = "eng", bit_rate: int = 64000
) -> AudioStream:
    """Add a stereo 48 kHz audio encoder stream with a language tag."""
    stream = out.add_stream(codec, rate=SAMPLE_RATE)
    assert isinstance(stream, AudioStream)
    stream.layout = "stereo"
    stream.bit_rate = bit_rate
    stream.metadata["language"] = language
    # The native AAC encoder is bitexact-deterministic only with this flag set.
    stream.codec_context.flags |= av.codec.context.Flags.bitexact
    return stream


def encode_video(
    out: OutputContainer,
    stream: VideoStream,
    count: int,
    deep: bool = False,
    durations: list[int] | None = None,
) -> None:
    """Encode `count` pattern frames; `durations` (in stream.time_base units) makes it VFR."""
    pts = 0
    for i, frame in video_frames(stream.width, stream.height, count, deep):
        if durations is None:
            frame.pts, frame.time_base = i, Fraction(1, FPS)
        else:
            frame.pts, frame.time_base = pts, stream.codec_context.time_base
            pts += durations[i % len(durations)]
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def encode_audio(out: OutputContainer, stream: AudioStream, freq: float, seconds: float) -> None:
    """Encode a sine tone of `seconds` at `freq` Hz and flush."""
    for frame in tone_frames(freq, seconds):
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def chapters(seconds: float, titles: list[str]) -> list[av.container.Chapter]:
    """Equal-length chapters covering `seconds`, in milliseconds."""
    step = int(seconds * 1000) // len(titles)
    return [
        {
            "id": i + 1,
            "start": i * step,
            "end": (i + 1) * step if i + 1 < len(titles) else int(seconds * 1000),
            "time_base": Fraction(1, 1000),
            "metadata": {"title": title},
        }
        for i, title in enumerate(titles)
    ]


def open_out(path: Path, fmt: str | None = None) -> OutputContainer:
    """Open an output file with bitexact muxing."""
    return av.open(str(path), "w", format=fmt, options=BITEXACT)


# --- samples -------------------------------------------------------------------------------

FRAMES = int(DURATION_S * FPS)


def make_h264_aac(path: Path) -> None:
    """H.264 + AAC in MP4 with a title and two chapters."""
    with open_out(path) as out:
        out.metadata["title"] = "mediad sample: h264 + aac"
        out.set_chapters(chapters(DURATION_S, ["Opening", "Ending"]))
        v = add_video(out, options=x264_opts())
        a = add_audio(out, "aac", "eng")
        encode_video(out, v, FRAMES)
        encode_audio(out, a, 440.0, DURATION_S)


def make_cartoon(path: Path) -> None:
    """H.264 line art (for the upscaler's quality check), high quality, no audio."""
    with open_out(path) as out:
        v = add_video(out, options={**x264_opts(), "crf": "16", "tune": "animation"})
        for i in range(FRAMES // 2):
            frame = av.VideoFrame.from_ndarray(cartoon(i, 320, 180), format="rgb24")
            frame.pts = i
            out.mux(v.encode(frame))
        out.mux(v.encode(None))


def make_noaudio(path: Path) -> None:
    """H.264 only, no audio stream at all."""
    with open_out(path) as out:
        v = add_video(out, options=x264_opts())
        encode_video(out, v, FRAMES)


def make_subs(path: Path) -> None:
    """Matroska: H.264, AAC eng + Opus fra, an SRT subtitle track (eng) and chapters."""
    with tempfile.TemporaryDirectory() as tmp:
        srt_path = Path(tmp) / "subs.srt"
        srt_path.write_text(SRT_TEXT, encoding="utf-8")
        # The srt demuxer yields ready-made subrip packets; copy them, no subtitle encoder needed.
        with av.open(str(srt_path)) as src, open_out(path) as out:
            out.metadata["title"] = "mediad sample: two audio tracks + subtitles"
            out.set_chapters(chapters(DURATION_S, ["Part one", "Part two", "Part three"]))
            v = add_video(out, options=x264_opts())
            a_eng = add_audio(out, "aac", "eng")
            a_fra = add_audio(out, "libopus", "fra", bit_rate=48000)
            src_sub = src.streams.subtitles[0]
            sub = out.add_stream_from_template(src_sub)
            sub.metadata["language"] = "eng"
            # All streams exist before the first mux (which writes the header).
            for packet in src.demux(src_sub):
                if packet.dts is None:  # the demuxer's end-of-stream flush packet
                    continue
                packet.stream = sub  # mux() rescales from the packet's time_base
                out.mux(packet)
            encode_video(out, v, FRAMES)
            encode_audio(out, a_eng, 440.0, DURATION_S)
            encode_audio(out, a_fra, 660.0, DURATION_S)


def make_tenbit_hevc(path: Path) -> None:
    """HEVC Main10 (yuv420p10le) from a 16-bit RGB pattern + AAC, in Matroska."""
    with open_out(path) as out:
        v = add_video(
            out,
            "libx265",
            pix_fmt="yuv420p10le",
            options={
                "preset": "fast",
                "crf": "28",
                # pools=none/frame-threads=1: no worker threads, so output is reproducible.
                "x265-params": "log-level=error:pools=none:frame-threads=1",
            },
        )
        a = add_audio(out, "aac", "eng")
        encode_video(out, v, FRAMES, deep=True)
        encode_audio(out, a, 550.0, DURATION_S)


def make_odd_322x182(path: Path) -> None:
    """H.264 yuv420p at 322x182: even, but not a multiple of 16 (cropping in the SPS)."""
    with open_out(path) as out:
        v = add_video(out, width=322, height=182, options=x264_opts())
        a = add_audio(out, "aac", "eng")
        encode_video(out, v, FRAMES)
        encode_audio(out, a, 330.0, DURATION_S)


def make_odd_321x181(path: Path) -> None:
    """H.264 at a truly odd 321x181: 4:2:0 cannot halve odd sizes, so x264 needs yuv444p."""
    with open_out(path) as out:
        v = add_video(out, width=321, height=181, pix_fmt="yuv444p", options=x264_opts())
        encode_video(out, v, FRAMES)


def make_vfr(path: Path) -> None:
    """H.264 with frame durations cycling 33/50/40 ms (time_base 1/1000) + AAC, in Matroska."""
    durations = [33, 50, 40]
    count = FRAMES
    seconds = sum(durations[i % 3] for i in range(count)) / 1000
    with open_out(path) as out:
        # No B-frames: with VFR input, reordering delay would only blur the pts pattern.
        opts = x264_opts() | {"bf": "0"}
        v = add_video(out, time_base=Fraction(1, 1000), options=opts)
        a = add_audio(out, "aac", "eng")
        encode_video(out, v, count, durations=durations)
        encode_audio(out, a, 370.0, seconds)


def make_rotated(path: Path) -> None:
    """H.264 320x180 with a 90 degree (counter-clockwise) display matrix, in MP4."""
    with open_out(path) as out:
        v = add_video(out, options=x264_opts())
        # Must be set before the first frame is encoded (it goes into the stream's side data).
        v.set_display_rotation(90)
        encode_video(out, v, FRAMES)


SAMPLES = {
    "h264_aac.mp4": make_h264_aac,
    "noaudio.mp4": make_noaudio,
    "subs.mkv": make_subs,
    "tenbit_hevc.mkv": make_tenbit_hevc,
    "odd_322x182.mp4": make_odd_322x182,
    "odd_321x181.mkv": make_odd_321x181,
    "vfr.mkv": make_vfr,
    "rotated.mp4": make_rotated,
    "cartoon.mp4": make_cartoon,
}


def main(argv: list[str]) -> int:
    """Write every sample into argv[1] (default: this folder) and print its size."""
    out_dir = Path(argv[1]) if len(argv) > 1 else SAMPLES_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    total = 0
    for name, make in SAMPLES.items():
        path = out_dir / name
        make(path)
        size = path.stat().st_size
        total += size
        print(f"{name:18} {size:8d} bytes")
    print(f"{'total':18} {total:8d} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
