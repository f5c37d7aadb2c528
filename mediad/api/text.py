"""Text and data from the store made safe to serialise (JSON) and to show (pages): a file name
that is not UTF-8 has its bytes escaped (`caf\\xe9`), as the API's lists give it."""

from __future__ import annotations

import math
import re
from typing import Any

from mediad.daemon.queue import db_text


def clean(text: str) -> str:
    """Text safe to put in JSON: a non-UTF-8 file name's bytes (or a lone surrogate) escaped."""
    try:
        return db_text(text) or ""
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
DEPTH = 64  # a report nested deeper than this is not one the daemon wrote


def shown(text: str) -> str:
    """Text for a page: clean, and its control characters (ESC, BEL, ...) escaped as \\xNN
    (tabs and newlines kept)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", clean(text))


def clean_data(value: Any, depth: int = 0) -> Any:
    """JSON data (json.loads') safe to serialise: every string and key clean, a float that is
    not finite (NaN, Infinity) null. ValueError when nested deeper than DEPTH."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict | list) and depth >= DEPTH:
        raise ValueError("nested too deeply")
    if isinstance(value, dict):
        return {clean(str(k)): clean_data(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_data(v, depth + 1) for v in value]
    return value
