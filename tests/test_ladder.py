"""Ladders: one decode, several renditions, packaged as HLS or DASH, committed as one set.

Sources are camera-like recordings made by the independent ffmpeg; every rendition is read
back by that binary (each media playlist, the DASH manifest), segments are checked one by one
(init + segment, first frame an IDR), and the manifests' numbers against measured rates.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import m3u8
import pytest
from conftest import (
    ROOT,
    SAMPLES,
    camera_clip,
    camera_filter,
    damaged_ts,
    ffmpeg,
    ffmpeg_bytes,
    ffmpeg_info,
    packet_times,
    run_cli,
    stream_start,
    transcode_report,
    write_profile,
)

pytestmark = pytest.mark.slow

LADDER = """
container = "{package}"
[video]
codec = "{codec}"
speed = "fastest"
[[renditions]]
height = 480
bitrate = "1M"
[[renditions]]
height = 360
bitrate = "700k"
[[renditions]]
height = 240
bitrate = "400k"
[[renditions]]
height = 180
bitrate = "250k"
[audio]
codec = "aac"
bitrate = "96k"
[package]
segment_seconds = 2
keyframe_seconds = 1
"""
SECONDS, FPS = 6, 25
FRAMES = SECONDS * FPS
_AVC = re.compile(r"^avc1\.[0-9a-f]{6}$")


def _profile(folder: Path, package: str = "hls", codec: str = "h264") -> Path:
    return write_profile(folder, LADDER.format(package=package, codec=codec), f"ladder-{package}")


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 640x360 DVR-style TS recording (timestamps start 1.4 s in) with AC-3 audio."""
    folder = tmp_path_factory.mktemp("ladder")
    return camera_clip(folder / "rec.ts", "-c:a", "ac3", "-f", "mpegts", seconds=SECONDS,
                       size=(640, 360), fps=FPS)


def _transcode(src: Path, profile: Path, *extra: str) -> tuple[dict, Path]:
    report = transcode_report(str(src), "-p", str(profile), "--gpu", "none", *extra)
    return report, Path(report["output"])


def _first_frame_info(init: Path, segment: Path, work: Path) -> str:
    """showinfo of the first frame of one fMP4 segment, read with its init section."""
    joined = work / f"joined-{segment.parent.name}-{segment.name}.mp4"
    joined.write_bytes(init.read_bytes() + segment.read_bytes())
    res = ffmpeg("-v", "info", "-i", str(joined), "-map", "0:v:0", "-frames:v", "1", "-vf",
                 "showinfo", "-f", "null", "-")
    return next(line for line in res.stderr.splitlines() if "iskey" in line)


def test_hls_ladder_from_a_dvr_recording(recording: Path, tmp_path: Path) -> None:
    report, folder = _transcode(recording, _profile(tmp_path))
    assert folder == recording.with_name("rec.ladder-hls")  # <stem>.<profile>/ beside the input
    assert sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(".")) == []
    assert report["plan"]["skipped"] == [
        "480p: larger than the source (640x360 within 853x480); renditions are never upscaled"]
    master = m3u8.load(str(folder / "master.m3u8"))
    variants = {p.stream_info.resolution: p for p in master.playlists}
    assert set(variants) == {(640, 360), (426, 240), (320, 180)}
    (audio,) = [m for m in master.media if m.type == "AUDIO"]
    audio_files = _files(folder, audio.uri)
    audio_avg = _avg_rate(folder, audio.uri, audio_files)
    for variant in variants.values():
        info = variant.stream_info
        video, audio_codec = info.codecs.split(",")
        assert _AVC.match(video) and audio_codec == "mp4a.40.2", info.codecs
        assert info.audio == audio.group_id and float(info.frame_rate) == FPS
        media = m3u8.load(str(folder / variant.uri))
        assert media.playlist_type == "vod" and media.is_endlist and media.target_duration == 2
        times = packet_times(folder / variant.uri, "0:v:0")
        assert len(times) == FRAMES
        assert abs(times[0][0]) < 0.05  # rebased: the TS started 1.4 s in
        # Measured independently: the files on disk over the reader's duration.
        files = _files(folder, variant.uri)
        avg = _avg_rate(folder, variant.uri, files)
        assert abs(info.average_bandwidth - (avg + audio_avg)) <= 0.1 * (avg + audio_avg)
        peak = max(Path(folder / Path(variant.uri).parent / s.uri).stat().st_size * 8 / s.duration
                   for s in media.segments)
        assert info.bandwidth >= info.average_bandwidth
        assert abs(info.bandwidth - peak) <= 0.1 * info.bandwidth + audio_avg * 1.2
        init = folder / Path(variant.uri).parent / media.segment_map[0].uri
        for seg in media.segments:
            assert seg.duration <= 2 + 0.5
            shown = _first_frame_info(init, folder / Path(variant.uri).parent / seg.uri, tmp_path)
            assert "iskey:1" in shown and "type:I" in shown, (seg.uri, shown)
    # A/V sync: the audio starts with the video, as in the source.
    a_times = packet_times(folder / audio.uri, "0:a:0")
    v_times = packet_times(folder / master.playlists[0].uri, "0:v:0")
    assert abs(a_times[0][0] - v_times[0][0]) < 0.05
    assert abs(sum(d for _, d in a_times) - SECONDS) < 0.1
    # The report lists every output with its measured rate; the set records its job.
    names = sorted(o["name"] for o in report["outputs"])
    assert names == ["180p", "240p", "360p", "audio"]
    assert all(o["average_bit_rate"] > 0 and o["encoder"] for o in report["outputs"])
    assert json.loads((folder / "mediad.json").read_text())["manifest"] == "master.m3u8"


def _files(folder: Path, uri: str) -> list[Path]:
    media = m3u8.load(str(folder / uri))
    base = folder / Path(uri).parent
    return [base / media.segment_map[0].uri, *(base / s.uri for s in media.segments)]


def _avg_rate(folder: Path, uri: str, files: list[Path]) -> float:
    stream = "0:a:0" if "audio" in uri else "0:v:0"
    times = packet_times(folder / uri, stream)
    duration = max(p + d for p, d in times) - min(p for p, _ in times)
    return sum(f.stat().st_size for f in files) * 8 / duration


def _timeline(rep: ET.Element) -> list[tuple[float, float]]:
    """(start, duration) in seconds of each segment a DASH Representation's SegmentTimeline
    lists, in order (S@t where given, else where the one before ended; S@r repeats)."""
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    template = rep.find("d:SegmentTemplate", ns)
    assert template is not None and template.find("d:SegmentTimeline", ns) is not None
    scale, at, out = int(template.get("timescale", "1")), 0, []
    for s in template.iterfind("d:SegmentTimeline/d:S", ns):
        at = int(s.get("t", at))
        for _ in range(1 + int(s.get("r", "0"))):
            out.append((at / scale, int(s.get("d")) / scale))
            at += int(s.get("d"))
    return out


def test_dash_ladder_is_one_switchable_video_set(recording: Path, tmp_path: Path) -> None:
    out = tmp_path / "dash-out"
    report, folder = _transcode(recording, _profile(tmp_path, "dash"), "-o", str(out))
    assert folder == out
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    root = ET.parse(folder / "manifest.mpd").getroot()
    sets = root.findall(".//d:AdaptationSet", ns)
    assert [s.get("contentType") for s in sets] == ["video", "audio"]
    reps = sets[0].findall("d:Representation", ns)
    assert sorted(int(r.get("height")) for r in reps) == [180, 240, 360]
    assert sets[0].get("par") == "16:9"
    for i in range(3):  # every video representation, read by the independent ffmpeg
        res = ffmpeg("-v", "error", "-i", str(folder / "manifest.mpd"), "-map", f"0:v:{i}",
                     "-f", "framecrc", "-", check=False)
        assert len([x for x in res.stdout.splitlines() if x and not x.startswith("#")]) == FRAMES
    for rep in reps:
        rid = rep.get("id")
        init = folder / f"init-{rid}.m4s"
        segments = sorted(folder.glob(f"chunk-{rid}-*.m4s"))
        assert len(segments) == SECONDS // 2
        # each Representation brought its own template and timeline into the joined set; the
        # segments start at the keyframe times (the TS's video starts 10 ms after its audio)
        starts = [t for t, _ in _timeline(rep)]
        assert len(starts) == len(segments), starts
        assert all(abs(t - 2.0 * k) < 1 / FPS for k, t in enumerate(starts)), starts
        measured = max(s.stat().st_size * 8 / 2 for s in segments[:-1])
        assert abs(int(rep.get("bandwidth")) - measured) <= 0.1 * measured
        for seg in segments:
            shown = _first_frame_info(init, seg, tmp_path)
            assert "iskey:1" in shown and "type:I" in shown, (seg.name, shown)
    assert {o["name"] for o in report["outputs"]} == {"360p", "240p", "180p", "audio"}


def test_hevc_ladder_is_hvc1_in_fmp4(recording: Path, tmp_path: Path) -> None:
    _, folder = _transcode(recording, _profile(tmp_path, "hls", "hevc"), "-o",
                           str(tmp_path / "hevc"))
    master = m3u8.load(str(folder / "master.m3u8"))
    for p in master.playlists:
        assert p.stream_info.codecs.startswith("hvc1."), p.stream_info.codecs
        assert len(packet_times(folder / p.uri, "0:v:0")) == FRAMES
    assert "hevc" in ffmpeg("-i", str(folder / master.playlists[0].uri), check=False).stderr


def test_running_the_same_job_again_is_recognised(recording: Path, tmp_path: Path) -> None:
    src = tmp_path / "rec.ts"
    src.write_bytes(recording.read_bytes())
    profile = _profile(tmp_path)
    first, folder = _transcode(src, profile)
    stamp = (folder / "master.m3u8").stat().st_mtime_ns
    again, same = _transcode(src, profile)
    assert same == folder and again["already_done"] is True and first["already_done"] is False
    assert (folder / "master.m3u8").stat().st_mtime_ns == stamp  # nothing written twice
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("rec.")]) == 2  # src + set
    # Another job (the source changed) into the same folder is refused, not mixed in.
    os.utime(src, ns=(time.time_ns(), time.time_ns()))
    res = run_cli("transcode", str(src), "-p", str(profile), "--gpu", "none", "--no-progress")
    assert res.returncode == 1
    assert res.stderr == f"mediad: error: {folder}: already exists (use --overwrite to replace it)\n"


@pytest.mark.parametrize(("case", "error"), [
    ("audio-only", r"audio-only file, but profile ladder-hls makes a video ladder"),
    ("too-small", r"no rendition of profile ladder-hls fits this 160x90 source "
                  r"\(480p: larger than the source \(160x90 within 853x480\).*"),
])
def test_sources_a_ladder_cannot_use_are_one_line_errors(case: str, error: str,
                                                          tmp_path: Path) -> None:
    if case == "audio-only":
        src = tmp_path / "a.m4a"
        ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=1", "-c:a", "aac", str(src))
    else:
        src = camera_clip(tmp_path / "small.mp4", seconds=1, size=(160, 90))
    res = run_cli("transcode", str(src), "-p", str(_profile(tmp_path)), "--gpu", "none",
                  "--no-progress")
    assert res.returncode == 1
    assert re.fullmatch(rf"mediad: error: {re.escape(str(src))}: {error}\n", res.stderr), res.stderr
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []


@pytest.mark.parametrize(("text", "error"), [
    (LADDER.format(package="hls", codec="h264").replace("segment_seconds = 2",
                                                         "segment_seconds = 0.5"),
     r"package: segment_seconds \(0.5\) is shorter than the keyframe interval"),
    ('container = "mov"\n[[renditions]]\nheight = 360\ncodec = "av1"\n',
     r"renditions: container mov cannot hold av1 video"),
    ('container = "mkv"\n[video]\ncodec = "copy"\n[[renditions]]\nheight = 360\n',
     r"renditions re-encode the video from one decode: video.codec cannot be copy"),
    ('container = "mkv"\n[video]\ncodec = "h264"\ncopy_if_matching = true\n[[renditions]]\n'
     'height = 360\n', r"video.copy_if_matching copies one output's video as it is"),
    ('container = "hls"\n[video]\ncodec = "h264"\ncopy_if_matching = true\n',
     r"video.copy_if_matching copies one output's video as it is"),
    (LADDER.format(package="hls", codec="h264").replace('codec = "aac"', 'codec = "opus"'),
     r"hls cannot carry opus audio"),
])
def test_profiles_a_ladder_cannot_run_are_refused(text: str, error: str, tmp_path: Path) -> None:
    res = run_cli("profiles", "validate", str(write_profile(tmp_path, text)))
    assert res.returncode == 1 and re.search(error, res.stderr), res.stderr


def test_a_kill_during_the_run_leaves_nothing_visible(tmp_path: Path) -> None:
    src = camera_clip(tmp_path / "long.mkv", seconds=30, size=(640, 360))
    folder = tmp_path / "set"
    proc = subprocess.Popen([sys.executable, "-m", "mediad", "transcode", str(src), "-p",
                             str(_profile(tmp_path)), "-o", str(folder), "--gpu", "none",
                             "--no-progress"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".set.*.part/360p/seg*.m4s")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob(".set.*.part/360p/seg*.m4s")), "the run never wrote a segment"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not folder.exists()  # only the hidden .part folder is left, for a later clean-up
    visible = [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert sorted(visible) == ["ladder-hls.toml", "long.mkv"]
    # The next run for that folder removes what the killed one left (its writer is gone).
    short = camera_clip(tmp_path / "short.mp4", seconds=1, size=(640, 360))
    _transcode(short, _profile(tmp_path), "-o", str(folder))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_failure_mid_run_fails_the_job_and_leaves_nothing(tmp_path: Path) -> None:
    damaged, _ = damaged_ts(tmp_path)  # a reception drop-out mid-way
    strict = write_profile(tmp_path, 'on_decode_error = "fail"\n' + LADDER.format(
        package="hls", codec="h264"), "strict")
    res = run_cli("transcode", str(damaged), "-p", str(strict), "-o", str(tmp_path / "set"),
                  "--gpu", "none", "--no-progress")
    assert res.returncode == 1 and 'on_decode_error = "fail"' in res.stderr, res.stderr
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []  # temp folder removed too


def test_plan_prints_each_rendition(recording: Path, tmp_path: Path) -> None:
    res = run_cli("plan", str(recording), "-p", str(_profile(tmp_path)), "--gpu", "none")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert any(ln.startswith("output:") and "(hls, master.m3u8, segments of 2 s" in ln
               for ln in lines)
    renditions = [ln for ln in lines if ln.startswith("rendition:")]
    assert [r.split()[1] for r in renditions] == ["360p", "240p", "180p"]
    assert "640x360" in renditions[0] and "700k (peak 1050k)" in renditions[0]
    assert any(ln.startswith("skipped: 480p") for ln in lines)


@pytest.mark.parametrize(("size", "made", "skipped"), [
    # A 2.4:1 film keeps its top rung (the previous rule, by height, skipped 480p: 400 lines)
    ((960, 400), {"480p": (850, 354), "360p": (638, 266), "240p": (422, 176),
                  "180p": (316, 132)}, []),
    # A phone's portrait video: the rung's box stands upright (by height it was 202x360)
    ((360, 640), {"360p": (360, 640), "240p": (240, 426), "180p": (180, 320)}, ["480p"]),
])
def test_rungs_are_boxes_for_wide_and_portrait_sources(size: tuple[int, int], made: dict,
                                                       skipped: list[str], tmp_path: Path) -> None:
    src = camera_clip(tmp_path / "src.mp4", seconds=1, size=size)
    res = run_cli("plan", str(src), "-p", str(_profile(tmp_path)), "--gpu", "none", "--json")
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    assert {r["name"]: (r["video"]["width"], r["video"]["height"])
            for r in plan["outputs"]} == made
    assert [s.split(":")[0] for s in plan["skipped"]] == skipped


def test_a_rendition_nvenc_refuses_falls_back_alone(recording: Path, tmp_path: Path) -> None:
    """Per-sink fallback: the 240p sink is planned on NVENC, which cannot open here (no GPU:
    the real h264_nvenc of PyAV's FFmpeg refuses); that rendition alone is re-planned on
    libx264, the run starts again, and the report says why."""
    from dataclasses import replace

    from mediad.media.encoders import encoder_options
    from mediad.media.job_plan import with_stream_options
    from mediad.media.ladder_job import commit_ladder, plan_ladder_job
    from mediad.media.probe import probe
    from mediad.profiles import load_profile

    folder = tmp_path / "set"
    profile = load_profile(str(_profile(tmp_path)))
    plan = plan_ladder_job(recording, profile, folder, gpu="none")
    nvenc = [with_stream_options(replace(r, video=replace(
        r.video, encoder="h264_nvenc", hardware=True,
        options=encoder_options("h264_nvenc", r.video.speed, r.video.quality, 0))))
        if r.name == "240p" else r for r in plan.outputs]
    report = commit_ladder(recording, probe(recording), replace(plan, outputs=nvenc), "k",
                           time.monotonic(), stamp=None, overwrite=False, profile=profile)
    (fallback,) = report.plan.fallbacks
    assert fallback.startswith("rendition 240p: h264_nvenc "), fallback
    encoders = {r.name: r.video.encoder for r in report.plan.outputs}
    assert encoders == {"360p": "libx264", "240p": "libx264", "180p": "libx264"}
    assert report.to_dict()["fallbacks"] == [fallback]
    master = m3u8.load(str(folder / "master.m3u8"))
    for p in master.playlists:
        assert len(packet_times(folder / p.uri, "0:v:0")) == FRAMES


def test_renditions_into_a_file_container_make_one_file_each(tmp_path: Path) -> None:
    """`container = "mp4"` with renditions: `<stem>.<height>p.mp4` per rendition in the
    folder, from one decode; the TS's AAC (ADTS) copied into each; HEVC tagged hvc1."""
    recording = camera_clip(tmp_path / "rec.ts", "-f", "mpegts", seconds=SECONDS,
                            size=(640, 360), fps=FPS)
    text = LADDER.format(package="mp4", codec="h264").replace(
        'height = 240\nbitrate = "400k"', 'height = 240\ncodec = "hevc"\nquality = 30').replace(
        '[audio]\ncodec = "aac"\nbitrate = "96k"', '[audio]\ncodec = "aac"')
    text = text[:text.index("[package]")]
    report, folder = _transcode(recording, write_profile(tmp_path, text, "files"), "-o",
                                str(tmp_path / "files"))
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["mediad.json", "rec.180p.mp4", "rec.240p.mp4", "rec.360p.mp4"]
    assert report["plan"]["audio"][0]["action"] == "copy"  # the source's AAC, once per file
    for name, size, codec in (("rec.360p.mp4", "640x360", "h264"),
                              ("rec.240p.mp4", "426x240", "hevc (Main) (hvc1"),
                              ("rec.180p.mp4", "320x180", "h264")):
        info = ffmpeg("-i", str(folder / name), check=False).stderr
        assert f"Video: {codec}" in info and size in info, info
        video = packet_times(folder / name, "0:v:0")
        audio = packet_times(folder / name, "0:a:0")
        assert len(video) == FRAMES
        assert abs(min(p for p, _ in video) - min(p for p, _ in audio)) < 0.05
        assert abs(sum(d for _, d in audio) - SECONDS) < 0.1
    assert [o["name"] for o in report["outputs"]] == ["360p", "240p", "180p"]
    assert {o["encoder"] for o in report["outputs"]} == {"libx264", "libx265"}
    for o in report["outputs"]:  # measured: the video's bytes over its span, as the file holds
        video = packet_times(folder / Path(o["path"]).name, "0:v:0")
        span = max(p + d for p, d in video) - min(p for p, _ in video)
        assert 0 < o["video_bit_rate"] * span / 8 <= o["size"], o


# -- defects found by adversarial QA, each reproduced here first ------------------------------

SMALL = """
container = "{package}"
[video]
codec = "{codec}"
speed = "fastest"
[[renditions]]
height = 180
{rate}
[[renditions]]
height = 90
{rate}
[audio]
codec = "{audio}"
[package]
segment_seconds = 2
keyframe_seconds = 1
"""


def _small(tmp_path: Path, package: str = "hls", codec: str = "h264", audio: str = "aac",
           rate: str = 'bitrate = "300k"', name: str = "small") -> Path:
    return write_profile(tmp_path, SMALL.format(package=package, codec=codec, audio=audio,
                                                rate=rate), name)


def test_overwrite_never_replaces_a_folder_mediad_did_not_write(tmp_path: Path) -> None:
    src = camera_clip(tmp_path / "c.mp4", seconds=2)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me\n")
    res = run_cli("transcode", str(src), "-p", str(_small(tmp_path)), "-o", str(mine),
                  "--overwrite", "--gpu", "none", "--no-progress")
    assert res.returncode == 1
    assert "is not a set mediad wrote (no mediad.json): refusing to replace it" in res.stderr
    assert (mine / "notes.txt").read_text() == "keep me\n"
    for odd in (".", str(tmp_path / "a%vb")):  # the current folder; FFmpeg's pattern character
        res = run_cli("transcode", str(src), "-p", str(_small(tmp_path)), "-o", odd,
                      "--overwrite", "--gpu", "none", "--no-progress", cwd=mine)
        assert res.returncode == 1 and res.stderr.startswith("mediad: error: ") \
            and "Traceback" not in res.stderr, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mp4", "mine", "small.toml"]


def test_a_damaged_set_is_not_taken_as_done_and_overwrite_rebuilds_it(tmp_path: Path) -> None:
    src = camera_clip(tmp_path / "c.mp4", seconds=2)
    profile = _small(tmp_path)
    _, folder = _transcode(src, profile)
    for seg in (folder / "90p").glob("seg*.m4s"):
        seg.unlink()  # a set damaged after its commit
    res = run_cli("transcode", str(src), "-p", str(profile), "--gpu", "none", "--no-progress")
    assert res.returncode == 1 and "already exists (use --overwrite" in res.stderr, res.stderr
    again, _ = _transcode(src, profile, "--overwrite")
    assert again["already_done"] is False and list((folder / "90p").glob("seg*.m4s"))


def test_audio_hls_players_cannot_all_play_is_encoded_to_aac(tmp_path: Path) -> None:
    src = camera_clip(tmp_path / "opus.mkv", "-c:a", "libopus", "-metadata:s:a:0",
                      "language=eng", seconds=2)
    report, folder = _transcode(src, _small(tmp_path, audio="copy"))
    assert report["plan"]["audio"][0]["action"] == "encode"
    master = m3u8.load(str(folder / "master.m3u8"))
    assert all(p.stream_info.codecs.endswith(",mp4a.40.2") for p in master.playlists)
    (audio,) = master.media
    assert audio.language == "eng"  # the source track's language, for the player's menu


def test_frame_rate_is_the_maximum_not_the_average(tmp_path: Path) -> None:
    """HLS's FRAME-RATE is a variant's maximum rate: a 30 fps recording with 0.4 s of frames
    missing averages 27.83 fps but plays at 30."""
    src = tmp_path / "gaps.mp4"
    ffmpeg("-f", "lavfi", "-i", camera_filter((320, 180), 30), "-t", "6", "-vf",
           r"select='not(between(t\,3.2\,3.6))'", "-fps_mode", "passthrough", "-c:v",
           "libx264", "-preset", "veryfast", "-g", "30", str(src))
    assert len(packet_times(src, "0:v:0")) == 167  # 13 frames missing (3.2 to 3.6 s)
    _, folder = _transcode(src, _small(tmp_path))
    master = m3u8.load(str(folder / "master.m3u8"))
    assert [p.stream_info.frame_rate for p in master.playlists] == [30.0, 30.0]


def test_keyframes_count_from_the_first_frame_as_the_segmenter_does(tmp_path: Path) -> None:
    """Video starting 0.4 s after the audio (and frames a hair off the grid): every segment
    still cuts at its time and keeps to its target."""
    video = camera_clip(tmp_path / "v.mp4", seconds=6, audio=False)
    audio = tmp_path / "a.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=d=6.4", "-c:a", "aac", str(audio))
    late = tmp_path / "late.ts"
    ffmpeg("-itsoffset", "0.4", "-i", str(video), "-i", str(audio), "-map", "0:v", "-map",
           "1:a", "-c", "copy", "-f", "mpegts", str(late))
    for package in ("hls", "dash"):
        report, folder = _transcode(late, _small(tmp_path, package, name=package))
        assert all(max(o["segment_durations"]) <= 2.5 for o in report["outputs"]
                   if o["kind"] == "video"), report["outputs"]
        # the audio lasts what its source lasts, not what the video lasts
        (a,) = [o for o in report["outputs"] if o["kind"] == "audio"]
        assert abs(a["duration"] - 6.4) < 0.3, a["duration"]


def test_dash_from_a_ts_with_adts_aac_and_its_aspect(tmp_path: Path) -> None:
    src = camera_clip(tmp_path / "rec.ts", "-f", "mpegts", seconds=2, size=(640, 360))
    text = SMALL.format(package="dash", codec="h264", audio="aac", rate="").replace(
        "height = 180", "height = 360").replace("height = 90", "height = 240")
    report, folder = _transcode(src, write_profile(tmp_path, text, "d"), "-o", str(tmp_path / "d"))
    assert report["plan"]["audio"][0]["action"] == "copy"
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    video = ET.parse(folder / "manifest.mpd").getroot().find(".//d:AdaptationSet", ns)
    assert video.get("par") == "16:9"
    assert {r.get("height"): r.get("sar") for r in video.findall("d:Representation", ns)} == \
        {"360": "1:1", "240": "640:639"}  # 426x240 shown at 16:9


def test_a_dash_set_lists_the_segments_it_holds(tmp_path: Path) -> None:
    """QA: a DASH set's template gave one segment `duration` and no timeline, so a player
    derived each track's segment count from the presentation's duration. The audio's last AAC
    frame runs a few ms past the video and gets a segment of its own, so players asked for a
    video chunk that was never written (ffmpeg: "Error when loading first fragment of
    playlist", one audio packet short; dash.js and Shaka: a 404 at the end). Each
    Representation now lists its segments in a SegmentTimeline. Read by the independent
    ffmpeg from inside the folder, as a player fetches them: every segment it opens exists,
    nothing fails, and every track holds the packets the report counts."""
    src = camera_clip(tmp_path / "c.mp4", seconds=4)
    profile = write_profile(tmp_path, SMALL.format(package="dash", codec="h264", audio="aac",
                                                   rate='bitrate = "300k"').replace(
        "height = 90", "height = 120").replace("keyframe_seconds = 1", "keyframe_seconds = 2"),
        "dash")
    report, folder = _transcode(src, profile, "-o", str(tmp_path / "d"))
    audio = next(o for o in report["outputs"] if o["kind"] == "audio")
    assert len(audio["segment_durations"]) == 3  # the audio's last frames: a segment alone
    res = ffmpeg("-v", "level+info", "-i", "manifest.mpd", "-map", "0", "-c", "copy", "-f",
                 "framecrc", "-", check=False, cwd=folder)
    opened = re.findall(r"Opening '([^']+)' for reading", res.stderr)
    assert [n for n in opened if not (folder / n).is_file()] == [], res.stderr
    assert sorted(n for n in opened if n.startswith("chunk-")) == \
        sorted(p.name for p in folder.glob("chunk-*.m4s"))  # every segment, each once
    errors = [x for x in res.stderr.splitlines() if "[error]" in x or "[fatal]" in x]
    assert res.returncode == 0 and errors == [], res.stderr
    kinds = dict(re.findall(r"^#media_type (\d+): (\w+)", res.stdout, re.M))
    sizes = dict(re.findall(r"^#dimensions (\d+): \d+x(\d+)", res.stdout, re.M))
    packets: dict[str, int] = {}
    for line in res.stdout.splitlines():
        if line and not line.startswith("#"):
            packets[line.split(",")[0]] = packets.get(line.split(",")[0], 0) + 1
    read = sorted((kinds[i], int(sizes.get(i, 0)), n) for i, n in packets.items())
    reported = sorted((o["kind"], o["height"] if o["kind"] == "video" else 0, o["frames"])
                      for o in report["outputs"])
    assert read == reported
    assert [o["frames"] for o in report["outputs"] if o["kind"] == "video"] == [100, 100]


def test_av1_ladder_with_a_bit_rate(tmp_path: Path) -> None:
    src = camera_clip(tmp_path / "c.mp4", seconds=2)
    report, folder = _transcode(src, _small(tmp_path, codec="av1", rate='bitrate = "200k"'))
    master = m3u8.load(str(folder / "master.m3u8"))
    assert all(p.stream_info.codecs.startswith("av01.") for p in master.playlists)


def test_the_peak_is_not_a_last_sliver_of_audio(recording: Path, tmp_path: Path) -> None:
    report, _ = _transcode(recording, _profile(tmp_path), "-o", str(tmp_path / "s"))
    for o in report["outputs"]:
        assert o["peak_bit_rate"] <= 1.6 * o["average_bit_rate"], o


@pytest.mark.parametrize("package", ["hls", "dash", "mkv"])
def test_every_audio_track_is_carried(package: str, tmp_path: Path) -> None:
    """Two languages (QA found file mode kept only the first, where a single transcode keeps
    both): each package carries both, each track as long as its source."""
    src = tmp_path / "two.mkv"
    ffmpeg("-f", "lavfi", "-i", camera_filter((320, 180)), "-f", "lavfi", "-i", "sine=f=440",
           "-f", "lavfi", "-i", "sine=f=880", "-t", "3", "-map", "0", "-map", "1", "-map", "2",
           "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", "-metadata:s:a:0",
           "language=eng", "-metadata:s:a:1", "language=fra", str(src))
    text = SMALL.format(package=package, codec="h264", audio="aac", rate="")
    if package == "mkv":
        text = text[:text.index("[package]")]
    report, folder = _transcode(src, write_profile(tmp_path, text, package), "-o",
                                str(tmp_path / package))
    if package == "hls":
        master = m3u8.load(str(folder / "master.m3u8"))
        assert sorted((m.language, m.uri) for m in master.media) == [
            ("eng", "audio-eng/index.m3u8"), ("fra", "audio-fra/index.m3u8")]
        tracks = [folder / m.uri for m in master.media]
    elif package == "dash":
        tracks = [folder / "manifest.mpd"] * 2
    else:
        tracks = sorted(folder.glob("*.mkv"))
    for i, path in enumerate(tracks):
        stream = "0:a:0" if package == "hls" else f"0:a:{i % 2}"
        times = packet_times(path, stream)
        assert abs(max(p + d for p, d in times) - min(p for p, _ in times) - 3) < 0.1
    if package == "mkv":
        for path in tracks:
            info = ffmpeg("-i", str(path), check=False).stderr
            assert "(eng)" in info and "(fra)" in info, info
    names = {o["name"] for o in report["outputs"]}
    assert {"audio-eng", "audio-fra"} <= names or package == "mkv"


def test_an_already_committed_rerun_repeats_the_warnings(tmp_path: Path) -> None:
    """QA: an 'already committed' re-run said none of the warnings the run had given."""
    srt = tmp_path / "s.srt"
    srt.write_text("1\n00:00:00,500 --> 00:00:01,500\nhello\n")
    src = tmp_path / "subs.mkv"
    ffmpeg("-f", "lavfi", "-i", camera_filter((320, 180)), "-i", str(srt), "-t", "2",
           "-map", "0:v", "-map", "1", "-c:v", "libx264", "-preset", "veryfast", "-c:s", "srt",
           str(src))
    profile = write_profile(tmp_path, SMALL.format(package="dash", codec="h264", audio="none",
                                                   rate=""), "subs")
    first, _ = _transcode(src, profile)
    assert any("subtitles are not carried into DASH" in w for w in first["warnings"]), \
        first["warnings"]
    again, _ = _transcode(src, profile)
    assert again["already_done"] and again["warnings"] == first["warnings"]


# The two tracks' cues, as the source has them (on a clock 3 s in) and as each output must
EN = "1\n00:00:00,500 --> 00:00:01,500\nhello\n\n2\n00:00:02,200 --> 00:00:03,000\nworld\n"
FR = "1\n00:00:00,600 --> 00:00:01,400\nbonjour\n"


@pytest.fixture(scope="module")
def subtitled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MKV whose timestamps start 3 s in, with two SRT tracks (eng, fra)."""
    folder = tmp_path_factory.mktemp("subs")
    (folder / "en.srt").write_text(EN)
    (folder / "fr.srt").write_text(FR)
    src = folder / "subs.mkv"
    ffmpeg("-f", "lavfi", "-i", camera_filter((320, 180)), "-i", str(folder / "en.srt"),
           "-i", str(folder / "fr.srt"), "-t", "4", "-map", "0:v", "-map", "1", "-map", "2",
           "-c:v", "libx264", "-preset", "veryfast", "-c:s", "srt",
           "-metadata:s:s:0", "language=eng", "-metadata:s:s:1", "language=fra",
           "-output_ts_offset", "3", str(src))
    return src


def _cues(path: Path, track: int = 0) -> str:
    """A subtitle track as SRT, written by the independent ffmpeg (the WEBVTT header line its
    segment joins leave in the text dropped)."""
    text = ffmpeg_bytes("-i", str(path), "-map", f"0:s:{track}", "-f", "srt", "-").decode()
    return "\n".join(line for line in text.splitlines() if line != "WEBVTT").strip() + "\n"


def test_hls_carries_each_text_track_as_a_webvtt_rendition(subtitled: Path, tmp_path: Path) -> None:
    profile = write_profile(tmp_path, SMALL.format(package="hls", codec="h264", audio="none",
                                                   rate=""), "subs")
    report, folder = _transcode(subtitled, profile, "-o", str(tmp_path / "set"))
    assert not [w for w in report["warnings"] if "subtitle" in w], report["warnings"]
    master = m3u8.load(str(folder / "master.m3u8"))
    subs = [m for m in master.media if m.type == "SUBTITLES"]
    assert [(m.group_id, m.language, m.default, m.autoselect) for m in subs] == [
        ("subs", "eng", "YES", "YES"), ("subs", "fra", "NO", "YES")]
    assert {p.stream_info.subtitles for p in master.playlists} == {"subs"}
    # Cue times as in the source, on the output's timeline (rebased to 0 with the video)
    assert [_cues(folder / m.uri) for m in subs] == [EN, FR]
    assert stream_start(folder / master.playlists[0].uri, "0:v:0") == pytest.approx(0, abs=0.05)


@pytest.mark.parametrize(("package", "codec"), [("mkv", "subrip"), ("mp4", "mov_text")])
def test_every_file_of_a_ladder_carries_the_text_tracks(package: str, codec: str,
                                                        subtitled: Path, tmp_path: Path) -> None:
    profile = write_profile(tmp_path, SMALL.format(package=package, codec="h264", audio="none",
                                                   rate=""), "subs")
    _, folder = _transcode(subtitled, profile, "-o", str(tmp_path / "set"))
    for name in (f"subs.180p.{package}", f"subs.90p.{package}"):
        info = ffmpeg_info(folder / name)
        assert info.count(f"Subtitle: {codec}") == 2, info
        assert "(eng): Subtitle" in info and "(fra): Subtitle" in info, info
        assert [_cues(folder / name, t) for t in (0, 1)] == [EN, FR]


def test_hls_tracks_beyond_one_per_rendition_are_dropped_with_a_word(subtitled: Path,
                                                                       tmp_path: Path) -> None:
    one = 'container = "hls"\n[video]\ncodec = "h264"\nspeed = "fastest"\n[audio]\ncodec = "none"\n'
    report, folder = _transcode(subtitled, write_profile(tmp_path, one, "one"),
                                "-o", str(tmp_path / "set"))
    assert any("subtitle stream #2 dropped: an HLS set of 1 rendition(s) carries at most 1" in w
               for w in report["warnings"]), report["warnings"]
    master = m3u8.load(str(folder / "master.m3u8"))
    assert [m.language for m in master.media if m.type == "SUBTITLES"] == ["eng"]


def test_a_stream_nvdec_cannot_take_is_decoded_in_software(recording: Path, tmp_path: Path) -> None:
    """The ladder decodes with NVDEC when the plan says so (frames downloaded once for the
    renditions); when NVDEC cannot be set up (here: no GPU at all, the real cuda hwaccel of
    PyAV's FFmpeg refuses), the run starts again in software and the report says why."""
    from dataclasses import replace

    from mediad.media.ladder_job import commit_ladder, plan_ladder_job
    from mediad.media.probe import probe
    from mediad.profiles import load_profile

    folder = tmp_path / "set"
    profile = load_profile(str(_profile(tmp_path)))
    plan = plan_ladder_job(recording, profile, folder, gpu="none")
    nvdec = replace(plan, base=replace(plan.base, decode=replace(
        plan.base.decode, hardware=True, device=0, reason="NVDEC decodes h264")))
    report = commit_ladder(recording, probe(recording), nvdec, "k", time.monotonic(),
                           stamp=None, overwrite=False, profile=profile)
    (fallback,) = report.plan.fallbacks
    assert fallback.startswith("decode: NVDEC cannot be set up"), fallback
    assert report.plan.base.decode.hardware is False
    master = m3u8.load(str(folder / "master.m3u8"))
    for p in master.playlists:
        assert len(packet_times(folder / p.uri, "0:v:0")) == FRAMES


def test_hls_subtitle_group_names_are_unique_and_the_default_has_cues(tmp_path: Path) -> None:
    """QA: two English tracks were both NAME="subtitles-eng" (names must differ within a group)
    and an empty track became DEFAULT=YES. Now: unique names, the source's default track
    first, and the default a track with cues."""
    from fractions import Fraction

    import av

    base = camera_clip(tmp_path / "base.mkv", seconds=3, audio=False)
    src = tmp_path / "mix.mkv"
    ms = Fraction(1, 1000)
    with av.open(str(base)) as inp, av.open(str(src), "w") as out:
        video = out.add_stream_from_template(inp.streams.video[0])
        tracks = []
        for lang in ("spa", "eng", "eng"):  # spa: no cue at all
            s = out.add_mux_stream("subrip", time_base=ms)
            s.metadata["language"] = lang
            tracks.append(s)
        tracks[2].disposition = av.stream.Disposition.default  # the SDH track is the default
        for stream, start, text in ((tracks[1], 300, b"eng one"), (tracks[2], 400, b"eng sdh")):
            p = av.Packet(text)
            p.pts = p.dts = start
            p.duration, p.time_base, p.stream = 700, ms, stream
            out.mux(p)
        for p in inp.demux(inp.streams.video[0]):
            if p.size:
                p.stream = video
                out.mux(p)
    three = SMALL.format(package="hls", codec="h264", audio="none", rate="").replace(
        "[[renditions]]\nheight = 90", "[[renditions]]\nheight = 120\n[[renditions]]\nheight = 90")
    report, folder = _transcode(src, write_profile(tmp_path, three, "three"),
                                "-o", str(tmp_path / "set"))
    master = m3u8.load(str(folder / "master.m3u8"))
    subs = [m for m in master.media if m.type == "SUBTITLES"]
    assert [(m.name, m.language, m.default) for m in subs] == [
        ("subtitles-eng", "eng", "YES"), ("subtitles-spa", "spa", "NO"),
        ("subtitles-eng-3", "eng", "NO")]
    assert _cues(folder / subs[0].uri) == "1\n00:00:00,400 --> 00:00:01,100\neng sdh\n"


@pytest.mark.parametrize("package", ["mp4", "single"])
def test_overlapping_cues_in_mp4_are_cut_not_moved(package: str, tmp_path: Path) -> None:
    """QA: MP4's mov_text cannot overlap; a cue inside another pushed every later cue late
    (by up to 1.5 s, carried down the file), and a ladder's files disagreed. As the ffmpeg CLI
    does: the overlapped cue is cut where the next starts, no start ever moves, and every
    file of a set holds the same cues."""
    srt = tmp_path / "o.srt"
    srt.write_text("1\n00:00:00,500 --> 00:00:02,500\nlong\n\n"
                   "2\n00:00:01,000 --> 00:00:01,800\ninside\n\n"
                   "3\n00:00:02,600 --> 00:00:03,000\nlater\n")
    src = tmp_path / "o.mkv"
    ffmpeg("-f", "lavfi", "-i", camera_filter((320, 180)), "-i", str(srt), "-t", "4",
           "-map", "0:v", "-map", "1", "-c:v", "libx264", "-preset", "veryfast", "-c:s", "srt",
           str(src))
    want = ("1\n00:00:00,500 --> 00:00:01,000\nlong\n\n2\n00:00:01,000 --> 00:00:01,800\n"
            "inside\n\n3\n00:00:02,600 --> 00:00:03,000\nlater\n")
    if package == "single":
        out = tmp_path / "o.mp4"
        res = run_cli("transcode", str(src), "-p", "h264", "-o", str(out), "--gpu", "none",
                      "--no-progress")
        assert res.returncode == 0, res.stderr
        assert _cues(out) == want
        return
    profile = write_profile(tmp_path, SMALL.format(package="mp4", codec="h264", audio="none",
                                                   rate=""), "subs")
    _, folder = _transcode(src, profile, "-o", str(tmp_path / "set"))
    assert [_cues(folder / f"o.{h}.mp4") for h in ("180p", "90p")] == [want, want]


def test_a_cue_spanning_a_webvtt_segment_boundary_is_in_each_segment(tmp_path: Path) -> None:
    """QA: FFmpeg's segmenter put a cue shown across a segment boundary only in the first
    segment, so a player starting or seeking into the second never showed it (RFC 8216 3.5:
    each segment holds every cue shown during it); cues past the end of the video were kept."""
    srt = tmp_path / "s.srt"
    srt.write_text("1\n00:00:00,500 --> 00:00:02,500\nacross\n\n"
                   "2\n00:00:05,000 --> 00:00:06,000\nafter the end\n")
    src = tmp_path / "s.mkv"
    ffmpeg("-f", "lavfi", "-i", camera_filter((320, 180)), "-i", str(srt), "-t", "3",
           "-map", "0:v", "-map", "1", "-c:v", "libx264", "-preset", "veryfast", "-c:s", "srt",
           "-metadata:s:s:0", "language=eng", str(src))
    profile = write_profile(tmp_path, SMALL.format(package="hls", codec="h264", audio="none",
                                                   rate=""), "subs")
    _, folder = _transcode(src, profile, "-o", str(tmp_path / "set"))
    media = next(m for m in m3u8.load(str(folder / "master.m3u8")).media if m.type == "SUBTITLES")
    playlist = m3u8.load(str(folder / media.uri))
    texts = [(folder / Path(media.uri).parent / s.uri).read_text() for s in playlist.segments]
    assert [("across" in t, "after the end" in t) for t in texts] == [(True, False), (True, False)]
    assert "00:00:00.500 --> 00:00:02.500" in texts[1]  # the same cue, its own times


@pytest.mark.parametrize("package", ["hls", "dash"])
def test_a_gap_in_the_frames_at_a_segment_boundary_is_filled_as_ffmpeg_does(
        package: str, tmp_path: Path) -> None:
    """A recording that lost 1.1 s of frames across a segment boundary (a DVR's signal
    dropout) was refused ("segment 0 lasts 3.10s, over the 2s target"): an fMP4 fragment
    starts where the one before ended, so the gap cannot stay a gap. As the ffmpeg CLI does
    for segmented output (constant frame rate), the last frame before the gap is shown until
    the next: the frames after the gap keep their times (A/V sync) and every segment its length."""
    src = tmp_path / "dropout.mp4"
    ffmpeg("-f", "lavfi", "-i", camera_filter((320, 180), 30), "-f", "lavfi", "-i",
           "sine=d=6", "-t", "6", "-vf", r"select='not(between(t\,1.5\,2.6))'",
           "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "veryfast", "-g", "30",
           "-c:a", "aac", str(src))
    source = packet_times(src, "0:v:0")
    assert len(source) == 180 - 34  # frames 1.5 .. 2.6 s missing (both ends)
    report, folder = _transcode(src, _small(tmp_path, package, name=package),
                                "-o", str(tmp_path / package))
    videos = [o for o in report["outputs"] if o["kind"] == "video"]
    assert videos and all(max(o["segment_durations"]) <= 2.5 for o in videos), videos
    made = folder / ("master.m3u8" if package == "hls" else "manifest.mpd")
    out = sorted(round(p, 3) for p, _ in packet_times(made, "0:v:0"))
    assert len(out) == 180  # 30 fps throughout, every fragment starting where it should
    # (QA: packets lasted 1/19.5 s, the source's average rate, so the playlist's last segment
    # claimed 3.08 s, FRAME-RATE said 19.5 and each later fragment started up to 18 ms late)
    assert all(abs(b - a - 1 / 30) < 0.002 for a, b in zip(out, out[1:], strict=False))
    start = min(p for p, _ in source)
    # every source frame is where it was: the gap moved nothing after it
    assert all(min(abs(p - start - (q - out[0])) for q in out) < 0.002 for p, _ in source)
    if package == "hls":
        master = m3u8.load(str(made))
        assert [p.stream_info.frame_rate for p in master.playlists] == [30.0, 30.0]
        for p in master.playlists:
            media = m3u8.load(str(folder / p.uri))
            assert media.target_duration == 2
            assert abs(sum(seg.duration for seg in media.segments) - 6.0) < 0.01
    else:
        assert 'frameRate="30"' in made.read_text()


@pytest.mark.parametrize("package", ["hls", "dash"])
def test_video_that_starts_after_the_audio_shows_its_first_frame_from_0(
        package: str, tmp_path: Path) -> None:
    """QA: video starting 1.5 s after the audio made a DASH set whose chunks were off its
    template's grid (chunk 1 held 1.5-3.47 s where the template says 0-2 s) and an HLS video
    playlist 1.5 s shorter than the audio's. As the ffmpeg CLI's constant-rate output, the first
    frame is shown from 0. (DASH now lists each segment's times in a SegmentTimeline, which
    could say where late chunks start; the video still starts with the audio, at 0.)"""
    video = camera_clip(tmp_path / "v.mp4", seconds=6, audio=False, fps=30)
    src = tmp_path / "late.mp4"
    ffmpeg("-i", str(video), "-f", "lavfi", "-i", "sine=d=6", "-vf", "select='gte(t\\,1.5)'",
           "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac",
           "-shortest", str(src))
    assert abs(stream_start(src, "0:v:0") - 1.5) < 0.05
    report, folder = _transcode(src, _small(tmp_path, package, name=package),
                                "-o", str(tmp_path / package))
    for o in report["outputs"]:
        if o["kind"] == "video":
            assert [round(d, 2) for d in o["segment_durations"]] == [2.0, 2.0, 2.0], o
    assert any("the video starts 1.5" in w and "first frame is shown from 0" in w
               for w in report["warnings"]), report["warnings"]
    made = folder / ("master.m3u8" if package == "hls" else "manifest.mpd")
    assert len(packet_times(made, "0:v:0")) == 180
    if package == "dash":
        ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
        video = ET.parse(made).getroot().find(".//d:AdaptationSet", ns)
        for rep in video.findall("d:Representation", ns):
            assert [(round(t, 2), round(d, 2)) for t, d in _timeline(rep)] == \
                [(0.0, 2.0), (2.0, 2.0), (4.0, 2.0)]


@pytest.mark.parametrize("package", ["hls", "mkv"])
def test_overlapping_segments_are_copied_into_a_ladder(package: str, tmp_path: Path) -> None:
    """QA: HLS/DVR segments whose audio overlaps by a few ms failed a ladder with the muxer's
    EINVAL ("index.m3u8 returned 22"), as single transcodes once did: the copied track's
    packets that step back are moved forward, as ffmpeg does, in every output."""
    joined = tmp_path / "joined.ts"
    with open(joined, "wb") as out:
        for i, offset in enumerate((1000, 1004)):
            out.write(camera_clip(tmp_path / f"seg{i}.ts", "-output_ts_offset", str(offset),
                                  "-f", "mpegts", seconds=4).read_bytes())
    text = SMALL.format(package=package, codec="h264", audio="aac", rate='bitrate = "300k"')
    if package == "mkv":
        text = text[:text.index("[package]")]
    report, folder = _transcode(joined, write_profile(tmp_path, text, package),
                                "-o", str(tmp_path / package))
    assert report["plan"]["audio"][0]["action"] == "copy"
    assert any(re.match(r"\d+ copied packet\(s\) whose timestamps went back were moved forward "
                        r"\(stream #1", w) for w in report["warnings"]), report["warnings"]
    outputs = [folder / "master.m3u8"] if package == "hls" else sorted(folder.glob("*.mkv"))
    assert len(outputs) == (1 if package == "hls" else 2)
    for made in outputs:
        audio = packet_times(made, "0:a:0")
        assert abs(sum(d for _, d in audio) - 8.0) < 0.1
        assert len(packet_times(made, "0:v:0")) == 200


def test_frames_lost_to_damage_are_reported_as_a_single_transcode_does(tmp_path: Path) -> None:
    """QA: a ladder from a TS with a reception drop-out said nothing of the frames it lost (a
    single transcode of it warns of them); and its HLS set shows the frame before the hole
    until the next one."""
    damaged, frames = damaged_ts(tmp_path)
    report, folder = _transcode(damaged, _small(tmp_path), "-o", str(tmp_path / "set"))
    missing = [w for w in report["warnings"] if re.match(r"about \d+ video frame\(s\) missing", w)]
    assert missing, report["warnings"]
    assert any(re.match(r"\d+ gap\(s\) in the source's frames filled with \d+ repeated", w)
               for w in report["warnings"]), report["warnings"]
    master = m3u8.load(str(folder / "master.m3u8"))
    for p in master.playlists:  # the holes filled: more frames than the damaged source decodes
        assert len(packet_times(folder / p.uri, "0:v:0")) > frames


def test_a_long_dropout_keeps_the_sets_rate(tmp_path: Path) -> None:
    """QA: a 30 fps recording that lost 5 of its 8 s was taken for a field-rate source (its
    average, 11.1 fps, under half its nominal rate): the gap was filled at 11.1 fps, the video
    ran 57 ms past the audio and FRAME-RATE said 11.125 (then 29.97: the first common rate
    within 2%, not the closest)."""
    src = tmp_path / "dropout.mp4"
    ffmpeg("-f", "lavfi", "-i", camera_filter((320, 180), 30), "-f", "lavfi", "-i",
           "sine=d=8", "-t", "8", "-vf", r"select='not(between(t\,1\,6))'",
           "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac",
           str(src))
    report, folder = _transcode(src, _small(tmp_path), "-o", str(tmp_path / "set"))
    master = m3u8.load(str(folder / "master.m3u8"))
    assert [p.stream_info.frame_rate for p in master.playlists] == [30.0, 30.0]
    for p in master.playlists:
        assert len(packet_times(folder / p.uri, "0:v:0")) == 240
        media = m3u8.load(str(folder / p.uri))
        assert abs(sum(seg.duration for seg in media.segments) - 8.0) < 0.01


def test_a_ladders_plan_records_every_dropped_track_with_its_reason(tmp_path: Path) -> None:
    """The plan is one record for one output or many: a ladder's dropped tracks stay in it with
    their reason, as a single file's do (an audio-less files ladder; DASH, which carries no
    subtitles yet)."""
    source = str(SAMPLES / "subs.mkv")  # aac [eng], opus [fra], srt [eng]
    rung = '[[renditions]]\nheight = 180\n'
    silent = write_profile(tmp_path, 'container = "mp4"\n[video]\ncodec = "h264"\n'
                           '[audio]\ncodec = "none"\n' + rung, "silent")
    dash = write_profile(tmp_path, 'container = "dash"\n[video]\ncodec = "h264"\n[audio]\n'
                         'codec = "aac"\n' + rung, "dash180")
    for profile, audio, subs in ((silent, ["drop", "drop"], ["convert"]),
                                 (dash, ["copy", "encode"], ["drop"])):
        res = run_cli("plan", source, "-p", str(profile), "--gpu", "none", "--json", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        plan = json.loads(res.stdout)
        assert [a["action"] for a in plan["audio"]] == audio
        assert [s["action"] for s in plan["subtitles"]] == subs
        assert all(t["reason"] for t in plan["audio"] + plan["subtitles"])
        text = run_cli("plan", source, "-p", str(profile), "--gpu", "none", cwd=tmp_path).stdout
        tracks = [ln.split(" - ")[0].split(" [")[0] for ln in text.splitlines()
                  if ln.startswith(("audio:", "subs:"))]
        assert tracks[0] == f"audio:   #1 aac {audio[0]}" and tracks[1].startswith(
            f"audio:   #2 opus {audio[1]}") and tracks[2].startswith(f"subs:    #3 srt {subs[0]}")
    dropped = json.loads(run_cli("plan", source, "-p", str(dash), "--gpu", "none", "--json",
                                 cwd=tmp_path).stdout)["subtitles"][0]
    assert dropped["reason"] == "DASH sets do not carry subtitles yet"
