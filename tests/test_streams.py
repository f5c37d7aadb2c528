"""Streams and containers as remuxers expect them: `-o` picks the container, track flags,
fonts and cover art survive, `probe` says what is there. Outputs are read back by the
independent ffmpeg."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import (
    camera_clip,
    ffmpeg,
    ffmpeg_bytes,
    ffmpeg_exe,
    ffmpeg_info,
    run_cli,
    transcode_report,
    write_profile,
)

SMALL = 'container = "{c}"\n[video]\ncodec = "{v}"\nspeed = "fastest"\n[audio]\ncodec = "{a}"\n'
COPY = 'container = "mkv"\n[video]\ncodec = "copy"\n[audio]\ncodec = "copy"\n'
ASS = """[Script Info]
ScriptType: v4.00+

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, \
Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, \
Shadow, Alignment, MarginL, MarginR, MarginV, Encoding
Style: Default,Fansub Sans,20,&H00FFFFFF,&H000000FF,&H00000000,&H00000000,0,0,0,0,100,100,0,0,\
1,1,0,2,10,10,10,1

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: 0,0:00:00.50,0:00:01.50,Default,,0,0,0,,{\\fnFansub Sans}Hello
"""


def _format(path: Path) -> str:
    m = re.search(r"Input #0, ([\w,]+), from", ffmpeg_info(path))
    assert m, ffmpeg_info(path)
    return m[1]


def _streams(path: Path) -> list[str]:
    return [ln.strip() for ln in ffmpeg_info(path).splitlines() if "Stream #" in ln]


@pytest.fixture(scope="module")
def fansub(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A fansub-style MKV: two audio tracks (the second one default), a forced ASS track, its
    font and a cover picture as attachments; and an MP4 with cover art."""
    d = tmp_path_factory.mktemp("fansub")
    video = camera_clip(d / "video.mkv", seconds=2, audio=False)
    (d / "subs.ass").write_text(ASS)
    font = d / "FansubSans.ttf"
    font.write_bytes(bytes(range(256)) * 20)  # stands in for a font: only its bytes matter
    cover = d / "cover.jpg"
    ffmpeg("-y", "-f", "lavfi", "-i", "testsrc2=s=200x200", "-frames:v", "1", str(cover))
    mkv = d / "fansub.mkv"
    ffmpeg("-y", "-i", str(video), "-f", "lavfi", "-i", "sine=f=440:d=2", "-f", "lavfi", "-i",
           "sine=f=660:d=2", "-i", str(d / "subs.ass"), "-map", "0:v", "-map", "1:a", "-map",
           "2:a", "-map", "3:s", "-c:v", "copy", "-c:a", "aac", "-c:s", "ass",
           "-metadata:s:a:0", "language=jpn", "-metadata:s:a:1", "language=eng",
           "-disposition:a:0", "0", "-disposition:a:1", "default", "-disposition:s:0", "forced",
           "-attach", str(font), "-metadata:s:t:0", "mimetype=font/ttf",
           "-attach", str(cover), "-metadata:s:t:1", "mimetype=image/jpeg",
           "-metadata:s:t:1", "filename=cover.jpg", str(mkv))
    mp4 = d / "cover.mp4"
    ffmpeg("-y", "-i", str(video), "-i", str(cover), "-map", "0:v", "-map", "1", "-c", "copy",
           "-disposition:v:1", "attached_pic", str(mp4))
    return {"mkv": mkv, "mp4": mp4, "font": font, "cover": cover}


def test_output_extension_picks_the_container(tmp_path: Path) -> None:
    """`-o x.mkv` with an MP4 profile writes Matroska, as ffmpeg and HandBrake do."""
    src = camera_clip(tmp_path / "in.mp4", seconds=1)
    out = tmp_path / "out.mkv"
    plan = run_cli("plan", str(src), "-o", str(out), "--gpu", "none")
    assert "note:    container mkv from the output name (profile h264 writes mp4)" in plan.stdout
    res = run_cli("transcode", str(src), "-o", str(out), "--gpu", "none", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert _format(out) == "matroska,webm"
    # AV1 + Opus (the av1 profile writes mkv) fit MP4.
    out = tmp_path / "av1.mp4"
    res = run_cli("transcode", str(src), "-p",
                  str(write_profile(tmp_path, SMALL.format(c="mkv", v="av1", a="opus"))), "-o",
                  str(out), "--gpu", "none", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert _format(out).startswith("mov,mp4")
    assert any("Video: av1" in s for s in _streams(out)) and any("Audio: opus" in s
                                                                 for s in _streams(out))


@pytest.mark.parametrize("profile,out,stream", [
    ("h264", "out.webm", "video #0 (encoded to h264) does not fit webm"),
    (SMALL.format(c="mkv", v="h264", a="opus"), "out.mov", "audio #1 (encoded to opus) does not "
                                                          "fit mov"),
    ('container = "mkv"\n[video]\ncodec = "copy"\n', "out.webm",
     "video #0 (h264, copied) does not fit webm"),
])
def test_output_extension_that_does_not_fit_names_the_stream(tmp_path: Path, profile: str,
                                                             out: str, stream: str) -> None:
    src = camera_clip(tmp_path / "in.mp4", seconds=1)
    if "\n" in profile:
        profile = str(write_profile(tmp_path, profile))
    for command in ("transcode", "plan"):
        res = run_cli(command, str(src), "-p", profile, "-o", str(tmp_path / out), "--gpu",
                      "none")
        assert res.returncode == 1
        assert res.stderr == f"mediad: error: {src}: {stream} (profile " \
            f"{Path(profile).stem}: use another container or " \
            f"{'re-encode' if 'copied' in stream else 'profile'})\n", res.stderr
    assert not (tmp_path / out).exists()


def test_track_flags_are_kept(fansub: dict[str, Path], tmp_path: Path) -> None:
    """Matroska default/forced flags survive a copy and an encode."""
    src = _streams(fansub["mkv"])
    assert "(default)" not in src[1] and "(default)" in src[2] and "(forced)" in src[3]
    for profile, suffix in ((COPY, "mkv"),
                            (SMALL.format(c="mkv", v="h264", a="aac"), "mkv"),
                            (SMALL.format(c="mp4", v="h264", a="aac"), "mp4")):
        out = tmp_path / f"out.{suffix}"
        res = run_cli("transcode", str(fansub["mkv"]), "-p", str(write_profile(tmp_path, profile)),
                      "-o", str(out), "--gpu", "none", "--no-progress", "--overwrite")
        assert res.returncode == 0, res.stderr
        streams = _streams(out)
        audio = [s for s in streams if "Audio:" in s]
        subs = [s for s in streams if "Subtitle:" in s]
        assert "(jpn)" in audio[0] and "(default)" not in audio[0], streams
        assert "(eng)" in audio[1] and "(default)" in audio[1], streams
        assert "(forced)" in subs[0], streams


def _cover(path: Path) -> bytes:
    """The cover picture the independent ffmpeg finds (an attached-picture stream, which is
    how its Matroska demuxer shows an image attachment too)."""
    assert "(attached pic)" in next(s for s in _streams(path) if "mjpeg" in s)
    return ffmpeg_bytes("-i", str(path), "-map", "0:v:1", "-c", "copy", "-f", "image2pipe", "-")


def _dumped_attachments(path: Path, into: Path) -> dict[str, bytes]:
    """The attachment files (fonts) the independent ffmpeg finds, by file name."""
    into.mkdir()
    subprocess.run([ffmpeg_exe(), "-nostdin", "-dump_attachment:t", "", "-i", str(path)],
                   cwd=into, capture_output=True, timeout=60)
    return {p.name: p.read_bytes() for p in into.iterdir()}


def test_fonts_and_cover_art_are_kept_in_matroska(fansub: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.mkv"
    res = run_cli("transcode", str(fansub["mkv"]), "-p",
                  str(write_profile(tmp_path, SMALL.format(c="mkv", v="h264", a="copy"))), "-o",
                  str(out), "--gpu", "none", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert _dumped_attachments(out, tmp_path / "dump") == \
        {"FansubSans.ttf": fansub["font"].read_bytes()}
    assert _cover(out) == fansub["cover"].read_bytes()


def test_mp4_keeps_cover_art_and_warns_about_fonts(fansub: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    warnings = transcode_report(str(fansub["mkv"]), "-o", str(out), "--gpu", "none")["warnings"]
    assert "1 attachment(s) dropped (FansubSans.ttf): mp4 cannot hold attachments (fonts for " \
           "ASS subtitles need mkv)" in warnings
    assert _cover(out) == fansub["cover"].read_bytes()
    # From an MP4 cover to Matroska (an attachment) and to WebM (no room: warned).
    res = run_cli("transcode", str(fansub["mp4"]), "-o", str(tmp_path / "c.mkv"), "--gpu",
                  "none", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert _cover(tmp_path / "c.mkv") == fansub["cover"].read_bytes()
    res = run_cli("transcode", str(fansub["mp4"]), "-p",
                  str(write_profile(tmp_path, SMALL.format(c="webm", v="av1", a="opus"))), "-o",
                  str(tmp_path / "c.webm"), "--gpu", "none", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "warning: cover art #1 (mjpeg) dropped: webm cannot hold attached pictures" in res.stdout
    # FFmpeg's mov muxer writes cover art only in MP4 mode: a MOV loses it, and says so.
    res = run_cli("transcode", str(fansub["mp4"]), "-o", str(tmp_path / "c.mov"), "--gpu",
                  "none", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "warning: cover art #1 (mjpeg) dropped: mov cannot hold attached pictures" in res.stdout
    assert not any("attached pic" in s for s in _streams(tmp_path / "c.mov"))


def test_probe_lists_attachments_flags_and_rates(fansub: dict[str, Path]) -> None:
    data = json.loads(run_cli("probe", str(fansub["mkv"]), "--json").stdout)
    assert [(a["filename"], a["mimetype"]) for a in data["attachments"]] == \
        [("FansubSans.ttf", "font/ttf")]
    assert [(c["codec"], c["width"]) for c in data["cover_art"]] == [("mjpeg", 200)]
    assert [a["dispositions"] for a in data["audio"]] == [[], ["default"]]
    assert data["subtitles"][0]["dispositions"] == ["forced"]
    v = data["video"][0]
    # Matroska without BPS tags has no video rate of its own: only an estimate, named as such.
    assert v["bit_rate"] is None and v["bit_rate_estimate"] > 0
    assert v["field_order"] == "progressive" and v["display_aspect_ratio"] == "16/9"
    text = run_cli("probe", str(fansub["mkv"])).stdout
    assert "attachment #4: FansubSans.ttf (font/ttf, 5120 bytes)" in text
    assert "cover art #5: mjpeg 200x200" in text
    assert "(file rate less audio)" in text
    mp4 = json.loads(run_cli("probe", str(fansub["mp4"]), "--json").stdout)
    assert mp4["video"][0]["bit_rate"] > 0  # MP4 knows each track's rate


@pytest.mark.parametrize("first", ["cover", "font"])
def test_matroska_attachments_keep_the_sources_order(tmp_path: Path, first: str) -> None:
    """QA: a cover picture and a font attached to an MKV came out in a fixed order, whatever
    the source's (a single transcode put the cover first, a ladder's files the font): as
    `ffmpeg -map 0` does, they keep the source's order."""
    video = camera_clip(tmp_path / "v.mkv", seconds=1)
    font, cover = tmp_path / "f.ttf", tmp_path / "cover.jpg"
    font.write_bytes(b"\0\1\0\0" + bytes(96))
    ffmpeg("-y", "-f", "lavfi", "-i", "color=c=red:s=64x64", "-frames:v", "1", str(cover))
    attach = {"font": ["-attach", str(font)], "cover": ["-attach", str(cover)]}
    mime = {"font": "font/ttf", "cover": "image/jpeg"}
    order = [first, "font" if first == "cover" else "cover"]
    args = [a for kind in order for a in attach[kind]]
    args += [a for i, kind in enumerate(order) for a in (f"-metadata:s:t:{i}", f"mimetype={mime[kind]}")]
    src = tmp_path / "src.mkv"
    ffmpeg("-y", "-i", str(video), "-map", "0", "-c", "copy", *args, str(src))
    out = tmp_path / "out.mkv"
    transcode_report(str(src), "-p", str(write_profile(tmp_path, COPY)), "-o", str(out),
                     "--gpu", "none")

    def kinds(path: Path) -> list[str]:
        return ["cover" if "attached pic" in s else "font"
                for s in _streams(path) if "attached pic" in s or "Attachment" in s]

    assert kinds(src) == order
    assert kinds(out) == order


def test_a_start_timecode_is_kept_as_ffmpeg_keeps_it(tmp_path: Path) -> None:
    """A camera's MOV with a timecode track (tmcd, 01:00:00:00): the ffmpeg CLI writes it into
    MP4 and MOV as a tmcd track and into Matroska as a TIMECODE tag, video encoded or copied;
    mediad dropped it without a word. A container without one, and the data streams not
    kept, are warned of."""
    source = tmp_path / "camera.mov"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x180:r=25:d=2", "-c:v", "libx264", "-preset",
           "ultrafast", "-timecode", "01:00:00:00", str(source))
    probed = json.loads(run_cli("probe", str(source), "--json").stdout)
    assert probed["timecode"] == "01:00:00:00"
    assert [(d["codec"], d["timecode"]) for d in probed["data"]] == [("tmcd", "01:00:00:00")]
    fast = write_profile(tmp_path, SMALL.format(c="mp4", v="h264", a="copy"), "fast")
    copy = write_profile(tmp_path, COPY, "copy")
    for name, profile in (("o.mp4", fast), ("o.mov", fast), ("o.mkv", fast), ("c.mov", copy)):
        out = tmp_path / name
        report = transcode_report(str(source), "-p", str(profile), "-o", str(out), "--gpu", "none")
        assert not report["warnings"], report["warnings"]
        assert any(n.startswith("timecode 01:00:00:00 kept") for n in report["plan"]["notes"])
        info = ffmpeg_info(out)  # the independent reader
        assert re.search(r"(timecode|TIMECODE) +: 01:00:00:00", info), info
        if out.suffix != ".mkv":
            assert "(tmcd / 0x64636D74)" in info, info
    webm = write_profile(tmp_path, SMALL.format(c="webm", v="av1", a="opus"), "webm")
    res = run_cli("plan", str(source), "-p", str(webm), "--gpu", "none")
    assert "note:    timecode 01:00:00:00 kept (a TIMECODE tag)" in res.stdout, res.stdout
    hls = write_profile(tmp_path, 'container = "hls"\n[video]\ncodec = "h264"\n[[renditions]]\n'
                        'height = 180\n', "hls")
    res = run_cli("plan", str(source), "-p", str(hls), "--gpu", "none", cwd=tmp_path)
    assert "warning: timecode 01:00:00:00 not kept: hls sets carry none" in res.stdout, \
        res.stdout
    assert "note:    timecode" not in res.stdout
    # A tag the muxer would refuse (it drops it with a log line): not claimed kept
    for tag, why in (("garbage", "not an hh:mm:ss:ff timecode"),
                     ("01:00:00;00", "a drop-frame timecode needs 29.97 or 59.94 fps"),
                     ("01:00:00:25", "frame 25 of a 25 fps video")):
        odd = tmp_path / "odd.mkv"
        ffmpeg("-y", "-i", str(source), "-c", "copy", "-metadata:s:v:0", f"timecode={tag}",
               str(odd))
        res = run_cli("plan", str(odd), "-p", str(fast), "-o", str(tmp_path / "odd.mp4"),
                      "--gpu", "none")
        assert f"warning: timecode {tag} not kept: {why}" in res.stdout, res.stdout
        assert "note:    timecode" not in res.stdout
    # A DVD's navigation packets: a data stream the output does not keep, and the plan says so
    vob = tmp_path / "dvd.vob"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=352x240:r=30000/1001:d=1", "-f", "lavfi", "-i",
           "sine=d=1:r=48000", "-c:v", "mpeg2video", "-c:a", "mp2", "-f", "dvd", str(vob))
    res = run_cli("plan", str(vob), "-p", str(fast), "-o", str(tmp_path / "d.mp4"), "--gpu", "none")
    assert "warning: data stream #0 (dvd_nav_packet) not kept: mediad keeps video, audio, " \
        "subtitles, attachments and cover art" in res.stdout, res.stdout
