"""The contract's error shape, what each error is answered with, and reading request bodies within a bound.

The domain raises the errors of ``errors.py`` and knows nothing of HTTP; ``STATUS`` below is the one place
that says which status answers each, and ``error_response`` the one place that writes the answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..errors import (
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


def require_json(request: Request) -> None:
    content_type = request.headers.get("content-type")
    if content_type is not None and "json" not in content_type.lower():
        raise ApiError(415, "unsupported_media_type", f"expected a JSON body, got Content-Type {content_type!r}")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) anything over ``limit`` bytes before reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"the body is over the limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "body_too_large", f"the body is over the limit of {limit} bytes")
    return bytes(body)


async def read_json(request: Request, limit: int) -> Any:
    require_json(request)
    return parse_json(await read_body(request, limit))


def parse_json(body: bytes) -> Any:
    """The JSON document of a body already read; 400 ``invalid_json`` if it is none."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    try:
        # JSON can escape a lone surrogate (\ud800); UTF-8, and so Redis, cannot hold one.
        json.dumps(document, ensure_ascii=False).encode()
    except (UnicodeEncodeError, RecursionError):
        raise ApiError(400, "invalid_json", "the body's text is not valid Unicode (a lone surrogate)") from None
    return document
