"""Reading a source's packets on past damaged data, as the ffmpeg CLI does.

FFmpeg's MPEG-TS demuxer gives up looking for its sync byte after 64 KiB of garbage (a
reception drop-out zeroed on disk, a damaged sector) and answers "try again" (EAGAIN); the
next read goes on from there. PyAV raises that as `av.BlockingIOError` out of `demux()`, which
ends its generator: reading stopped there, and a damaged recording the ffmpeg CLI transcodes
(it retries EAGAIN) failed whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import av

from mediad.errors import MediadError, Reason

# "Try again" answers in a row, with no packet between them, before the rest of the file is
# taken for unreadable: each is a 64 KiB resync window, so this is 256 MiB of garbage.
MAX_RESYNCS = 4096


def _nothing() -> None:
    return None


def read_packets(container: av.container.InputContainer, streams: Sequence[av.stream.Stream],
                 lost_sync: Callable[[], None] = _nothing) -> Iterator[av.Packet]:
    """`container.demux(streams)` (its flush packets last), reading on where the demuxer lost
    its sync; `lost_sync` is called once for each damaged stretch (the health report counts
    them)."""
    tries = 0
    while True:
        try:
            for packet in container.demux(list(streams)):
                tries = 0
                yield packet
            return
        except av.BlockingIOError:
            tries += 1
            if tries > MAX_RESYNCS:
                raise MediadError(f"{container.name}: unreadable past a damaged stretch (the "
                                  f"demuxer found no packet in {MAX_RESYNCS} tries)",
                                  reason=Reason.CORRUPT) from None
            if tries == 1:
                lost_sync()
