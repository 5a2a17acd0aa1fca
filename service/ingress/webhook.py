"""The EventBridge HTTP target: ``POST /v1/events/dashscope``.

It answers 2xx only once the event is durably recorded (and for duplicates and events that are not
wanhook's, so EventBridge stops retrying them); anything else makes EventBridge retry.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..web.responses import ApiError, read_body, require_json
from .events import InvalidEvent
from .receiver import receive
from .signature import verify_signature

# EventBridge's own limit on an event.
EVENT_BODY_LIMIT = 256 * 1024
TOKEN_HEADER = "x-eventbridge-signature-token"


def check_token(request: Request, expected: str | None) -> None:
    if expected is None:
        return
    given = request.headers.get(TOKEN_HEADER, "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "invalid_token", f"missing or wrong {TOKEN_HEADER} header")


async def receive_event(request: Request) -> Response:
    runtime = request.app.state.runtime
    check_token(request, runtime.settings.eventbridge_token)
    require_json(request)
    body = await read_body(request, EVENT_BODY_LIMIT)
    if runtime.settings.eventbridge_verify == "signature":
        # Over the raw bytes, before anything reads them as an event.
        await verify_signature(request, body, runtime.settings)
    try:
        outcome, event = await receive(runtime.store, body)
    except InvalidEvent as exc:
        await runtime.store.count("events_invalid")
        raise ApiError(400, exc.code, exc.message) from None
    return JSONResponse({"outcome": outcome.value, "event_id": event.id})
