"""What every profile table shares: strict keys, TOML's own types, speeds and bit rates."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AllowInfNan, BaseModel, ConfigDict, Strict


class StrictModel(BaseModel):
    """A profile table: unknown keys are errors, and a validated profile does not change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# TOML has real booleans, integers and floats: `quality = true` or `"23"` is a typo, not a number.
FiniteFloat = Annotated[float, Strict(), AllowInfNan(False)]

Speed = Literal["fastest", "faster", "fast", "medium", "slow", "slower", "slowest"]
SPEEDS: tuple[str, ...] = ("fastest", "faster", "fast", "medium", "slow", "slower", "slowest")

_BITRATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*$")
VIDEO_MIN_BITRATE = 10_000


def parse_bitrate(text: str) -> int:
    """'4M' -> 4_000_000, '128k' -> 128_000 (bits per second)."""
    m = _BITRATE.match(text)
    if not m:
        raise ValueError(f"not a bitrate: {text!r} (use e.g. '4M' or '128k')")
    scale = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}[m.group(2).lower()]
    value = int(float(m.group(1)) * scale)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def kbit(bps: int) -> str:
    """128000 -> '128k' (the way profiles write bitrates)."""
    return f"{bps // 1000}k" if bps % 1000 == 0 else f"{bps}"
