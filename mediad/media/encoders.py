"""The video encoders mediad uses, and the options each gets for a speed and a quality."""

from __future__ import annotations

from mediad.media import hdr
from mediad.media.hdr import HdrMetadata
from mediad.profile_base import SPEEDS

SOFTWARE_ENCODERS = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1"}
X26X_PRESETS = dict(zip(SPEEDS, ("ultrafast", "veryfast", "faster", "medium", "slow", "slower",
                                 "veryslow"), strict=True))
NVENC_PRESETS = dict(zip(SPEEDS, ("p1", "p2", "p3", "p4", "p5", "p6", "p7"), strict=True))
# SVT-AV1 presets run 0 (slowest) .. 13 (fastest); its own default is 10, medium here is 8.
SVTAV1_PRESETS = dict(zip(SPEEDS, ("12", "10", "9", "8", "6", "4", "2"), strict=True))
# How the encoders take parameters of their own (HDR10 metadata goes in there).
_PARAMS_OPTION = {"libx265": "x265-params", "libsvtav1": "svtav1-params"}


def quality_option(encoder: str) -> str:
    """The option that carries an encoder's constant-quality value: NVENC's cq, else crf."""
    return "cq" if encoder.endswith("_nvenc") else "crf"


def encoder_options(encoder: str, speed: str, quality: int | None, device: int | None,
                    hdr_metadata: HdrMetadata | None = None) -> dict[str, str]:
    """The encoder's options for a speed and quality (and HDR10 metadata to write)."""
    opts: dict[str, str] = {}
    if encoder.endswith("_nvenc"):
        opts.update({"preset": NVENC_PRESETS[speed], "tune": "hq"})
        if device is not None:
            opts["gpu"] = str(device)
        if quality is not None:
            opts.update({"rc": "vbr", "cq": str(quality)})
    elif encoder in ("libx264", "libx265"):
        opts["preset"] = X26X_PRESETS[speed]
        if quality is not None:
            opts["crf"] = str(quality)
        if encoder == "libx265":
            opts["x265-params"] = "log-level=error"
    elif encoder == "libsvtav1":
        opts["preset"] = SVTAV1_PRESETS[speed]
        if quality is not None:
            opts["crf"] = str(quality)
        opts["svtav1-params"] = "enable-stat-report=0"
    if hdr_metadata is not None and encoder in _PARAMS_OPTION:
        key = _PARAMS_OPTION[encoder]
        opts[key] = ":".join(filter(None, [opts.get(key), *hdr.encoder_params(encoder,
                                                                             hdr_metadata)]))
    return opts


def gop_options(encoder: str, gop: int, options: dict[str, str]) -> dict[str, str]:
    """Options for keyframes every `gop` frames exactly, each one a closed-GOP start (IDR).

    For segmented streaming: every segment must start with an IDR frame, at the same time in
    every rendition, so scene-cut keyframes are off; frames marked I (at each keyframe time)
    become IDR. `options` are the encoder's others (its own parameter string is extended).
    """
    g = str(gop)
    if encoder.endswith("_nvenc"):
        return {"g": g, "forced-idr": "1", "no-scenecut": "1", "strict_gop": "1"}
    if encoder == "libx264":
        return {"g": g, "keyint_min": g, "sc_threshold": "0", "forced-idr": "1"}
    if encoder == "libx265":
        params = f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0"
        return {"g": g, "forced-idr": "1", "x265-params": ":".join(
            filter(None, [options.get("x265-params"), params]))}
    if encoder == "libsvtav1":  # irefresh-type 2: key frames, not open-GOP forward key frames
        return {"g": g, "svtav1-params": ":".join(
            filter(None, [options.get("svtav1-params"), "irefresh-type=2:scd=0"]))}
    return {"g": g}
