"""Stopping a job on a signal at a safe point. A handler that raises (as Python's own SIGINT
handler does) raises wherever the main thread is: inside a queue's or a logger's critical
section too, leaving that lock held for good (CI caught a SIGTERM'd transcode hung that way).
So while a job runs (`deferred`), a stopping signal is only noted, and the job's loops call
`check()` between packets and phases, which raises `Stopped` there. Outside a job (a command
waiting on the daemon, an idle worker) the signal raises at once, as before: a second signal
while the first waits does too (the user insists), and once `Stopped` is raised later ones
are ignored so that the clean-up runs to its end."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class Stopped(BaseException):
    """A stopping signal arrived. Unwinds like KeyboardInterrupt, so temporary outputs go."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_deferring = 0           # how many deferred() blocks the main thread is in
_noted: int | None = None  # the signal that waits for a check()
_taken = False           # Stopped was raised: the program is cleaning up


def on_signal(signum: int) -> None:
    """What a stopping signal's handler does: note it inside deferred(), else raise."""
    global _noted, _taken
    if _taken:
        return
    if _deferring and _noted is None:
        _noted = signum
        return
    _taken = True
    raise Stopped(_noted or signum)


def check() -> None:
    """A safe point: raise Stopped if a stopping signal was noted."""
    global _taken
    if _noted is not None and not _taken:
        _taken = True
        raise Stopped(_noted)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """While inside (a job: its threads, queues and containers), stopping signals are noted
    and raised at the next check(); a signal noted as the job ends is then the caller's."""
    global _deferring
    _deferring += 1
    try:
        check()  # one that came just before
        yield
    finally:
        _deferring -= 1


def noted() -> int | None:
    """The signal noted and not acted on (one that came after the job's last safe point)."""
    return None if _taken else _noted


def reset() -> None:
    """Forget any signal (main() run again in one process: the tests)."""
    global _noted, _taken
    _noted, _taken = None, False
