"""The API's bearer token: a file in state_dir, created 0600 on the daemon's first start with
[api]; `mediad api token` prints it."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from mediad.errors import MediadError, Reason

TOKEN_FILE = "api-token"


def token_path(state_dir: Path) -> Path:
    """Where the token of this state_dir lives."""
    return state_dir / TOKEN_FILE


def ensure_token(state_dir: Path) -> str:
    """The token, made (0600, owner only) when there is none yet."""
    path = token_path(state_dir)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return read_token(state_dir)
    except OSError as e:
        raise MediadError(f"{path}: cannot create the API token: {e.strerror}",
                          reason=Reason.BAD_STATE) from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (secrets.token_urlsafe(32) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return read_token(state_dir)


def read_token(state_dir: Path) -> str:
    """The token as the file holds it; its mode is put back to 0600 if someone widened it."""
    path = token_path(state_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise MediadError(f"{path}: no API token yet (has the daemon run with an [api] "
                          "section?)", reason=Reason.NO_STATE) from None
    except OSError as e:
        raise MediadError(f"{path}: cannot read the API token: {e.strerror}",
                          reason=Reason.BAD_STATE) from None
    try:
        if os.fstat(fd).st_mode & 0o077 and os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o600)
        text = os.read(fd, 4096).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    if len(text) < 16:
        raise MediadError(f"{path}: the API token is too short (delete the file: the daemon "
                          "makes a new one at its next start)", reason=Reason.BAD_STATE)
    return text


def token_matches(given: str, token: str) -> bool:
    """Compare in constant time (no timing hint of how much of a guess was right)."""
    return hmac.compare_digest(given.encode(), token.encode())
