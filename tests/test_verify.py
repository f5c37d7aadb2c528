"""The read-back of a written output: its first frame decodes (on a thread beside the demuxing),
its streams last what went in, and its bytes are flushed beside the read-back."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import pytest
from conftest import SAMPLES

from mediad.errors import MediadError
from mediad.media import verify


def test_verify_reads_back_a_whole_file(tmp_path: Path) -> None:
    out = Path(shutil.copy(SAMPLES / "h264_aac.mp4", tmp_path / "o.mp4"))
    info = verify.verify_output(out, None, [None], "src.mp4")
    with av.open(str(out)) as c:
        frames = sum(1 for p in c.demux(c.streams.video[0]) if p.size)
    assert (info.video_codec, info.frames, info.audio_streams) == ("h264", frames, 1)
    assert info.duration is not None and info.audio_durations[0] is not None
    with pytest.raises(MediadError, match="the output's video lasts"):
        verify.verify_output(out, info.duration + 1.0, [None], "src.mp4")


def test_first_frame_goes_on_until_a_packet_gives_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first packet is decoded on a thread; the next ones, in order, only while none gave
    a frame (a decoder holding its first frame back)."""
    fed: list[int] = []

    def decode_first(packet: int) -> list[str]:
        fed.append(packet)
        return ["frame"] if packet == 3 else []

    monkeypatch.setattr(verify, "decode_first", decode_first)
    first = verify._FirstFrame()
    for packet in range(1, 6):
        first.feed(packet)  # type: ignore[arg-type]
    assert first.result() and fed == [1, 2, 3]


def test_first_frame_error_is_raised_in_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    def decode_first(packet: int) -> list[str]:
        raise av.InvalidDataError(1094995529, "Invalid data found when processing input")

    monkeypatch.setattr(verify, "decode_first", decode_first)
    first = verify._FirstFrame()
    first.feed(1)  # type: ignore[arg-type]
    first.feed(2)  # type: ignore[arg-type]
    with pytest.raises(av.InvalidDataError):
        first.result()
