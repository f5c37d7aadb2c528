"""The reasons vocabulary: one enum, documented in full, transient by reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mediad.errors import MediadError, Reason, first_line

DOCS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"


def test_every_reason_is_documented_with_its_transience() -> None:
    text = DOCS.read_text()
    table = text[text.index("reasons (transient ones in **bold**)"):]
    table = table[:table.index("\n\n")]
    bold = set(re.findall(r"\*\*`([a-z_]+)`\*\*", table))
    named = set(re.findall(r"`([a-z_]+)`", table))
    assert named == {r.value for r in Reason}
    assert bold == {r.value for r in Reason if r.transient}


def test_a_reason_from_outside_must_be_one_of_ours() -> None:
    assert MediadError("x", reason="disk_full").reason is Reason.DISK_FULL
    assert MediadError("x", reason="disk_full").transient
    assert not MediadError("x", reason=Reason.CORRUPT).transient
    assert not MediadError("x", reason=Reason.DISK_FULL, transient=False).transient
    with pytest.raises(ValueError):
        MediadError("x", reason="made_up")


def test_first_line_is_an_exceptions_first_line_of_text() -> None:
    assert first_line(RuntimeError("CUDA error: an illegal memory access\nCUDA kernel errors "
                                    "might be asynchronously reported")) == \
        "CUDA error: an illegal memory access"
    # a message that starts with a line break is not an empty one
    assert first_line(ValueError("\n  PytorchStreamReader failed\n  at frame 3")) == \
        "PytorchStreamReader failed"
    assert first_line(KeyError()) == "" and first_line(OSError(" \n ")) == ""
    assert first_line("row 3 missing from index\nrow 4 missing") == "row 3 missing from index"
