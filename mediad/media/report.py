"""The job report: input, plan, outputs, speed, warnings (what `--json` prints)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mediad.media.job_plan import single_output
from mediad.media.media_info import MediaInfo
from mediad.media.plan_records import Plan
from mediad.media.verify import OutputInfo


@dataclass(frozen=True)
class Report:
    """Everything a finished transcode tells about itself."""

    input: MediaInfo
    plan: Plan
    outputs: list[OutputInfo]
    elapsed: float
    fps: float
    warnings: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # e.g. stage analysis summaries

    def to_dict(self) -> dict:
        """Plain data for --json, the daemon and sidecars."""
        outputs = []
        for o in self.outputs:
            d = o.to_dict()
            d["container"] = self.plan.container
            d["encoder"] = self.plan.video.encoder
            outputs.append(d)
        return {
            "input": self.input.to_dict(),
            "plan": single_output(self.plan).to_dict(),  # as a ladder's: decode + outputs
            "outputs": outputs,
            "elapsed": round(self.elapsed, 3),
            "fps": round(self.fps, 2),
            "fallbacks": list(self.plan.fallbacks),
            "warnings": self.warnings,
            **self.extra,
        }


def format_report(report: Report) -> str:
    """A few human-readable lines about a finished transcode."""
    lines = []
    for o in report.outputs:
        dur = f"{o.duration:.2f}s" if o.duration is not None else "?"
        lines.append(f"wrote {o.path}: {o.video_codec} {o.width}x{o.height} via "
                     f"{report.plan.video.encoder}, {o.frames} frames, {dur}, {o.size} bytes"
                     f"{o.video_rate_text()}")
    for t in report.extra.get("loudness", []):
        lines.append(f"loudness: audio #{t['stream']} {t['input_i']:g} LUFS -> {t['output_i']:g} "
                     f"LUFS ({t['normalization']}; true peak in {t['input_tp']:g} dBTP, range "
                     f"{t['input_lra']:g} LU)")
    if (v := report.extra.get("vmaf")) is not None:
        source = f"{v['samples']} samples" if v["samples"] else "the whole source"
        line = (f"vmaf: {v['option']} {v['quality']} chosen for target {v['target']:g} "
                f"(predicted {v['predicted']:.2f} from {source}, {len(v['trials'])} trial "
                f"encodes, {v['search_seconds']:.1f}s on {v['device']})")
        if "measured" in v:
            line += (f"; measured {v['measured']:.2f} over the whole output "
                     f"({v['measured_frames']} frames, {v['measure_seconds']:.1f}s)")
        lines.append(line)
    lines.append(f"{report.elapsed:.2f}s elapsed, {report.fps:.1f} frames/s")
    lines += [f"fallback: {f}" for f in report.plan.fallbacks]
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)
