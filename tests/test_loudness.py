"""[audio] loudness: two-pass EBU R128 normalisation (loudnorm), checked with the independent
ffmpeg's ebur128 meter on the output; the report gives the figures of both passes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ffmpeg, ffmpeg_bytes, run_cli, stream_start, transcode_report, write_profile

from mediad.profiles import Profile

PROFILE = """
container = "mkv"
[video]
codec = "copy"
[audio]
codec = "aac"
bitrate = "160k"
loudness = -23
"""


def ebur128(path: Path, track: int) -> dict[str, float]:
    """Integrated loudness, range and true peak of one audio track, by the independent ffmpeg."""
    err = ffmpeg("-nostats", "-i", str(path), "-map", f"0:a:{track}", "-af",
                 "ebur128=peak=true", "-f", "null", "-").stderr
    summary = err[err.rindex("Summary:"):]
    return {"I": float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1)),  # type: ignore[union-attr]
            "LRA": float(re.search(r"LRA:\s+(-?[\d.]+) LU", summary).group(1)),  # type: ignore[union-attr]
            "TP": float(re.search(r"Peak:\s+(-?[\d.]+) dBFS", summary).group(1))}  # type: ignore[union-attr]


def audio_seconds(path: Path, track: str) -> float:
    """How long a track's decoded samples last, by the independent ffmpeg."""
    pcm = ffmpeg_bytes("-i", str(path), "-map", track, "-f", "s16le", "-ac", "1", "-ar", "48000", "-")
    return len(pcm) / 96000


@pytest.fixture(scope="module")
def quiet_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Video and two quiet audio tracks that start 0.2 s after it: pink noise swelling and
    fading (a range of loudness, as programme audio has), and a softer tone in AC-3."""
    path = tmp_path_factory.mktemp("media") / "quiet.mkv"
    ffmpeg("-y", "-f", "lavfi", "-i", "testsrc2=s=160x90:r=25",
           "-f", "lavfi", "-i", "anoisesrc=a=0.05:c=pink:r=48000:seed=7,"
           "volume='0.35+0.3*sin(2*PI*t/4)':eval=frame,aformat=channel_layouts=stereo",
           "-f", "lavfi", "-i", "sine=f=330:r=44100,volume=0.05",
           "-t", "12", "-map", "0", "-map", "1", "-map", "2", "-c:v", "libx264", "-preset",
           "ultrafast", "-c:a:0", "aac", "-c:a:1", "ac3", "-output_ts_offset", "0", "-af",
           "adelay=200|200", str(path))
    return path


def test_every_encoded_track_reaches_the_target_loudness(quiet_source: Path, tmp_path: Path) -> None:
    before = [ebur128(quiet_source, t) for t in (0, 1)]
    assert all(b["I"] < -30 for b in before), before  # well below the target: turned up
    out = tmp_path / "o.mkv"
    report = transcode_report(str(quiet_source), "-p", str(write_profile(tmp_path, PROFILE)),
                              "-o", str(out))
    figures = {t["stream"]: t for t in report["loudness"]}
    assert sorted(figures) == [1, 2]
    for track, stream in ((0, 1), (1, 2)):
        after = ebur128(out, track)
        assert abs(after["I"] - -23) <= 1.0, (track, after)
        assert after["TP"] <= -1.0 + 0.5, (track, after)
        # The first pass measured the source as the independent meter does
        assert abs(figures[stream]["input_i"] - before[track]["I"]) <= 1.0, (figures, before)
    # The source's AAC track is re-encoded, not copied, when its loudness is to change
    decisions = {a["index"]: a for a in report["plan"]["audio"]}
    assert decisions[1]["action"] == "encode" and "loudness normalised" in decisions[1]["reason"]
    # Timing kept: each track starts where it did and lasts as long (its samples, decoded)
    for track in ("0:a:0", "0:a:1"):
        assert abs(stream_start(out, track) - stream_start(quiet_source, track)) < 0.03
        assert abs(audio_seconds(out, track) - audio_seconds(quiet_source, track)) < 0.03


def test_a_track_within_range_is_only_turned_up(quiet_source: Path, tmp_path: Path) -> None:
    """Within the target's range and peak, loudnorm works linearly: the range is kept."""
    profile = PROFILE.replace("loudness = -23", "loudness = -27\ntrue_peak = -1\nlra = 20")
    out = tmp_path / "o.mkv"
    report = transcode_report(str(quiet_source), "-p", str(write_profile(tmp_path, profile)),
                              "-o", str(out))
    noise = next(t for t in report["loudness"] if t["stream"] == 1)
    assert noise["normalization"] == "linear", noise
    before, after = ebur128(quiet_source, 0), ebur128(out, 0)
    assert abs(after["I"] - -27) <= 1.0 and abs(after["LRA"] - before["LRA"]) <= 1.0, (before, after)
    text = run_cli("transcode", str(quiet_source), "-p", str(write_profile(tmp_path, profile)),
                   "-o", str(tmp_path / "t.mkv"), "--no-progress").stdout
    assert "loudness: audio #1" in text and "LUFS (linear" in text, text


def test_loudness_keys_are_checked() -> None:
    with pytest.raises(ValueError, match="not used with codec"):
        Profile.model_validate({"audio": {"codec": "copy", "loudness": -23}})
    with pytest.raises(ValueError, match="set loudness too"):
        Profile.model_validate({"audio": {"true_peak": -1}})
    with pytest.raises(ValueError, match="loudness"):
        Profile.model_validate({"audio": {"loudness": -2}})


LADDER = """
container = "{package}"
[video]
codec = "h264"
speed = "fastest"
[[renditions]]
height = 90
[[renditions]]
height = 60
[audio]
codec = "aac"
loudness = -16
[package]
segment_seconds = 2
keyframe_seconds = 1
"""


@pytest.mark.parametrize("package", ["hls", "mkv"])
def test_a_ladder_normalises_each_track_once_for_every_output(package: str, quiet_source: Path,
                                                              tmp_path: Path) -> None:
    """Each track measured and normalised once, its packets in every output: the HLS audio
    group's members, or every rendition's file."""
    report = transcode_report(str(quiet_source), "-p",
                              str(write_profile(tmp_path, LADDER.format(package=package), "loud")),
                              "-o", str(tmp_path / "set"), "--gpu", "none")
    assert sorted(t["stream"] for t in report["loudness"]) == [1, 2]
    folder = tmp_path / "set"
    if package == "hls":  # a member of the audio group per track, each read on its own
        outputs = [(folder / name / "index.m3u8", 0) for name in ("audio-1", "audio-2")]
    else:
        outputs = [(folder / f"quiet.{h}.mkv", t) for h in ("90p", "60p") for t in (0, 1)]
    for path, track in outputs:
        after = ebur128(path, track)
        assert abs(after["I"] - -16) <= 1.0, (path, track, after)
        assert after["TP"] <= -1.0 + 0.5, (path, track, after)


@pytest.mark.parametrize("package", ["mkv", "hls"])
def test_a_silent_or_very_short_track_is_kept_as_it_is_with_a_word(package: str,
                                                                   tmp_path: Path) -> None:
    """QA: a silent track (a camera with its mic off) or a 0.2 s one has no loudness to
    measure (-inf): the whole job failed as a corrupt source. Now that track is encoded
    without normalising and the report says why; the other track is normalised."""
    src = tmp_path / "mute.mkv"
    ffmpeg("-y", "-f", "lavfi", "-i", "testsrc2=s=160x90:r=25", "-f", "lavfi",
           "-i", "anullsrc=r=48000:cl=stereo", "-f", "lavfi",
           "-i", "anoisesrc=a=0.05:c=pink:r=48000:seed=7", "-t", "3", "-map", "0", "-map", "1",
           "-map", "2", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(src))
    text = PROFILE if package == "mkv" else LADDER.format(package="hls").replace(
        "loudness = -16", "loudness = -23")
    out = tmp_path / ("o.mkv" if package == "mkv" else "set")
    report = transcode_report(str(src), "-p", str(write_profile(tmp_path, text)), "-o",
                              str(out), "--gpu", "none")
    assert any("audio #1: silent" in w and "not normalised" in w for w in report["warnings"]), \
        report["warnings"]
    assert [t["stream"] for t in report["loudness"]] == [2]
    noise = out if package == "mkv" else out / "audio-2" / "index.m3u8"
    assert abs(ebur128(noise, 1 if package == "mkv" else 0)["I"] - -23) <= 1.0
