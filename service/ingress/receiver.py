"""The one path every completion event takes, whichever transport brought it."""

from __future__ import annotations

import logging

from ..domain import events
from ..domain.events import CompletionEvent
from ..domain.task import Outcome
from ..observability import logs
from ..persistence.store import TaskStore

log = logging.getLogger("wanhook.events")


async def receive(store: TaskStore, body: bytes, *, data_form_trusted: bool) -> tuple[Outcome, CompletionEvent]:
    """Parse, record durably and apply one event. Raises ``InvalidEvent`` for a malformed body
    and Redis' errors when the event could not be recorded (the transport must then not acknowledge).
    ``data_form_trusted``: whether the transport vouches for a body without a CloudEvent envelope as
    DashScope's (``events.parse``)."""
    event = events.parse(body, data_form_trusted=data_form_trusted)
    logs.event_id.set(event.id)
    outcome, task_id = await store.ingest(event, body)
    logs.task_id.set(task_id)
    log.info(
        "event %s (%s %s) for DashScope task %s: %s",
        event.id,
        event.source,
        event.task_status,
        event.task_id or "-",
        outcome.value,
        extra={"task_id": task_id, "event_id": event.id},
    )
    return outcome, event
