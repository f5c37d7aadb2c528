"""StageRunner: runs a profile's [[stages]] on decoded frames, in order, inside the transcode pass.

The runner, not the models, owns batching, device placement, precision and memory limits:

    runner = StageRunner.from_profile(profile.stages, gpu=plan_device, fps_hint=25.0)
    w2, h2 = runner.output_size(w, h)               # size of the frames process() returns
    out = runner.process(frames, pts)               # (N,3,H,W) uint8/float RGB + pts in seconds
    encode(out.frames)                              # same dtype as given; on the last stage's device
    analysis = runner.finish()                      # shots, per-shot labels, samples
    container.set_chapters(analysis.chapters())     # [] unless the shots stage asks for chapters

Analysis-only stages (shots, classify) never change the frames: process() then returns the very
tensor it was given, so they also run while the video stream itself is copied.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mediad import log
from mediad.errors import MediadError, Reason, first_line
from mediad.models import require_torch
from mediad.models.base import (
    AnalysisResult,
    FrameBatch,
    FrameStage,
    StageContext,
    StageOutput,
    unit_float,
)
from mediad.models.decision import StageDecision
from mediad.profile_stages import ClassifyStage, ShotsStage, UpscaleStage

StageConfig = UpscaleStage | ClassifyStage | ShotsStage
GIB = 1 << 30
# Share of the free GPU memory a stage may plan on: the decoder, encoder and allocator need some.
GPU_FREE_SHARE = 0.7
CPU_BUDGET_CAP = 4 * GIB


def _resolve_device(cfg: StageConfig, index: int, gpu: int | None | str) -> tuple[str, list[str]]:
    import torch

    reasons: list[str] = []
    cuda_ok = torch.cuda.is_available()
    if cfg.device == "cpu":
        return "cpu", reasons
    if cfg.device == "auto":
        if gpu is None:
            return "cpu", ["device auto: no GPU for this job"]
        if not cuda_ok:
            return "cpu", ["device auto: torch sees no CUDA device (CPU build or no GPU)"]
        n = torch.cuda.current_device() if gpu == "auto" else int(gpu)
        return f"cuda:{n}", reasons
    # An explicit cuda / cuda:N is a requirement, not a wish: no silent fall-back.
    if gpu is None:
        raise MediadError(f"stages.{index}: device = \"{cfg.device}\", but this job runs without "
                          "a GPU", reason=Reason.NO_GPU)
    if not cuda_ok:
        raise MediadError(f"stages.{index}: device = \"{cfg.device}\", but torch sees no CUDA "
                          "device (CPU build of torch, or no GPU)", reason=Reason.NO_GPU)
    n = int(cfg.device.partition(":")[2] or (gpu if isinstance(gpu, int) else 0))
    if n >= torch.cuda.device_count():
        raise MediadError(f"stages.{index}: device cuda:{n} does not exist "
                          f"({torch.cuda.device_count()} visible)", reason=Reason.NO_GPU)
    return f"cuda:{n}", reasons


def _resolve_precision(cfg: StageConfig, device: str) -> tuple[str, list[str]]:
    import torch

    on_cuda = device.startswith("cuda")
    p = cfg.precision
    if p == "auto":
        if not on_cuda:
            return "fp32", []
        if cfg.kind == "upscale":
            # Pixels come out of this model: bf16's 8-bit mantissa would band 8-bit output.
            return "fp16", []
        return ("bf16", []) if torch.cuda.is_bf16_supported() else ("fp16", [])
    if p == "fp16" and not on_cuda:
        return "fp32", ["fp16 on the CPU is slow or missing: fp32"]
    if p == "bf16" and on_cuda and not torch.cuda.is_bf16_supported():
        return "fp16", ["this GPU has no bf16: fp16"]
    return p, []


def plan_stages(stages: Sequence[StageConfig], gpu: int | None | str = "auto") -> list[StageDecision]:
    """Device, precision and limits of each stage, without loading models (needs torch)."""
    require_torch()
    out = []
    for i, cfg in enumerate(stages):
        device, reasons = _resolve_device(cfg, i, gpu)
        precision, why = _resolve_precision(cfg, device)
        on_cuda = device.startswith("cuda")
        out.append(StageDecision(
            index=i, kind=cfg.kind, model=cfg.model, device=device, precision=precision,
            # TransNetV2 is a 3-D (5-D tensor) network: channels_last is for 2-D convolutions.
            channels_last=on_cuda and cfg.kind != "shots", compile=cfg.compile, batch_size=cfg.batch_size,
            max_memory=cfg.max_memory_bytes, reasons=tuple(reasons + why)))
    return out


def memory_budget(device: str, cap: int | None) -> int:
    """Bytes one stage call may use: a share of free GPU memory, or of available RAM; capped."""
    import torch

    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        budget = int(free * GPU_FREE_SHARE)
    else:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 4 * CPU_BUDGET_CAP
        budget = min(avail // 4, CPU_BUDGET_CAP)
    return min(budget, cap) if cap else budget


_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
_PRECISIONS = {v: k for k, v in _DTYPES.items()}  # torch dtype name -> precision


def _context(decision: StageDecision) -> StageContext:
    import torch

    return StageContext(
        index=decision.index, device=torch.device(decision.device),
        dtype=getattr(torch, _DTYPES[decision.precision]), channels_last=decision.channels_last,
        compile=decision.compile, memory_budget=memory_budget(decision.device, decision.max_memory),
        batch_size=decision.batch_size, reasons=decision.reasons)


class UpscaleStep(FrameStage):
    """The `upscale` stage: mediad.models.upscale.Upscaler on every frame (tiles when needed)."""

    kind = "upscale"
    modifies_frames = True

    def __init__(self, ctx: StageContext, cfg: UpscaleStage) -> None:
        super().__init__(ctx)
        from mediad.models.upscale import Upscaler

        self.cfg = cfg
        self.scale = cfg.scale
        # Half the budget for the network's activations (the Upscaler tiles frames that need
        # more), half for the batch's output frames.
        self.upscaler = Upscaler(cfg.model, cfg.scale, ctx.device, ctx.dtype,
                                 memory_budget=ctx.memory_budget // 2)
        if ctx.compile:
            import torch

            # Compile the network only: tiling and batching stay plain Python around it.
            self.upscaler.net = torch.compile(self.upscaler.net)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """Each side times the scale."""
        return width * self.scale, height * self.scale

    def bytes_per_frame(self, width: int, height: int) -> int:
        """The batch's output frames (the Upscaler keeps its activations within the other half)."""
        out = 3 * width * height * self.scale * self.scale * self.ctx.dtype.itemsize
        return 2 * (out + 3 * width * height * self.ctx.dtype.itemsize)

    def max_batch(self) -> int:
        """A few frames per call: the Upscaler batches further within its pixel budget."""
        return 16 if self.ctx.device.type == "cuda" else 4

    def describe(self) -> dict[str, Any]:
        """Stage settings for the plan, the report and the sidecar."""
        return {"kind": self.kind, "model": self.cfg.model, "scale": self.scale}

    def process(self, batch: FrameBatch) -> StageOutput:
        """Upscale the batch: float 0..1 frames in the stage's precision."""
        return StageOutput(frames=self.upscaler(unit_float(batch.frames, self.ctx.dtype)))


def build_stage(cfg: StageConfig, ctx: StageContext) -> FrameStage:
    """The stage object for one config (loads its model onto ctx.device)."""
    if isinstance(cfg, UpscaleStage):
        return UpscaleStep(ctx, cfg)
    if isinstance(cfg, ClassifyStage):
        from mediad.models.classify import Classifier

        return Classifier(ctx, cfg)
    from mediad.models.shots import ShotDetector

    return ShotDetector(ctx, threshold=cfg.threshold, chapters=cfg.chapters)


@dataclass
class Processed:
    """process()'s answer: the frames to encode and what the stages said about each frame."""

    frames: Any  # torch.Tensor (N,3,H',W'), same dtype as the input
    data: list[dict[str, Any]] = field(default_factory=list)  # per frame: {stage kind: data}


class StageRunner:
    """Runs stages in order on batches of frames; collects their results for finish()."""

    def __init__(self, stages: Sequence[FrameStage], *, fps_hint: float | None = None) -> None:
        self.stages = list(stages)
        self.fps_hint = fps_hint
        self.frames_seen = 0
        self.first_pts: float | None = None
        self.last_pts: float | None = None
        self._batch: dict[tuple[int, int, int], int] = {}  # (stage, w, h) -> frames per call
        self._result: AnalysisResult | None = None

    @classmethod
    def from_profile(cls, stages: Sequence[StageConfig], *, gpu: int | None | str = "auto",
                     fps_hint: float | None = None) -> StageRunner:
        """Build every stage of a profile (`gpu`: the job's GPU index, None for none, or auto)."""
        require_torch()
        built = []
        for decision, cfg in zip(plan_stages(stages, gpu), stages, strict=True):
            ctx = _context(decision)
            for reason in decision.reasons:
                log.event_once(f"stage_fallback:{cfg.kind}:{reason}", "stage_fallback",
                               stage=cfg.kind, reason=reason)
            built.append(build_stage(cfg, ctx))
            log.event("stage_ready", stage=cfg.kind, model=cfg.model, device=decision.device,
                      precision=decision.precision, budget_mib=ctx.memory_budget >> 20)
        return cls(built, fps_hint=fps_hint)

    @property
    def modifies_frames(self) -> bool:
        """True when a stage changes the frames (the video must then be re-encoded)."""
        return any(s.modifies_frames for s in self.stages)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """Size of the frames process() returns for input frames of `width` x `height`."""
        for stage in self.stages:
            width, height = stage.output_size(width, height)
        return width, height

    def batch_size(self, stage_index: int, width: int, height: int) -> int:
        """Frames per call for a stage at this input size: the profile's, else what memory allows."""
        key = (stage_index, width, height)
        if key not in self._batch:
            stage = self.stages[stage_index]
            n = stage.ctx.batch_size or max(1, min(
                stage.max_batch(), stage.ctx.memory_budget // max(1, stage.bytes_per_frame(width, height))))
            self._batch[key] = n
            log.event("stage_batch", stage=stage.kind, frame=f"{width}x{height}", batch=n)
        return self._batch[key]

    def process(self, frames: Any, pts: Sequence[float]) -> Processed:
        """Run all stages on (N,3,H,W) RGB frames (uint8 0..255 or float 0..1) with pts in seconds."""
        import torch

        if self._result is not None:
            raise RuntimeError("StageRunner.process() after finish()")
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be (N,3,H,W) RGB, got {tuple(frames.shape)}")
        pts = [float(t) for t in pts]
        n = len(pts)
        if frames.shape[0] != n:
            raise ValueError(f"{frames.shape[0]} frames but {n} timestamps")
        data: list[dict[str, Any]] = [{} for _ in range(n)]
        if n == 0:
            return Processed(frames, data)
        # `x` follows each stage to its device; `result` is the last modifying stage's output,
        # which stays where that stage made it (an analysis stage on the CPU only reads a copy).
        x, result = frames, None
        with torch.inference_mode():
            for si, stage in enumerate(self.stages):
                if x.device != stage.ctx.device:
                    # Non-blocking only towards the GPU: a CPU reader would not wait for the copy.
                    x = x.to(stage.ctx.device, non_blocking=stage.ctx.device.type == "cuda")
                bs = self.batch_size(si, x.shape[-1], x.shape[-2])
                outs = []
                for i in range(0, n, bs):
                    try:
                        out = stage.process(FrameBatch(x[i:i + bs], pts[i:i + bs],
                                                       self.frames_seen + i))
                    except torch.OutOfMemoryError as e:  # another GPU user took memory we planned on
                        raise MediadError(
                            f"stage {stage.kind}: out of GPU memory on {min(bs, n - i)} frames of "
                            f"{x.shape[-1]}x{x.shape[-2]} (set batch_size or max_gpu_memory lower, "
                            "or run fewer GPU jobs at once)", transient=True, reason=Reason.GPU_OOM) from e
                    except MediadError:
                        raise
                    except Exception as e:  # a model's own failure (a CUDA error, a shape bug)
                        raise MediadError(
                            f"stage {stage.kind} failed at frame {self.frames_seen + i}: "
                            f"{type(e).__name__}: {first_line(e)}",
                            reason=Reason.INTERNAL_ERROR) from e
                    if stage.modifies_frames:
                        if out.frames is None:
                            raise RuntimeError(f"stage {stage.kind} returned no frames")
                        outs.append(out.frames)
                    for j, d in enumerate(out.data or ()):
                        if d is not None:
                            data[i + j][stage.name] = d
                if stage.modifies_frames:
                    x = result = outs[0] if len(outs) == 1 else torch.cat(outs)
        self.frames_seen += n
        if self.first_pts is None:
            self.first_pts = pts[0]
        self.last_pts = pts[-1]
        return Processed(frames if result is None else _like(result, frames.dtype), data)

    def finish(self) -> AnalysisResult:
        """Flush every stage; shots, per-shot and per-sample labels, chapters (once)."""
        if self._result is not None:
            return self._result
        import torch

        from mediad.models.classify import Classifier
        from mediad.models.shots import ShotDetector, frame_duration

        with torch.inference_mode():
            results = {id(s): s.finish() for s in self.stages}
        shots_stage = next((s for s in self.stages if isinstance(s, ShotDetector)), None)
        classifier = next((s for s in self.stages if isinstance(s, Classifier)), None)
        shots = results[id(shots_stage)]["shots"] if shots_stage else []
        start = self.first_pts or 0.0
        if shots_stage and shots_stage.pts:
            step = frame_duration(shots_stage.pts)
        else:
            step = 1 / self.fps_hint if self.fps_hint else 0.0
        end = (self.last_pts + step) if self.last_pts is not None else start
        result = AnalysisResult(
            frames=self.frames_seen, duration=max(0.0, end - start), shots=shots,
            classifications=classifier.segments(shots, start, end) if classifier else [],
            samples=classifier.frame_labels(shots) if classifier else [],
            chapters_enabled=bool(shots_stage and shots_stage.chapters))
        self._result = result
        log.event("stages_done", frames=self.frames_seen, shots=len(shots),
                  samples=len(result.samples))
        return result

    def describe(self) -> list[dict[str, Any]]:
        """Each stage's settings and runtime decisions, for the report and the sidecar."""
        out = []
        for i, s in enumerate(self.stages):
            sizes = {f"{w}x{h}": n for (si, w, h), n in self._batch.items() if si == i}
            precision = _PRECISIONS[str(s.ctx.dtype).removeprefix("torch.")]
            out.append({**s.describe(), "device": str(s.ctx.device), "precision": precision,
                        "channels_last": s.ctx.channels_last, "compile": s.ctx.compile,
                        "memory_budget": s.ctx.memory_budget, "batch_size": sizes or "auto",
                        "reasons": list(s.ctx.reasons)})
        return out


def _like(x: Any, dtype: Any) -> Any:
    """Stage output (float 0..1) back to the caller's dtype (uint8 0..255, or a float type)."""
    import torch

    # Out of place first: outside inference mode that makes a normal tensor the caller may modify.
    if dtype == torch.uint8:
        return x.float().mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return x.clamp(0, 1).to(dtype)
