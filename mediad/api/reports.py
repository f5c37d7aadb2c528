"""A job's report (the JSON the engine recorded in the store) read defensively, in one place:
whatever the stored text is (truncated, not JSON, of another shape, NaN, nested past reason),
the pages and the API get either nothing or data of the shape they show."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from mediad.api.text import clean_data
from mediad.daemon.schema import MAX_OUTPUT_SIZE

LARGEST = 2**53  # past any width, frame count or GOP, and exact in any JSON reader


def parse(text: str | bytes | None) -> dict[str, Any] | None:
    """The report as data, every string clean (contracts.clean) and every float finite; None
    when there is none or it cannot be read as a JSON object."""
    if not text:
        return None
    try:
        value = clean_data(json.loads(text))
    except (ValueError, RecursionError):  # not JSON (or not UTF-8); nested too deep
        return None
    return value if isinstance(value, dict) else None


def plan(report: dict[str, Any] | None) -> dict[str, Any] | None:
    value = (report or {}).get("plan")
    return value if isinstance(value, dict) else None


def mapping(value: Any) -> dict[str, Any]:
    """`value` when it is an object, else an empty one."""
    return value if isinstance(value, dict) else {}


def number(value: Any) -> float | int | None:
    """A finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def whole(value: Any, most: int = LARGEST) -> int | None:
    """A whole number (not a bool) from 0 to `most`, else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) \
        and 0 <= value <= most else None


def text(value: Any) -> str | None:
    """A string, or a number as text; None for anything else."""
    if isinstance(value, str):
        return value
    return None if number(value) is None else str(value)


def texts(value: Any) -> list[str]:
    """A list of notes (fallbacks, warnings, reasons): each as text; one string is one note."""
    if isinstance(value, str):
        return [value] if value else []
    if not isinstance(value, list):
        return []
    return [v if isinstance(v, str) else json.dumps(v) for v in value]


@dataclass(frozen=True)
class Output:
    """One output file of a report, as the job page shows it."""

    name: str | None  # a ladder's rendition
    file: str
    video: str
    frames: int | None
    duration: float | None
    size: int | None


def outputs(report: dict[str, Any] | None) -> list[Output]:
    """The report's outputs that are objects, each field of the right type or left out."""
    found = (report or {}).get("outputs")
    rows = []
    for o in found if isinstance(found, list) else []:
        if not isinstance(o, dict):
            continue
        path = text(o.get("path")) or text(o.get("playlist")) or ""
        width, height = whole(o.get("width")), whole(o.get("height"))
        encoder = text(o.get("encoder"))
        video = " ".join(p for p in (
            text(o.get("video_codec")) or text(o.get("codec")),
            f"{width}x{height}" if width and height else None,
            f"via {encoder}" if encoder else None) if p)
        rows.append(Output(name=text(o.get("name")), file=path.rstrip("/").rsplit("/", 1)[-1],
                           video=video, frames=whole(o.get("frames")),
                           duration=number(o.get("duration")),
                           size=whole(o.get("size"), MAX_OUTPUT_SIZE)))
    return rows


def timing(report: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """The report's `elapsed` seconds and `fps`, when they are numbers."""
    r = report or {}
    return number(r.get("elapsed")), number(r.get("fps"))
