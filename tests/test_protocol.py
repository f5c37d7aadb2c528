"""The daemon <-> worker protocol: typed, versioned records, one JSON line each."""

from __future__ import annotations

import json
import os

import pytest
from pydantic import ValidationError

from mediad.daemon.protocol import Done, Failed, JobSpec, Progress, SourceCheck, read_event
from mediad.errors import Reason


def test_a_spec_with_a_name_that_is_not_utf8_crosses_as_the_same_name() -> None:
    name = os.fsdecode(b"/in/caf\xe9.mp4")
    spec = JobSpec(input=name, output="/out/x.mp4", profile={"container": "mp4"},
                   profile_name="p", source=SourceCheck(watch="/in", inode=7, size=9))
    line = spec.line()
    assert "\n" not in line and line.isascii()
    back = JobSpec.model_validate(json.loads(line))
    assert back == spec and back.input == name and back.version == 1


def test_events_are_read_by_kind_and_strangers_are_not_ours() -> None:
    assert read_event(json.loads(Progress(frames_done=3, fps=1.5).line())) == \
        Progress(frames_done=3, fps=1.5)
    failed = read_event({"event": "error", "version": 1, "message": "m", "reason": "disk_full",
                         "transient": True})
    assert isinstance(failed, Failed) and failed.reason is Reason.DISK_FULL
    assert isinstance(read_event({"event": "done", "version": 1, "report": {}}), Done)
    for stranger in ({"event": "hello"}, {"event": "error", "version": 1, "message": "m",
                                          "reason": "made_up", "transient": False},
                     {"event": "progress", "version": 2, "frames_done": 1}):
        assert read_event(stranger) is None


def test_a_spec_of_another_version_or_with_unknown_fields_is_refused() -> None:
    base = {"input": "a", "output": "b", "profile": {}, "profile_name": "p"}
    JobSpec.model_validate(base)
    for bad in ({**base, "version": 2}, {**base, "watch": "/in"}):
        with pytest.raises(ValidationError):
            JobSpec.model_validate(bad)
