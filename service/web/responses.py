"""The contract's error shape, what each error is answered with, and reading request bodies within a bound.

The domain raises the errors of ``errors.py`` and knows nothing of HTTP; ``STATUS`` below is the one place
that says which status answers each, and ``error_response`` the one place that writes the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from starlette.responses import JSONResponse

from ..core import documents
from ..core.errors import (
    CertificateUnavailable,
    IdempotencyKeyReused,
    InvalidEvent,
    InvalidField,
    InvalidInput,
    InvalidRequest,
    InvalidSignature,
    LimitReached,
    QueueFull,
    RateLimited,
    TaskConflict,
    TaskNotFound,
    TooManyStreams,
    Unavailable,
    VideoGone,
    WanhookError,
)


class ApiError(WanhookError):
    """An answer only HTTP has (a bearer token, a body's size or type, ...), with its own ``status``."""

    def __init__(
        self, status: int, code: str, message: str, *, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.field = field
        self.headers = headers


# The status of each domain error; a class not listed takes its nearest listed base's (along its MRO).
# Anything else the domain raises is a bug, answered 500 by Starlette.
STATUS: dict[type[WanhookError], int | Callable[[Any], int]] = {
    InvalidInput: 400,
    InvalidEvent: 400,
    InvalidRequest: 422,
    InvalidField: 422,
    IdempotencyKeyReused: 422,
    InvalidSignature: 401,
    TaskNotFound: 404,
    TaskConflict: 409,
    VideoGone: 410,
    LimitReached: 429,
    RateLimited: 429,
    QueueFull: 429,
    # A token's own cap is the caller's to free (429); the process's is this server's (503: try another).
    TooManyStreams: lambda exc: 429 if exc.per_token else 503,
    Unavailable: 503,
    CertificateUnavailable: 503,
}


def status_of(exc: WanhookError) -> int:
    """The HTTP status ``exc`` is answered with; LookupError for an error that has none (a bug)."""
    if isinstance(exc, ApiError):
        return exc.status
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status if isinstance(status, int) else status(exc)
    raise LookupError(f"no HTTP status for {type(exc).__name__}")


def headers_of(exc: WanhookError) -> dict[str, str] | None:
    """The headers that go with ``exc``'s answer: Retry-After when the domain says when to try again."""
    if isinstance(exc, ApiError):
        return exc.headers
    retry_after = getattr(exc, "retry_after", None)
    return {"Retry-After": str(retry_after)} if retry_after is not None else None


def error_response(exc: WanhookError) -> JSONResponse:
    """``{"error": {"code", "message"[, "field"]}}`` with ``exc``'s status and headers."""
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    field = getattr(exc, "field", None)
    if field:
        error["field"] = field
    return JSONResponse({"error": error}, status_code=status_of(exc), headers=headers_of(exc))


def require_json(headers: Mapping[str, str], *, required: bool = True) -> None:
    """The body is declared JSON: ``application/json`` or a ``+json`` type (RFC 6839), parameters aside. A
    type a browser may send to another origin without asking first (``text/plain``, a form, none at all
    when ``required``) is refused, 415: a web page cannot make a JSON request elsewhere without a CORS
    preflight, which wanhook never grants."""
    content_type = headers.get("content-type")
    if content_type is None and not required:
        return
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        got = f"Content-Type {content_type!r}" if content_type is not None else "no Content-Type"
        raise ApiError(415, "unsupported_media_type", f"expected a JSON body (application/json), got {got}")


def refuse_cross_site(headers: Mapping[str, str], method: str, *, own_host: str | None) -> None:
    """403 for a write a web page on another origin sent: a browser names the page's origin (``Origin``) and
    the relation (``Sec-Fetch-Site``) on such requests, and neither EventBridge, RocketMQ's bridge, the CLI
    nor the client library sends a foreign one. Reads are left to CORS (a page cannot read the answer).
    ``own_host`` is the Host the request came to (its own origin's), ``None`` where no page may write at
    all (the webhook)."""
    if method in ("GET", "HEAD", "OPTIONS"):
        return
    site = (headers.get("sec-fetch-site") or "").lower()
    origin = headers.get("origin")
    foreign = site in ("cross-site", "same-site")  # same-site: another port of localhost is another origin
    if origin is not None:
        host = urlsplit(origin).netloc.lower() if origin != "null" else ""
        foreign = foreign or own_host is None or host != own_host.lower()
    elif own_host is None and site not in ("", "none"):
        foreign = True
    if foreign:
        raise ApiError(
            403,
            "cross_site_request",
            f"refused a {method} sent by a web page of another origin ({origin or site}); wanhook's API takes "
            "requests from programs, and from its own dashboard",
        )


def parse_json(body: bytes) -> Any:
    """The JSON document of a body already read, within ``documents``' bounds; 400 ``invalid_json`` if it is
    none."""
    return documents.load(body, InvalidInput)
