"""What NVENC and NVDEC can do on one device, per codec: the records every other part reads."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

CODECS = ("h264", "hevc", "av1")
NVENC_NAMES = {"h264": "h264_nvenc", "hevc": "hevc_nvenc", "av1": "av1_nvenc"}

# Capability.status values.
OK, UNSUPPORTED, BUSY, UNAVAILABLE, ERROR = "ok", "unsupported", "busy", "unavailable", "error"


@dataclass(frozen=True)
class Capability:
    """Whether one hardware path works, and why (not).

    status: "ok"; "unsupported" (this GPU or driver lacks it: permanent, normal on H100);
    "busy" (transient: session limit, encoder or memory full; retry later);
    "unavailable" (no GPU or driver at all); "error" (failed for another reason).
    """

    ok: bool
    reason: str
    status: str = ""

    def __post_init__(self) -> None:
        if not self.status:
            object.__setattr__(self, "status", OK if self.ok else ERROR)

    @property
    def transient(self) -> bool:
        """True when a retry later may succeed (NVENC busy, session limit)."""
        return self.status == BUSY


@dataclass(frozen=True)
class Capabilities:
    """NVENC/NVDEC support per codec on one device (device None: no usable GPU)."""

    device: int | None
    nvenc: dict[str, Capability] = field(default_factory=dict)
    nvdec: dict[str, Capability] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain data for reports and --json."""
        def one(v: Capability) -> dict:
            return {"ok": v.ok, "status": v.status, "reason": v.reason}

        return {
            "device": self.device,
            "nvenc": {k: one(v) for k, v in self.nvenc.items()},
            "nvdec": {k: one(v) for k, v in self.nvdec.items()},
        }

    @property
    def settled(self) -> bool:
        """False when some entry may change soon (busy or unexplained error): do not keep it long."""
        return all(c.status not in (BUSY, ERROR)
                   for c in (*self.nvenc.values(), *self.nvdec.values()))


def without_nvenc(caps: Capabilities, reason: str) -> Capabilities:
    """`caps` with NVENC withheld for `reason` (a session budget); NVDEC stays as it is."""
    withheld = Capability(False, reason, UNAVAILABLE)
    return replace(caps, nvenc={codec: withheld for codec in caps.nvenc})


def no_gpu(reason: str) -> Capabilities:
    """Capabilities of a machine (or a request) without a usable GPU."""
    cap = Capability(False, reason, UNAVAILABLE)
    return Capabilities(None, {c: cap for c in CODECS}, {c: cap for c in CODECS})
