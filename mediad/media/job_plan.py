"""The plan of a job as the engine runs it, `mediad plan` prints it and reports record it: one
decode (`base`: decode, timeline, audio decisions) and its outputs, each with its own video
(geometry, encoder decision and reason, rate control, how the frames reach its encoder).

A single transcode is a job of one output (`single_output`); a ladder (media.ladder_plan) one
of several. Both print and serialise the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

from mediad.media.encoders import gop_options
from mediad.media.plan_records import Plan, VideoPlan, software_video
from mediad.media.plan_streams import StreamPlan

# hls/dash: a streaming set; files: one file per rendition (a profile's file container);
# file: a single transcode's one output (single_output).
Package = Literal["hls", "dash", "files", "file"]


@dataclass(frozen=True, kw_only=True)
class OutputPlan:
    """One output of a run (a ladder's rendition, or a single transcode's video): its name
    (`720p`), its video plan (geometry, encoder, the reason for it), its rate control and how
    the decoded frames reach its encoder."""

    name: str
    video: VideoPlan
    max_bit_rate: int | None  # the VBV peak, with bit_rate (None: constant quality)
    gop: int  # frames between keyframes (0: the encoder's own)
    file: str | None = None  # files: its file's name in the folder (<stem>.<name>.<ext>)
    frames: str = ""  # how the decoded frames reach its encoder (scaled where, downloaded when)


@dataclass(frozen=True, kw_only=True)
class JobPlan:
    """What the engine runs: decode once (`base`: decode, audio and timeline decisions), and
    encode every output (`outputs`). A ladder's, or a single transcode's (single_output)."""

    base: Plan  # a single transcode's plan, or the single-output plan of a ladder's tallest rung
    package: Package
    container: str  # of each file (files, file), or of the segments (fMP4: mp4)
    output: str  # the folder (a single output: its file)
    outputs: list[OutputPlan]
    audio: list[StreamPlan]  # the audio tracks written, each one output track (an HLS group member)
    subtitles: list[StreamPlan]  # the text tracks kept: in every file, or HLS WebVTT renditions
    segment_seconds: float
    keyframe_seconds: float
    skipped: list[str]  # renditions not made, and why
    warnings: list[str]
    fallbacks: list[str]  # what runs in software although the plan wanted the GPU, and why

    @property
    def audio_names(self) -> list[str]:
        """A name per audio track, unique, for folders and reports: audio (the only one),
        audio-eng, audio-2..."""
        names: list[str] = []
        for i, a in enumerate(self.audio, 1):
            name = f"audio-{a.language}" if a.language else \
                "audio" if len(self.audio) == 1 else f"audio-{i}"
            names.append(name if name not in names else f"{name}-{i}")
        return names

    @property
    def manifest(self) -> str | None:
        """The playlist or manifest players open; None for files."""
        return {"hls": "master.m3u8", "dash": "manifest.mpd"}.get(self.package)

    def to_dict(self) -> dict:
        """The plan as --json, reports and the API give it, the same for one output or many:
        the decode's decisions, then `outputs`, then the tracks (dropped ones with their
        reason), notes, fallbacks and warnings."""
        base = self.base.to_dict()
        decode = {k: v for k, v in base.items() if k not in _OWN}
        return {
            "input": base["input"], "profile": base["profile"], "output": self.output,
            "package": self.package, "manifest": self.manifest, "container": self.container,
            **decode,
            "outputs": [asdict(o) for o in self.outputs],
            "skipped": self.skipped,
            "audio": [asdict(a) for a in _with_drops(self.audio, self.base.audio)],
            "subtitles": [asdict(s) for s in _with_drops(self.subtitles, self.base.subtitles)],
            "segment_seconds": self.segment_seconds, "keyframe_seconds": self.keyframe_seconds,
            "notes": base["notes"], "fallbacks": self.fallbacks, "warnings": self.warnings,
        }

    def with_software_decode(self, reason: str) -> JobPlan:
        """The same plan decoded in software (NVDEC failed or refused the stream at run time)."""
        base = self.base.with_software_decode(reason)
        return replace(self, base=base, fallbacks=[*self.fallbacks, base.fallbacks[-1]],
                       outputs=[resided(o, False) for o in self.outputs])

    def with_software_output(self, name: str, reason: str) -> JobPlan:
        """The same plan with one output on its software encoder (NVENC refused that sink at
        run time); the others keep theirs."""
        outputs = [resided(with_stream_options(replace(o, video=software_video(o.video, reason))),
                           self.base.frames_on_gpu)
                   if o.name == name else o for o in self.outputs]
        return replace(self, outputs=outputs,
                       fallbacks=[*self.fallbacks, f"rendition {name}: {reason}"])


# The base plan's keys JobPlan.to_dict gives its own values for (or, for video, per output)
_OWN = {"input", "profile", "output", "container", "video", "audio", "subtitles", "notes",
        "fallbacks", "warnings"}


def _with_drops(kept: list[StreamPlan], planned: list[StreamPlan]) -> list[StreamPlan]:
    """The tracks written, and the ones the plan dropped (with the reason), by stream index."""
    indices = {s.index for s in kept}
    return sorted([*kept, *(s for s in planned if s.action == "drop" and s.index not in indices)],
                  key=lambda s: s.index)


def single_output(plan: Plan) -> JobPlan:
    """A single transcode as the engine runs it: one output, the plan's own video (encoded
    or copied), into the plan's one file."""
    video = OutputPlan(name="video", video=plan.video, max_bit_rate=None, gop=0,
                       frames=plan.frames_reason)
    return JobPlan(base=plan, package="file", container=plan.container, output=plan.output,
                   outputs=[video], audio=[a for a in plan.audio if a.action != "drop"],
                   subtitles=[s for s in plan.subtitles if s.action in ("copy", "convert")],
                   segment_seconds=0.0, keyframe_seconds=0.0, skipped=[],
                   warnings=plan.warnings, fallbacks=plan.fallbacks)


def resided(o: OutputPlan, on_gpu: bool) -> OutputPlan:
    """The rendition with the word on how its frames reach its encoder."""
    v = o.video
    frames = "host frames, scaled in libavfilter" if not on_gpu else \
        "scaled on the GPU -> NVENC, no host copy" if v.hardware else \
        f"scaled on the GPU, downloaded at {v.width}x{v.height} for {v.encoder}"
    return replace(o, frames=frames)


def with_stream_options(o: OutputPlan) -> OutputPlan:
    """The rendition with its encoder's keyframe and VBV options added."""
    v = o.video
    options = {**v.options, **gop_options(v.encoder, o.gop, v.options)}
    if o.max_bit_rate:
        options.update({"maxrate": str(o.max_bit_rate), "bufsize": str(2 * o.max_bit_rate)})
    return replace(o, video=replace(v, options=options))


def format_job_plan(plan: JobPlan) -> str:
    """Human-readable plan for `mediad plan`: the decode's decisions, each output, the tracks."""
    b, d = plan.base, plan.base.decode
    if plan.manifest:
        where = f"{plan.output}/ ({plan.package}, {plan.manifest}, segments of " \
                f"{plan.segment_seconds:g} s, keyframes every {plan.keyframe_seconds:g} s)"
    elif plan.package == "files":
        where = f"{plan.output}/ (one {plan.container} file per rendition)"
    else:
        where = f"{plan.output} ({plan.container}" + (", faststart)" if b.faststart else ")")
    lines = [f"input:   {b.input}", f"output:  {where}", f"profile: {b.profile}",
             f"gpu:     {b.gpu.device if b.gpu.device is not None else 'none'}"
             + (f" ({b.gpu.reason})" if b.gpu.reason else ""),
             f"decode:  #{d.stream} {d.codec} {'NVDEC' if d.hardware else 'software'} - {d.reason}",
             f"frames:  {'GPU-resident' if b.frames_on_gpu else 'host'} - {b.frames_reason}"]
    lines += [f"stage:   {st.kind} {st.model} on {st.device} {st.precision}"
              + "".join(f" - {r}" for r in st.reasons) for st in b.stages]
    lines += [_output_line(o, plan.package) for o in plan.outputs]
    lines += [f"skipped: {s}" for s in plan.skipped]
    for a in _with_drops(plan.audio, b.audio):
        target = f" -> {a.codec} {a.bit_rate // 1000}k" if a.action == "encode" and a.bit_rate else ""
        lines.append(f"audio:   #{a.index} {a.source_codec} {a.action}{target}"
                     + (f" [{a.language}]" if a.language else "") + f" - {a.reason}")
    for s in _with_drops(plan.subtitles, b.subtitles):
        target = f" -> {s.codec}" if s.action == "convert" else ""
        lines.append(f"subs:    #{s.index} {s.source_codec} {s.action}{target}"
                     + (f" [{s.language}]" if s.language else "") + f" - {s.reason}")
    lines += [f"cover:   #{c.index} {c.source_codec} {c.action} - {c.reason}" for c in b.cover_art]
    lines += [f"attach:  #{a.index} {a.action} - {a.reason}" for a in b.attachments]
    if (v := b.video).action == "encode" and v.vmaf is not None:
        lines.append(f"quality: {v.vmaf.describe()}")
    lines += [f"note:    {n}" for n in b.notes]
    lines += [f"fallback: {f}" for f in plan.fallbacks]
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


def _output_line(o: OutputPlan, package: Package) -> str:
    """An output's video: `video:` for a single transcode's, `rendition: NAME` for a ladder's."""
    v = o.video
    head = "video:  " if package == "file" else f"rendition: {o.name}"
    if v.action == "copy":
        return f"{head} copy {v.codec} - {v.reason}"
    rc = f"{v.bit_rate // 1000}k (peak {o.max_bit_rate // 1000}k)" if v.bit_rate and o.max_bit_rate \
        else f"{v.bit_rate // 1000}k" if v.bit_rate else f"quality {v.quality}"
    if v.vmaf is not None:
        rc = f"VMAF {v.vmaf.target:g}"
    extra = []
    if v.rotate or v.mirror:
        extra.append(f"rotate {v.rotate}" + (", mirrored" if v.mirror else ""))
    if v.crop:
        extra.append(f"crop to {v.crop[0]}x{v.crop[1]}")
    if v.deinterlace in ("all", "interlaced"):
        extra.append(f"bwdif ({v.deinterlace})")
    if v.sample_aspect_ratio not in ("1/1", "1"):
        extra.append(f"SAR {v.sample_aspect_ratio}")
    opts = " ".join(f"{k}={val}" for k, val in v.options.items())
    return (f"{head} {v.codec} via {v.encoder} {v.width}x{v.height} {v.pix_fmt} {rc}"
            + (f" ({', '.join(extra)})" if extra else "") + f" [{opts}]"
            + (f" -> {o.file}" if o.file else "") + f" - {v.reason}"
            + (f"; frames: {o.frames}" if o.frames and package != "file" else ""))
