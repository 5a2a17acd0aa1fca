"""``POST /v1/events/dashscope``, EventBridge's HTTP target: the request read and handed to the ingress.

What a push is and how it is verified and recorded is ``ingress/webhook.py``'s; this reads the request
within EventBridge's bound and checks the rule's token first, so that nothing else is done for a push that
is not the account's.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..ingress import signature, webhook
from .responses import ApiError, read_body, require_json


def check_token(request: Request, expected: str | None) -> None:
    """The push carries the token of the account's rule (when one is set), compared in constant time."""
    if expected is None:
        return
    given = request.headers.get(signature.TOKEN, "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "invalid_token", f"missing or wrong {signature.TOKEN} header")


async def receive_event(request: Request) -> Response:
    runtime = request.app.state.runtime
    check_token(request, runtime.settings.eventbridge_token)
    require_json(request)
    body = await read_body(request, webhook.EVENT_BODY_LIMIT)
    # The URL as this process received it (scheme, Host header, path and query): what the signature
    # covers unless WANHOOK_EVENTBRIDGE_URL names the one EventBridge posts to.
    outcome, event = await webhook.receive_push(
        str(request.url), request.headers, body, runtime.settings, runtime.store
    )
    return JSONResponse({"outcome": outcome.value, "event_id": event.id})
