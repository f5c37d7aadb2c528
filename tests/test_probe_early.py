"""A probe started ahead of its caller (the command line's, beside its imports) gives what the
probe itself gives, raises where it would, and is not used for a file changed meanwhile."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import SAMPLES

from mediad.errors import MediadError
from mediad.media import probe as probe_mod
from mediad.media.probe import probe, probing_early


def test_early_probe_is_the_probe(tmp_path: Path) -> None:
    src = Path(shutil.copy(SAMPLES / "h264_aac.mp4", tmp_path / "a.mp4"))
    with probing_early(src):
        assert str(src) in probe_mod._EARLY
        early = probe(src)
        assert str(src) not in probe_mod._EARLY  # taken once
    assert early == probe(src)


def test_a_file_changed_since_is_probed_again(tmp_path: Path) -> None:
    src = Path(shutil.copy(SAMPLES / "h264_aac.mp4", tmp_path / "a.mp4"))
    with probing_early(src):
        probe_mod._EARLY[str(src)].thread.join()
        shutil.copy(SAMPLES / "noaudio.mp4", src)  # replaced after the early probe read it
        info = probe(src)
    assert info.audio == [] and info.size == os.path.getsize(src)


def test_errors_are_raised_by_the_probe_not_before(tmp_path: Path) -> None:
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n" * 100)
    with probing_early(notes), pytest.raises(MediadError, match="not a media file"):
        probe(notes)
    with probing_early(tmp_path / "missing.mp4"):  # nothing started: the probe says it
        assert not probe_mod._EARLY
        with pytest.raises(MediadError, match="no such file"):
            probe(tmp_path / "missing.mp4")


def test_an_early_probe_never_taken_ends_with_its_block(tmp_path: Path) -> None:
    src = Path(shutil.copy(SAMPLES / "h264_aac.mp4", tmp_path / "a.mp4"))
    with pytest.raises(RuntimeError), probing_early(src):
        early = probe_mod._EARLY[str(src)]
        raise RuntimeError("the profile did not load")
    assert not probe_mod._EARLY and not early.thread.is_alive()
