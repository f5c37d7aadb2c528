"""Profile loading and validation: built-ins, error messages with file + key path, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

from mediad.errors import MediadError
from mediad.profiles import builtin_names, load_profile, parse_profile

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
