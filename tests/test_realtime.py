"""SVT-AV1 run as root makes the opening thread and its own threads SCHED_FIFO 99; a
transcode must leave no thread of the process real-time (a real-time encoder preempts the
whole machine, and threads started later inherit it: spinning OpenMP workers then starved
the thread they waited for, and a stage test hung)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from conftest import make_clip

from mediad.media.job import transcode
from mediad.profiles import load_profile
from mediad.realtime import realtime_threads

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only root can be switched to real-time")


def test_an_av1_transcode_leaves_no_thread_real_time(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "c.mp4", frames=12, size=(128, 72), audio=False)
    assert realtime_threads() == []
    transcode(src, load_profile("av1"), tmp_path / "out.mkv", gpu="none")
    assert realtime_threads() == []
    policies: list[int] = []
    t = threading.Thread(target=lambda: policies.append(os.sched_getscheduler(0)))
    t.start()
    t.join()
    assert policies == [os.SCHED_OTHER]  # what a thread started now inherits
