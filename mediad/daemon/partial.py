"""Left-over temporary outputs of killed workers, and their removal.

The engine writes `.<stem>.<pid>-<8 hex>.part<suffix>` beside the destination
(mediad.media.commit.temp_path_for) and removes it on any exception; only a SIGKILL (a stall kill,
a `kill -9` of the daemon taking its workers along) can leave one behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path

from mediad import log


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_partials(output: Path) -> list[Path]:
    """Remove temporary files of `output` whose writer process is gone; return what was removed."""
    pattern = re.compile(rf"^\.{re.escape(output.stem)}\.(\d+)-[0-9a-f]{{8}}\.part{re.escape(output.suffix)}$")
    removed = []
    try:
        entries = list(os.scandir(output.parent))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None or _alive(int(m.group(1))) or not entry.is_file(follow_symlinks=False):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
            log.event("partial_removed", logging.WARNING, path=entry.path)
    return removed
