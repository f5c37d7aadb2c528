"""The daemon config: loading, validation messages 'FILE: key.path: reason', `mediad config validate`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from mediad.config import load_config, parse_listen
from mediad.errors import MediadError

REPO = Path(__file__).resolve().parents[1]

GOOD = """
[daemon]
state_dir = "state"
workers = 3
nvenc_sessions = 2
settle_seconds = 1.5
max_attempts = 4
stall_timeout_seconds = 60
log_level = "debug"

[[watch]]
path = "in"
profile = "h264"
output_dir = "out"
recursive = true
include = ["*.mkv", "*.mp4"]
exclude = ["*sample*"]
on_success = "move"
done_dir = "done"
failed_dir = "failed"

[[watch]]
path = "/mnt/nas/incoming"
profile = "fast.toml"
output_dir = "/mnt/nas/out"
polling = true

[metrics]
listen = "127.0.0.1:9999"
"""

FAST = """
container = "mp4"
[video]
encoder = "cpu"
speed = "fastest"
"""


def write(tmp_path: Path, text: str, name: str = "mediad.toml") -> Path:
    (tmp_path / "fast.toml").write_text(FAST)
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_config_loads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    d = config.daemon
    assert (d.state_dir, d.workers, d.nvenc_sessions, d.settle_seconds) == (tmp_path / "state", 3, 2, 1.5)
    assert d.log_level == "DEBUG"
    first, second = config.watch
    assert first.path == tmp_path / "in" and first.output_dir == tmp_path / "out"
    assert first.done_dir == tmp_path / "done" and first.recursive
    assert first.loaded_profile.name == "h264"
    assert second.polling and second.path == Path("/mnt/nas/incoming")
    assert second.profile == str(tmp_path / "fast.toml")
    assert second.loaded_profile.video.encoder == "cpu"
    assert config.metrics.address == ("127.0.0.1", 9999)


def test_each_profile_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mediad.config

    read: list[str] = []
    real = mediad.config.load_profile

    def counted(spec: str) -> object:
        read.append(spec)
        return real(spec)

    monkeypatch.setattr(mediad.config, "load_profile", counted)
    text = GOOD + '\n[[watch]]\npath = "in3"\noutput_dir = "out3"\n'  # the default profile
    config = load_config(write(tmp_path, text))
    assert read == ["h264", str(tmp_path / "fast.toml")]  # validated once, kept for loaded_profile
    assert [w.loaded_profile.name for w in config.watch] == ["h264", "fast", "h264"]


def test_defaults_listen_on_loopback(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[[watch]]\npath = "in"\noutput_dir = "out"\n'))
    assert config.metrics.address == ("127.0.0.1", 9464)
    assert config.api.address is None  # the REST API: off without [api]
    api = load_config(write(tmp_path, '[[watch]]\npath = "in"\noutput_dir = "out"\n'
                                      '[api]\nlisten = "127.0.0.1:8464"\n'))
    assert api.api.address == ("127.0.0.1", 8464)
    assert config.daemon.workers == 2 and config.watch[0].on_success == "keep"


@pytest.mark.parametrize(("text", "message"), [
    ("[daemon]\nworkers = 2\n", "watch: Field required"),
    ('[[watch]]\npath = "in"\noutput_dir = "out"\nbogus = 1\n', "watch.0.bogus: unknown key"),
    ('[daemon]\nworkers = 0\n[[watch]]\npath = "in"\noutput_dir = "out"\n',
     "daemon.workers: Input should be greater than or equal to 1"),
    ('[[watch]]\npath = "in"\noutput_dir = "out"\nprofile = "nope"\n',
     "watch.0.profile: unknown profile 'nope'"),
    ('[[watch]]\npath = "in"\noutput_dir = "out"\nprofile = "missing.toml"\n',
     "watch.0.profile: "),
    ('[[watch]]\npath = "in"\noutput_dir = "out"\non_success = "move"\n',
     'watch.0.done_dir: needed when on_success = "move"'),
    ('[[watch]]\npath = "in"\noutput_dir = "in"\n', "watch.0.output_dir: "),
    ('[[watch]]\npath = "in"\noutput_dir = "in/out"\nrecursive = true\n',
     "is inside the watched folder"),
    ('[[watch]]\npath = "a"\noutput_dir = "b"\n[[watch]]\npath = "b"\noutput_dir = "c"\n',
     "watch.0.output_dir: "),
    ('[[watch]]\npath = "a"\noutput_dir = "b"\n[[watch]]\npath = "a"\noutput_dir = "c"\n',
     "watch.1.path: "),
    ('[[watch]]\npath = "in"\noutput_dir = "out"\non_success = "shred"\n', "watch.0.on_success: "),
    ('[[watch]]\npath = "in"\noutput_dir = "out"\n[metrics]\nlisten = "localhost"\n',
     "metrics.listen: expected host:port"),
    ('[[watch]]\npath = "in"\noutput_dir = "out"\n[metrics]\nlisten = "127.0.0.1:99999"\n',
     "metrics.listen: port must be 1..65535"),
    ('[[watch]]\npath = "in"\noutput_dir = "out"\n[api]\nlisten = "8464"\n',
     "api.listen: expected host:port"),
    ('[[watch]]\npath = "in"\noutput_dir = "out"\n[api]\nport = 8464\n', "api.port: unknown key"),
    ("[[watch]\n", "not valid TOML"),
    ('[[watch]]\npath = ""\noutput_dir = "out"\n', "watch.0.path: must not be empty"),
    ('[[watch]]\npath = "in"\noutput_dir = " "\n', "watch.0.output_dir: must not be empty"),
])
def test_errors_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(MediadError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert info.value.reason == "bad_config"


def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    path.write_bytes(b'# caf\xe9\n[[watch]]\npath = "in"\noutput_dir = "out"\n')
    with pytest.raises(MediadError, match=r"not UTF-8 text \(byte 0xe9 at offset 5\)"):
        load_config(path)
    res = run_cli("config", "validate", str(path))
    assert res.returncode == 1 and res.stderr.strip().splitlines() == [
        f"mediad: error: {path}: not UTF-8 text (byte 0xe9 at offset 5)"]


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MediadError, match="cannot read config"):
        load_config(tmp_path / "absent.toml")


def test_parse_listen_ipv6() -> None:
    assert parse_listen("[::1]:9464") == ("::1", 9464)


def test_cli_config_validate(tmp_path: Path) -> None:
    good = write(tmp_path, GOOD)
    bad = write(tmp_path, '[[watch]]\npath = "in"\n', "bad.toml")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ok = subprocess.run([sys.executable, "-m", "mediad", "config", "validate", str(good)],
                        capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0 and ok.stdout.strip() == f"{good}: ok"
    fail = subprocess.run([sys.executable, "-m", "mediad", "config", "validate", str(bad)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert fail.returncode == 1
    assert fail.stderr.strip() == f"mediad: error: {bad}: watch.0.output_dir: Field required"
    assert "Traceback" not in fail.stderr


@pytest.mark.parametrize("key", ["output_dir", "done_dir", "failed_dir"])
def test_a_symlink_to_the_watched_folder_is_the_watched_folder(tmp_path: Path, key: str) -> None:
    # Written into "link" would be written into "in": its outputs would come back as sources.
    (tmp_path / "in").mkdir()
    (tmp_path / "link").symlink_to("in")
    text = '[[watch]]\npath = "in"\noutput_dir = "out"\n'.replace(
        'output_dir = "out"', 'output_dir = "link"' if key == "output_dir" else
        f'output_dir = "out"\n{key} = "link"')
    with pytest.raises(MediadError) as info:
        load_config(write(tmp_path, text))
    assert f"(top level): watch.0.{key}: {tmp_path / 'link'} is inside the watched folder" in str(info.value)


def test_symlinks_are_resolved_for_recursive_watches_and_the_state_dir(tmp_path: Path) -> None:
    (tmp_path / "media" / "in").mkdir(parents=True)
    (tmp_path / "alias").symlink_to("media")
    nested = '[[watch]]\npath = "media"\nrecursive = true\noutput_dir = "alias/out"\n'
    with pytest.raises(MediadError, match=r"watch\.0\.output_dir: .* is inside the watched folder"):
        load_config(write(tmp_path, nested))
    state = '[daemon]\nstate_dir = "alias/in"\n[[watch]]\npath = "media/in"\noutput_dir = "out"\n'
    with pytest.raises(MediadError, match=r"daemon\.state_dir: .* is inside the watched folder"):
        load_config(write(tmp_path, state))
    twice = '[[watch]]\npath = "media"\noutput_dir = "o1"\n[[watch]]\npath = "alias"\noutput_dir = "o2"\n'
    with pytest.raises(MediadError, match=r"watch\.1\.path: .* is already watched"):
        load_config(write(tmp_path, twice))
    # A symlink to somewhere else is fine.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "outlink").symlink_to("elsewhere")
    load_config(write(tmp_path, '[[watch]]\npath = "media/in"\noutput_dir = "outlink"\n'))


def test_the_executor_is_named_in_the_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert (config.executor.kind, config.executor.warm_workers) == ("local", 1)
    config = load_config(write(tmp_path, GOOD + '\n[executor]\nkind = "local"\nwarm_workers = 0\n'))
    assert config.executor.warm_workers == 0
    with pytest.raises(MediadError, match=r"executor\.kind"):
        load_config(write(tmp_path, GOOD + '\n[executor]\nkind = "slurm"\n'))
    with pytest.raises(MediadError, match=r"executor: .*address: needed"):
        load_config(write(tmp_path, GOOD + '\n[executor]\nkind = "ray"\n'))
    ray = GOOD + ('\n[executor]\nkind = "ray"\naddress = "10.0.0.1:6379"\n[[executor.path_map]]\n'
                  'head = "/srv/media"\nnode = "/mnt/media/"\nnodes = ["10.0.0.3"]\n')
    config = load_config(write(tmp_path, ray))
    assert config.executor.path_map[0].node == Path("/mnt/media")
    with pytest.raises(MediadError, match=r"executor\.path_map\.0\.node: .*absolute"):
        load_config(write(tmp_path, ray.replace('"/mnt/media/"', '"media"')))


def test_a_watch_may_run_a_ladder_profile(tmp_path: Path) -> None:
    """A ladder (HLS, DASH, a file per rendition) makes a folder per source: the daemon runs it."""
    text = ('[[watch]]\npath = "in"\nprofile = "hls"\noutput_dir = "out"\n'
            '[[watch]]\npath = "in2"\nprofile = "dash"\noutput_dir = "out"\n')
    config = load_config(write(tmp_path, text))
    assert [w.loaded_profile.is_ladder for w in config.watch] == [True, True]
    assert [w.loaded_profile.output_suffix for w in config.watch] == ["hls", "dash"]
    # FFmpeg's segmenters read a '%' in a path as a pattern: refused where the config says it.
    with pytest.raises(MediadError, match=r"watch\.0\.output_dir: .*100%: a ladder's folders go"):
        load_config(write(tmp_path, '[[watch]]\npath = "in"\nprofile = "hls"\noutput_dir = "100%"\n'))
    (tmp_path / "50%.toml").write_text('container = "hls"\n')
    with pytest.raises(MediadError, match=r"watch\.0\.profile: profile 50%: a ladder's folder"):
        load_config(write(tmp_path, '[[watch]]\npath = "in"\nprofile = "50%.toml"\noutput_dir = "o"\n'))
    load_config(write(tmp_path, '[[watch]]\npath = "in"\nprofile = "h264"\noutput_dir = "100%"\n'))
