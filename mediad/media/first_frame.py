"""The first decoded frame of a video stream: what only a frame shows (rotation, interlacing,
HDR10 side data) and the proof, early, that the video decodes at all."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import av

from mediad.errors import MediadError, Reason
from mediad.media.hdr import HdrMetadata, from_frame
from mediad.media.reading import read_packets


@dataclass(frozen=True)
class FirstFrame:
    """What the first decoded frame shows."""

    rotation: int
    interlaced: bool
    hdr: HdrMetadata | None
    mirrored: bool = False  # the display matrix also flips the picture


def first_frame(c: av.container.InputContainer, stream: av.video.stream.VideoStream) -> FirstFrame:
    """Rotation, interlacing and HDR10 metadata, read from the first decoded frame.

    PyAV exposes the display matrix, HDR side data and the interlaced flag only on decoded
    frames, so this decodes one frame; it also proves early that the video decodes at all.
    Raises MediadError when it does not.
    """
    try:
        decode = FirstFrameDecoder()
        for packet in read_packets(c, [stream]):  # past garbage before the first packet
            for frame in decode(packet):
                return FirstFrame(int(round(frame.rotation / 90.0)) * 90 % 360,
                                   frame.interlaced_frame, from_frame(frame), _mirrored(frame))
    except av.FFmpegError as e:
        raise MediadError(f"{c.name}: video does not decode: {e}", reason=Reason.CORRUPT) from None
    return FirstFrame(0, False, None)


def _mirrored(frame: av.VideoFrame) -> bool:
    """Whether the frame's display matrix flips the picture (a negative determinant), which
    PyAV's `rotation` does not say (`ffmpeg -display_hflip`, some phones' front cameras)."""
    for side_data in frame.side_data:
        if side_data.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            m = struct.unpack("<9i", bytes(side_data)[:36])
            return m[0] * m[4] - m[1] * m[3] < 0
    return False


class FirstFrameDecoder:
    """decode_first over one stream's packets: a drain is tried at the first keyframe only,
    then packets decode on as they come (an intra-refresh picture builds up over many packets
    from a recovery point; draining at each one restarted it)."""

    def __init__(self) -> None:
        self.drain = True

    def __call__(self, packet: av.Packet) -> list[av.VideoFrame]:
        frames = decode_first(packet, self.drain)
        self.drain = self.drain and not packet.is_keyframe
        return frames


def decode_first(packet: av.Packet, drain: bool = True) -> list[av.VideoFrame]:
    """Decode a packet while looking for a stream's first frame; the decoder may be left drained.

    A decoder holds frames back to reorder them: H.264/HEVC with B-frames wanted two more
    packets before the first frame, and the first P-frame can cost as much to decode as the
    keyframe (grainy 720p: 50 -> 28 ms, 1080p: 115 -> 61 ms). Draining after the keyframe hands
    its frame out at once. A keyframe marked discard (an edit list starting later) is decoded
    as before, packet by packet. Once a drain gave nothing (`drain` False then), packets are
    decoded on as they come: an intra-refresh stream's picture builds up over many packets
    from a recovery point, and draining at each one restarted it (a copy was refused as "does
    not decode").
    """
    frames = packet.decode()
    if not frames and drain and packet.is_keyframe and not packet.is_discard:
        cc = packet.stream.codec_context
        frames = cc.decode(None)
        if not frames:
            cc.flush_buffers()  # nothing from that keyframe: go on decoding after it
    return frames
