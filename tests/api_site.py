"""A test Site whose real daemon serves the API (and the dashboard): shared by test_api and
test_dashboard."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
from test_daemon import Site, free_port, wait_for

from mediad.config import Config


class ApiSite(Site):
    """A Site whose daemon serves the API."""

    def __init__(self, root: Path, **daemon: object) -> None:
        super().__init__(root, **daemon)
        self.api_port = free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"

    def write_config(self) -> None:
        super().write_config()
        with open(self.config, "a") as f:
            f.write(f'\n[api]\nlisten = "127.0.0.1:{self.api_port}"\n')

    @property
    def token(self) -> str:
        return (self.root / "state" / "api-token").read_text().strip()


def api_site(root: Path, *, slow_watch: bool = True) -> ApiSite:
    """The API tests' site: one worker (a second job waits behind a running one), failed
    sources moved to `failed`, and (slow_watch) a second watch whose profile, slow.toml, is a
    configured one a submit may name, with jobs that run long enough to be watched."""
    site = ApiSite(root, workers=1)
    site.watches[0]["failed_dir"] = "failed"
    if slow_watch:
        (root / "slow-in").mkdir()
        site.watches.append({"path": "slow-in", "output_dir": "slow-out", "profile": "slow.toml"})
    return site


@contextlib.contextmanager
def serving(site: ApiSite) -> Iterator[ApiSite]:
    """The site's daemon started until its API listens; stopped after, cleanly (exit 0, no
    traceback in its log)."""
    site.start()
    wait_for(lambda: "event=api_listening" in site.log(), 10, "the API to listen")
    yield site
    assert site.stop() == 0, site.log()
    assert "Traceback" not in site.log(), site.log()


@contextlib.contextmanager
def session_client(site: ApiSite) -> Iterator[httpx.Client]:
    """A plain HTTP client logged in to the dashboard through its form (no browser)."""
    with httpx.Client(base_url=site.url, timeout=30) as client:
        res = client.post("/login", data={"token": site.token})
        assert res.status_code == 303 and res.headers["location"] == "/", res.text
        yield client


def api_client(site: ApiSite) -> httpx.Client:
    """A client with the API's bearer token."""
    return httpx.Client(base_url=site.url, timeout=30,
                        headers={"Authorization": f"Bearer {site.token}"})


@contextlib.contextmanager
def api_in_process(root: Path) -> Iterator[tuple[str, str, Config]]:
    """The API served on a thread of this process (so its SQLite connections can be seen) over
    a fresh state database, one watch `in`: its URL, its token and the config."""
    from mediad.api.ready import ReadinessBox
    from mediad.api.server import start_api
    from mediad.config import load_config
    from mediad.daemon.queue import Queue

    (root / "in").mkdir()
    (root / "mediad.toml").write_text('[daemon]\nstate_dir = "state"\n'
                                      '[[watch]]\npath = "in"\noutput_dir = "out"\n')
    config = load_config(root / "mediad.toml")
    config.daemon.state_dir.mkdir()
    Queue(config.daemon.state_dir).close()  # the schema, as the daemon makes it
    port = free_port()
    api = start_api(("127.0.0.1", port), config.daemon.state_dir, lambda: config, ReadinessBox())
    assert api is not None
    try:
        yield (f"http://127.0.0.1:{port}",
               (config.daemon.state_dir / "api-token").read_text().strip(), config)
    finally:
        api.stop()
