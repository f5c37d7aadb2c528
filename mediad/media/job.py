"""One job: probe -> plan -> run -> verify -> commit. The one engine under the CLI and the daemon."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from mediad import log, stopping
from mediad.errors import MediadError, Reason, io_error
from mediad.formats import all_suffixes, container_for_path
from mediad.gpu import Capabilities, capabilities, choose_device, no_gpu, without_nvenc
from mediad.media.commit import commit, mark_job, temp_path_for
from mediad.media.engine import run
from mediad.media.job_plan import single_output
from mediad.media.media_info import MediaInfo
from mediad.media.plan import make_plan
from mediad.media.plan_records import Plan
from mediad.media.probe import probe
from mediad.media.progress import ProgressCallback
from mediad.media.report import Report
from mediad.media.run_result import RunResult
from mediad.media.size_guard import SizeGuard
from mediad.media.source import DecoderRefused
from mediad.media.timing import Span
from mediad.media.verify import (
    OutputInfo,
    SourceStamp,
    check_source_body,
    verify_output,
)
from mediad.media.video_sink import EncoderRefused
from mediad.profiles import Profile

if TYPE_CHECKING:  # the search's module imports numpy and, when it runs, torch
    from mediad.media.vmaf_search import VmafCheck, VmafChoice


def default_output(input_path: Path, profile: Profile) -> Path:
    """`<stem>.<profile>.<ext>` beside the input."""
    return input_path.with_name(f"{input_path.stem}.{profile.name or 'custom'}.{profile.extension}")


def _check_output(input_path: Path, output: Path, overwrite: bool) -> None:
    """Refuse outputs that cannot be written safely or in a container mediad does not write."""
    if output.resolve() == input_path.resolve() or (
            output.exists() and input_path.exists() and output.samefile(input_path)):
        raise MediadError(f"{output}: output is the input file; mediad never writes over a source",
                          reason=Reason.BAD_REQUEST)
    if output.is_dir():
        raise MediadError(f"{output}: is a folder: give the output file's name", reason=Reason.BAD_REQUEST)
    if output.exists() and not output.is_file():
        # A commit renames a new file over the name: that would replace a device (/dev/null)
        # or a pipe, not write into it.
        raise MediadError(f"{output}: not a regular file (a device or pipe): mediad writes only "
                          "regular files", reason=Reason.BAD_REQUEST)
    if output.exists() and not overwrite:
        raise MediadError(f"{output}: already exists (use --overwrite to replace it)",
                          reason=Reason.OUTPUT_EXISTS)
    if container_for_path(output) is None:
        # As with ffmpeg and HandBrake, the name's extension picks the container.
        *most, last = all_suffixes()
        raise MediadError(f"{output}: name the output {', '.join(most)} or {last} (the "
                          "extension picks the container)", reason=Reason.BAD_REQUEST)
    if not output.parent.is_dir():
        raise MediadError(f"{output.parent}: output folder does not exist", reason=Reason.BAD_REQUEST)
    if not os.access(output.parent, os.W_OK | os.X_OK):
        raise MediadError(f"{output.parent}: output folder is not writable", reason=Reason.IO_ERROR)


def machine_capabilities(gpu: str, no_nvenc: str | None = None) -> tuple[Capabilities, str]:
    """What this machine's GPU (per `--gpu`) can do for a job, and why it is the one used."""
    device, why = choose_device(gpu)
    caps = capabilities(device) if device is not None else no_gpu(why)
    if no_nvenc and device is not None:
        caps = without_nvenc(caps, no_nvenc)
    return caps, why


def _plan(info: MediaInfo, profile: Profile, output: Path, gpu: str,
          no_nvenc: str | None = None) -> Plan:
    caps, why = machine_capabilities(gpu, no_nvenc)
    return make_plan(info, profile, caps, output, why, gpu_allowed=gpu != "none",
                     container=container_for_path(output))


def plan_job(input_path: Path, profile: Profile, output: Path | None = None, *,
             gpu: str = "auto") -> Plan:
    """Probe and plan without running (what `mediad plan` shows)."""
    info = probe(input_path)
    return _plan(info, profile, output or default_output(input_path, profile), gpu)


def _frames_estimate(info: MediaInfo) -> int | None:
    v = info.main_video
    if v is None:
        return None
    if v.frames:
        return v.frames
    duration = v.duration or info.duration
    return int(round(duration * v.fps)) if duration and v.fps else None


@stopping.deferred()  # a stopping signal: at the job's next safe point, never inside a lock
def transcode(input_path: Path, profile: Profile, output: Path | None = None, *, gpu: str = "auto",
              no_nvenc: str | None = None, overwrite: bool = False,
              on_progress: ProgressCallback | None = None, job_key: str | None = None) -> Report:
    """Transcode one file per `profile`; the output appears only once complete and verified.

    `no_nvenc` (the daemon's NVENC budget) keeps this job off NVENC, and says why, while
    NVDEC and model stages still use the GPU. `job_key` (the daemon's) is recorded in the
    committed file (see commit.mark_job), so that a run of the same job after a crash knows
    the output as its own instead of writing a second one.
    """
    if profile.is_ladder:
        raise MediadError(f"profile {profile.name} makes a ladder (a folder of renditions), "
                          "not one file: it runs through ladder_job.transcode_ladder",
                          reason=Reason.UNSUPPORTED)
    started = time.monotonic()
    output = output or default_output(input_path, profile)
    _check_output(input_path, output, overwrite)
    stamp = SourceStamp.of(input_path)
    info = probe(input_path)
    plan = _plan(info, profile, output, gpu, no_nvenc)
    for fallback in plan.fallbacks:
        log.event_once(f"fallback:{fallback}", "fallback", detail=fallback)
    if plan.gpu.device is None and gpu != "none":
        # No NVIDIA GPU here: software is this machine's way, said once at INFO, not a warning.
        log.event_once("no_gpu", "software_only", reason=plan.gpu.reason)
    choice = None
    if plan.video.action == "encode" and plan.video.vmaf is not None:
        plan, choice = _search_quality(plan, info, profile)
    tmp = temp_path_for(output)
    guard = SizeGuard(info.size, tmp, output, profile.video.max_size_ratio, on_progress) \
        if profile.video.max_size_ratio is not None else None
    try:
        try:
            plan, result = run_with_fallbacks(plan, tmp, profile, guard or on_progress,
                                              _frames_estimate(info))
        except MediadError:
            # A recording still being written fails as "corrupt" or short: say what happened.
            changed = stamp.changed(input_path) if stamp else None
            if changed is None:
                raise
            raise changed from None
        if stamp and (changed := stamp.changed(input_path)):
            raise changed
        if result.frames_written == 0:
            raise MediadError(f"{input_path}: its video stream gave no frames (empty or "
                              "truncated)", reason=Reason.CORRUPT)
        if guard is not None:
            guard.check_final()
        check_source_body(info, result.source_spans, plan.start_offset)
        span = result.video_span
        out = verify_output(tmp, span, _audio_spans(plan, result), str(input_path))
        check = _measure_vmaf(plan, tmp, choice) if choice is not None else None
        if job_key is not None and not mark_job(tmp, job_key):
            log.event_once("no_xattr", "job_key_not_recorded", logging.WARNING, folder=output.parent,
                           note="no user extended attributes here: after a crash between the "
                                "commit and its record, this job would be run again")
        stopping.check()  # the last point a stop leaves nothing behind
        try:
            commit(tmp, output, overwrite)
        except OSError as e:  # fsync, link or rename: the output's storage, never the source
            raise io_error(output, e) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    extra = _write_analysis(result, input_path, output, profile) if result.analysis else {}
    if result.loudness:
        extra["loudness"] = result.loudness
    vmaf_warnings: list[str] = []
    if choice is not None:
        from mediad.media.vmaf_search import report_entry

        extra["vmaf"] = report_entry(choice, check)
        vmaf_warnings = [w for w in (choice.warning, *(check.warnings if check else ())) if w]
    elapsed = time.monotonic() - started
    out = replace(out, path=str(output))  # verified under its temporary name
    log.event("transcoded", input=str(input_path), output=str(output), encoder=plan.video.encoder,
              frames=result.frames_written, seconds=f"{elapsed:.2f}")
    return Report(info, plan, [out], elapsed, result.frames_written / elapsed if elapsed else 0.0,
                  [*plan.warnings, *result.warnings, *_missing_streams(plan, out),
                   *out.hold_warnings(plan.container), *vmaf_warnings], extra)


def _search_quality(plan: Plan, info: MediaInfo, profile: Profile) -> tuple[Plan, VmafChoice]:
    """target_vmaf: the plan at the quality its VMAF search chose (media.vmaf_search)."""
    from mediad.media.vmaf_search import choose_quality

    v = info.main_video
    duration = (v.duration if v is not None and v.duration else None) or info.duration or 0.0
    return choose_quality(plan, duration, gpu_required=profile.video.encoder == "gpu")


def _measure_vmaf(plan: Plan, written: Path, choice: VmafChoice) -> VmafCheck:
    """target_vmaf: VMAF of the whole written output against its source."""
    from mediad.media.vmaf_search import measure_output

    check = measure_output(plan, written, choice)
    log.event("vmaf_measured", input=plan.input, predicted=f"{choice.predicted:.2f}",
              measured=f"{check.measured:.2f}", seconds=f"{check.seconds:.1f}")
    for warning in check.warnings:
        log.event("vmaf_disagrees", logging.WARNING, input=plan.input, detail=warning)
    return check


def _seconds(span: Span | None) -> float | None:
    return span.seconds if span is not None else None


def _audio_spans(plan: Plan, result: RunResult) -> list[float | None]:
    """How long what went into each kept audio track lasts, in the output's order."""
    return [_seconds(result.audio_spans.get(a.index)) for a in plan.audio if a.action != "drop"]


def _missing_streams(plan: Plan, out: OutputInfo) -> list[str]:
    """Say so when the output has fewer audio/subtitle streams than the plan kept.

    A source track with no packets (a truncated file, an empty placeholder track) yields no
    output stream, and MP4 drops it silently; the job still succeeds, but not quietly.
    """
    notes = []
    for kind, planned, written in (("audio", plan.audio, out.audio_streams),
                                   ("subtitle", plan.subtitles, out.subtitle_streams)):
        kept = sum(1 for s in planned if s.action != "drop")
        if written < kept:
            notes.append(f"the plan kept {kept} {kind} stream(s) but the output has {written}: "
                         "a source track had no packets (truncated or empty)")
    for note in notes:
        log.event("streams_missing", input=plan.input, detail=note)
    return notes


def run_with_fallbacks(plan: Plan, tmp: Path, profile: Profile,
                       on_progress: ProgressCallback | None = None,
                       frames_total: int | None = None) -> tuple[Plan, RunResult]:
    """Run `plan` into `tmp`; when NVENC or NVDEC fails at run time, run again from the start
    with that part in software (at most twice: each fallback turns one part off for good).

    Returns the plan that really ran, its fallbacks recorded, for the report.
    """
    while True:
        try:
            return plan, run(single_output(plan), tmp, on_progress, frames_total, profile.stages)
        except EncoderRefused as e:
            if profile.video.encoder == "gpu":  # NVENC is required: busy now, retry later
                raise MediadError(f"{plan.input}: {e} (profile {profile.name} requires NVENC)",
                                  transient=True, reason=Reason.ENCODER_BUSY) from None
            plan = plan.with_software_video(str(e))
        except DecoderRefused as e:
            plan = plan.with_software_decode(str(e))
        log.event("fallback", input=plan.input, detail=plan.fallbacks[-1])
        tmp.unlink(missing_ok=True)


def _write_analysis(result: RunResult, source: Path, output: Path, profile: Profile) -> dict:
    """Write the stages' sidecar `<output>.mediad.json` beside the committed output."""
    from mediad.models.sidecar import build_sidecar, sidecar_path, summary, write_sidecar

    doc = build_sidecar(result.analysis, source=source, output=output, profile=profile.name,
                        stages=result.stages)
    path = write_sidecar(sidecar_path(output), doc)
    return {"analysis": summary(result.analysis, path, result.stages)}
