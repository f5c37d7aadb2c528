"""One ladder job: probe -> plan -> run -> read back and measure -> finish the manifest ->
commit the whole set at once.

The set is written into a hidden folder beside the destination and renamed into place only
when every rendition verified; it records its job key (`mediad.json`), so running the same
job again recognises the committed set as its own instead of writing a second copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from mediad import __version__, log, stopping
from mediad.errors import MediadError, Reason, io_error
from mediad.fsutil import atomic_write_bytes
from mediad.media.commit import (
    RECORD,
    commit_folder,
    committed_key,
    remove_stale_sets,
    set_record,
    temp_dir_for,
)
from mediad.media.engine import run
from mediad.media.job_plan import JobPlan
from mediad.media.ladder_plan import plan_ladder
from mediad.media.media_info import MediaInfo
from mediad.media.packaging import SegmentedTrack, check_segments, finish_dash, finish_hls
from mediad.media.probe import probe
from mediad.media.progress import ProgressCallback
from mediad.media.run_result import RunResult
from mediad.media.source import DecoderRefused
from mediad.media.timing import Span
from mediad.media.verify import OutputInfo, SourceStamp, verify_output
from mediad.media.video_sink import EncoderRefused
from mediad.profiles import Profile

ANALYSIS = "analysis.mediad.json"  # the stages' sidecar, inside the set
# Rendition and source durations may differ by a frame or two at each end.
_DURATION_TOLERANCE_S = 0.25


@dataclass(frozen=True)
class LadderReport:
    """Everything a finished (or already committed) ladder job tells about itself."""

    input: MediaInfo
    plan: JobPlan
    folder: str
    tracks: list[SegmentedTrack]
    elapsed: float
    frames: int
    warnings: list[str] = field(default_factory=list)
    already_done: bool = False  # the set was committed by an earlier run of this job
    files: list[OutputInfo] = field(default_factory=list)  # one per rendition (package files)
    analysis: dict | None = None  # the stages' summary (their sidecar is in the set)
    loudness: list[dict] = field(default_factory=list)  # per normalised track: loudnorm's figures

    def to_dict(self) -> dict:
        encoders = {r.name: r.video.encoder for r in self.plan.outputs}
        encoders |= {name: a.encoder or "copy"
                     for name, a in zip(self.plan.audio_names, self.plan.audio, strict=True)}
        outputs = [{**asdict(t), "path": str(Path(self.folder) / t.playlist),
                    "encoder": encoders.get(t.name)} for t in self.tracks]
        if self.files:  # one per rendition, in the plan's order
            outputs += [{**f.to_dict(), "name": r.name, "encoder": r.video.encoder,
                         "container": self.plan.container}
                        for f, r in zip(self.files, self.plan.outputs, strict=True)]
        manifest = self.plan.manifest
        return {"input": self.input.to_dict(), "plan": self.plan.to_dict(),
                "output": self.folder,
                "manifest": str(Path(self.folder) / manifest) if manifest else None,
                "outputs": outputs, "elapsed": round(self.elapsed, 3),
                "fps": round(self.frames / self.elapsed, 2) if self.elapsed else 0.0,
                "fallbacks": list(self.plan.fallbacks), "warnings": self.warnings,
                "already_done": self.already_done, "analysis": self.analysis,
                "loudness": self.loudness}


def format_ladder_report(report: LadderReport) -> str:
    head = "already committed by an earlier run of this job: " if report.already_done else "wrote "
    lines = [f"{head}{Path(report.folder) / (report.plan.manifest or '')}"]
    for f in report.files:
        dur = f"{f.duration:.2f}s" if f.duration is not None else "?"
        lines.append(f"  {Path(f.path).name}: {f.video_codec} {f.width}x{f.height}, "
                     f"{f.frames} frames, {dur}, {f.size} bytes{f.video_rate_text()}")
    for t in report.tracks:
        what = f"{t.codec} {t.width}x{t.height}, {t.frames} frames" if t.kind == "video" \
            else f"{t.codec} audio"
        lines.append(f"  {t.name}: {what}, {t.duration:.2f}s, {t.size} bytes, "
                     f"{t.average_bit_rate // 1000}k average, {t.peak_bit_rate // 1000}k peak")
    if not report.already_done:
        fps = report.frames / report.elapsed if report.elapsed else 0.0
        lines.append(f"{report.elapsed:.2f}s elapsed, {fps:.1f} frames/s (each rendition)")
    if report.analysis:
        lines.append(f"analysis: {report.analysis['shots']} shots, {report.analysis['frames']} "
                     f"frames -> {report.analysis['sidecar']}")
    lines += [f"skipped: {s}" for s in report.plan.skipped]
    lines += [f"fallback: {f}" for f in report.plan.fallbacks]
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)


def default_folder(input_path: Path, profile: Profile) -> Path:
    """`<stem>.<profile>/` beside the input."""
    return input_path.with_name(f"{input_path.stem}.{profile.output_suffix}")


def run_key(input_path: Path, stamp: SourceStamp | None, profile: Profile) -> str:
    """What makes two runs of `mediad transcode` the same job: the source (path, size, mtime)
    and the profile."""
    h = hashlib.sha256()
    h.update(os.fsencode(os.path.realpath(input_path)))
    if stamp is not None:
        h.update(f"{stamp.size}:{stamp.mtime_ns}".encode())
    h.update(profile.model_dump_json().encode())
    return h.hexdigest()[:32]


def _check_folder(input_path: Path, folder: Path, overwrite: bool) -> None:
    if "%" in str(folder):  # FFmpeg's segmenters read it as a pattern (%v, %d)
        raise MediadError(f"{folder}: a '%' in the output folder's path is not supported "
                          "(FFmpeg's HLS/DASH segmenters read it as a pattern)",
                          reason=Reason.BAD_REQUEST)
    if folder.is_symlink():
        raise MediadError(f"{folder}: is a symbolic link: name the real folder",
                          reason=Reason.BAD_REQUEST)
    if folder.exists() and not folder.is_dir():
        raise MediadError(f"{folder}: exists and is not a folder (a ladder writes a folder)",
                          reason=Reason.BAD_REQUEST)
    if folder.exists() and not overwrite:
        raise MediadError(f"{folder}: already exists (use --overwrite to replace it)",
                          reason=Reason.OUTPUT_EXISTS)
    if folder.exists() and set_record(folder) is None:
        # --overwrite replaces a set mediad wrote, never a folder of the user's own
        raise MediadError(f"{folder}: exists and is not a set mediad wrote (no {RECORD}): "
                          "refusing to replace it, even with --overwrite", reason=Reason.OUTPUT_EXISTS)
    if input_path.resolve().is_relative_to(folder.resolve()):
        raise MediadError(f"{folder}: holds the input; mediad never writes over a source",
                          reason=Reason.BAD_REQUEST)
    if not folder.parent.is_dir():
        raise MediadError(f"{folder.parent}: output folder does not exist", reason=Reason.BAD_REQUEST)


def _verify(plan: JobPlan, result: RunResult, tracks: list[SegmentedTrack]) -> None:
    """Every rendition holds every frame encoded and lasts as long as what went into it, in
    segments that keep to the target; the audio lasts as long as its source track (like with
    like: a source whose audio ends before its video is not a broken set)."""
    videos = {t.name: t for t in tracks if t.kind == "video"}
    for r in plan.outputs:
        t = videos.get(r.name)
        if t is None:
            raise MediadError(f"{plan.output}: rendition {r.name} is missing from the manifest",
                              reason=Reason.CORRUPT)
        if t.frames != result.frames.get(r.name):
            raise MediadError(f"{plan.output}: rendition {r.name} holds {t.frames} frames, "
                              f"{result.frames.get(r.name)} were encoded", reason=Reason.CORRUPT)
        check_segments(t, plan.segment_seconds)
        _check_duration(plan, t, result.video_spans.get(r.name), _DURATION_TOLERANCE_S)
    sources = {name: result.audio_spans.get(a.index)
               for name, a in zip(plan.audio_names, plan.audio, strict=True)}
    for t in tracks:
        if t.kind == "audio":  # audio ends on its own frame grid; AAC priming shows too
            _check_duration(plan, t, sources.get(Path(t.name).name), _DURATION_TOLERANCE_S + 0.25)


def _check_duration(plan: JobPlan, track: SegmentedTrack, went_in: Span | None,
                    slack: float) -> None:
    expected = went_in.seconds if went_in is not None else None
    if expected is not None and abs(track.duration - expected) > slack:
        raise MediadError(f"{plan.output}: {track.name} lasts {track.duration:.2f}s, but "
                          f"{expected:.2f}s went into it", reason=Reason.CORRUPT)


def _verify_files(plan: JobPlan, result: RunResult, tmp: Path,
                  folder: Path) -> list[OutputInfo]:
    """Each rendition's file read back like a single transcode's output (the video against
    what went in, the audio against its source track); paths as they will be once committed."""
    audio = [result.audio_spans.get(a.index) for a in plan.audio]
    files = []
    for r in plan.outputs:
        assert r.file is not None
        span = result.video_spans.get(r.name)
        out = verify_output(tmp / r.file, span, [s.seconds if s else None for s in audio],
                            plan.base.input)
        if out.frames != result.frames.get(r.name):
            raise MediadError(f"{tmp / r.file}: holds {out.frames} frames, "
                              f"{result.frames.get(r.name)} were encoded", reason=Reason.CORRUPT)
        files.append(replace(out, path=str(folder / r.file)))
    return files


def _max_fps(info: MediaInfo) -> float | None:
    """The source's highest frame rate, for HLS's FRAME-RATE (the variant's maximum): its
    nominal rate when that is a plausible one above the average (a stream with gaps), else
    the average (a nominal rate twice it is a field rate; one far above it, a time base)."""
    v = info.main_video
    if v is None or not v.fps:
        return None
    if v.base_fps and v.fps < v.base_fps <= 1.5 * v.fps:
        return v.base_fps
    return v.fps


def plan_ladder_job(input_path: Path, profile: Profile, output: Path | None = None, *,
                    gpu: str = "auto") -> JobPlan:
    """Probe and plan a ladder without running it (what `mediad plan` shows)."""
    from mediad.media.job import machine_capabilities

    info = probe(input_path)
    caps, why = machine_capabilities(gpu)
    return plan_ladder(info, profile, caps, output or default_folder(input_path, profile), why,
                       gpu_allowed=gpu != "none")


@stopping.deferred()  # a stopping signal: at the job's next safe point, never inside a lock
def transcode_ladder(input_path: Path, profile: Profile, output: Path | None = None, *,
                     gpu: str = "auto", no_nvenc: str | None = None, overwrite: bool = False,
                     on_progress: ProgressCallback | None = None,
                     job_key: str | None = None) -> LadderReport:
    """Encode every rendition of `profile` from one decode; the set appears only complete.

    `no_nvenc` and `job_key` are the daemon's, as for `job.transcode`: its NVENC budget, and
    the key recorded in the set (instead of `run_key`'s) by which a run of the same job after
    a crash knows the committed set as its own.
    """
    from mediad.media.job import machine_capabilities

    started = time.monotonic()
    # Absolute, not resolved: `-o .` names the current folder, and a link is refused as one.
    folder = Path(os.path.abspath(output or default_folder(input_path, profile)))
    stamp = SourceStamp.of(input_path)
    key = job_key if job_key is not None else run_key(input_path, stamp, profile)
    done = not overwrite and committed_key(folder) == key  # this very job, whole: not redone
    if not done:
        _check_folder(input_path, folder, overwrite)
    info = probe(input_path)
    caps, why = machine_capabilities(gpu, no_nvenc)
    plan = plan_ladder(info, profile, caps, folder, why, gpu_allowed=gpu != "none")
    if done:
        return _already_done(input_path, info, plan, started)
    return commit_ladder(input_path, info, plan, key, started, stamp=stamp, overwrite=overwrite,
                         on_progress=on_progress, profile=profile)


def _already_done(input_path: Path, info: MediaInfo, plan: JobPlan,
                  started: float) -> LadderReport:
    """The report of a set this very job committed before, read from its record."""
    folder = Path(plan.output)
    record = set_record(folder) or {}
    tracks = [SegmentedTrack(**t) for t in record.get("tracks", [])]
    files = [OutputInfo(**f) for f in record.get("files", [])]
    log.event("already_committed", input=str(input_path), output=str(folder))
    return LadderReport(info, plan, str(folder), tracks, time.monotonic() - started, 0,
                        record.get("warnings", []), already_done=True, files=files,
                        analysis=record.get("analysis"), loudness=record.get("loudness", []))


def _run_with_fallbacks(plan: JobPlan, tmp: Path, on_progress: ProgressCallback | None,
                        total: int | None, profile: Profile) -> tuple[JobPlan, RunResult]:
    """Run the ladder; a rendition NVENC refuses is re-planned in software (that sink only),
    a stream NVDEC cannot decode is decoded in software, and the run starts again, at most
    once per rendition and once for the decoder."""
    for _ in range(len(plan.outputs) + 2):
        try:
            return plan, run(plan, tmp, on_progress, total, profile.stages)
        except EncoderRefused as e:
            assert e.output is not None  # the ladder names the rendition NVENC refused
            plan = plan.with_software_output(e.output, str(e))
        except DecoderRefused as e:
            plan = plan.with_software_decode(str(e))
        log.event("fallback", input=plan.base.input, detail=plan.fallbacks[-1])
        shutil.rmtree(tmp)
        tmp.mkdir()
    raise AssertionError("unreachable: each refusal moves one rendition or the decoder to software")


def commit_ladder(input_path: Path, info: MediaInfo, plan: JobPlan, key: str,
                  started: float, *, stamp: SourceStamp | None, overwrite: bool,
                  on_progress: ProgressCallback | None = None,
                  profile: Profile) -> LadderReport:
    """Run `plan` into a hidden folder, read it back, finish its manifest and rename it into
    place whole (the part of a ladder job after planning)."""
    folder = Path(plan.output)
    for stale in remove_stale_sets(folder):  # left by a run killed with SIGKILL
        log.event("partial_removed", logging.WARNING, path=str(stale))
    tmp = temp_dir_for(folder)
    try:
        try:
            tmp.mkdir()
        except OSError as e:
            raise io_error(folder, e) from None
        v = info.main_video
        total = v.frames if v and v.frames else None
        plan, result = _run_with_fallbacks(plan, tmp, on_progress, total, profile)
        if stamp and (changed := stamp.changed(input_path)):
            raise changed
        tracks: list[SegmentedTrack] = []
        files: list[OutputInfo] = []
        if plan.package == "files":
            files = _verify_files(plan, result, tmp, folder)
        else:
            fps = result.frame_rate or _max_fps(info)
            tracks = finish_hls(tmp, plan, fps) if plan.package == "hls" \
                else finish_dash(tmp, plan, fps)
            _verify(plan, result, tracks)
        warnings = [*plan.warnings, *result.warnings,
                    *(w for f in files for w in f.hold_warnings(Path(f.path).suffix[1:]))]
        analysis = _write_analysis(result, input_path, tmp, folder, profile) \
            if result.analysis is not None else None
        record = {"job": key, "mediad": __version__, "source": str(input_path),
                  "profile": profile.name, "manifest": plan.manifest, "analysis": analysis,
                  "loudness": result.loudness,
                  "tracks": [t.to_dict() for t in tracks], "files": [f.to_dict() for f in files],
                  "warnings": warnings}
        stopping.check()  # the last point a stop leaves nothing behind
        try:
            atomic_write_bytes(tmp / RECORD, json.dumps(record, indent=1).encode(), mode=0o644)
            commit_folder(tmp, folder, overwrite)
        except OSError as e:
            raise io_error(folder, e) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    elapsed = time.monotonic() - started
    frames = max(result.frames.values(), default=0)
    log.event("transcoded", input=str(input_path), output=str(folder),
              renditions=len(plan.outputs), frames=frames, seconds=f"{elapsed:.2f}")
    return LadderReport(info, plan, str(folder), tracks, elapsed, frames, warnings, files=files,
                        analysis=analysis, loudness=result.loudness)


def _write_analysis(result: RunResult, source: Path, tmp: Path, folder: Path,
                    profile: Profile) -> dict:
    """The stages' sidecar, inside the set (committed with it, as one of its files): one
    analysis of the one decode, for every rendition. Returns its summary for the report."""
    from mediad.models.sidecar import build_sidecar, summary, write_sidecar

    doc = build_sidecar(result.analysis, source=source, output=folder, profile=profile.name,
                        stages=result.stages)
    write_sidecar(tmp / ANALYSIS, doc)
    return summary(result.analysis, folder / ANALYSIS, result.stages)
