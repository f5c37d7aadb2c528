"""uvicorn on a thread of the daemon's own process: the loop never waits on it (the app opens
its own read-only connections and writes only commands, which the loop applies)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn

import mediad.api.dashboard  # noqa: F401  (Jinja2: missing, the daemon says so at start, exit 78)
from mediad import log
from mediad.api.app import create_app
from mediad.api.ready import ReadinessBox
from mediad.api.token import ensure_token
from mediad.config import Config
from mediad.gpu.history import TelemetryHistory

START_WAIT = 5.0  # seconds to wait for the socket to be bound before saying it failed


class ApiServer:
    """The API's uvicorn server and its thread."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread,
                 stopping: threading.Event, history: TelemetryHistory) -> None:
        self.server = server
        self.thread = thread
        self.stopping = stopping
        self.history = history

    def stop(self, timeout: float = 5.0) -> None:
        """Stop: open event streams end at their next look (half a second), then uvicorn."""
        self.stopping.set()
        self.history.stop()
        self.server.should_exit = True
        self.thread.join(timeout)


def _serve(server: uvicorn.Server) -> None:
    try:
        server.run()
    except SystemExit:  # uvicorn's way of saying the port is busy: logged below
        pass
    except Exception as e:  # noqa: BLE001 - the API going down must not take the daemon with it
        log.event("api_failed", logging.ERROR, error=f"{type(e).__name__}: {e}")


def start_api(address: tuple[str, int], state_dir: Path, config: Callable[[], Config],
              readiness: ReadinessBox) -> ApiServer | None:
    """Serve the app on `address`; None (said loudly) when it cannot listen there."""
    host, port = address
    token = ensure_token(state_dir)
    stopping = threading.Event()
    history = TelemetryHistory()  # the dashboard's last hour of GPU use, sampled off the loop
    app = create_app(state_dir, config, readiness, token, stopping, history)
    server = uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="off",
        timeout_graceful_shutdown=2, server_header=False, proxy_headers=False))
    thread = threading.Thread(target=_serve, args=(server,), name="mediad-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_WAIT
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    listen = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    if not server.started:
        server.should_exit = True
        history.stop()
        log.event("api_failed", logging.ERROR, listen=listen,
                  error="cannot listen there (is the port in use?); the daemon goes on without "
                        "its API")
        return None
    log.event("api_listening", listen=listen)
    history.start()
    return ApiServer(server, thread, stopping, history)
