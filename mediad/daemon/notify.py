"""The systemd notify protocol (sd_notify), spoken directly over $NOTIFY_SOCKET."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

from mediad import log

# Variables that belong to this process only: workers must not inherit them.
NOTIFY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Sends READY/STATUS/WATCHDOG/STOPPING datagrams; does nothing when not run by systemd."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        # "@name" is a Linux abstract socket: the leading @ stands for a NUL byte.
        self.address = "\0" + addr[1:] if addr.startswith("@") else addr
        self.sock: socket.socket | None = None
        if self.address:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_interval: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            # Ping at half the interval, as sd_watchdog_enabled(3) advises.
            self.watchdog_interval = int(usec) / 2e6
        self._next_ping = 0.0
        self._last_status = ""

    def send(self, *lines: str) -> None:
        """Send one datagram of KEY=VALUE lines; a failure is logged, never raised."""
        if self.sock is None:
            return
        try:
            self.sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as e:
            log.event("notify_failed", level=logging.WARNING, error=e.strerror or str(e))

    def ready(self, status: str) -> None:
        """READY=1: the start-up scan is done and jobs are being taken."""
        self._last_status = status
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def reloading(self) -> None:
        """RELOADING=1 with the monotonic timestamp systemd asks for."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def reloaded(self, status: str) -> None:
        """READY=1 again after a reload."""
        self.ready(status)

    def status(self, status: str) -> None:
        """STATUS=..., sent only when it changed."""
        if status != self._last_status:
            self._last_status = status
            self.send(f"STATUS={status}")

    def stopping(self, status: str = "stopping") -> None:
        """STOPPING=1: shutdown has begun."""
        self.send("STOPPING=1", f"STATUS={status}")

    def watchdog(self, now: float) -> None:
        """WATCHDOG=1 when the interval says it is due (call from the main loop)."""
        if self.watchdog_interval is None or now < self._next_ping:
            return
        self._next_ping = now + self.watchdog_interval
        self.send("WATCHDOG=1")

    def next_ping(self) -> float | None:
        """Monotonic time of the next watchdog ping, or None without a watchdog."""
        return self._next_ping if self.watchdog_interval is not None else None

    def close(self) -> None:
        """Close the socket."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
