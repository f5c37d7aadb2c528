"""[video] target_vmaf: choose the quality value per file by encoding samples and measuring
their VMAF (the policy is media.vmaf_target's), then measure the whole finished output.

Samples are the source's frames as the encoder would get them (rotated, cropped, deinterlaced,
scaled, tone-mapped: the plan's own host conversion), kept losslessly (FFV1) in a temporary
folder, so that every trial encodes exactly the frames the real encode will, and VMAF compares
at the output's size: the search controls the encoder's loss, which is what the quality value
changes, not the loss of scaling, which the profile fixes (see docs/profiles.md).

VMAF runs on the plan's GPU when torch sees CUDA there, else on the CPU (models.vmaf).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

from mediad import log, stopping
from mediad.errors import MediadError, Reason
from mediad.media.encoders import quality_option
from mediad.media.plan_records import Plan, VideoPlan
from mediad.media.probe import frame_rate, open_input
from mediad.media.reading import read_packets
from mediad.media.transform import VideoTransform
from mediad.media.video_sink import (
    EncoderRefused,
    VideoSink,
    encoder_input_colour,
    host_transform,
    open_video_encoder,
)
from mediad.media.vmaf_target import (
    DISAGREEMENT,
    Trial,
    VmafTarget,
    choose,
    next_quality,
    sample_windows,
)

if TYPE_CHECKING:
    from mediad.models.vmaf import Motion



def _luma_path(sample: Path) -> Path:
    """Where a sample's reference Y planes are kept, raw, beside it."""
    return sample.with_suffix(".y")


@dataclass(frozen=True)
class Sample:
    """One sample of the source as the encoder gets it, losslessly stored, and its Y planes
    (VMAF's reference) kept raw beside it, so that no trial decodes the reference again."""

    path: Path
    frames: int
    seconds: float
    width: int
    height: int
    bits: int  # of the Y code values

    @property
    def luma_path(self) -> Path:
        """The raw Y planes: frames x height x width code values, uint8 or uint16."""
        return _luma_path(self.path)

    def reference(self) -> Iterator[np.ndarray]:
        """The Y planes as VMAF compares them, read from their file (mapped, not loaded)."""
        from mediad.models.vmaf import eight_bit

        codes = np.memmap(self.luma_path, np.uint8 if self.bits <= 8 else np.uint16, "r",
                          shape=(self.frames, self.height, self.width))
        return (eight_bit(c, self.bits) for c in codes)

    def score(self, encoded: Path, motion: Motion, device: str) -> tuple[float, ...]:
        """Each frame's VMAF of a trial encode of this sample; `motion` is this sample's motion
        feature, kept by the first trial for the rest (models.vmaf.VmafMeter)."""
        from mediad.models.vmaf import luma_planes, vmaf_of

        score, _, _ = vmaf_of(self.reference(), luma_planes(encoded), device, motion)
        return score.frames


@dataclass(frozen=True)
class VmafChoice:
    """What the search chose and why: for the report."""

    target: float
    quality: int
    option: str  # the encoder option it sets: crf, or NVENC's cq
    encoder: str
    predicted: float  # the chosen trial's mean VMAF over the samples
    trials: tuple[Trial, ...]
    samples: int
    sample_seconds: float  # the samples' total length
    whole_source: bool
    device: str
    seconds: float  # how long the search took
    warning: str | None = None


@dataclass(frozen=True)
class VmafCheck:
    """VMAF of the whole finished output against the source."""

    measured: float
    minimum: float
    frames: int
    seconds: float
    warnings: tuple[str, ...] = ()


def _storage_format(vp: VideoPlan) -> str:
    """The pixel format the samples keep: the encoder's, or its planar twin (FFV1 has no P010)."""
    return "yuv420p10le" if vp.pix_fmt in ("p010le", "yuv420p10le") else "yuv420p"


def _reference_plan(vp: VideoPlan) -> VideoPlan:
    return replace(vp, pix_fmt=_storage_format(vp))


def _stream_time(frame: av.VideoFrame, start: float) -> float | None:
    return None if frame.pts is None or frame.time_base is None \
        else float(frame.pts * frame.time_base) - start


def _decoded(src: av.container.InputContainer,
             ist: av.video.stream.VideoStream) -> Iterator[av.VideoFrame]:
    """The stream's frames; a packet that does not decode is skipped, as in the encode."""
    for packet in read_packets(src, [ist]):
        stopping.check()
        try:
            yield from packet.decode()
        except av.FFmpegError:
            continue


def extract_samples(plan: Plan, target: VmafTarget, duration: float,
                    folder: Path) -> list[Sample]:
    """The source's sample windows, converted as for the encoder and kept losslessly (FFV1)."""
    vp = _reference_plan(plan.video)
    samples = []
    with open_input(Path(plan.input)) as src:
        ist = src.streams[plan.decode.stream]
        ist.thread_type = "AUTO"
        colour = encoder_input_colour(ist, plan.video)
        for n, window in enumerate(sample_windows(duration, target)):
            sample = _write_sample(src, ist, vp, colour, window, folder / f"sample{n}.mkv")
            if sample is not None:
                samples.append(sample)
    if not samples:
        raise MediadError(f"{plan.input}: no frames to sample for target_vmaf",
                          reason=Reason.CORRUPT)
    return samples


def _write_sample(src: av.container.InputContainer, ist: av.video.stream.VideoStream,
                  vp: VideoPlan, colour: tuple[bool, str | None], window: tuple[float, float],
                  path: Path) -> Sample | None:
    """One window of the source, converted by `vp` and written to `path`, its Y planes beside
    it (None: no frames).

    The Y planes are written raw, not kept in memory: the samples last 8 s by default (4 of
    2 s), or the whole source under 24 s, which at 1080p25 is 200 or up to 600 frames of 2 MB
    (4 MB at 10 bits): 0.4 to 2.4 GB, 4x that at 2160p. Mapped from a disk they take page
    cache, which the kernel can drop; where the temporary folder is a tmpfs they take memory
    (as the FFV1 sample beside them, about as big, always did)."""
    from mediad.models.vmaf import luma_codes

    begin, end = window
    start0 = float(ist.start_time * ist.time_base) if ist.start_time is not None else 0.0
    rate = frame_rate(ist) or 25
    if begin > 0:
        src.seek(int((begin + start0) / ist.time_base), stream=ist, backward=True)
    work = host_transform(vp, ist, *colour)
    count, bits, times = 0, 8, []
    with av.open(str(path), "w", format="matroska") as out, \
            open(_luma_path(path), "wb") as planes:
        ost = out.add_stream("ffv1", rate=rate)
        ost.width, ost.height, ost.pix_fmt = vp.width, vp.height, vp.pix_fmt
        ost.time_base = ost.codec_context.time_base = ist.time_base
        ost.codec_context.color_range = 2 if colour[0] else 1
        for frame in chain(_window(src, ist, start0, begin, end), [None]):
            for f in work(frame):
                f.pict_type = av.video.frame.PictureType.NONE
                out.mux(ost.encode(f))
                # As the encoder takes it (the transform's frames are that already: no copy).
                codes, bits = luma_codes(f.reformat(vp.width, vp.height, vp.pix_fmt))
                codes.tofile(planes)  # no second copy of the plane
                count += 1
                if f.pts is not None and f.time_base is not None:
                    times.append(float(f.pts * f.time_base))
        out.mux(ost.encode(None))
    if not count:
        path.unlink(missing_ok=True)
        _luma_path(path).unlink(missing_ok=True)
        return None
    span = (max(times) - min(times) if times else 0.0) + 1 / float(rate)
    return Sample(path, count, span, vp.width, vp.height, bits)


def _window(src: av.container.InputContainer, ist: av.video.stream.VideoStream, start0: float,
            begin: float, end: float) -> Iterator[av.VideoFrame]:
    """The decoded frames whose time (from the stream's start) falls in [begin, end)."""
    for frame in _decoded(src, ist):
        t = _stream_time(frame, start0)
        if t is not None and t < begin:
            continue
        if t is not None and t >= end:
            return
        yield frame


def _encode_trial(sample: Sample, vp: VideoPlan, dest: Path, input_name: str) -> int:
    """Encode one sample as `vp` says; the bytes of its video."""
    size = 0
    with av.open(str(sample.path)) as src, av.open(str(dest), "w", format="matroska") as out:
        ist = src.streams.video[0]
        encoder = open_video_encoder(out, ist, vp, "mkv", input_name=input_name)
        # Samples are converted already: only the pixel format may change (P010 for NVENC).
        sink = VideoSink(encoder, vp, VideoTransform(vp, ist.time_base), out, threaded=False)
        for frame in src.decode(ist):
            stopping.check()
            frame.pict_type = av.video.frame.PictureType.NONE
            packets = sink.put(frame)
            size += sum(p.size for p in packets)
            out.mux(packets)
        packets = sink.finish()
        size += sum(p.size for p in packets)
        out.mux(packets)
    return size


def _trial_plan(vp: VideoPlan, quality: int) -> VideoPlan:
    """The plan's encoder at `quality`, for frames already converted."""
    return replace(vp, quality=quality, rotate=0, mirror=False, crop=None, deinterlace="off", tonemap=None,
                   options={**vp.options, quality_option(vp.encoder): str(quality)})


def _measure_trial(samples: list[Sample], motion: list[Motion], vp: VideoPlan, quality: int,
                   folder: Path, input_name: str, device: str) -> Trial:
    trial_vp = _trial_plan(vp, quality)
    scores: list[float] = []
    size = 0
    for n, sample in enumerate(samples):
        dest = folder / f"trial{n}.mkv"
        size += _encode_trial(sample, trial_vp, dest, input_name)
        scores += sample.score(dest, motion[n], device)
        dest.unlink()
    vmaf = float(np.mean(scores)) if scores else 0.0
    return Trial(quality, vmaf, size, sum(s.seconds for s in samples))


def search(plan: Plan, duration: float) -> VmafChoice:
    """Find the quality value for `plan` (its video.vmaf set): samples, trial encodes, VMAF."""
    from mediad.models import require_torch

    target = plan.video.vmaf
    assert target is not None
    require_torch("target_vmaf (VMAF is computed in PyTorch)")
    from mediad.models.vmaf import vmaf_device

    started = time.monotonic()
    device = vmaf_device(target.gpu)
    trials: list[Trial] = []
    with tempfile.TemporaryDirectory(prefix="mediad-vmaf-") as tmp:
        folder = Path(tmp)
        samples = extract_samples(plan, target, duration, folder)
        motion: list[Motion] = [{} for _ in samples]  # each sample's, from the first trial
        while (quality := next_quality(trials, target)) is not None:
            trial = _measure_trial(samples, motion, plan.video, quality, folder, plan.input,
                                   device)
            log.event("vmaf_trial", input=plan.input, quality=quality, vmaf=f"{trial.vmaf:.2f}",
                      kbps=f"{trial.kbps:.0f}")
            trials.append(trial)
    chosen, warning = choose(trials, target)
    whole = sample_windows(duration, target)[0][1] == math.inf
    return VmafChoice(target.target, chosen.quality, quality_option(plan.video.encoder),
                      plan.video.encoder, chosen.vmaf, tuple(trials), len(samples),
                      sum(s.seconds for s in samples), whole, device,
                      time.monotonic() - started, warning)


def choose_quality(plan: Plan, duration: float, gpu_required: bool) -> tuple[Plan, VmafChoice]:
    """The plan at the quality the search chose. NVENC refusing a trial encode moves the plan
    to the software encoder and searches again there (unless the profile requires NVENC)."""
    while True:
        try:
            choice = search(plan, duration)
            break
        except EncoderRefused as e:
            if gpu_required:
                raise MediadError(f"{plan.input}: {e} (the profile requires NVENC)",
                                  transient=True, reason=Reason.ENCODER_BUSY) from None
            plan = plan.with_software_video(str(e))
            log.event("fallback", input=plan.input, detail=plan.fallbacks[-1])
    note = (f"{choice.option} {choice.quality} chosen by VMAF search: predicted VMAF "
            f"{choice.predicted:.2f} (target {choice.target:g}) from "
            f"{'the whole source' if choice.whole_source else f'{choice.samples} samples'}, "
            f"{len(choice.trials)} trial encodes")
    log.event("vmaf_search", input=plan.input, quality=choice.quality,
              predicted=f"{choice.predicted:.2f}", trials=len(choice.trials),
              seconds=f"{choice.seconds:.1f}")
    return plan.with_quality(choice.quality, note), choice


def measure_output(plan: Plan, output: Path, choice: VmafChoice) -> VmafCheck:
    """VMAF of the whole encoded `output` against the source, converted as for the encoder."""
    from mediad.models.vmaf import luma, luma_planes, vmaf_of

    started = time.monotonic()
    vp = _reference_plan(plan.video)
    with open_input(Path(plan.input)) as src:
        ist = src.streams[plan.decode.stream]
        ist.thread_type = "AUTO"
        work = host_transform(vp, ist, *encoder_input_colour(ist, plan.video))

        def reference() -> Iterator[np.ndarray]:
            for frame in _decoded(src, ist):
                yield from (luma(f) for f in work(frame))
            yield from (luma(f) for f in work(None))

        score, refs, dists = vmaf_of(reference(), luma_planes(output), choice.device)
    warnings = []
    if refs != dists:
        warnings.append(f"VMAF of the output compared {min(refs, dists)} frames: the source "
                        f"decodes to {refs}, the output to {dists}")
    if score.mean < choice.predicted - DISAGREEMENT:
        warnings.append(f"the whole output measures VMAF {score.mean:.2f}, {choice.predicted - score.mean:.1f} "
                        f"points under the samples' prediction ({choice.predicted:.2f}) for "
                        f"{choice.option} {choice.quality}: the sampled VMAF disagreed with the "
                        "full file (seen with NVENC; use more or longer samples, or a margin "
                        "on target_vmaf)")
    if plan.video.encoder != choice.encoder:
        warnings.append(f"the quality was searched with {choice.encoder}, but the encode fell "
                        f"back to {plan.video.encoder}: the measured VMAF is what it gave")
    return VmafCheck(score.mean, score.minimum, len(score.frames), time.monotonic() - started,
                     tuple(warnings))


def report_entry(choice: VmafChoice, check: VmafCheck | None) -> dict:
    """The report's `vmaf` section."""
    d = {"target": choice.target, "option": choice.option, "quality": choice.quality,
         "encoder": choice.encoder, "predicted": round(choice.predicted, 3),
         "samples": 0 if choice.whole_source else choice.samples,
         "sample_seconds": round(choice.sample_seconds, 3),
         "trials": [t.to_dict() for t in choice.trials],
         "search_seconds": round(choice.seconds, 3), "device": choice.device}
    if check is not None:
        d.update({"measured": round(check.measured, 3), "measured_min": round(check.minimum, 3),
                  "measured_frames": check.frames, "measure_seconds": round(check.seconds, 3),
                  "agrees": check.measured >= choice.predicted - DISAGREEMENT})
    return d
