"""An EventBridge HTTP push, whatever serves it: its URL, headers and body in, the event's outcome out.

The route ``POST /v1/events/dashscope`` (``web/events.py``) reads the request, checks the token and
hands the push here. It is answered 2xx only once the event is durably recorded (and for duplicates and
events that are not wanhook's, so EventBridge stops retrying them); anything else makes EventBridge retry.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..config import Settings
from ..errors import InvalidEvent
from ..store import TaskStore
from ..task import Outcome
from .events import CompletionEvent
from .receiver import receive
from .signature import verify_signature

# EventBridge's own limit on an event.
EVENT_BODY_LIMIT = 256 * 1024


async def receive_push(
    url: str, headers: Mapping[str, str], body: bytes, settings: Settings, store: TaskStore
) -> tuple[Outcome, CompletionEvent]:
    """Verify (when ``WANHOOK_EVENTBRIDGE_VERIFY=signature``), record and apply one push.

    ``headers`` are looked up by lower-case name; ``url`` is where the push arrived. Raises
    ``InvalidSignature``, ``CertificateUnavailable``, ``InvalidEvent`` (counted), or Redis' errors when the
    event could not be recorded.
    """
    if settings.eventbridge_verify == "signature":
        # Over the raw bytes, before anything reads them as an event.
        await verify_signature(url, headers, body, settings)
    try:
        return await receive(store, body)
    except InvalidEvent:
        await store.count("events_invalid")
        raise
