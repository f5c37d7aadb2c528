"""The daemon's REST API (docs/api.md): an ASGI app under /api/v1 served by uvicorn on a thread
of the daemon's own process. Only app.py and server.py import the web stack (the `web` extra);
token.py and ready.py are plain, so the daemon and the CLI import them for free."""
