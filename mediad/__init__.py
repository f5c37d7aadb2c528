"""mediad: GPU video transcoding and media-ML service."""

__version__ = "0.1.0"

import os as _os

# SVT-AV1 prints a banner at info level on every encoder open (transcodes and the GPU capability
# trial alike); keep stderr to its errors. Read by the library itself, so set before any use.
_os.environ.setdefault("SVT_LOG", "1")
