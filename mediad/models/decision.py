"""Where and how each frame-model stage runs: the plan's record of it (no torch needed to read)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StageDecision:
    """Where and how one stage runs, decided without loading any model (for `mediad plan`)."""

    index: int
    kind: str
    model: str
    device: str
    precision: str
    channels_last: bool
    compile: bool
    batch_size: int | None
    max_memory: int | None
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the plan, the report and the sidecar."""
        return {"index": self.index, "kind": self.kind, "model": self.model, "device": self.device,
                "precision": self.precision, "channels_last": self.channels_last,
                "compile": self.compile, "batch_size": self.batch_size or "auto",
                "max_memory": self.max_memory, "reasons": list(self.reasons)}
