"""A test Site whose real daemon serves the API (and the dashboard): shared by test_api and
test_dashboard."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
from test_daemon import Site, free_port


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
