"""The dashboard's forms, read with care before anyone is known: the Origin checked, the body
capped at MAX_FORM bytes (refused from its Content-Length before a byte is read, or as soon as a
chunked one grows past it), at most MAX_FIELDS fields; a refusal is an error page, never a 500."""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import ClientDisconnect, Request

from mediad.api.session import same_origin

MAX_FORM = 16 * 1024  # bytes of a form's body
MAX_FIELDS = 20  # the dashboard's forms have 3


class Refused(Exception):
    """A form refused before anything was asked of the daemon: answered with an error page."""

    status, title = 400, "Bad request"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
            self.title = "Too large" if status == 413 else self.title


class Forbidden(Refused):
    """A form without this session's CSRF token, or from another site."""

    status, title = 403, "Forbidden"


async def read_form(request: Request) -> bytes:
    """A form's body, at most MAX_FORM bytes: refused (413) from its Content-Length before a
    byte is read, or as soon as a body without one (chunked) grows past the limit."""
    length = request.headers.get("content-length")
    if length is not None and not (length.isascii() and length.isdigit()
                                   and int(length) <= MAX_FORM):
        raise Refused("This form is too large.", 413)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                raise Refused("This form is too large.", 413)
    except ClientDisconnect:
        raise Refused("The form was not sent whole.") from None
    return bytes(body)


async def read_fields(request: Request) -> dict[str, str]:
    """A posted form's fields (the first value of each), from this site."""
    if not same_origin(request.headers.get("origin"), request.headers.get("host")):
        raise Forbidden("This form was sent from another site.")
    body = await read_form(request)
    try:
        parsed = parse_qs(body.decode("utf-8", "replace"), max_num_fields=MAX_FIELDS)
    except ValueError:  # more fields than any of the dashboard's forms has
        raise Refused("This form has too many fields.") from None
    return {k: v[0] for k, v in parsed.items()}
