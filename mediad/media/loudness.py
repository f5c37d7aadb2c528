"""Loudness normalisation ([audio] loudness, EBU R128), two-pass as the ffmpeg CLI's users do it:
libavfilter's `loudnorm` first measures a track (integrated loudness, true peak, loudness range,
threshold), then normalises it with those figures, linearly where the track allows (its range
within the target's and the peak within reach; else loudnorm's dynamic mode), and says what it did.

loudnorm reports its figures only in the log, as JSON, when its graph is freed: they are read
from PyAV's log capture there.
"""

from __future__ import annotations

import gc
import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.logging

from mediad import stopping
from mediad.errors import MediadError, Reason
from mediad.media.audio import AudioConverter
from mediad.media.probe import open_input
from mediad.media.reading import read_packets


@dataclass(frozen=True)
class LoudnessTarget:
    """The profile's target: integrated loudness (LUFS), true peak (dBTP), loudness range (LU)."""

    integrated: float
    true_peak: float
    lra: float

    def options(self) -> str:
        return f"I={self.integrated:g}:TP={self.true_peak:g}:LRA={self.lra:g}"


@dataclass(frozen=True)
class Measured:
    """loudnorm's figures for a track: its input, and (after normalising) its output."""

    input_i: float
    input_tp: float
    input_lra: float
    input_thresh: float
    output_i: float
    target_offset: float
    normalization_type: str

    def to_dict(self) -> dict:
        """For the report."""
        return {"input_i": self.input_i, "input_tp": self.input_tp, "input_lra": self.input_lra,
                "output_i": self.output_i, "normalization": self.normalization_type}

    def second_pass(self, target: LoudnessTarget) -> str:
        """loudnorm's options to normalise the track these figures measured."""
        # print_format ahead of the rest: placed last (after linear) loudnorm printed nothing
        return (f"{target.options()}:print_format=json:measured_I={self.input_i:g}:"
                f"measured_TP={self.input_tp:g}:measured_LRA={self.input_lra:g}:"
                f"measured_thresh={self.input_thresh:g}:offset={self.target_offset:g}:linear=true")


def _figures(logs: list[tuple[int, str, str]], what: str) -> Measured:
    for _level, name, message in logs:
        if name == "loudnorm" and "input_i" in message:
            d = json.loads(message)
            try:
                return Measured(*(float(d[k]) for k in ("input_i", "input_tp", "input_lra",
                                                        "input_thresh", "output_i",
                                                        "target_offset")),
                                normalization_type=d.get("normalization_type", "?"))
            except (KeyError, ValueError):  # not loudnorm's figures
                break
    raise MediadError(f"{what}: loudness could not be measured (silent or no audio)",
                      reason=Reason.UNSUPPORTED)


class _LoudnormGraph:
    """abuffer -> loudnorm [-> aresample] -> abuffersink for one track's frames."""

    def __init__(self, first: av.AudioFrame, options: str, rate: int | None) -> None:
        self.graph = av.filter.Graph()
        src = self.graph.add_abuffer(format=first.format.name, sample_rate=first.sample_rate,
                                     layout=first.layout.name, time_base=Fraction(1, first.sample_rate))
        last = self.graph.add("loudnorm", options)
        src.link_to(last)
        if rate is not None:  # loudnorm works (and answers) at 192 kHz: back to the track's rate
            resample = self.graph.add("aresample", str(rate))
            last.link_to(resample)
            last = resample
        last.link_to(self.graph.add("abuffersink"))
        self.graph.configure()

    def push(self, frame: av.AudioFrame | None) -> list[av.AudioFrame]:
        self.graph.push(frame)
        out = []
        while True:
            try:
                out.append(self.graph.pull())
            except (av.BlockingIOError, av.EOFError):
                return out

    def close(self, what: str) -> Measured:
        """Free the graph, reading loudnorm's figures from the log it writes then."""
        level, skip = av.logging.get_level(), av.logging.get_skip_repeated()
        av.logging.set_level(av.logging.INFO)
        # The same figures twice (the second pass of a track loudnorm could not do linearly
        # reports what the first did) would be dropped as a repeated message.
        av.logging.set_skip_repeated(False)
        try:
            with av.logging.Capture() as logs:
                del self.graph
                gc.collect()  # the graph's filters are freed with it, loudnorm logging as it goes
        finally:
            av.logging.set_level(level)
            av.logging.set_skip_repeated(skip)
        return _figures(logs, what)


def measure(path: Path, targets: dict[int, LoudnessTarget]) -> dict[int, Measured]:
    """The first pass: each track's loudness (audio stream index -> target), read by decoding
    all of them in one read of the file."""
    graphs: dict[int, _LoudnormGraph] = {}
    convert = {index: AudioConverter(index) for index in targets}  # one setup, as encoded
    with open_input(path) as src:
        for packet in read_packets(src, [src.streams[i] for i in targets]):
            stopping.check()
            index = packet.stream.index
            try:
                frames = [f for frame in packet.decode() for f in convert[index](frame)]
            except av.FFmpegError:  # a damaged packet: skipped, as in the encode
                continue
            if packet.size == 0:
                frames += convert[index].flush()
            for frame in frames:
                frame.pts = None  # loudnorm measures samples, not time
                if index not in graphs:
                    graphs[index] = _LoudnormGraph(
                        frame, targets[index].options() + ":print_format=json", None)
                graphs[index].push(frame)
    measured = {}
    for index in targets:
        what = f"{path}: audio #{index}"
        if index not in graphs:
            raise MediadError(f"{what}: no audio to measure", reason=Reason.CORRUPT)
        graphs[index].push(None)
        measured[index] = graphs[index].close(what)
    return measured


def normalizers(path: Path, targets: dict[int, LoudnessTarget],
                ) -> tuple[dict[int, Normalizer], list[str]]:
    """Both passes set up for the tracks to normalise (audio stream index -> target): every
    one measured in one read of the source, then a Normalizer each for the encode; and a
    warning for each track that has no loudness to normalise (silent, or too short for the
    meter's 400 ms blocks), which is encoded as it is rather than failing the job."""
    if not targets:
        return {}, []
    measured = measure(path, targets)
    ready, warnings = {}, []
    for index, target in targets.items():
        m = measured[index]
        if not all(math.isfinite(v) for v in (m.input_i, m.input_tp, m.input_lra,
                                              m.input_thresh, m.target_offset)):
            warnings.append(f"audio #{index}: silent or too short to measure (integrated "
                            f"loudness {m.input_i:g} LUFS): not normalised, encoded as it is")
            continue
        ready[index] = Normalizer(m, target, f"{path}: audio #{index}")
    return ready, warnings


class Normalizer:
    """The second pass, for one track's decoded frames (in one format, layout and rate: after
    audio.AudioConverter): loudnorm with the first pass's figures, back at the track's rate."""

    def __init__(self, measured: Measured, target: LoudnessTarget, what: str) -> None:
        self.options = measured.second_pass(target)
        self.what = what
        self.graph: _LoudnormGraph | None = None
        self.result: Measured | None = None
        self._start: tuple[int | None, Fraction | None] | None = None  # the track's first pts

    def __call__(self, frame: av.AudioFrame) -> list[av.AudioFrame]:
        if self.graph is None:
            self.graph = _LoudnormGraph(frame, self.options, frame.sample_rate)
            self._start = (frame.pts, frame.time_base)
        frame.pts = None  # loudnorm's frames are timed by count (timing.AudioTimer), from ...
        return self._timed(self.graph.push(frame))

    def _timed(self, frames: list[av.AudioFrame]) -> list[av.AudioFrame]:
        for frame in frames:
            frame.pts = None
        if frames and self._start is not None:  # ... the track's own start: A/V sync kept
            frames[0].pts, frames[0].time_base = self._start
            self._start = None
        return frames

    def flush(self) -> list[av.AudioFrame]:
        """What loudnorm still holds (its look-ahead), then its figures for the report."""
        if self.graph is None:
            return []
        rest = self._timed(self.graph.push(None))
        self.result = self.graph.close(self.what)
        return rest
