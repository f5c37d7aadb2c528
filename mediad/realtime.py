"""Undo the real-time scheduling SVT-AV1 gives itself when it runs as root.

Opening a libsvtav1 encoder as root switches the opening thread to SCHED_FIFO at priority 99,
and the ~40 threads it starts inherit that (seen with PyAV's SVT-AV1 4.1: `Failed to set
thread priority` on stderr is the same code path). A real-time process preempts everything on
the machine but the kernel's own threads, and every thread the process starts later inherits
the policy too: torch's OpenMP workers then spin-waited at priority 99 on both cores of the CI
machine and the model thread they waited for never ran (a stage test hung for 20+ minutes).
The ffmpeg CLI run as root has the same policy; mediad, a service, puts its threads back.
"""

from __future__ import annotations

import os

_TASKS = "/proc/self/task"


def realtime_threads() -> list[int]:
    """Thread ids of this process under a real-time policy (SCHED_FIFO or SCHED_RR)."""
    found = []
    for name in os.listdir(_TASKS):
        try:
            if os.sched_getscheduler(int(name)) in (os.SCHED_FIFO, os.SCHED_RR):
                found.append(int(name))
        except OSError:  # the thread ended meanwhile
            continue
    return found


def undo_realtime() -> int:
    """Put every real-time thread of this process back to normal scheduling; how many."""
    if os.geteuid() != 0:  # only root (CAP_SYS_NICE) can have been switched
        return 0
    count = 0
    for tid in realtime_threads():
        try:
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            count += 1
        except OSError:
            continue
    return count
