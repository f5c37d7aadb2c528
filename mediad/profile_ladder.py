"""Profile ladders: the renditions one decode encodes, and how an HLS/DASH set is segmented."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictInt, field_validator, model_validator

from mediad.profile_base import (
    VIDEO_MIN_BITRATE,
    FiniteFloat,
    Speed,
    StrictModel,
    kbit,
    parse_bitrate,
)


class RenditionSettings(StrictModel):
    """One rung of a ladder: its height, and what it changes of [video]."""

    height: StrictInt = Field(ge=16, le=8640)
    codec: Literal["h264", "hevc", "av1"] | None = None
    bitrate: str | None = None
    max_bitrate: str | None = None  # the peak (VBV); default 1.5x bitrate
    quality: StrictInt | None = None
    speed: Speed | None = None

    @field_validator("bitrate", "max_bitrate")
    @classmethod
    def _rate(cls, v: str | None) -> str | None:
        if v is not None and parse_bitrate(v) < VIDEO_MIN_BITRATE:
            raise ValueError(f"must be at least {kbit(VIDEO_MIN_BITRATE)} (is {v!r})")
        return v

    @model_validator(mode="after")
    def _rate_control(self) -> RenditionSettings:
        if self.quality is not None and self.bitrate is not None:
            raise ValueError("quality and bitrate are exclusive: set one")
        if self.max_bitrate is not None and self.bitrate is None:
            raise ValueError("max_bitrate needs bitrate (the average it caps)")
        if self.max_bitrate and self.bitrate and \
                parse_bitrate(self.max_bitrate) < parse_bitrate(self.bitrate):
            raise ValueError("max_bitrate must be at least bitrate")
        return self


class PackageSettings(StrictModel):
    """Segmenting of an HLS/DASH set: segments of whole keyframe intervals."""

    segment_seconds: StrictInt | FiniteFloat = Field(default=6, gt=0, le=60)
    keyframe_seconds: StrictInt | FiniteFloat = Field(default=2, gt=0, le=20)

    @model_validator(mode="after")
    def _whole_gops(self) -> PackageSettings:
        seg, key = self.segment_seconds, self.keyframe_seconds
        if seg < key:
            raise ValueError(f"segment_seconds ({seg:g}) is shorter than the keyframe interval "
                             f"(keyframe_seconds = {key:g}): every segment must start with one")
        if abs(seg / key - round(seg / key)) > 1e-6:
            raise ValueError(f"segment_seconds ({seg:g}) must be a whole multiple of "
                             f"keyframe_seconds ({key:g}), so segments start at keyframes")
        return self
