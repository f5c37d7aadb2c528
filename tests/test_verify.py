"""The read-back of a written output: its first frame decodes, its streams last what went in,
and its bytes are flushed to disk beside the read-back."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import pytest
from conftest import SAMPLES

from mediad.errors import MediadError
from mediad.media import verify
from mediad.media.timing import Span


def test_verify_reads_back_a_whole_file(tmp_path: Path) -> None:
    out = Path(shutil.copy(SAMPLES / "h264_aac.mp4", tmp_path / "o.mp4"))
    info = verify.verify_output(out, None, [None], "src.mp4")
    with av.open(str(out)) as c:
        frames = sum(1 for p in c.demux(c.streams.video[0]) if p.size)
    assert (info.video_codec, info.frames, info.audio_streams) == ("h264", frames, 1)
    assert info.duration is not None and info.audio_durations[0] is not None
    longer = Span()  # what went in: one more second than the file holds, as one frame
    longer.add(0, round((info.duration + 1.0) * 1000), Fraction(1, 1000))
    with pytest.raises(MediadError, match="the output's video lasts"):
        verify.verify_output(out, longer, [None], "src.mp4")


def test_the_flush_beside_the_read_back_ends_with_it(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(verify.os, "fsync", lambda fd: synced.append(fd))
    out = Path(shutil.copy(SAMPLES / "h264_aac.mp4", tmp_path / "o.mp4"))
    verify.verify_output(out, None, [None], "src.mp4")
    assert len(synced) == 1
    with verify._flushing(tmp_path / "gone.mp4"):  # best effort: the commit's fsync reports
        pass
