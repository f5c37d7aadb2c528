"""Inline SVG charts made on the server (no script, no CDN): sparklines and bars. Every number
is formatted here; every text is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape


def sparkline(points: Sequence[tuple[float, float | None]], *, start: float, end: float,
              top: float = 100.0, label: str, width: int = 300, height: int = 48) -> str:
    """A line of (time, value) over [start, end], values from 0 to `top`; gaps where a value
    is None. An `img` with `label` as its accessible name."""
    pad = 2
    span = max(end - start, 1e-9)

    def xy(t: float, v: float) -> str:
        x = pad + (width - 2 * pad) * (t - start) / span
        y = height - pad - (height - 2 * pad) * max(0.0, min(v, top)) / (top or 1)
        return f"{x:.1f},{y:.1f}"

    lines, run = [], []
    for t, v in points:
        if v is None:
            if run:
                lines.append(run)
            run = []
        else:
            run.append(xy(t, v))
    if run:
        lines.append(run)
    paths = "".join(f'<polyline points="{" ".join(r)}" fill="none" stroke="currentColor" '
                    f'stroke-width="1.5"/>' if len(r) > 1 else
                    f'<circle cx="{r[0].split(",")[0]}" cy="{r[0].split(",")[1]}" r="1.5" '
                    f'fill="currentColor"/>' for r in lines)
    return (f'<svg class="spark" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{escape(label)}" preserveAspectRatio="none">'
            f'<title>{escape(label)}</title>'
            f'<rect x="0" y="0" width="{width}" height="{height}" class="frame"/>{paths}</svg>')


def bars(values: Sequence[tuple[str, float]], *, label: str, unit: str = "",
         width: int = 420, height: int = 120) -> str:
    """Vertical bars, one per (name, value), with the first and last names under them; each
    bar has a tooltip (`<title>`) with its value."""
    n = max(len(values), 1)
    top = max((v for _, v in values), default=0.0) or 1.0
    gap, base = 2.0, height - 16
    w = (width - gap * (n - 1)) / n
    parts = []
    for i, (name, v) in enumerate(values):
        h = (base - 4) * max(v, 0.0) / top
        x = i * (w + gap)
        parts.append(f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{w:.1f}" height="{h:.1f}" '
                     f'class="bar"><title>{escape(name)}: {escape(_num(v))}{escape(unit)}'
                     f'</title></rect>')
    if values:
        parts.append(f'<text x="0" y="{height - 3}" class="axis">{escape(values[0][0])}</text>')
        parts.append(f'<text x="{width}" y="{height - 3}" text-anchor="end" class="axis">'
                     f'{escape(values[-1][0])}</text>')
    parts.append(f'<text x="0" y="10" class="axis">max {escape(_num(top))}{escape(unit)}</text>')
    return (f'<svg class="bars" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{escape(label)}"><title>{escape(label)}</title>{"".join(parts)}</svg>')


def _num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 10 or v == int(v) else f"{v:.2f}"
