"""The committed sample media in samples/ really are what samples/README.md says they are."""

from __future__ import annotations

import importlib.util
import math
import struct
import sys
from pathlib import Path
from types import ModuleType

import av
import numpy as np
import pytest

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
NAMES = [
    "h264_aac.mp4",
    "noaudio.mp4",
    "subs.mkv",
    "tenbit_hevc.mkv",
    "odd_322x182.mp4",
    "odd_321x181.mkv",
    "vfr.mkv",
    "rotated.mp4",
]


def _load_maker() -> ModuleType:
    """Import samples/make_samples.py (samples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _open(name: str) -> av.container.InputContainer:
    return av.open(str(SAMPLES / name))


def _video_summary(name: str) -> tuple[str, int, int, str, str | None]:
    """(codec, decoded width, decoded height, decoded pix_fmt, profile) of the first video stream."""
    with _open(name) as c:
        s = c.streams.video[0]
        frame = next(c.decode(s))
        return s.codec_context.name, frame.width, frame.height, frame.format.name, s.profile


def _audio_langs(name: str) -> list[tuple[str, str | None, int, int]]:
    """(codec, language, sample rate, channels) for every audio stream."""
    with _open(name) as c:
        return [
            (
                s.codec_context.name,
                s.language,
                s.codec_context.sample_rate,
                s.codec_context.channels,
            )
            for s in c.streams.audio
        ]


def _peak_hz(name: str, index: int) -> float:
    """Dominant frequency of the left channel of audio stream `index`."""
    with _open(name) as c:
        s = c.streams.audio[index]
        # AAC and Opus both decode to planar float: row 0 is the left channel.
        pcm = np.concatenate([f.to_ndarray()[0] for f in c.decode(s)])
        rate = s.codec_context.sample_rate
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.argmax(spectrum)) * rate / len(pcm)


def _mp4_tkhd_rotation(path: Path) -> list[float]:
    """Counter-clockwise rotation (degrees) of each track's tkhd display matrix, parsed raw."""
    data = path.read_bytes()

    def boxes(start: int, end: int):
        pos = start
        while pos + 8 <= end:
            size, kind = struct.unpack(">I4s", data[pos : pos + 8])
            header = 8
            if size == 1:
                size, header = struct.unpack(">Q", data[pos + 8 : pos + 16])[0], 16
            elif size == 0:
                size = end - pos
            yield kind, pos + header, pos + size
            pos += size

    angles = []
    for kind, body, end in boxes(0, len(data)):
        if kind != b"moov":
            continue
        for tkind, tbody, tend in boxes(body, end):
            if tkind != b"trak":
                continue
            for k, b, _ in boxes(tbody, tend):
                if k != b"tkhd":
                    continue
                version = data[b]
                # version/flags, times, track id, reserved, duration, reserved(8), layer,
                # alt group, volume, reserved: 40 bytes (v0) or 52 bytes (v1) before the matrix.
                off = b + (52 if version == 1 else 40)
                a, bb = struct.unpack(">ii", data[off : off + 8])
                # Same formula as av_display_rotation_get(): CCW angle = -atan2(b, a).
                angles.append(-math.degrees(math.atan2(bb / 65536, a / 65536)) + 0.0)
    return angles


# --- the table in samples/README.md ---------------------------------------------------------


def test_all_samples_exist_and_fit_the_budget() -> None:
    sizes = {n: (SAMPLES / n).stat().st_size for n in NAMES}
    assert all(size > 10_000 for size in sizes.values()), sizes  # real content, not stubs
    assert sum(sizes.values()) < 2_000_000, sizes


@pytest.mark.parametrize("name", NAMES)
def test_duration_is_two_to_three_seconds(name: str) -> None:
    with _open(name) as c:
        assert c.duration is not None
        assert 2.0 <= c.duration / av.time_base <= 3.0


@pytest.mark.parametrize(
    ("name", "codec", "width", "height", "pix_fmt"),
    [
        ("h264_aac.mp4", "h264", 320, 180, "yuv420p"),
        ("noaudio.mp4", "h264", 320, 180, "yuv420p"),
        ("subs.mkv", "h264", 320, 180, "yuv420p"),
        ("tenbit_hevc.mkv", "hevc", 320, 180, "yuv420p10le"),
        ("odd_322x182.mp4", "h264", 322, 182, "yuv420p"),
        ("odd_321x181.mkv", "h264", 321, 181, "yuv444p"),
        ("vfr.mkv", "h264", 320, 180, "yuv420p"),
        ("rotated.mp4", "h264", 320, 180, "yuv420p"),
    ],
)
def test_video_codec_size_and_pix_fmt(
    name: str, codec: str, width: int, height: int, pix_fmt: str
) -> None:
    got_codec, w, h, fmt, _ = _video_summary(name)
    assert (got_codec, w, h, fmt) == (codec, width, height, pix_fmt)


def test_tenbit_is_main10() -> None:
    assert _video_summary("tenbit_hevc.mkv")[4] == "Main 10"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("h264_aac.mp4", [("aac", "eng", 48000, 2)]),
        ("noaudio.mp4", []),
        ("subs.mkv", [("aac", "eng", 48000, 2), ("opus", "fra", 48000, 2)]),
        ("tenbit_hevc.mkv", [("aac", "eng", 48000, 2)]),
        ("odd_322x182.mp4", [("aac", "eng", 48000, 2)]),
        ("odd_321x181.mkv", []),
        ("vfr.mkv", [("aac", "eng", 48000, 2)]),
        ("rotated.mp4", []),
    ],
)
def test_audio_tracks(name: str, expected: list[tuple[str, str, int, int]]) -> None:
    assert _audio_langs(name) == expected


def test_audio_tracks_have_different_pitches() -> None:
    # The two tracks of subs.mkv must be tellable apart (track-mapping tests rely on it).
    eng, fra = _peak_hz("subs.mkv", 0), _peak_hz("subs.mkv", 1)
    assert eng == pytest.approx(440, abs=5)
    assert fra == pytest.approx(660, abs=5)


def test_h264_aac_title_and_chapters() -> None:
    with _open("h264_aac.mp4") as c:
        assert c.metadata.get("title", "").startswith("mediad sample")
        chapters = c.chapters()
        # movenc writes the chapters as a QuickTime text track too; it shows up as a data stream.
        assert [s.type for s in c.streams] == ["video", "audio", "data"]
    assert [ch["metadata"].get("title") for ch in chapters] == ["Opening", "Ending"]
    assert chapters[0]["start"] == 0 and chapters[0]["end"] == chapters[1]["start"]


def test_subs_has_subtitle_stream_with_cues_and_chapters() -> None:
    with _open("subs.mkv") as c:
        assert len(c.chapters()) == 3
        (sub,) = c.streams.subtitles
        assert sub.codec_context.name in {"subrip", "srt"}
        assert sub.language == "eng"
        cues = []
        for packet in c.demux(sub):
            if packet.size:
                cues += [(packet.pts, s.dialogue) for s in packet.decode()]
    assert len(cues) == 3
    assert cues[0][1] == b"Hello from mediad."
    assert [pts for pts, _ in cues] == sorted(pts for pts, _ in cues)


def test_noaudio_has_only_video() -> None:
    with _open("noaudio.mp4") as c:
        assert [s.type for s in c.streams] == ["video"]


def test_vfr_frame_timing_is_irregular() -> None:
    with _open("vfr.mkv") as c:
        s = c.streams.video[0]
        pts = [f.pts for f in c.decode(s)]
        tb = s.time_base
    assert tb is not None
    steps_ms = {round(float((b - a) * tb) * 1000) for a, b in zip(pts, pts[1:], strict=False)}
    assert steps_ms == {33, 40, 50}


def test_rotation_on_decode_and_in_container() -> None:
    with _open("rotated.mp4") as c:
        frame = next(c.decode(video=0))
    assert frame.rotation == 90  # counter-clockwise, FFmpeg's av_display_rotation_get sign
    assert (frame.width, frame.height) == (320, 180)  # stored unrotated; display is 180x320
    # Without decoding: PyAV 18 exposes no stream side data, so read the tkhd matrix itself.
    assert _mp4_tkhd_rotation(SAMPLES / "rotated.mp4") == [90.0]
    assert _mp4_tkhd_rotation(SAMPLES / "noaudio.mp4") == [0.0]


@pytest.mark.parametrize("name", ["h264_aac.mp4", "tenbit_hevc.mkv", "odd_321x181.mkv", "vfr.mkv"])
def test_content_moves_and_matches_the_pattern(name: str) -> None:
    """Decoded frames are close to the generator's pattern and differ from frame to frame."""
    maker = _load_maker()
    psnrs, changes, prev = [], [], None
    with _open(name) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i >= 12:
                break
            got = frame.to_ndarray(format="rgb24").astype(np.float64)
            ref = maker.pattern(i, frame.width, frame.height).astype(np.float64)
            psnrs.append(10 * np.log10(255**2 / np.mean((got - ref) ** 2)))
            if prev is not None:
                changes.append(np.mean(np.abs(got - prev)))
            prev = got
    assert min(psnrs) > 27, psnrs  # lossy, but clearly the same picture
    assert min(changes) > 2, changes  # every frame differs from the last


@pytest.mark.slow
def test_script_is_deterministic(tmp_path: Path) -> None:
    maker = _load_maker()
    for run in ("a", "b"):
        assert maker.main(["make_samples.py", str(tmp_path / run)]) == 0
    for name in NAMES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
