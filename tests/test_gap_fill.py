"""gap_fill on real frames: the repeats that fill a gap, their times and durations."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from mediad.media.gap_fill import GapFiller, fill_rate, repeat

TB = Fraction(1, 15360)
STEP = 512  # 1/30 s in TB


def _frame(pts: int, shade: int) -> av.VideoFrame:
    f = av.VideoFrame.from_ndarray(np.full((32, 48, 3), shade, np.uint8), format="rgb24")
    f.pts, f.time_base = pts, TB
    return f


def test_a_gap_is_filled_on_the_grid_and_every_frame_lasts_to_the_next() -> None:
    filler = GapFiller(Fraction(30))
    got = []
    for pts, shade in ((0, 10), (STEP, 20), (7 * STEP, 30), (8 * STEP, 40), (None, 0)):
        got += list(filler(_frame(pts, shade) if pts is not None else None))
    assert [f.pts for f in got] == [k * STEP for k in range(9)]
    assert [f.duration for f in got] == [STEP] * 9
    # the gap shows the frame before it; the frames around it are the real ones
    assert [int(f.to_ndarray()[0, 0, 0]) for f in got] == [10, 20, 20, 20, 20, 20, 20, 30, 40]
    assert (filler.gaps, filler.filled, filler.max_rate()) == (1, 5, 30)


def test_a_late_start_is_filled_from_0_and_a_field_rate_is_not_a_gap() -> None:
    filler = GapFiller(Fraction(30))
    got = list(filler(_frame(4 * STEP, 1))) + list(filler(_frame(5 * STEP, 2))) + \
        list(filler(None))
    assert [f.pts for f in got] == [0, STEP, 2 * STEP, 3 * STEP, 4 * STEP, 5 * STEP]
    assert "starts 0.133s after the audio" in (filler.summary() or "")
    # 25 frames a second at a nominal 50: two intervals apart is no gap; the rate is measured
    field = GapFiller(Fraction(50))
    out = [f for pts in (0, 614, 1229, 1843, None) for f in field(
        None if pts is None else _frame(pts, 0))]
    assert len(out) == 4 and field.gaps == 0 and field.max_rate() == 25


def test_a_repeat_is_a_copy_of_a_host_frame() -> None:
    f = _frame(0, 77)
    r = repeat(f, 99)
    assert r is not f and r.pts == 99 and f.pts == 0
    assert np.array_equal(r.to_ndarray(), f.to_ndarray())


def test_the_fill_rate_is_a_frame_rate_not_a_time_base() -> None:
    assert fill_rate(Fraction(30), Fraction(39, 2)) == 30  # a source with gaps
    assert fill_rate(1000, Fraction(30000, 1001)) == Fraction(30000, 1001)  # a ms time base
    assert fill_rate(None, None) is None


def test_a_short_lead_is_filled_and_the_closest_common_rate_is_said() -> None:
    """QA: video 90 ms after the audio (2.25 intervals at 25 fps) left a DASH set's chunks
    90 ms off the template's grid; and a measured 30 fps was said as 29.97 (the first common
    rate within 2%, not the closest)."""
    tb = Fraction(1, 1000)
    filler = GapFiller(Fraction(25))
    f = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
    f.pts, f.time_base = 90, tb
    assert [g.pts for g in filler(f)] == [0, 40]  # the frame itself waits for the next
    assert [g.pts for g in filler(None)] == [90]
    at50 = GapFiller(Fraction(50))  # 30 fps frames under a nominal 50
    frames = [_frame(k * STEP, 0) for k in range(4)]
    for x in [*frames, None]:
        list(at50(x))
    assert at50.max_rate() == 30
