"""An EventBridge HTTP push, whatever serves it: its URL, headers and body in, the event's outcome out.

The route ``POST /v1/events/dashscope`` (``web/events.py``) reads the request, checks the token and
hands the push here. It is answered 2xx only once the event is durably recorded (and for duplicates and
events that are not wanhook's, so EventBridge stops retrying them); anything else makes EventBridge retry.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..config import Settings
from ..core.errors import InvalidEvent
from ..domain.events import CompletionEvent
from ..domain.task import Outcome
from ..persistence.store import TaskStore
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
        return await receive(store, body, data_form_trusted=data_form_trusted(settings))
    except InvalidEvent:
        await store.count("events_invalid")
        raise


def data_form_trusted(settings: Settings) -> bool:
    """Whether a push without a CloudEvent envelope (the target's Body ``$.data``) is DashScope's. With the
    token checked, the push is the account's own rule's, which matches DashScope's events only; so it is
    when the operator says something in front authenticates pushes, or on loopback. With the signature
    alone, it proves only that some account's EventBridge sent it, and any account's rule can template
    such a body: not trusted."""
    return settings.eventbridge_token is not None or settings.eventbridge_verify != "signature"
