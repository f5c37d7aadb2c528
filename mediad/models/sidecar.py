"""The analysis sidecar `<output>.mediad.json`: what the stages found, next to the output file.

Schema (version 1), documented in docs/models.md:

    {"schema": "mediad.sidecar", "version": 1, "mediad": "0.1.0", "created": "...Z",
     "source": "/in/movie.mkv", "output": "/out/movie.mp4", "profile": "tag",
     "stages": [...], "frames": 1234, "duration": 49.36,
     "shots": [{"index", "start", "end", "start_frame", "end_frame"}],
     "classifications": {"per_shot": [...], "per_frame": [...]},
     "chapters": [{"title", "start", "end"}]}

No torch here: it works on an AnalysisResult's plain data.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mediad import __version__
from mediad.errors import MediadError, Reason
from mediad.fsutil import atomic_write_bytes
from mediad.models.base import AnalysisResult

SCHEMA = "mediad.sidecar"
SCHEMA_VERSION = 1
SUFFIX = ".mediad.json"


def sidecar_path(output: str | Path) -> Path:
    """Where the sidecar of `output` goes: the output's full name plus .mediad.json."""
    p = Path(output)
    return p.with_name(p.name + SUFFIX)


def build_sidecar(analysis: AnalysisResult, *, source: str | Path, output: str | Path,
                  profile: str, stages: list[dict[str, Any]]) -> dict[str, Any]:
    """The sidecar document for one output (`stages`: StageRunner.describe())."""
    data = analysis.to_dict()
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "mediad": __version__,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": str(source),
        "output": str(output),
        "profile": profile,
        "stages": stages,
        "frames": data["frames"],
        "duration": data["duration"],
        "shots": data["shots"],
        "classifications": {"per_shot": data["classifications"], "per_frame": data["samples"]},
        "chapters": data["chapters"],
    }


def summary(analysis: AnalysisResult, path: Path, stages: list[dict[str, Any]]) -> dict[str, Any]:
    """What a report says of the analysis whose sidecar is at `path`."""
    return {"sidecar": str(path), "frames": analysis.frames, "shots": len(analysis.shots),
            "chapters": len(analysis.chapters()),
            "top_labels": [c.top[0].label for c in analysis.classifications if c.top][:10],
            "stages": stages}


def write_sidecar(path: str | Path, document: dict[str, Any]) -> Path:
    """Write the document atomically (temp file beside it, fsync, rename); returns the path."""
    path = Path(path)
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    try:
        # Readable like the video beside it.
        atomic_write_bytes(path, text.encode("utf-8"), mode=0o644)
    except OSError as e:  # a full disk or a failing mount: transient, like the output's
        raise MediadError(f"{path}: cannot write the analysis sidecar ({e.strerror})",
                          reason=Reason.IO_ERROR, transient=True) from None
    return path
