"""A ladder into files (`[[renditions]]` with a file container): each file carries what a single
transcode into that container carries (the source's title, chapters, track flags, fonts, cover
art); an HLS/DASH set says what it leaves out. Checked with the independent ffmpeg."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import camera_clip, ffmpeg, ffmpeg_info, run_cli, transcode_report, write_profile

pytestmark = pytest.mark.slow

FILES = """
container = "{container}"
[video]
codec = "h264"
speed = "fastest"
[[renditions]]
height = 180
bitrate = "300k"
[[renditions]]
height = 90
bitrate = "150k"
[audio]
codec = "aac"
{package}
"""
PACKAGE = "[package]\nsegment_seconds = 2\nkeyframe_seconds = 1\n"


@pytest.fixture(scope="module")
def rich_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MKV with a title, two chapters, a default+forced audio track, a font attachment and
    a JPEG cover (a Matroska attachment named cover.jpg)."""
    folder = tmp_path_factory.mktemp("rich")
    video = camera_clip(folder / "v.mkv", seconds=4)
    meta = folder / "meta.txt"
    meta.write_text(";FFMETADATA1\ntitle=My Film\n"
                    "[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=2000\ntitle=One\n"
                    "[CHAPTER]\nTIMEBASE=1/1000\nSTART=2000\nEND=4000\ntitle=Two\n")
    font = folder / "f.ttf"
    font.write_bytes(b"\0\1\0\0" + bytes(96))
    cover = folder / "cover.jpg"
    ffmpeg("-y", "-f", "lavfi", "-i", "color=c=red:s=64x64", "-frames:v", "1", str(cover))
    src = folder / "film.mkv"
    ffmpeg("-y", "-i", str(video), "-i", str(meta), "-map", "0", "-map_metadata", "1",
           "-map_chapters", "1", "-c", "copy", "-attach", str(font), "-metadata:s:t:0",
           "mimetype=font/ttf", "-attach", str(cover), "-metadata:s:t:1", "mimetype=image/jpeg",
           "-disposition:a:0", "default+forced", str(src))
    return src


def _ladder(src: Path, tmp_path: Path, container: str, package: str = "") -> tuple[dict, Path]:
    profile = write_profile(tmp_path, FILES.format(container=container, package=package),
                            f"files-{container}")
    report = transcode_report(str(src), "-p", str(profile), "-o", str(tmp_path / container),
                              "--gpu", "none")
    return report, Path(report["output"])


def _single(src: Path, tmp_path: Path, container: str) -> str:
    text = FILES.format(container=container, package="")
    text = text[:text.index("[[renditions]]")] + "[audio]\ncodec = \"aac\"\n"
    out = tmp_path / f"single.{container}"
    res = run_cli("transcode", str(src), "-p", str(write_profile(tmp_path, text, "single")),
                  "-o", str(out), "--gpu", "none", "--no-progress")
    assert res.returncode == 0, res.stderr
    return ffmpeg_info(out)


@pytest.mark.parametrize("container", ["mkv", "mp4"])
def test_each_file_carries_what_a_single_transcode_carries(rich_source: Path, tmp_path: Path,
                                                           container: str) -> None:
    """QA: the files of a ladder lost the source's title, chapters, the audio's default/forced
    flags and (in MKV) the font attachment, silently; a single transcode kept them all."""
    report, folder = _ladder(rich_source, tmp_path, container)
    single = _single(rich_source, tmp_path, container)
    files = sorted(folder.glob(f"*.{container}"))
    assert [f.name for f in files] == [f"film.180p.{container}", f"film.90p.{container}"]
    for f in files:
        info = ffmpeg_info(f)
        for needle in ("title           : My Film", "title           : One",
                       "title           : Two", "(default) (forced)"):
            assert needle in info and needle in single, (f.name, needle, info)
        if container == "mkv":
            assert "filename        : f.ttf" in info and "filename        : f.ttf" in single
            assert "filename        : cover.jpg" in info, info
    if container == "mp4":
        assert any(w.startswith("1 attachment(s) dropped (f.ttf") for w in report["warnings"])


def test_mp4_cover_art_is_in_every_file(tmp_path: Path) -> None:
    """An MP4 with an attached picture: every MP4 of the ladder has it (its one packet)."""
    video = camera_clip(tmp_path / "v.mp4", seconds=3)
    cover = tmp_path / "cover.jpg"
    ffmpeg("-y", "-f", "lavfi", "-i", "color=c=blue:s=64x64", "-frames:v", "1", str(cover))
    src = tmp_path / "song.mp4"
    ffmpeg("-y", "-i", str(video), "-i", str(cover), "-map", "0", "-map", "1", "-c", "copy",
           "-disposition:v:1", "attached_pic", str(src))
    _, folder = _ladder(src, tmp_path, "mp4")
    for f in sorted(folder.glob("*.mp4")):
        picture = tmp_path / f"{f.stem}.jpg"
        ffmpeg("-y", "-i", str(f), "-map", "0:v:1", "-c", "copy", "-frames:v", "1", str(picture))
        assert picture.read_bytes() == cover.read_bytes()
        assert "(attached pic)" in ffmpeg_info(f)


def test_an_hls_set_says_what_it_leaves_out(rich_source: Path, tmp_path: Path) -> None:
    report, _ = _ladder(rich_source, tmp_path, "hls", PACKAGE)
    assert "1 attachment(s) dropped (f.ttf): hls sets carry no attachments" \
        in report["warnings"], report["warnings"]
    assert "cover art #3 (mjpeg) dropped: hls sets carry no attached pictures" \
        in report["warnings"], report["warnings"]
    assert not any("mp4 cannot" in w for w in report["warnings"]), report["warnings"]


def _top_level_boxes(path: Path) -> list[str]:
    """The MP4's top-level box types, in file order (read here, not by mediad)."""
    data, pos, kinds = path.read_bytes(), 0, []
    while pos + 8 <= len(data):
        size, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8].decode()
        if size == 1:
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        kinds.append(kind)
        pos += size if size else len(data)
    return kinds


def test_faststart_holds_for_every_file_as_for_a_single_transcode(tmp_path: Path) -> None:
    """`faststart = true` put a single transcode's index (moov) in front of its media, but the
    files of a ladder of the same profile were written with the index at the end (the ladder
    opened its files without the profile's muxer options). One runner writes both now."""
    src = camera_clip(tmp_path / "v.mp4", seconds=3)
    text = "faststart = true\n" + FILES.format(container="mp4", package="")
    profile = write_profile(tmp_path, text, "files-faststart")
    transcode_report(str(src), "-p", str(profile), "-o", str(tmp_path / "set"), "--gpu", "none")
    files = sorted((tmp_path / "set").glob("*.mp4"))
    assert len(files) == 2
    for f in files:
        kinds = _top_level_boxes(f)
        assert kinds.index("moov") < kinds.index("mdat"), (f.name, kinds)


def test_every_file_has_the_same_encoded_audio(tmp_path: Path) -> None:
    """QA: a ladder's MKV files from one Opus source, its audio encoded to AAC once for all:
    only the first file had the encoder's start-up padding marked to skip (the packet's side
    data was not copied for the others), so the others played it and their video came 21 ms
    late against it."""
    src = camera_clip(tmp_path / "opus.mkv", "-c:a", "libopus", seconds=2)
    report, folder = _ladder(src, tmp_path, "mkv")
    files = sorted(folder.glob("*.mkv"))
    assert len(files) == 2
    audio = [ffmpeg("-v", "error", "-copyts", "-i", str(f), "-map", "0:a", "-c", "copy", "-f",
                    "framecrc", "-").stdout.splitlines() for f in files]
    assert [ln for ln in audio[0] if not ln.startswith("#")] == \
        [ln for ln in audio[1] if not ln.startswith("#")]
    assert any("Skip Samples" in ln for ln in audio[1]), audio[1][:12]
