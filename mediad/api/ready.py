"""What the daemon's loop publishes for /readyz: a frozen snapshot, swapped in whole each turn
(one reference assignment: the API thread reads it without a lock the loop could wait on)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

STALE_AFTER = 10.0  # seconds: a loop that has not turned for this long is not ready


@dataclass(frozen=True)
class Readiness:
    """The loop's last word: the store writable, each watch's observer alive."""

    at: float = 0.0  # time.monotonic() of the loop turn that wrote it; 0: not yet ready
    store_writable: bool = False
    watches: tuple[tuple[str, bool], ...] = ()  # (watched folder, observer alive)
    stopping: bool = False
    problems: tuple[str, ...] = field(default=())

    def verdict(self, now: float | None = None) -> tuple[bool, list[str]]:
        """(ready, why not)."""
        now = time.monotonic() if now is None else now
        why: list[str] = list(self.problems)
        if self.at == 0.0:
            why.append("the daemon is starting")
        elif now - self.at > STALE_AFTER:
            why.append(f"the daemon's loop has not turned for {now - self.at:.0f}s")
        if not self.store_writable:
            why.append("the state database is not writable")
        why += [f"watch {path}: its observer is not running" for path, alive in self.watches
                if not alive]
        if self.stopping:
            why.append("the daemon is stopping")
        return not why, why


class ReadinessBox:
    """Holds the latest Readiness; the loop sets it, the API reads it."""

    def __init__(self) -> None:
        self.current = Readiness()

    def publish(self, readiness: Readiness) -> None:
        """Swap in a new snapshot (the loop)."""
        self.current = readiness
