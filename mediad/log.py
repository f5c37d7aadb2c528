"""One line per event, key=value, to stderr (journald adds timestamps)."""

from __future__ import annotations

import logging
import sys

_LOGGER = logging.getLogger("mediad")
_ONCE: set[str] = set()


def _escape(c: str, quote: bool) -> str:
    if "\udc80" <= c <= "\udcff":  # a byte of a name that is not UTF-8 (surrogateescape)
        return f"\\x{ord(c) - 0xDC00:02x}"
    if quote and c in '\\"':
        return "\\" + c
    if not c.isprintable():  # ESC, CR, TAB, newline, ... never reach a terminal raw
        return c.encode("unicode_escape").decode("ascii")
    return c


def printable(text: str) -> str:
    """`text` safe for one terminal line: a name's bytes that are not UTF-8 as \\xe9, control
    characters (ESC, CR, TAB, ...) as \\x1b, \\r, \\t."""
    return text if text.isprintable() else "".join(_escape(c, False) for c in text)


def _fmt(value: object) -> str:
    text = str(value)
    if text and text.isprintable() and not any(c in text for c in ' ="\\'):
        return text
    return '"' + "".join(_escape(c, True) for c in text) + '"'


def event(name: str, level: int = logging.INFO, **fields: object) -> None:
    """Log one event as `event=NAME key=value ...`."""
    if not _LOGGER.isEnabledFor(level):
        return
    parts = [f"event={name}"] + [f"{k}={_fmt(v)}" for k, v in fields.items() if v is not None]
    _LOGGER.log(level, " ".join(parts))


def event_once(key: str, name: str, level: int = logging.INFO, **fields: object) -> None:
    """Log an event only the first time `key` is seen in this process (e.g. a fallback)."""
    if key in _ONCE:
        return
    _ONCE.add(key)
    event(name, level, **fields)


def setup(level: str | int = "WARNING") -> None:
    """Send mediad's log lines to stderr as `level=... event=...`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("level=%(levelname)s %(message)s"))
    _LOGGER.handlers[:] = [handler]
    _LOGGER.setLevel(level.upper() if isinstance(level, str) else level)
    _LOGGER.propagate = False
