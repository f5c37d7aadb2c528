"""[video] target_vmaf: the search's plan record and its policy (which quality to try next,
which to choose), apart from the encoding and measuring (media.vmaf_search) so it is pure.

The method is ab-av1's crf-search: encode short samples of the source at a candidate quality,
measure their VMAF against the samples as they went into the encoder, and move over the
encoder's quality scale (crf, or NVENC's cq: higher is smaller and worse) to the highest value
whose predicted VMAF reaches the target, by stepping until the target is bracketed and then
interpolating between the two closest results, in a bounded number of encodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The samples: ab-av1 takes 20 s samples every 12 minutes; mediad's sources are often short
# clips, so fewer, shorter ones, spread evenly, and the whole source when it is short.
SAMPLES = 4
SAMPLE_SECONDS = 2.0
WHOLE_SOURCE_UNDER = 3 * SAMPLES * SAMPLE_SECONDS  # shorter sources are measured whole
MAX_TRIALS = 8
# A finished output whose measured VMAF is this far below the samples' prediction: say so.
DISAGREEMENT = 2.0


@dataclass(frozen=True)
class VmafTarget:
    """What the plan says about the search: the target, the quality range, the samples, and
    where VMAF is computed (the GPU index, None: the CPU)."""

    target: float
    low: int  # best quality (biggest output) the search may choose
    high: int  # worst quality it may choose
    start: int  # the first quality tried (the codec's default)
    samples: int = SAMPLES
    sample_seconds: float = SAMPLE_SECONDS
    whole_under: float = WHOLE_SOURCE_UNDER
    max_trials: int = MAX_TRIALS
    gpu: int | None = None

    def describe(self) -> str:
        """One line for `mediad plan`."""
        where = f"cuda:{self.gpu}" if self.gpu is not None else "cpu"
        return (f"quality chosen per file by VMAF search: target {self.target:g}, range "
                f"{self.low}..{self.high}, {self.samples} samples of {self.sample_seconds:g}s "
                f"(the whole source under {self.whole_under:g}s), at most {self.max_trials} "
                f"trial encodes, VMAF on {where}; the whole output measured after")


@dataclass(frozen=True)
class Trial:
    """One candidate quality encoded over the samples: its mean VMAF and the bytes it took."""

    quality: int
    vmaf: float
    size: int  # bytes of the encoded samples' video
    seconds: float  # how long the samples last

    @property
    def kbps(self) -> float:
        """The samples' video bit rate."""
        return self.size * 8 / self.seconds / 1000 if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {"quality": self.quality, "vmaf": round(self.vmaf, 3),
                "kbps": round(self.kbps, 1)}


def sample_windows(duration: float, target: VmafTarget) -> list[tuple[float, float]]:
    """(start, end) in seconds of each sample, spread evenly over the source; one window over
    the whole source when it is short (or its length is unknown: duration 0)."""
    if duration <= 0 or duration < target.whole_under or target.samples < 1:
        return [(0.0, math.inf)]
    n, length = target.samples, target.sample_seconds
    return [(max(0.0, (i + 0.5) * duration / n - length / 2),
             max(0.0, (i + 0.5) * duration / n - length / 2) + length) for i in range(n)]


def _passing(trials: list[Trial], target: float) -> Trial | None:
    ok = [t for t in trials if t.vmaf >= target]
    return max(ok, key=lambda t: t.quality) if ok else None


def _failing(trials: list[Trial], target: float) -> Trial | None:
    bad = [t for t in trials if t.vmaf < target]
    return min(bad, key=lambda t: t.quality) if bad else None


def next_quality(trials: list[Trial], target: VmafTarget) -> int | None:
    """The next quality to try, or None when the search is done."""
    if not trials:
        return min(max(target.start, target.low), target.high)
    if len(trials) >= target.max_trials:
        return None
    good, bad = _passing(trials, target.target), _failing(trials, target.target)
    tried = {t.quality for t in trials}
    if good is not None and bad is not None:
        if bad.quality - good.quality <= 1 or bad.quality < good.quality:
            return None  # bracketed to one step (or VMAF not monotonic there: keep the pass)
        # Interpolate linearly in VMAF between the closest pass and the closest fail.
        share = (good.vmaf - target.target) / max(good.vmaf - bad.vmaf, 1e-6)
        q = good.quality + round(share * (bad.quality - good.quality))
        q = min(max(q, good.quality + 1), bad.quality - 1)
        return q if q not in tried else None
    only = good or bad
    assert only is not None
    # One side known: step by the gap, about 2 VMAF points per quality step (near the top
    # of the scale it is nearer 1, lower down 3-4: the bracket's interpolation then corrects).
    step = min(8, max(1, round(abs(only.vmaf - target.target) / 2)))
    if good is not None:
        q = min(good.quality + step, target.high)
    else:
        q = max(only.quality - step, target.low)
    return None if q in tried else q


def choose(trials: list[Trial], target: VmafTarget) -> tuple[Trial, str | None]:
    """The trial chosen (the highest quality value reaching the target), and a warning when
    none reached it (then the best-quality trial, at the range's low end if tried)."""
    good = _passing(trials, target.target)
    if good is not None:
        return good, None
    best = min(trials, key=lambda t: t.quality)
    where = "at min_quality" if best.quality <= target.low else \
        f"in {len(trials)} trial encodes"
    return best, (f"target_vmaf {target.target:g} not reached {where}: the best trial, quality "
                  f"{best.quality}, predicts VMAF {best.vmaf:.2f}")
