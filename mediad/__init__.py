"""mediad: GPU video transcoding and media-ML service."""

__version__ = "0.1.0"

import os as _os

# SVT-AV1 prints a banner at info level on every encoder open (transcodes and the GPU capability
# trial alike); keep stderr to its errors. Read by the library itself, so set before any use.
_os.environ.setdefault("SVT_LOG", "1")
# torch's OpenMP workers spin-wait between operations by default. Frame models run on a worker
# thread beside FFmpeg's decoder and encoder threads: spinning workers take the cores those
# need. Sleeping workers cost a few microseconds per operation. (Spinning workers that became
# real-time starved the model thread outright: see media/realtime.py.) Read when libgomp loads
# (with torch), so set before any import of torch.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
