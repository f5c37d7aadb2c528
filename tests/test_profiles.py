"""Profile loading and validation: built-ins, error messages with file + key path, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from mediad.errors import MediadError
from mediad.profiles import Profile, builtin_names, load_profile, parse_profile

REQUIRED = {"h264", "hevc", "av1", "h264-720p", "web"}


def test_builtin_profiles_exist_and_validate() -> None:
    names = set(builtin_names())
    assert names >= REQUIRED
    for name in names:
        p = load_profile(name)
        assert p.name == name
        assert p.description


def test_default_profile_is_h264() -> None:
    p = load_profile(None)
    assert (p.name, p.video.codec, p.container) == ("h264", "h264", "mp4")


def test_web_profile_is_faststart_h264_aac() -> None:
    p = load_profile("web")
    assert p.faststart and p.video.codec == "h264" and p.audio.codec == "aac"


@pytest.mark.parametrize(("text", "expected"), [
    ("[video]\nquality = 99", "profiles/x.toml: video.quality: must be 0..51 for h264"),
    ("[video]\ncodec = 'av1'\nquality = 0", "profiles/x.toml: video.quality: must be 1..63 for av1"),
    ("[video]\nquality = 20\nbitrate = '4M'", "quality and bitrate are exclusive"),
    ("[video]\nbitrate = 'fast'", "video.bitrate: not a bitrate"),
    ("[video]\ncolour = 1", "profiles/x.toml: video.colour: unknown key"),
    ("container = 'avi'", "profiles/x.toml: container: Input should be"),
    ("container = 'webm'", "webm needs av1 video and opus audio"),
    ("container = 'webm'\n[video]\ncodec = 'av1'\n[audio]\ncodec = 'aac'", "webm needs av1 video and opus audio"),
    ("container = 'mkv'\nfaststart = true", "faststart applies to mp4/mov only"),
    ("[video]\nmax_height = 4", "video.max_height: Input should be greater than or equal to 16"),
    ("[video]\nspeed = 'ludicrous'", "video.speed: Input should be"),
    ("[audio]\ncodec = 'mp3'", "audio.codec: Input should be"),
    ("this is = not toml [", "profiles/x.toml: not valid TOML"),
])
def test_invalid_profiles_name_file_key_and_reason(text: str, expected: str) -> None:
    with pytest.raises(MediadError) as err:
        parse_profile(text, "profiles/x.toml", "x")
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_valid_custom_profile_by_path(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text("container = 'webm'\n[video]\ncodec = 'av1'\nbitrate = '2M'\n[audio]\ncodec = 'opus'\n")
    p = load_profile(str(f))
    assert p.name == "mine" and p.video.bitrate == "2M" and p.video.effective_quality is None


def test_unknown_profile_name_lists_builtins() -> None:
    with pytest.raises(MediadError, match="built-in profiles are .*h264"):
        load_profile("nope")


def test_cli_profiles_commands(tmp_path: Path) -> None:
    listed = run_cli("profiles", "list")
    assert listed.returncode == 0 and all(n in listed.stdout for n in REQUIRED)
    shown = run_cli("profiles", "show", "web")
    assert shown.returncode == 0 and "faststart = true" in shown.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[video]\nquality = 77\n")
    res = run_cli("profiles", "validate", "h264", str(bad))
    assert res.returncode == 1
    assert res.stderr.strip() == f"mediad: error: {bad}: video.quality: must be 0..51 for h264"
    schema = run_cli("profiles", "schema")
    assert schema.returncode == 0 and '"video"' in schema.stdout


@pytest.mark.parametrize(("text", "expected"), [
    # codec = "copy" writes the source's packets: every encoding setting would be silently lost
    ("[video]\ncodec = 'copy'\nmax_height = 720",
     'x.toml: video.max_height: not used with codec = "copy" (the video is copied as it is)'),
    ("[video]\ncodec = 'copy'\nquality = 99", 'video.quality: not used with codec = "copy"'),
    ("[video]\ncodec = 'copy'\nbit_depth = 8", 'video.bit_depth: not used with codec = "copy"'),
    ("[video]\ncodec = 'copy'\nencoder = 'gpu'", 'video.encoder: not used with codec = "copy"'),
    ("[video]\ncodec = 'copy'\nspeed = 'slow'", 'video.speed: not used with codec = "copy"'),
    ("[video]\ncodec = 'copy'\nbitrate = '4M'", 'video.bitrate: not used with codec = "copy"'),
    ("[audio]\ncodec = 'copy'\nchannels = 1",
     'x.toml: audio.channels: not used with codec = "copy" (tracks are copied as they are)'),
    ("[audio]\ncodec = 'copy'\nbitrate = '128k'", 'audio.bitrate: not used with codec = "copy"'),
    ("[audio]\ncodec = 'none'\nbitrate = '96k'",
     'x.toml: audio.bitrate: not used with codec = "none" (audio is dropped)'),
    # what the encoders refuse at run time (avcodec_open2 ... returned 22), caught up front
    ("[audio]\nbitrate = '1'", "x.toml: audio.bitrate: must be at least 6k (is '1')"),
    ("container = 'mkv'\n[audio]\ncodec = 'opus'\nchannels = 2\nbitrate = '600k'",
     "x.toml: audio.bitrate: must be at most 512k for opus with channels = 2: 256k per channel"),
    ("container = 'mkv'\n[audio]\ncodec = 'opus'\nbitrate = '3M'",
     "audio.bitrate: must be at most 2048k for opus (8 channels at most)"),
    ("[audio]\nchannels = 1\nbitrate = '10M'", "audio.bitrate: must be at most 288k for aac"),
    ("[video]\nbitrate = '1'", "x.toml: video.bitrate: must be at least 10k (is '1')"),
    ("[video]\ncodec = 'hevc'\nbitrate = '999'", "video.bitrate: must be at least 10k"),
    ("container = 'mkv'\n[video]\ncodec = 'av1'\nbitrate = '150M'",
     "video.bitrate: must be at most 100M for av1"),
    # TOML has real booleans and integers: anything else is a typo, not a value to coerce
    ("[video]\nquality = true", "x.toml: video.quality: Input should be a valid integer"),
    ("[video]\nquality = '23'", "video.quality: Input should be a valid integer"),
    ("[video]\nquality = 23.0", "video.quality: Input should be a valid integer"),
    ("faststart = 'yes'", "x.toml: faststart: Input should be a valid boolean"),
    ("[video]\ncopy_if_matching = 1", "video.copy_if_matching: Input should be a valid boolean"),
    ("[audio]\nchannels = '2'", "audio.channels: Input should be a valid integer"),
])
def test_settings_that_would_be_ignored_or_refused_later_are_errors(text: str, expected: str) -> None:
    with pytest.raises(MediadError) as err:
        parse_profile(text, "profiles/x.toml", "x")
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert err.value.reason == "bad_profile"


@pytest.mark.parametrize("text", [
    "[video]\ncodec = 'copy'\n[audio]\ncodec = 'copy'\n",  # unset keys are fine with copy
    "[video]\ncodec = 'copy'\ncopy_if_matching = false\n[audio]\ncodec = 'none'\n",
    "[video]\nbitrate = '10k'\n[audio]\nbitrate = '6k'\nchannels = 1\n",
    "[video]\ncodec = 'hevc'\nbitrate = '999G'\n[audio]\nchannels = 2\nbitrate = '576k'\n",
    "container = 'mkv'\n[video]\ncodec = 'av1'\nbitrate = '100M'\n"
    "[audio]\ncodec = 'opus'\nchannels = 2\nbitrate = '512k'\n",
    "container = 'mkv'\n[audio]\ncodec = 'opus'\nchannels = 6\nbitrate = '1.5M'\n",
    "container = 'mkv'\n[audio]\ncodec = 'opus'\nbitrate = '2048k'\n",
    "container = 'mkv'\n[audio]\ncodec = 'aac'\nchannels = 3\n",
])
def test_settings_the_encoders_take_validate(text: str) -> None:
    parse_profile(text, "x.toml", "x")


def test_profiles_survive_the_daemons_json_round_trip() -> None:
    # mediad/daemon: service.py sends profile.model_dump(mode="json") through JSON, worker.py
    # re-validates it without a file context: copy profiles (every key now given) must pass too.
    texts = [(name, (Path(__file__).parent.parent / "profiles" / f"{name}.toml").read_text())
             for name in builtin_names()]
    texts += [
        ("copy", "container = 'mkv'\n[video]\ncodec = 'copy'\n[audio]\ncodec = 'copy'\n"),
        ("drop", "[audio]\ncodec = 'none'\n"),
        ("classify", "[[stages]]\nkind = 'classify'\nmodel = 'm.pt'\nlabels = 'l.txt'\n"
                     "input_size = [256, 320]\nmean = [0, 0.5, 1]\nstd = [0.25, 0.25, 0.25]\n"
                     "every_seconds = 2\n"),
        ("square", "[[stages]]\nkind = 'classify'\ninput_size = 224\nevery = 3\n"),
    ]
    for name, text in texts:
        profile = parse_profile(text, f"{name}.toml", name)
        spec = json.loads(json.dumps({"profile": profile.model_dump(mode="json"), "profile_name": name}))
        again = Profile.model_validate({**spec["profile"], "name": spec["profile_name"]})
        assert again == profile, name


def test_non_utf8_profile_is_one_line_error_everywhere(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'description = "caf\xe9"\n')
    with pytest.raises(MediadError) as err:
        load_profile(str(bad))
    assert str(err.value) == f"{bad}: not UTF-8 text (byte 0xe9 at offset 18)"
    assert err.value.reason == "bad_profile"
    sample = str(Path(__file__).parent.parent / "samples" / "h264_aac.mp4")
    for args in (("profiles", "validate", str(bad)), ("profiles", "show", str(bad)),
                 ("plan", sample, "-p", str(bad)),
                 ("transcode", sample, "-p", str(bad), "-o", str(tmp_path / "o.mp4"))):
        res = run_cli(*args)
        assert res.returncode == 1, args
        assert res.stderr == f"mediad: error: {bad}: not UTF-8 text (byte 0xe9 at offset 18)\n", args
    assert not (tmp_path / "o.mp4").exists()


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    f = tmp_path / "bom.toml"
    f.write_bytes(b'\xef\xbb\xbfcontainer = "mkv"\n')
    assert load_profile(str(f)).container == "mkv"
    res = run_cli("profiles", "validate", str(f))
    assert (res.returncode, res.stdout) == (0, f"{f}: ok\n")


def test_empty_profile_name_is_an_error_not_the_default() -> None:
    with pytest.raises(MediadError, match="^profile name is empty") as err:
        load_profile("")
    assert err.value.reason == "bad_profile"
    res = run_cli("profiles", "validate", "")
    assert (res.returncode, res.stdout) == (1, "")
    assert res.stderr.startswith("mediad: error: profile name is empty")
    sample = str(Path(__file__).parent.parent / "samples" / "h264_aac.mp4")
    res = run_cli("plan", sample, "-p", "")
    assert res.returncode == 1 and "profile name is empty" in res.stderr
