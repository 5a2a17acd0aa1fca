"""``POST /v1/events/dashscope``, EventBridge's HTTP target: the request read and handed to the ingress.

What a push is and how it is verified and recorded is ``ingress/webhook.py``'s; this reads the request
within EventBridge's bound and checks the rule's token first, so that nothing else is done for a push that
is not the account's.

It is a plain ASGI endpoint, which the app (``app.App``) calls straight from uvicorn, past Starlette's
middleware and router: a push needs none of what they do for the client API, and they cost as much CPU as
recording the event (bench/README.md, "Where a push's time goes"). So it does here itself, for this one
route, what they do: the request id (``app.RequestIds``), the error answers (``responses.error_response``,
``app.on_redis_error``). Any other exception is a bug: it propagates, and uvicorn answers 500 as
Starlette's own handler did.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Mapping

from redis.exceptions import RedisError
from starlette.datastructures import URL
from starlette.types import Receive, Scope, Send

from ..core.errors import WanhookError
from ..ingress import signature, webhook
from ..observability import logs
from ..runtime import Runtime
from . import bodies
from .responses import STATUS, ApiError, error_response, refuse_cross_site, require_json

log = logging.getLogger("wanhook.app")

PATH = "/v1/events/dashscope"
REQUEST_ID_MAX = 128
# Answered when Redis cannot record the event: EventBridge (and well-behaved clients) retry later.
REDIS_UNAVAILABLE = ApiError(
    503, "redis_unavailable", "the task store (Redis) is unavailable; retry later", headers={"Retry-After": "5"}
)


def check_token(headers: Mapping[str, str], expected: str | None) -> None:
    """The push carries the token of the account's rule (when one is set), compared in constant time."""
    if expected is None:
        return
    given = headers.get(signature.TOKEN, "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "invalid_token", f"missing or wrong {signature.TOKEN} header")


def request_id(headers: Mapping[str, str]) -> str:
    """The caller's ``X-Request-ID`` when it is sane, else a new one (as ``app.RequestIds``)."""
    given = headers.get("x-request-id", "")
    if 0 < len(given) <= REQUEST_ID_MAX and given.isprintable() and given.isascii():
        return given
    return os.urandom(16).hex()  # 32 hex digits, as app.RequestIds' uuid4().hex, for a fraction of its cost


class Endpoint:
    """The route's ASGI app, for a push that does come through the middleware (``app.App`` sends them all
    past it): ``app.RequestIds`` has then given the request its id already."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive_event(scope["app"].state.runtime, scope, receive, send, own_request_id=False)


async def receive_event(
    runtime: Runtime, scope: Scope, receive: Receive, send: Send, *, own_request_id: bool = True
) -> None:
    # ASGI gives header names in lower case; the first of a repeated header counts, as Starlette's Headers.get.
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    extra: list[tuple[bytes, bytes]] = []
    if own_request_id:
        rid = request_id(headers)
        extra.append((b"x-request-id", rid.encode()))
        token = logs.request_id.set(rid)
    try:
        answer = await _answer(runtime, scope, headers, receive)
    finally:
        if own_request_id:
            logs.request_id.reset(token)
    if answer is None:
        return  # the client went away: nobody to answer
    if isinstance(answer, WanhookError):
        response = error_response(answer)
        response.raw_headers.extend(extra)
        await response(scope, receive, send)
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(answer)).encode()), (b"content-type", b"application/json"), *extra],
        }
    )
    await send({"type": "http.response.body", "body": answer})


async def _answer(
    runtime: Runtime, scope: Scope, headers: dict[str, str], receive: Receive
) -> bytes | None | WanhookError:
    """The 200 answer's body, None when the client went away, or the error to answer with."""
    settings = runtime.settings
    try:
        # No web page may push: with the local set-up's webhook open on loopback, a page could forge events.
        refuse_cross_site(headers, "POST", own_host=None)
        check_token(headers, settings.eventbridge_token)
        require_json(headers, required=False)  # EventBridge's pushes declare JSON; a bare body is read as JSON
        body = await bodies.read(receive, headers, webhook.EVENT_BODY_LIMIT, settings)
        if body is None:
            return None
        # The URL as this process received it (scheme, Host header, path and query): what the signature
        # covers unless WANHOOK_EVENTBRIDGE_URL names the one EventBridge posts to. Only a signature reads it.
        url = str(URL(scope=scope)) if settings.eventbridge_verify == "signature" else ""
        outcome, event = await webhook.receive_push(url, headers, body, settings, runtime.store)
    except WanhookError as exc:
        # Every domain error has an answer (STATUS); ApiError is the web layer's own.
        if isinstance(exc, ApiError) or any(cls in STATUS for cls in type(exc).__mro__):
            return exc
        raise
    except RedisError as exc:
        log.warning("Redis unavailable: %s", type(exc).__name__)
        return REDIS_UNAVAILABLE
    # What JSONResponse({"outcome", "event_id"}) writes; an outcome is a plain word.
    return b'{"outcome":"%s","event_id":%s}' % (
        outcome.value.encode(),
        json.dumps(event.id, ensure_ascii=False).encode(),
    )
