"""What an output file carries over from its source besides the streams' data: container tags
(title, ...), each kept stream's language, title and default/forced flags, chapters, attachments
(the fonts of ASS subtitles) and cover art. A single transcode and every file of a ladder carry
the same, with this code.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import av

from mediad.media.media_info import KEPT_DISPOSITIONS
from mediad.media.plan_streams import StreamPlan
from mediad.media.probe import open_input

if TYPE_CHECKING:
    from mediad.media.plan_records import Plan

# Container-level tags the muxer writes itself; copying them would lie about the output.
_OWN_TAGS = {"encoder", "major_brand", "minor_version", "compatible_brands", "handler_name"}
_STREAM_TAGS = ("language", "title")
# The stream flags carried onto the output (default/forced tracks, accessibility flags).
_KEPT_FLAGS = 0
for _name in KEPT_DISPOSITIONS:
    _KEPT_FLAGS |= av.stream.Disposition[_name].value


def copy_tags(src: dict[str, str], dst: dict[str, str], keys: tuple[str, ...] | None = None) -> None:
    """Tags of `src` into `dst`: `keys` only, or all but those the muxer writes itself."""
    for k, v in src.items():
        if (keys is None and k.lower() not in _OWN_TAGS) or (keys is not None and k in keys):
            dst[k] = v


def copy_stream_info(ist: av.stream.Stream, ost: av.stream.Stream) -> None:
    """Language and title tags and the default/forced/... flags of a kept stream."""
    copy_tags(ist.metadata, ost.metadata, _STREAM_TAGS)
    ost.disposition = ist.disposition.value & _KEPT_FLAGS


def add_attachments(plans: list[StreamPlan], src: av.container.InputContainer,
                    out: av.container.OutputContainer) -> None:
    """The attachments the plan keeps (Matroska only), as they are."""
    for sp in plans:
        if sp.action == "copy":
            ist = src.streams[sp.index]
            out.add_attachment(ist.name or f"attachment{ist.index}",
                               ist.mimetype or "application/octet-stream", ist.data)


def add_cover_art(plans: list[StreamPlan], src: av.container.InputContainer,
                  out: av.container.OutputContainer, container: str,
                  input_path: str) -> dict[int, av.stream.Stream]:
    """The cover art the plan keeps. MP4 holds it as a one-packet attached-picture stream (the
    returned streams, by source index: the caller copies their packet); Matroska as an
    attachment (its muxer would write such a stream as a one-frame video track), so the
    picture is read ahead from a second look at the source."""
    streams: dict[int, av.stream.Stream] = {}
    for sp in plans:
        if sp.action != "copy":
            continue
        ist = src.streams[sp.index]
        if container == "mkv":
            ext, mime = ("png", "image/png") if sp.source_codec == "png" else ("jpg", "image/jpeg")
            out.add_attachment(ist.metadata.get("filename") or f"cover.{ext}",
                               ist.metadata.get("mimetype") or mime,
                               _first_packet(input_path, ist.index))
            continue
        ost = out.add_stream_from_template(ist, opaque=True)
        ost.disposition = av.stream.Disposition.attached_pic.value
        copy_tags(ist.metadata, ost.metadata, _STREAM_TAGS)
        streams[ist.index] = ost
    return streams


def _first_packet(input_path: str, index: int) -> bytes:
    """The bytes of a stream's first packet (an attached picture), from a second reader."""
    with open_input(Path(input_path)) as c:
        for packet in c.demux(c.streams[index]):
            if packet.size:
                return bytes(packet)
    return b""


def carry_over(base: Plan, src: av.container.InputContainer, out: av.container.OutputContainer,
               container: str, chapters: list[dict]) -> dict[int, av.stream.Stream]:
    """What a file carries from its source: tags, chapters, attachments (Matroska) and cover
    art (the returned streams: see add_cover_art)."""
    copy_tags(src.metadata, out.metadata)
    if chapters:
        out.set_chapters(chapters)
    # In the source's order, as `ffmpeg -map 0` keeps them (Matroska holds both as attachments)
    covers: dict[int, av.stream.Stream] = {}
    tagged = [(sp, True) for sp in base.cover_art] + [(sp, False) for sp in base.attachments]
    for sp, cover in sorted(tagged, key=lambda item: item[0].index):
        if cover:
            covers |= add_cover_art([sp], src, out, container, base.input)
        else:
            add_attachments([sp], src, out)
    return covers
