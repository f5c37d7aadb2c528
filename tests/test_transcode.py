"""Round trips of every sample through every built-in profile, decoded back with PyAV."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import av
import pytest
from conftest import (
    FAST_PROFILE,
    SAMPLES,
    camera_clip,
    ffmpeg,
    read_back,
    run_cli,
    transcode_report,
    write_profile,
)

from mediad.media.job import transcode
from mediad.profiles import load_profile

VIDEO_PROFILES = ["h264", "hevc", "av1", "h264-720p", "web"]
SAMPLE_FILES = sorted(p.name for p in SAMPLES.iterdir() if p.suffix in (".mp4", ".mkv"))
CODEC_NAMES = {"h264": "h264", "hevc": "hevc", "av1": "libdav1d"}


def expected_size(src_w: int, src_h: int, rotation: int, max_height: int | None) -> tuple[int, int]:
    """Independent statement of the sizing rule: rotate, scale down (never up), even sides."""
    w, h = (src_h, src_w) if rotation % 180 else (src_w, src_h)
    if max_height and h > max_height:
        return round(w * max_height / h / 2) * 2, max_height
    return w - w % 2, h - h % 2


def test_samples_are_present() -> None:
    assert len(SAMPLE_FILES) >= 6


@pytest.mark.parametrize("profile_name", VIDEO_PROFILES)
@pytest.mark.parametrize("sample", SAMPLE_FILES)
def test_round_trip(sample: str, profile_name: str, tmp_path: Path) -> None:
    src = SAMPLES / sample
    profile = load_profile(profile_name)
    before = src.read_bytes()
    out = tmp_path / f"out.{profile.extension}"
    report = transcode(src, profile, out, gpu="none")
    assert src.read_bytes() == before  # the source is never modified
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temp files left beside it

    s, o = read_back(src), read_back(out)
    assert o.video_codec in (CODEC_NAMES[profile.video.codec], profile.video.codec)
    assert (o.width, o.height) == expected_size(s.width, s.height, s.rotation,
                                                profile.video.max_height)
    assert o.frames == s.frames
    assert o.rotation == 0  # pixels were turned, so no display matrix may remain
    assert abs(o.pts[-1] - s.pts[-1]) < 0.05 and abs(o.pts[0] - s.pts[0]) < 0.05
    assert o.duration is not None and s.duration is not None and abs(o.duration - s.duration) < 0.2
    # all audio tracks kept with their languages (codec per profile, or copied when it fits)
    assert [lang for _, lang in o.audio] == [lang for _, lang in s.audio]
    assert all(codec == profile.audio.codec for codec, _ in o.audio)
    assert o.pix_fmt == "yuv420p"  # 8-bit output, also from the 10-bit source
    assert s.chapters == o.chapters
    if "title" in s.metadata:
        assert o.metadata.get("title") == s.metadata["title"]

    d = report.to_dict()
    assert d["outputs"][0]["frames"] == s.frames
    assert d["outputs"][0]["path"] == str(out)
    assert d["plan"]["outputs"][0]["video"]["encoder"] in ("libx264", "libx265", "libsvtav1")
    assert d["plan"]["fallbacks"] == d["fallbacks"]


def test_vfr_timestamps_are_preserved(tmp_path: Path) -> None:
    src = SAMPLES / "vfr.mkv"
    out = tmp_path / "vfr.mp4"
    transcode(src, load_profile("h264"), out, gpu="none")
    s, o = read_back(src), read_back(out)
    assert len(set(round(b - a, 3) for a, b in zip(s.pts, s.pts[1:], strict=False))) > 1
    assert o.pts == pytest.approx(s.pts, abs=0.002)


def test_subtitles_copied_into_mkv_and_converted_for_mp4(tmp_path: Path) -> None:
    src = SAMPLES / "subs.mkv"
    mkv = tmp_path / "subs.mkv"
    transcode(src, load_profile("av1"), mkv, gpu="none")
    assert read_back(mkv).subtitles == read_back(src).subtitles != []
    # MP4 cannot hold SRT: it becomes mov_text (cue-level checks are in test_subtitles.py).
    report = transcode(src, load_profile("h264"), tmp_path / "subs.mp4", gpu="none")
    assert read_back(tmp_path / "subs.mp4").subtitles == ["mov_text"]
    assert not any("subtitle" in w for w in report.warnings)


def test_ten_bit_kept_when_profile_asks(tmp_path: Path) -> None:
    prof = tmp_path / "hevc10.toml"
    prof.write_text("container = 'mkv'\n[video]\ncodec = 'hevc'\nbit_depth = 10\nspeed = 'fastest'\n")
    out = tmp_path / "out.mkv"
    transcode(SAMPLES / "tenbit_hevc.mkv", load_profile(str(prof)), out, gpu="none")
    assert read_back(out).pix_fmt == "yuv420p10le"


def test_audio_none_drops_audio_and_copy_copies(tmp_path: Path) -> None:
    prof = tmp_path / "mute.toml"
    prof.write_text("[video]\nspeed = 'fastest'\n[audio]\ncodec = 'none'\n")
    out = tmp_path / "mute.mp4"
    transcode(SAMPLES / "h264_aac.mp4", load_profile(str(prof)), out, gpu="none")
    assert read_back(out).audio == []
    prof.write_text("[video]\nspeed = 'fastest'\n[audio]\ncodec = 'copy'\n")
    out2 = tmp_path / "copy.mp4"
    report = transcode(SAMPLES / "subs.mkv", load_profile(str(prof)), out2, gpu="none")
    actions = [(a.source_codec, a.action) for a in report.plan.audio]
    assert actions == [("aac", "copy"), ("opus", "copy")]  # both fit in MP4
    assert [c for c, _ in read_back(out2).audio] == ["aac", "opus"]


def test_video_copy_remuxes_packets(tmp_path: Path) -> None:
    prof = tmp_path / "remux.toml"
    prof.write_text("container = 'mkv'\n[video]\ncodec = 'copy'\n[audio]\ncodec = 'copy'\n")
    out = tmp_path / "remux.mkv"
    report = transcode(SAMPLES / "h264_aac.mp4", load_profile(str(prof)), out, gpu="none")
    assert report.plan.video.action == "copy"
    s, o = read_back(SAMPLES / "h264_aac.mp4"), read_back(out)
    assert (o.video_codec, o.frames, o.width) == ("h264", s.frames, s.width)


def video_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]


@pytest.mark.parametrize(("sample", "profile", "tag"), [
    ("h264_aac.mp4", "[video]\ncodec = 'h264'", "avc1"),
    ("rotated.mp4", "[video]\ncodec = 'h264'\nmax_height = 320", "avc1"),  # rotation tag kept
    ("tenbit_hevc.mkv", "[video]\ncodec = 'hevc'\nbit_depth = 10", "hvc1"),  # Apple's HEVC tag
])
def test_copy_if_matching_remuxes_the_video_untouched(sample: str, profile: str, tag: str,
                                                      tmp_path: Path) -> None:
    prof = tmp_path / "p.toml"
    prof.write_text(f"{profile}\ncopy_if_matching = true\nspeed = 'fastest'\n")
    out = tmp_path / "out.mp4"
    report = transcode(SAMPLES / sample, load_profile(str(prof)), out, gpu="none")
    assert report.plan.video.action == "copy"
    assert video_packets(out) == video_packets(SAMPLES / sample)
    s, o = read_back(SAMPLES / sample), read_back(out)
    assert (o.frames, o.width, o.height, o.pix_fmt, o.rotation) == (
        s.frames, s.width, s.height, s.pix_fmt, s.rotation)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_tag == tag


def test_copy_if_matching_encodes_what_does_not_match(tmp_path: Path) -> None:
    prof = tmp_path / "p.toml"
    prof.write_text("[video]\ncodec = 'h264'\ncopy_if_matching = true\nmax_height = 90\n"
                    "speed = 'fastest'\n")
    out = tmp_path / "out.mp4"
    report = transcode(SAMPLES / "h264_aac.mp4", load_profile(str(prof)), out, gpu="none")
    assert report.plan.video.action == "encode"
    assert (read_back(out).height, read_back(out).frames) == (90, read_back(SAMPLES / "h264_aac.mp4").frames)


def test_the_report_gives_each_outputs_measured_video_bit_rate(tmp_path: Path) -> None:
    """#12: the report lists each output with its measured bit rate: the video packets' bytes
    over the video's span, as the independent ffmpeg demuxes the file."""
    src = camera_clip(tmp_path / "cam.mp4", seconds=2)
    out = tmp_path / "out.mkv"
    report = transcode_report(str(src), "-p", str(write_profile(tmp_path, FAST_PROFILE)), "-o",
                              str(out), "--gpu", "none")
    crc = ffmpeg("-v", "error", "-i", str(out), "-map", "0:v:0", "-c", "copy", "-f", "framecrc",
                 "-").stdout
    rows = [[x.strip() for x in line.split(",")] for line in crc.splitlines()
            if line and not line.startswith("#")]
    tb = Fraction(re.search(r"#tb 0: (\d+/\d+)", crc)[1])  # type: ignore[index]
    start = min(int(r[2]) for r in rows)
    end = max(int(r[2]) + int(r[3]) for r in rows)
    expected = sum(int(r[4]) for r in rows) * 8 / float((end - start) * tb)
    (output,) = report["outputs"]
    assert abs(output["video_bit_rate"] - expected) / expected < 0.01, (output, expected)
    text = run_cli("transcode", str(src), "-p", str(write_profile(tmp_path, FAST_PROFILE)), "-o",
                   str(tmp_path / "again.mkv"), "--gpu", "none").stdout
    assert f", {output['video_bit_rate'] // 1000}k video" in text
