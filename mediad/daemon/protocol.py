"""What crosses between the daemon and the processes that run its jobs: a typed, versioned job
spec in, typed events out, one JSON line each (json.dumps of the model's Python form: a file
name that is not UTF-8 crosses as its escaped code points and comes back the same name).

The same records will cross to other executors (a Ray cluster's nodes) as they are.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from mediad.errors import Reason

VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def line(self) -> str:
        """The record as one JSON line (without its newline)."""
        return json.dumps(self.model_dump(mode="python"), default=str)


class SourceCheck(_Record):
    """The source as the daemon fingerprinted it: the worker opens it once and checks that
    descriptor against this (see daemon.paths.open_checked_source)."""

    watch: str
    inode: int
    size: int
    allow_hard_links: bool = False


class JobSpec(_Record):
    """One job for a worker."""

    version: Literal[1] = VERSION
    input: str
    output: str
    profile: dict[str, Any]  # Profile.model_dump(mode="json")
    profile_name: str
    gpu: str = "auto"
    no_nvenc: str | None = None  # why NVENC is withheld from this job (the session budget)
    job_key: str | None = None  # recorded in the committed output (exactly once)
    source: SourceCheck | None = None
    log_level: str = "INFO"


class Started(_Record):
    event: Literal["started"] = "started"
    version: Literal[1] = VERSION
    pid: int
    node: str | None = None  # the cluster node it runs on (a Ray executor's); None: this machine


class Progress(_Record):
    event: Literal["progress"] = "progress"
    version: Literal[1] = VERSION
    frames_done: int
    frames_total: int | None = None
    fps: float = 0.0
    elapsed: float = 0.0


class Done(_Record):
    event: Literal["done"] = "done"
    version: Literal[1] = VERSION
    report: dict[str, Any]


class Failed(_Record):
    event: Literal["error"] = "error"
    version: Literal[1] = VERSION
    message: str
    reason: Reason
    transient: bool


JobEvent = Annotated[Started | Progress | Done | Failed, Field(discriminator="event")]
_EVENT = TypeAdapter(JobEvent)


def read_event(data: Any) -> Started | Progress | Done | Failed | None:
    """An event from one decoded JSON line; None when it is none of ours."""
    try:
        return _EVENT.validate_python(data)
    except ValueError:  # pydantic's ValidationError: not ours (or an unknown reason)
        return None
