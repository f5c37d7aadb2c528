"""The ordered worker that runs a stream's codec on its own thread (audio sinks use it)."""

from __future__ import annotations

import threading
import time

import pytest

from mediad.media.worker import OrderedWorker


def test_results_come_back_in_order_and_complete() -> None:
    seen_threads: set[str] = set()

    def work(n: int) -> list[int]:
        seen_threads.add(threading.current_thread().name)
        if n % 7 == 0:
            time.sleep(0.002)  # uneven work must not reorder anything
        return [n, -n] if n % 3 == 0 else [n]

    w: OrderedWorker[int, int] = OrderedWorker(work, name="t-order", depth=4)
    got: list[int] = []
    for n in range(200):
        got += w.put(n)
    got += w.finish()
    assert got == [x for n in range(200) for x in ([n, -n] if n % 3 == 0 else [n])]
    assert seen_threads == {"t-order"}  # the work ran on the worker's thread, not the caller's
    assert not w.thread.is_alive()


def test_a_failure_is_raised_in_the_caller_and_nothing_blocks() -> None:
    def work(n: int) -> list[int]:
        if n == 5:
            raise ValueError("bad item 5")
        return [n]

    w: OrderedWorker[int, int] = OrderedWorker(work, name="t-fail", depth=2)
    with pytest.raises(ValueError, match="bad item 5"):
        for n in range(1000):  # far more than the queue holds: put must not block for good
            w.put(n)
    with pytest.raises(ValueError, match="bad item 5"):
        w.finish()
    assert not w.thread.is_alive()


def test_close_ends_the_thread_when_the_caller_gives_up() -> None:
    release = threading.Event()

    def work(n: int) -> list[int]:
        release.wait(5)
        return [n]

    w: OrderedWorker[int, int] = OrderedWorker(work, name="t-close", depth=2)
    w.put(1)
    release.set()
    w.close()
    assert not w.thread.is_alive()
    w.close()  # idempotent


def test_close_returns_when_an_interrupt_left_the_queue_locked() -> None:
    """CI: a transcode sent SIGTERM never exited. A stopping signal is raised as an exception
    wherever the main thread is; raised inside the worker's queue, just after its lock was
    taken, it left the lock held. close() then waited on that lock for ever, the worker's
    thread on it too (gdb: both threads in lock.acquire on one lock). Here the lock is left
    held as that interrupt left it; close() must give up on the thread (a daemon) and return."""
    w: OrderedWorker[int, int] = OrderedWorker(lambda n: [n], name="t-locked", depth=2)
    w.put(1)
    closed = threading.Event()
    assert w.inbox.mutex.acquire()  # as the interrupted put() left it

    def close() -> None:
        w.close()
        closed.set()

    threading.Thread(target=close, daemon=True).start()
    assert closed.wait(10), "close() waited for good on the queue's lock"
    assert w.thread.daemon  # the thread left behind cannot keep the process alive
