"""The container tables in mediad/formats.py against FFmpeg's own muxers (avformat_query_codec,
through PyAV's `supported_codecs`): a codec mediad plans into a container must be one the muxer
takes, so a table that drifts from FFmpeg fails here, not in a user's job."""

from __future__ import annotations

import io

import av
import pytest

from mediad.formats import CONTAINER_AUDIO, CONTAINER_FORMAT, CONTAINER_SUBTITLES, CONTAINER_VIDEO

# Matroska takes any codec id with a Matroska codec string; FFmpeg's query answers from a
# narrower table. These are written by its muxer all the same (copied in tests/test_streams.py
# and tests/test_subtitles.py, or FFmpeg's codec names differ: DTS is "dca").
_MATROSKA_BEYOND_QUERY = {"dts", "hdmv_pgs_subtitle", "dvd_subtitle", "dvb_subtitle"}


@pytest.mark.parametrize("container", sorted(CONTAINER_FORMAT))
def test_every_codec_mediad_plans_into_a_container_is_one_its_muxer_takes(container: str) -> None:
    with av.open(io.BytesIO(), "w", format=CONTAINER_FORMAT[container]) as out:
        supported = out.supported_codecs
    planned = (CONTAINER_VIDEO[container] or set()) | CONTAINER_AUDIO[container] \
        | CONTAINER_SUBTITLES[container]
    missing = planned - supported
    if container == "mkv":
        missing -= _MATROSKA_BEYOND_QUERY
    assert not missing, f"{container}: FFmpeg's muxer does not take {sorted(missing)}"
