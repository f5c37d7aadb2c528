"""Left-over temporary outputs of killed workers, and their removal.

The engine writes `.<stem>.<pid>-<8 hex>.part<suffix>` beside the destination
(mediad.media.commit.temp_path_for) and removes it on any exception; only a SIGKILL (a stall kill,
a `kill -9` of the daemon taking its workers along) can leave one behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from mediad import log
from mediad.media.commit import pid_alive, temp_writer_pid


def remove_partials(output: Path) -> list[Path]:
    """Remove temporary files of `output` whose writer process is gone; return what was removed."""
    removed = []
    try:
        entries = list(os.scandir(output.parent))
    except OSError:
        return removed
    for entry in entries:
        pid = temp_writer_pid(output, entry.name)
        if pid is None or pid_alive(pid) or not entry.is_file(follow_symlinks=False):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
            log.event("partial_removed", logging.WARNING, path=entry.path)
    return removed
