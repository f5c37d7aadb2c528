"""Subtitle streams: copied where the container holds them, text converted, bitmaps dropped."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import pytest
from av.subtitles.subtitle import SubtitleSet
from conftest import SAMPLES, ffmpeg, make_clip, read_back, run_cli, stream_start

from mediad.media.job import transcode
from mediad.profiles import Profile, load_profile

MS = Fraction(1, 1000)
# The three cues of samples/subs.mkv (make_samples.SRT_TEXT): start s, end s, text.
SOURCE_CUES = [(0.2, 0.9, "Hello from mediad."), (1.0, 1.6, "Second cue, italic."),
               (1.7, 2.3, "Third cue: the end.")]
FAST_MP4 = "[video]\nspeed = 'fastest'\n"
REMUX_MKV = "container = 'mkv'\n[video]\ncodec = 'copy'\n[audio]\ncodec = 'copy'\n"


def _profile(tmp_path: Path, text: str, name: str = "p") -> Profile:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return load_profile(str(path))


def _decoded(path: Path) -> list[tuple[float, float, bytes]]:
    """(start s, end s, ASS dialogue) of every cue, timed from the first picture.

    Timed from the picture because a muxer may shift every stream alike (Matroska does when
    copied AAC starts before zero); what must survive is the cues' place against the video.
    """
    with av.open(str(path)) as c:
        zero = next(c.decode(video=0)).time
    with av.open(str(path)) as c:
        (s,) = c.streams.subtitles
        cues = []
        for packet in c.demux(s):
            if packet.size == 0:
                continue
            subset = s.codec_context.decode2(packet)
            if subset is None or len(subset) == 0:
                continue  # mov_text gap samples between cues
            at = subset.pts / 1e6 - zero
            cues.append((at + subset.start_display_time / 1000, at + subset.end_display_time / 1000,
                         b"\\N".join(r.dialogue for r in subset)))
    return cues


def _cues(path: Path) -> list[tuple[float, float, str]]:
    """Cues as (start, end, text) with ASS override tags ({\\i1} ...) removed."""
    return [(a, b, re.sub(rb"\{\\[^}]*\}", b"", t).decode()) for a, b, t in _decoded(path)]


def _assert_same_cues(got: list[tuple[float, float, str]],
                      want: list[tuple[float, float, str]]) -> None:
    assert [t for _, _, t in got] == [t for _, _, t in want]
    for (a, b, _), (c, d, _) in zip(got, want, strict=True):
        assert a == pytest.approx(c, abs=0.001) and b == pytest.approx(d, abs=0.001)


def _sub_stream(path: Path) -> tuple[str, dict[str, str]]:
    with av.open(str(path)) as c:
        (s,) = c.streams.subtitles
        return s.codec_context.name, dict(s.metadata)


def _sub_packets(path: Path) -> list[tuple[int, int, bytes]]:
    """(pts, duration, payload) of the subtitle packets, in ms."""
    with av.open(str(path)) as c:
        (s,) = c.streams.subtitles
        return [(round(p.pts * p.time_base * 1000), round(p.duration * p.time_base * 1000),
                 bytes(p)) for p in c.demux(s) if p.size]


def _mkv_with_subs(path: Path, codec: str, cues: list[tuple[int, int, bytes]],
                   language: str = "eng") -> Path:
    """A 2.4 s H.264 clip in Matroska with one subtitle stream of ready-made packets (ms)."""
    def add(out: av.container.OutputContainer) -> None:
        sub = out.add_mux_stream(codec, time_base=MS)
        sub.metadata["language"] = language
        for start, duration, data in cues:
            packet = av.Packet(data)
            packet.pts = packet.dts = start
            packet.duration, packet.time_base, packet.stream = duration, MS, sub
            out.mux(packet)

    return _mkv_with(path, add)


def _mkv_with(path: Path, add_subtitles: Callable[[av.container.OutputContainer], None]) -> Path:
    """A 2.4 s H.264 clip in Matroska plus the subtitle stream `add_subtitles` adds and muxes."""
    clip = make_clip(path.with_name(path.stem + ".clip.mkv"), frames=60, audio=False)
    with av.open(str(clip)) as src, av.open(str(path), "w") as out:
        ist = src.streams.video[0]
        video = out.add_stream_from_template(ist)
        add_subtitles(out)
        for packet in src.demux(ist):
            if packet.size:
                packet.stream = video
                out.mux(packet)
    clip.unlink()
    return path


def _mkv_with_ass(path: Path) -> Path:
    """A 2.4 s clip with an ASS track (jpn, titled) whose second cue uses a bold, bigger style."""
    header = (b"[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n[V4+ Styles]\n"
              b"Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, "
              b"BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, "
              b"BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n"
              b"Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,1\n"
              b"Style: Sign,Arial,20,&H00ffff,&Hffffff,&H0,&H0,1,0,0,0,100,100,0,0,1,1,0,8,10,10,10,1\n"
              b"\n[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, "
              b"Effect, Text\n")

    def add(out: av.container.OutputContainer) -> None:
        sub = out.add_stream("ass")
        sub.codec_context.time_base, sub.codec_context.subtitle_header = MS, header
        sub.metadata.update({"language": "jpn", "title": "Signs"})
        for start, end, event in [(200, 900, b"0,0,Default,,0,0,0,,Plain line"),
                                  (1000, 1600, b"1,0,Sign,,0,0,0,,{\\pos(10,10)}A sign")]:
            packet = sub.codec_context.encode_subtitle(SubtitleSet.create(event, 0, end - start, start))
            packet.time_base, packet.stream = MS, sub
            out.mux(packet)

    return _mkv_with(path, add)


def _dvd_spu(width: int = 16, height: int = 2, shown_s: float = 1.0) -> bytes:
    """A minimal DVD subpicture (VobSub packet): a `width`x`height` bar in colour 1.

    Layout: size, offset of the control sequences, RLE lines of the top then the bottom field
    (code 0x0001 = "colour 1 to the end of the line"), then two control sequences: show (with
    palette, alpha, coordinates, field offsets) at once and hide after `shown_s`.
    """
    rle = b"\x00\x01" * (height // 2)
    top, bottom, first = 4, 4 + len(rle), 4 + 2 * len(rle)
    coords = bytes([0, (width - 1) >> 8, (width - 1) & 0xFF, 0, (height - 1) >> 8, (height - 1) & 0xFF])
    show = (b"\x01" + b"\x03\x01\x23" + b"\x04\xff\xf0" + b"\x05" + coords
            + b"\x06" + struct.pack(">HH", top, bottom) + b"\xff")
    second = first + 4 + len(show)
    body = (rle + rle + struct.pack(">HH", 0, second) + show
            + struct.pack(">HH", round(shown_s * 90000 / 1024), second) + b"\x02\xff")
    return struct.pack(">HH", 4 + len(body), first) + body


def test_srt_in_mkv_becomes_mov_text_in_mp4_with_same_cues(tmp_path: Path) -> None:
    src = SAMPLES / "subs.mkv"
    _assert_same_cues(_cues(src), SOURCE_CUES)
    out = tmp_path / "subs.mp4"
    report = transcode(src, _profile(tmp_path, FAST_MP4), out, gpu="none")
    (sp,) = report.plan.subtitles
    assert (sp.action, sp.source_codec, sp.codec) == ("convert", "srt", "mov_text")
    assert "converted to mov_text" in sp.reason
    assert report.to_dict()["plan"]["subtitles"][0]["action"] == "convert"
    assert not any("subtitle" in w for w in report.warnings)
    codec, tags = _sub_stream(out)
    assert codec == "mov_text" and tags["language"] == "eng"
    _assert_same_cues(_cues(out), _cues(src))
    assert b"{\\i1}italic" in _decoded(out)[1][2]  # the italic span survives as a tx3g style
    assert read_back(out).frames == read_back(src).frames


@pytest.mark.parametrize(("container", "extra", "codec"), [
    ("mov", "", "mov_text"),
    ("webm", "codec = 'av1'\n[audio]\ncodec = 'opus'\n", "webvtt"),
])
def test_srt_converted_for_mov_and_webm(tmp_path: Path, container: str, extra: str,
                                        codec: str) -> None:
    prof = _profile(tmp_path, f"container = '{container}'\n[video]\nspeed = 'fastest'\n{extra}")
    out = tmp_path / f"subs.{container}"
    report = transcode(SAMPLES / "subs.mkv", prof, out, gpu="none")
    assert [(s.action, s.codec) for s in report.plan.subtitles] == [("convert", codec)]
    assert _sub_stream(out)[0] == codec and _sub_stream(out)[1]["language"] == "eng"
    _assert_same_cues(_cues(out), SOURCE_CUES)


def test_ass_in_mkv_becomes_mov_text_keeping_cues_style_and_tags(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    src = _mkv_with_ass(tmp_path / "in" / "ass.mkv")
    assert _sub_stream(src)[0] == "ssa"  # FFmpeg's decoder for ASS is named ssa
    out = tmp_path / "ass.mp4"
    report = transcode(src, _profile(tmp_path, FAST_MP4), out, gpu="none")
    (sp,) = report.plan.subtitles
    assert (sp.action, sp.codec) == ("convert", "mov_text") and "positioning" in sp.reason
    codec, tags = _sub_stream(out)
    # MP4 stores a track title as its name; FFmpeg reads it back under that key.
    assert codec == "mov_text" and tags["language"] == "jpn" and tags.get("name") == "Signs"
    _assert_same_cues(_cues(out), [(0.2, 0.9, "Plain line"), (1.0, 1.6, "A sign")])
    assert b"{\\b1}" in _decoded(out)[1][2]  # the Sign style's bold became a tx3g style


def test_mov_text_in_mp4_becomes_subrip_in_mkv_with_same_cues(tmp_path: Path) -> None:
    mp4 = tmp_path / "subs.mp4"
    transcode(SAMPLES / "subs.mkv", _profile(tmp_path, FAST_MP4), mp4, gpu="none")
    assert _sub_stream(mp4)[0] == "mov_text"
    out = tmp_path / "back.mkv"
    report = transcode(mp4, _profile(tmp_path, REMUX_MKV, "remux"), out, gpu="none")
    assert [(s.action, s.codec) for s in report.plan.subtitles] == [("convert", "subrip")]
    codec, tags = _sub_stream(out)
    assert codec in ("srt", "subrip") and tags["language"] == "eng"
    _assert_same_cues(_cues(out), SOURCE_CUES)
    # SRT -> tx3g -> SRT gives the source's packets back, italics included.
    assert [p[2] for p in _sub_packets(out)] == [p[2] for p in _sub_packets(SAMPLES / "subs.mkv")]


def test_mkv_to_mkv_still_copies_subtitle_packets(tmp_path: Path) -> None:
    src = SAMPLES / "subs.mkv"
    out = tmp_path / "copy.mkv"
    report = transcode(src, _profile(tmp_path, REMUX_MKV), out, gpu="none")
    assert [(s.action, s.codec) for s in report.plan.subtitles] == [("copy", "srt")]
    assert _sub_packets(out) == _sub_packets(src)
    assert _sub_stream(out)[1]["language"] == "eng"


def test_bitmap_subtitles_dropped_for_mp4_and_copied_into_mkv(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    src = _mkv_with_subs(tmp_path / "in" / "dvd.mkv", "dvd_subtitle",
                         [(200, 1000, _dvd_spu()), (1300, 1000, _dvd_spu())], language="fra")
    with av.open(str(src)) as c:  # the hand-made VobSub really decodes to a bitmap
        (s,) = c.streams.subtitles
        rects = [r for p in c.demux(s) if p.size for r in s.codec_context.decode2(p)]
    assert [(r.type, r.width, r.height) for r in rects] == [(b"bitmap", 16, 2)] * 2

    mp4 = tmp_path / "dvd.mp4"
    report = transcode(src, _profile(tmp_path, FAST_MP4), mp4, gpu="none")
    assert [s.action for s in report.plan.subtitles] == ["drop"]
    assert read_back(mp4).subtitles == []
    assert any("dvdsub" in w and "bitmap" in w for w in report.warnings)

    mkv = tmp_path / "dvd.mkv"
    report = transcode(src, _profile(tmp_path, REMUX_MKV, "remux"), mkv, gpu="none")
    assert [s.action for s in report.plan.subtitles] == ["copy"]  # dvdsub is dvd_subtitle
    assert _sub_packets(mkv) == _sub_packets(src)


def test_dvb_bitmap_subtitles_of_a_recording_are_copied_into_mkv(tmp_path: Path) -> None:
    """QA: a DVB recording's bitmap subtitles were dropped from MKV output ("mkv cannot hold
    dvbsub subtitles"); Matroska holds them, and `ffmpeg -c copy` keeps them."""
    (tmp_path / "in").mkdir()
    dvd = _mkv_with_subs(tmp_path / "in" / "dvd.mkv", "dvd_subtitle",
                         [(200, 1000, _dvd_spu()), (1300, 1000, _dvd_spu())], language="fra")
    recording = tmp_path / "in" / "dvb.ts"
    ffmpeg("-y", "-i", str(dvd), "-map", "0", "-c:v", "copy", "-c:a", "copy", "-c:s", "dvbsub",
           str(recording))
    out, theirs = tmp_path / "dvb.mkv", tmp_path / "theirs.mkv"
    report = transcode(recording, _profile(tmp_path, REMUX_MKV, "remux"), out, gpu="none")
    assert [(s.action, s.source_codec) for s in report.plan.subtitles] == [("copy", "dvbsub")]
    assert not any("subtitle" in w for w in report.warnings)
    ffmpeg("-y", "-i", str(recording), "-map", "0", "-c", "copy", str(theirs))
    assert _sub_stream(out) == _sub_stream(theirs)
    assert len(_sub_packets(out)) == len(_sub_packets(theirs)) > 0


def test_malformed_cue_is_skipped_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    src = _mkv_with_subs(tmp_path / "in" / "bad.mkv", "subrip", [
        (200, 500, b"First."), (1000, 500, b"\xff\xfe not UTF-8"), (1700, 500, b"Last.")])
    out = tmp_path / "bad.mp4"
    res = run_cli("transcode", str(src), "-o", str(out), "--gpu", "none")
    assert res.returncode == 0, res.stderr
    assert "event=subtitle_cue_skipped" in res.stderr and "at=1.000s" in res.stderr
    # the report says so too, not only the log
    assert re.search(r"warning: subtitle stream #1: 1 cue skipped in the conversion to mov_text "
                     r"\(first: at 1\.000s: undecodable", res.stdout), res.stdout
    _assert_same_cues(_cues(out), [(0.2, 0.7, "First."), (1.7, 2.2, "Last.")])


def test_a_cue_that_another_starts_with_is_counted_as_skipped_in_mov_text(
        tmp_path: Path) -> None:
    """mov_text cannot overlap: of two cues that start together, the one that came first is
    not shown, and the report counts it among the cues skipped (it was dropped silently)."""
    (tmp_path / "in").mkdir()
    src = _mkv_with_subs(tmp_path / "in" / "same.mkv", "subrip", [
        (200, 800, b"First."), (200, 500, b"Same start."), (1700, 500, b"Last.")])
    out = tmp_path / "same.mp4"
    report = transcode(src, _profile(tmp_path, FAST_MP4), out, gpu="none")
    assert [w for w in report.warnings if w.startswith("subtitle stream")] == [
        "subtitle stream #1: 1 cue skipped in the conversion to mov_text (first: at 0.200s: "
        "another cue starts with it (mov_text cannot overlap))"]
    _assert_same_cues(_cues(out), [(0.2, 0.7, "Same start."), (1.7, 2.2, "Last.")])


def test_cues_without_duration_last_until_the_next(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    src = _mkv_with_subs(tmp_path / "in" / "open.mkv", "subrip",
                         [(200, 0, b"One."), (1000, 0, b"Two.")])
    out = tmp_path / "open.mp4"
    transcode(src, _profile(tmp_path, FAST_MP4), out, gpu="none")
    with av.open(str(src)) as c:
        end = (c.start_time + c.duration) / 1e6  # the last cue is shown until the input ends
    _assert_same_cues(_cues(out), [(0.2, 1.0, "One."), (1.0, end, "Two.")])


def test_plan_shows_the_conversion(tmp_path: Path) -> None:
    res = run_cli("plan", str(SAMPLES / "subs.mkv"), "-o", str(tmp_path / "o.mp4"))
    assert res.returncode == 0, res.stderr
    assert ("subs:    #3 srt convert -> mov_text [eng] - mp4 cannot hold srt subtitles: "
            "converted to mov_text") in res.stdout
    assert "warning: subtitle" not in res.stdout
    data = json.loads(run_cli("plan", str(SAMPLES / "subs.mkv"), "-p", "av1", "--json").stdout)
    assert [(s["action"], s["codec"]) for s in data["subtitles"]] == [("copy", "srt")]


@pytest.mark.parametrize("suffix", ["mp4", "mkv"])
def test_a_cue_ahead_of_the_picture_does_not_move_the_output_late(tmp_path: Path,
                                                                  suffix: str) -> None:
    """QA: subtitles starting 1.5 s before the picture and sound (an SRT timed to a longer
    cut) moved the whole output 1.5 s late, against "the output starts at 0". As libavformat
    (and so ffmpeg) does, a subtitle starts the output only within 1 s of the rest; a cue
    over before the picture is left out, one running into it is shown from 0."""
    srt = tmp_path / "cues.srt"
    srt.write_text("1\n00:00:00,500 --> 00:00:01,800\nGone before\n\n"
                   "2\n00:00:01,500 --> 00:00:03,000\nInto the picture\n\n"
                   "3\n00:00:03,500 --> 00:00:05,500\nLater\n\n")
    src = tmp_path / "ahead.mkv"
    clip = make_clip(tmp_path / "clip.mp4", frames=75)
    ffmpeg("-y", "-itsoffset", "2", "-i", str(clip), "-i", str(srt), "-map", "0", "-map", "1",
           "-c", "copy", str(src))
    out = tmp_path / f"out.{suffix}"
    profile = "container = 'mkv'\n[video]\nspeed = 'fastest'\n" if suffix == "mkv" else FAST_MP4
    transcode(src, _profile(tmp_path, profile), out, gpu="none")
    assert abs(stream_start(out, "0:v:0")) < 0.05  # the picture starts the output
    _assert_same_cues(_cues(out), [(0.0, 1.0, "Into the picture"), (1.5, 3.5, "Later")])
