"""Frame models run inside the transcode pass: upscaling, classification, shot detection.

Nothing here imports torch at module level: `mediad models list` and a CPU transcode without
stages work on machines without the `mediad[ml]` extra. Import the submodules that need torch
(runner, classify, shots, efficientnet_lite) only when a profile has stages.
"""

from __future__ import annotations

import importlib.util

from mediad.errors import MediadError, Reason

# torch must be installed on its own first: a bare `torch` requirement pulls several GB of CUDA
# wheels, so the extra cannot install it for the user.
TORCH_INSTALL_HINT = "pip install torch==2.13.0 && pip install 'mediad[ml]'"


def torch_available() -> bool:
    """True when torch can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a broken or blocked (sys.modules[...] = None) install
        return False


def require_torch(what: str = "this profile's [[stages]]") -> None:
    """Raise a MediadError that says how to install PyTorch when it is missing or broken.

    Imports torch: only called where stages are about to run anyway.
    """
    try:
        import torch  # noqa: F401
    except ImportError:
        raise MediadError(f"{what} need PyTorch, which is not installed: {TORCH_INSTALL_HINT}",
                          reason=Reason.MISSING_DEPENDENCY) from None
