"""A test Site whose real daemon serves the API (and the dashboard): shared by test_api and
test_dashboard."""

from __future__ import annotations

from pathlib import Path

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
