"""Frame-model benchmark: frames/s, FLOPs and memory of the built-in stage models.

Usage: python bench/models.py [--quick] [--cpu-only]

Models: realesr-animevideov3 and waifu2x-photo (upscale x2), efficientnet-lite0 (classify, every
frame) and transnetv2 (shots). Each is built the way a profile's [[stages]] builds it
(StageRunner.from_profile) and timed through StageRunner.process() on uint8 RGB frames
already on the stage's device. That is the stage's whole path: uint8 -> float, resize,
network, and for the upscaler the uint8 output. Every measurement does a short warm-up, then a
fixed number of timed calls between two device synchronisations; frames/s = frames / wall time.

CPU (always; fp32, eager, torch's default thread count): realesr-animevideov3 at 160x90 and
320x180 input, waifu2x-photo at 160x90 and 640x360, the classifier at 224x224 and TransNetV2 on 48x27 frames (its own input size; 100-frame
windows advancing 50 frames, so one window costs 50 stream frames).

GPU (when torch.cuda.is_available() and not --cpu-only): 720p and 1080p input for all three,
224x224 for the classifier (also the network alone), 48x27 for TransNetV2; fp32, fp16 and bf16,
eager and torch.compile (the profile's `compile = true`). Per row: frames/s, achieved TFLOP/s,
its share of the GPU's measured matmul rate in the same precision (fp32 rows against TF32,
which cuDNN's convolutions use by default), peak torch.cuda.max_memory_allocated, and the
time of the first call (which includes compilation). The upscaler also reports its GPU/CPU
speed-up in input pixels/s (1080p fp16 on the GPU against the CPU figure at 320x180).
Targets (H100): realesr-animevideov3 >= 60 frames/s at 1080p input in fp16; classification
>= 2000 frames/s at 224x224; upscaler GPU/CPU speed-up >= 50x.
Without CUDA it prints "no CUDA device: GPU figures not measured" and exits 0.

FLOPs are counted with torch.utils.flop_counter.FlopCounterMode on one eager call (convolutions
and matrix products; resizes and activations are not counted). The x2 upscale runs the x4
network and an antialiased bicubic downscale, so its FLOPs are those of the x4 network.
--quick: fewer iterations; on the GPU only fp32 eager and the stage's default half precision
(fp16 for the upscaler, bf16 for the others where supported), eager and compiled.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from mediad.models.runner import StageRunner

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

UPSCALE_1080P_TARGET = 60.0  # frames/s, fp16, H100
CLASSIFY_TARGET = 2000.0  # frames/s at 224x224, H100
SPEEDUP_TARGET = 50.0  # upscaler GPU/CPU, input pixels/s
TITLES = {"upscale": "realesr-animevideov3 x2", "waifu2x": "waifu2x-photo x2",
          "classify": "efficientnet-lite0", "shots": "transnetv2"}
UPSCALE_MODELS = {"upscale": "realesr-animevideov3", "waifu2x": "waifu2x-photo"}
MIB = 1 << 20


@dataclass(frozen=True)
class Case:
    """One input size of one model: frames per timed call, warm-up calls and timed calls."""

    width: int
    height: int
    batch: int
    warmup: int
    iters: int
    model_only: bool = False  # classifier: the network alone on ready 224x224 tensors

    @property
    def label(self) -> str:
        """The input size as WxH (plus a marker for the network-only case)."""
        return f"{self.width}x{self.height}" + (" net" if self.model_only else "")


@dataclass
class Result:
    """One measurement (or why there is none)."""

    kind: str
    case: Case
    precision: str
    compiled: bool
    fps: float = 0.0
    flops_per_frame: float | None = None
    peak_bytes: int | None = None
    first_call_s: float = 0.0
    error: str | None = None


def cpu_cases(quick: bool) -> dict[str, list[Case]]:
    """Small inputs that keep the whole CPU section near a minute on two cores."""
    q = quick
    return {
        "upscale": [Case(160, 90, 1, 1, 3 if q else 20), Case(320, 180, 1, 1, 1 if q else 6)],
        "waifu2x": [Case(160, 90, 1, 1, 3 if q else 20), Case(640, 360, 1, 1, 1 if q else 3)],
        "classify": [Case(224, 224, 16, 1, 2 if q else 10)],
        "shots": [Case(48, 27, 100, 1, 1 if q else 8)],  # 100 frames = 2 windows per call
    }


def gpu_cases(quick: bool) -> dict[str, list[Case]]:
    """720p/1080p input for every model, plus each network's own input size."""
    w, n = (2, 5) if quick else (3, 20)
    return {
        "upscale": [Case(1280, 720, 4, w, n), Case(1920, 1080, 4, w, n)],
        "waifu2x": [Case(1280, 720, 4, w, n), Case(1920, 1080, 4, w, n)],
        "classify": [Case(224, 224, 256, w, n, model_only=True), Case(224, 224, 256, w, n),
                     Case(1280, 720, 256, w, n), Case(1920, 1080, 256, w, n)],
        "shots": [Case(48, 27, 400, w, n), Case(1280, 720, 200, w, n),
                  Case(1920, 1080, 200, w, n)],
    }


def stage_config(kind: str, device: str, precision: str, compiled: bool) -> Any:
    """The profile entry a user would write for this stage."""
    from mediad.profile_stages import ClassifyStage, ShotsStage, UpscaleStage

    common: dict[str, Any] = {"device": device, "precision": precision, "compile": compiled}
    if kind in UPSCALE_MODELS:
        return UpscaleStage(kind="upscale", model=UPSCALE_MODELS[kind], scale=2, **common)
    if kind == "classify":
        return ClassifyStage(kind="classify", every=1, **common)  # classify every frame
    return ShotsStage(kind="shots", **common)


def build_runner(kind: str, device: str, precision: str, compiled: bool) -> StageRunner:
    """A one-stage runner, as from_profile builds it for a job."""
    import torch

    from mediad.models.runner import StageRunner

    dev = torch.device(device)
    gpu = None if dev.type == "cpu" else (dev.index or 0)
    cfg = stage_config(kind, device, precision, compiled)
    return StageRunner.from_profile([cfg], gpu=gpu, fps_hint=25.0)


def sync(device: torch.device) -> None:
    """Wait for queued device work (a no-op on the CPU, where ops run synchronously)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(runner: StageRunner, case: Case, device: torch.device) -> Callable[[], None]:
    """A callable that runs one batch of `case` through the runner (or the bare network)."""
    import torch

    stage = runner.stages[0]
    if case.model_only:
        x = torch.rand(case.batch, 3, case.height, case.width, device=device)
        x = (x * 2 - 1).to(stage.ctx.dtype)  # what the normalisation gives
        if stage.ctx.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        model = stage.model  # type: ignore[attr-defined]

        def net_step() -> None:
            with torch.inference_mode():
                model(x)

        return net_step
    frames = torch.randint(0, 256, (case.batch, 3, case.height, case.width), dtype=torch.uint8,
                           device=device)
    calls = itertools.count()

    def step() -> None:
        first = next(calls) * case.batch
        runner.process(frames, [(first + i) / 25.0 for i in range(case.batch)])

    return step


def measure(kind: str, runner: StageRunner, case: Case, precision: str, compiled: bool,
            device: torch.device, count_flops: bool) -> Result:
    """Warm up, count FLOPs on one eager call if asked, then time `case.iters` calls."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    res = Result(kind, case, precision, compiled)
    step = make_step(runner, case, device)
    on_cuda = device.type == "cuda"
    if on_cuda:
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(case.warmup):
        t0 = time.perf_counter()
        step()
        if i == 0:
            sync(device)
            res.first_call_s = time.perf_counter() - t0
    if count_flops:
        # After the warm-up: the shots stage is then in its steady state (1 window / 50 frames).
        with FlopCounterMode(display=False) as counter:
            step()
        res.flops_per_frame = counter.get_total_flops() / case.batch
    sync(device)
    t0 = time.perf_counter()
    for _ in range(case.iters):
        step()
    sync(device)
    res.fps = case.batch * case.iters / (time.perf_counter() - t0)
    if on_cuda:
        res.peak_bytes = torch.cuda.max_memory_allocated(device)
    return res


def short_error(e: BaseException) -> str:
    """First line of an exception, for a table row."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(e).__name__}: {first}"[:160]


def release(device: torch.device) -> None:
    """Drop what the last runner left behind before building the next one."""
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- CPU ----------------------------------------------------------------------------------------


def run_cpu(quick: bool) -> list[Result]:
    """fp32 eager figures of each model at its small CPU size."""
    import torch

    device = torch.device("cpu")
    print(f"CPU: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads; fp32, eager{' (--quick)' if quick else ''}")
    header = (f"{'model':<26}{'input':>10}{'batch':>7}{'frames/s':>11}{'GFLOP/frame':>13}"
              f"{'GFLOP/s':>10}{'first call':>12}")
    print(header)
    print("-" * len(header))
    results: list[Result] = []
    for kind, cases in cpu_cases(quick).items():
        for case in cases:
            try:
                runner = build_runner(kind, "cpu", "fp32", False)
                res = measure(kind, runner, case, "fp32", False, device, count_flops=True)
                del runner
            except Exception as e:  # report and go on with the next model
                print(f"{TITLES[kind]:<26}{case.label:>10}  failed: {short_error(e)}")
                continue
            finally:
                release(device)
            results.append(res)
            gflop = (res.flops_per_frame or 0.0) / 1e9
            print(f"{TITLES[kind]:<26}{case.label:>10}{case.batch:>7}{res.fps:>11.2f}"
                  f"{gflop:>13.2f}{gflop * res.fps:>10.1f}{res.first_call_s:>11.2f}s")
    print("transnetv2 frames are stream frames: each 100-frame window adds 50 "
          "(FLOPs per window / 50).")
    return results


# --- GPU ----------------------------------------------------------------------------------------


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, iters: int,
                tf32: bool = False) -> float:
    """Achieved TFLOP/s of an n x n x n matmul in `dtype` (fp32 with TF32 allowed if asked)."""
    import torch

    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            a @ b
        sync(device)
        dt = time.perf_counter() - t0
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    del a, b
    release(device)
    return 2 * n**3 * iters / dt / 1e12


def default_half(kind: str, device: torch.device) -> str:
    """The precision a stage gets with precision = "auto" on this GPU, as the runner decides it."""
    from mediad.models.runner import plan_stages

    cfg = stage_config(kind, str(device), "auto", False)
    return plan_stages([cfg], gpu=device.index or 0)[0].precision


def gpu_configs(kind: str, quick: bool, device: torch.device) -> list[tuple[str, bool]]:
    """(precision, compiled) pairs to measure for one model."""
    import torch

    half = default_half(kind, device)
    if quick:
        return [("fp32", False), (half, False), (half, True)]
    precisions = ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    return [(p, c) for p in precisions for c in (False, True)]


def gpu_row(res: Result, matmul: dict[str, float]) -> str:
    """One line of the GPU table."""
    c = res.case
    head = (f"{TITLES[res.kind]:<26}{c.label:>14}{res.precision:>6}"
            f"{'yes' if res.compiled else 'no':>9}{c.batch:>7}")
    if res.error:
        return f"{head}  failed: {res.error}"
    tflops = res.flops_per_frame * res.fps / 1e12 if res.flops_per_frame else None
    share = f"{100 * tflops / matmul[res.precision]:.1f}%" if tflops else "-"
    mem = f"{res.peak_bytes / MIB:.0f}" if res.peak_bytes is not None else "-"
    return (f"{head}{res.fps:>11.1f}{(f'{tflops:.1f}' if tflops else '-'):>9}{share:>9}"
            f"{mem:>10}{res.first_call_s:>11.1f}s")


def run_gpu(quick: bool, after_eager: Callable[[list[Result]], None] | None = None) -> list[Result]:
    """All GPU measurements, printed as they come."""
    import torch

    index = torch.cuda.current_device()
    device = torch.device("cuda", index)
    props = torch.cuda.get_device_properties(device)
    print(f"GPU: {props.name} (cuda:{index}, {props.total_memory / (1 << 30):.0f} GiB), "
          f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"cudnn.benchmark={torch.backends.cudnn.benchmark}")
    n, iters = (4096, 10) if quick else (8192, 20)
    matmul = {"fp32": matmul_rate(device, torch.float32, n, iters,
                                  tf32=torch.backends.cudnn.allow_tf32),
              "fp16": matmul_rate(device, torch.float16, n, iters)}
    if torch.cuda.is_bf16_supported():
        matmul["bf16"] = matmul_rate(device, torch.bfloat16, n, iters)
    fp32_name = "fp32 (TF32)" if torch.backends.cudnn.allow_tf32 else "fp32"
    print(f"matmul rate ({n}x{n}x{n}): " + ", ".join(
        f"{fp32_name if k == 'fp32' else k} {v:.0f} TFLOP/s" for k, v in matmul.items()))
    return run_matrix(device, gpu_cases(quick), lambda kind: gpu_configs(kind, quick, device), matmul,
                      after_eager)


def run_matrix(device: torch.device, cases_by_kind: dict[str, list[Case]],
               configs: Callable[[str], list[tuple[str, bool]]],
               matmul: dict[str, float],
               after_eager: Callable[[list[Result]], None] | None = None) -> list[Result]:
    """Measure every (model, precision, compile, input) on `device`; print each row as it comes."""
    import torch

    header = (f"{'model':<26}{'input':>14}{'prec':>6}{'compile':>9}{'batch':>7}{'frames/s':>11}"
              f"{'TFLOP/s':>9}{'%matmul':>9}{'peak MiB':>10}{'first call':>12}")
    print(header)
    print("-" * len(header))
    flops: dict[tuple[str, str], float] = {}  # (kind, case) -> FLOPs per frame, from eager runs
    results: list[Result] = []

    def record(res: Result) -> None:
        key = (res.kind, res.case.label)
        if res.flops_per_frame:
            flops.setdefault(key, res.flops_per_frame)
        elif not res.error:
            res.flops_per_frame = flops.get(key)
        results.append(res)
        print(gpu_row(res, matmul), flush=True)

    # Every eager row first (they also count the FLOPs the compiled rows reuse); compiled rows,
    # slow to build, come last, so a run cut short by a time limit still has the eager table
    # and its verdicts.
    for compiled_pass in (False, True):
        for kind, cases in cases_by_kind.items():
            for precision, compiled in configs(kind):
                if compiled != compiled_pass:
                    continue
                # The upscaler gets a fresh runner per size (a job has one size); compiled models
                # get one per case, each with a fresh compile cache: Dynamo's cache belongs to the
                # forward's code, not to the module, so a second input shape would otherwise
                # time a recompiled dynamic-shape graph.
                groups = [[c] for c in cases] if compiled or kind in UPSCALE_MODELS else [cases]
                for group in groups:
                    if compiled:
                        torch._dynamo.reset()
                    try:
                        runner = build_runner(kind, str(device), precision, compiled)
                    except Exception as e:
                        for case in group:
                            record(Result(kind, case, precision, compiled, error=short_error(e)))
                        release(device)
                        continue
                    for case in group:
                        count = not compiled and (kind, case.label) not in flops
                        try:
                            res = measure(kind, runner, case, precision, compiled, device, count)
                        except Exception as e:
                            res = Result(kind, case, precision, compiled, error=short_error(e))
                        record(res)
                        release(device)
                    del runner
                    release(device)
        if not compiled_pass and after_eager is not None:
            after_eager(results)
    return results


def summary(gpu: list[Result], cpu: list[Result], gpu_name: str, scope: str = "") -> None:
    """Speed-up and targets."""
    import torch

    def best(kind: str, label: str, precisions: tuple[str, ...]) -> Result | None:
        ok = [r for r in gpu if r.kind == kind and r.case.label == label and not r.error
              and r.precision in precisions]
        return max(ok, key=lambda r: r.fps, default=None)

    def verdict(value: float | None, target: float) -> str:
        if value is None:
            return "not measured"
        return "met" if value >= target else "MISSED"

    print(f"targets (set for an H100; this GPU: {gpu_name}){scope}:")
    up = best("upscale", "1920x1080", ("fp16",))
    up_txt = f"{up.fps:.1f} frames/s ({'compiled' if up.compiled else 'eager'})" if up else "-"
    print(f"  realesr-animevideov3 1080p fp16: {up_txt} (target >= {UPSCALE_1080P_TARGET:.0f}) "
          f"{verdict(up.fps if up else None, UPSCALE_1080P_TARGET)}")
    cl = best("classify", "224x224", ("fp16", "bf16"))
    cl_txt = (f"{cl.fps:.0f} frames/s ({cl.precision}, "
              f"{'compiled' if cl.compiled else 'eager'}, whole stage)") if cl else "-"
    print(f"  efficientnet-lite0 224x224: {cl_txt} (target >= {CLASSIFY_TARGET:.0f}) "
          f"{verdict(cl.fps if cl else None, CLASSIFY_TARGET)}")
    # The largest CPU input: per pixel the closest to a real frame.
    cpu_up = max((r for r in cpu if r.kind == "upscale"),
                 key=lambda r: r.case.width * r.case.height, default=None)
    speedup = None
    if up and cpu_up:
        speedup = (up.fps * 1920 * 1080) / (cpu_up.fps * cpu_up.case.width * cpu_up.case.height)
    sp_txt = f"{speedup:.0f}x" if speedup else "-"
    cpu_txt = f"{cpu_up.case.label} fp32" if cpu_up else "CPU not measured"
    print(f"  upscaler GPU/CPU speed-up in input pixels/s (1080p fp16 vs {cpu_txt}, "
          f"{torch.get_num_threads()} CPU threads): {sp_txt} (target >= {SPEEDUP_TARGET:.0f}x) "
          f"{verdict(speedup, SPEEDUP_TARGET)}")


def main() -> int:
    """CPU figures, then GPU figures when CUDA is there."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations and GPU variants")
    ap.add_argument("--cpu-only", action="store_true", help="skip the GPU figures")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("bench/models.py needs torch and the model packages: pip install mediad[ml]")
        return 1
    cpu = run_cpu(args.quick)
    print()
    if args.cpu_only:
        print("--cpu-only: GPU figures not measured")
        return 0
    if not torch.cuda.is_available():
        print("no CUDA device: GPU figures not measured")
        return 0
    name = torch.cuda.get_device_name()

    def eager_summary(rows: list[Result]) -> None:
        print()
        summary(rows, cpu, name, ", eager rows only; compiled rows follow")
        print()

    gpu = run_gpu(args.quick, eager_summary)
    print()
    summary(gpu, cpu, name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
