"""HDR10 static metadata: read from decoded frames, written back as the encoders' own options.

FFmpeg's encoders take mastering-display and content-light metadata only from the codec
context's `decoded_side_data`, which PyAV cannot set; x265 and SVT-AV1 take the same values as
parameters, which is how HandBrake passes them too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import av

# AVMasteringDisplayMetadata: display_primaries[3][2] (R, G, B), white_point[2], min_luminance,
# max_luminance (all AVRational: two int32), then has_primaries, has_luminance (int).
_MASTERING = struct.Struct("=22i")
# AVContentLightMetadata: MaxCLL, MaxFALL (unsigned int).
_LIGHT = struct.Struct("=2I")


@dataclass(frozen=True)
class MasteringDisplay:
    """SMPTE ST 2086 mastering display colour volume: CIE 1931 xy and cd/m²."""

    red: tuple[float, float]
    green: tuple[float, float]
    blue: tuple[float, float]
    white: tuple[float, float]
    min_luminance: float
    max_luminance: float


@dataclass(frozen=True)
class HdrMetadata:
    """HDR10 static metadata of a stream (either part may be missing)."""

    mastering: MasteringDisplay | None = None
    max_cll: int | None = None  # maximum content light level, cd/m²
    max_fall: int | None = None  # maximum frame-average light level, cd/m²

    def describe(self) -> str:
        """One line for `mediad probe`."""
        parts = []
        if m := self.mastering:
            parts.append(f"mastering display {m.min_luminance:g}-{m.max_luminance:g} cd/m², "
                         f"R{_xy(m.red)} G{_xy(m.green)} B{_xy(m.blue)} WP{_xy(m.white)}")
        if self.max_cll is not None:
            parts.append(f"MaxCLL {self.max_cll}, MaxFALL {self.max_fall or 0} cd/m²")
        return "; ".join(parts)


def _xy(p: tuple[float, float]) -> str:
    return f"({p[0]:.4f},{p[1]:.4f})"


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def from_frame(frame: av.VideoFrame) -> HdrMetadata | None:
    """The HDR10 metadata a decoded frame carries (from SEI or the container), if any."""
    mastering: MasteringDisplay | None = None
    cll: tuple[int, int] | None = None
    for sd in frame.side_data:
        raw = bytes(sd)
        if sd.type == av.sidedata.sidedata.Type.MASTERING_DISPLAY_METADATA \
                and len(raw) >= _MASTERING.size:
            v = _MASTERING.unpack_from(raw)
            has_primaries, has_luminance = v[20], v[21]
            if has_primaries and has_luminance:
                pts = [_ratio(v[i], v[i + 1]) for i in range(0, 16, 2)]
                mastering = MasteringDisplay(
                    red=(pts[0], pts[1]), green=(pts[2], pts[3]), blue=(pts[4], pts[5]),
                    white=(pts[6], pts[7]), min_luminance=_ratio(v[16], v[17]),
                    max_luminance=_ratio(v[18], v[19]))
        elif sd.type == av.sidedata.sidedata.Type.CONTENT_LIGHT_LEVEL and len(raw) >= _LIGHT.size:
            cll = _LIGHT.unpack_from(raw)
    if mastering is None and cll is None:
        return None
    return HdrMetadata(mastering, cll[0] if cll else None, cll[1] if cll else None)


def _units(p: tuple[float, float], scale: int) -> str:
    return f"({round(p[0] * scale)},{round(p[1] * scale)})"


def encoder_params(encoder: str, md: HdrMetadata) -> list[str]:
    """`key=value` parameters that make `encoder` write `md` into the stream ([] if it cannot).

    x265 counts chromaticity in 0.00002 and luminance in 0.0001 cd/m² (the HEVC SEI units);
    SVT-AV1 takes plain numbers. (x264 accepts the keys but writes nothing: not listed.)
    """
    params = []
    m = md.mastering
    if encoder == "libx265":
        if m:
            params.append(f"master-display=G{_units(m.green, 50000)}B{_units(m.blue, 50000)}"
                          f"R{_units(m.red, 50000)}WP{_units(m.white, 50000)}"
                          f"L({round(m.max_luminance * 10000)},{round(m.min_luminance * 10000)})")
        if md.max_cll is not None:
            params.append(f"max-cll={md.max_cll},{md.max_fall or 0}")
    elif encoder == "libsvtav1":
        if m:
            params.append(
                f"mastering-display=G({m.green[0]:.4f},{m.green[1]:.4f})"
                f"B({m.blue[0]:.4f},{m.blue[1]:.4f})R({m.red[0]:.4f},{m.red[1]:.4f})"
                f"WP({m.white[0]:.4f},{m.white[1]:.4f})"
                f"L({m.max_luminance:.4f},{m.min_luminance:.4f})")
        if md.max_cll is not None:
            params.append(f"content-light={md.max_cll},{md.max_fall or 0}")
    return params
