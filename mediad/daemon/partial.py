"""Left-over temporary outputs of killed workers, and their removal.

The engine writes `.<stem>.<pid>-<8 hex>.part<suffix>` beside a destination file
(mediad.media.commit.temp_path_for), or a ladder's set into the folder
`.<name>.<pid>-<8 hex>.part` beside its destination folder (temp_dir_for), and removes it on any
exception; only a SIGKILL (a stall kill, a `kill -9` of the daemon taking its workers along)
can leave one behind.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mediad import log
from mediad.media.commit import remove_dead_writers, remove_stale_sets, temp_name


def remove_partials(output: Path) -> list[Path]:
    """Remove temporary files and set folders of `output` whose writer process is gone; return
    what was removed. (Both kinds are looked for: the output's name does not say which it is.)"""
    removed = [*remove_dead_writers(output.parent, temp_name(output)), *remove_stale_sets(output)]
    for path in removed:
        log.event("partial_removed", logging.WARNING, path=path)
    return removed
