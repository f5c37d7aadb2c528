"""The dashboard's login session and CSRF tokens, derived from the API token by HMAC (nothing
stored server-side): a new token (the file deleted, the daemon restarted) ends every session.

The cookie is `<issued>.<nonce>.<mac>`, mac = HMAC-SHA256(token, "session|issued|nonce"); it is
good for SESSION_SECONDS after it was issued. A form's CSRF token is HMAC-SHA256(token,
"csrf|<cookie>"): only a page served to that session carries it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from urllib.parse import urlsplit

COOKIE = "mediad_session"
SESSION_SECONDS = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD"})


def _mac(token: str, text: str) -> str:
    return hmac.new(token.encode(), text.encode(), hashlib.sha256).hexdigest()


def new_session(token: str, now: float | None = None) -> str:
    """A fresh session cookie value."""
    issued = int(time.time() if now is None else now)
    nonce = secrets.token_urlsafe(16)
    return f"{issued}.{nonce}.{_mac(token, f'session|{issued}|{nonce}')}"


def session_valid(value: str | None, token: str, now: float | None = None) -> bool:
    """Whether a cookie value is a session this token issued that has not expired."""
    if not value or len(value) > 200:
        return False
    issued, _, rest = value.partition(".")
    nonce, _, mac = rest.partition(".")
    if not (issued.isdigit() and nonce and mac):
        return False
    if not hmac.compare_digest(mac.encode(), _mac(token, f"session|{issued}|{nonce}").encode()):
        return False
    age = (time.time() if now is None else now) - int(issued)
    return -60 <= age <= SESSION_SECONDS


def csrf_token(session: str, token: str) -> str:
    """The CSRF token of the forms served to this session."""
    return _mac(token, f"csrf|{session}")


def csrf_valid(given: str | None, session: str, token: str) -> bool:
    """Whether a form's CSRF field is this session's (constant time)."""
    return bool(given) and hmac.compare_digest(str(given).encode(),
                                               csrf_token(session, token).encode())


def same_origin(origin: str | None, host: str | None) -> bool:
    """An Origin header (when the browser sent one) names the host the request was sent to
    (the Host header: behind a proxy, the one it forwards)."""
    if origin is None:
        return True
    if origin == "null" or not host:
        return False
    return urlsplit(origin).netloc.lower() == host.lower()
