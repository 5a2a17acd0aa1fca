"""DashScope's task-completion CloudEvent, parsed leniently but never guessed.

Both transports (the EventBridge HTTP target and the RocketMQ target) hand the raw body here, so
there is exactly one parser. It accepts the whole CloudEvent (Body ORIGINAL) or its ``data`` object
alone (Body ``$.data``).

The data-only form names no source: it is DashScope's only where the transport vouches that EventBridge
built it (``data_form_trusted``). Elsewhere it is given DATA_FORM_SOURCE, so it is foreign: recorded and
acknowledged, never applied, never kept as an early record.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from ..core import documents
from ..core.errors import InvalidEvent

SOURCE = "acs.dashscope"
TYPE = "dashscope:System:AsyncTaskFinish"
# The source of a data-only event whose transport does not vouch for it: not DashScope's (see above).
DATA_FORM_SOURCE = "wanhook:untrusted-data-form"
STATUSES = frozenset({"PENDING", "RUNNING", "SUSPENDED", "SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"})


@dataclass(frozen=True)
class CompletionEvent:
    source: str
    id: str
    type: str
    task_id: str  # DashScope's task id
    task_status: str
    model: str | None
    video_url: str | None  # only when the event carries the result (contain_result: true)
    code: str | None
    message: str | None

    @property
    def foreign(self) -> bool:
        """Another product's event (or another kind of DashScope task) on the same rule."""
        return self.source != SOURCE or self.type != TYPE


def _model_of(unique_key: Any) -> str | None:
    # apikey:v1:<group>:<task>:<function>:<model>
    if not isinstance(unique_key, str) or ":" not in unique_key:
        return None
    return unique_key.rsplit(":", 1)[1] or None


def _is_video_synthesis(unique_key: Any) -> bool:
    return not isinstance(unique_key, str) or "video-synthesis" in unique_key or "video-generation" in unique_key


def parse(body: bytes, *, data_form_trusted: bool = True) -> CompletionEvent:
    """The event in ``body``; with ``data_form_trusted`` false, a data-only body is not DashScope's."""
    document = documents.load(body, InvalidEvent)
    if not isinstance(document, dict):
        raise InvalidEvent("invalid_event", "the body must be a JSON object")

    if "data" in document and ("specversion" in document or "source" in document):
        data = document["data"]
        if not isinstance(data, dict):
            raise InvalidEvent("invalid_event", "the CloudEvent's data must be an object")
        source, event_id, event_type = document.get("source"), document.get("id"), document.get("type")
        if not isinstance(source, str) or not isinstance(event_id, str) or not source or not event_id:
            raise InvalidEvent("invalid_event", "a CloudEvent needs string 'source' and 'id'")
        if not isinstance(event_type, str):
            raise InvalidEvent("invalid_event", "a CloudEvent needs a string 'type'")
    elif "task_id" in document and "task_status" in document:
        data, event_type, event_id = document, TYPE, ""
        source = SOURCE if data_form_trusted else DATA_FORM_SOURCE
    else:
        raise InvalidEvent(
            "invalid_event",
            "expected a CloudEvent with 'source', 'id' and 'data', or its data with 'task_id' and 'task_status'",
        )

    unique_key = data.get("user_api_unique_key")
    if source == SOURCE and event_type == TYPE and not _is_video_synthesis(unique_key):
        event_type = f"{TYPE}#other"  # another DashScope product on the same rule: foreign

    task_id, status = data.get("task_id"), data.get("task_status")
    foreign = source != SOURCE or event_type != TYPE
    if not foreign:
        if not isinstance(task_id, str) or not task_id:
            raise InvalidEvent("invalid_event", "data.task_id must be a non-empty string")
        if not isinstance(status, str) or status not in STATUSES:
            raise InvalidEvent("invalid_event", f"data.task_status must be one of {', '.join(sorted(STATUSES))}")
    if not event_id:
        # The $.data form carries no event id: one task reaches one status once, which is what
        # at-least-once redelivery repeats.
        key = f"{task_id}|{status}|{data.get('request_id')}|{data.get('end_time')}"
        event_id = "data-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]

    video_url = code = message = None
    result = data.get("output_result")
    if data.get("contain_result") is True and isinstance(result, dict):
        inner = result.get("output")
        output = inner if isinstance(inner, dict) else result
        video_url = output.get("video_url") if isinstance(output.get("video_url"), str) else None
        code, message = output.get("code"), output.get("message")
    code = code or data.get("code")
    message = message or data.get("message")
    event = CompletionEvent(
        source=source,
        id=event_id,
        type=event_type,
        task_id=task_id if isinstance(task_id, str) else "",
        task_status=status if isinstance(status, str) else "",
        model=_model_of(unique_key),
        video_url=video_url,
        code=_scalar(code),
        message=_scalar(message),
    )
    if not all(_encodable(value) for value in vars(event).values()):
        # JSON can spell a lone surrogate (\ud800); Redis, the logs and every client take UTF-8, which cannot.
        raise InvalidEvent("invalid_event", "the event's text has a lone surrogate, which is not valid Unicode")
    return event


def _scalar(value: Any) -> str | None:
    """DashScope's code or message as text; anything but a string or number is not one."""
    if isinstance(value, str | int | float) and not isinstance(value, bool) and value:
        return str(value)
    return None


def _encodable(value: Any) -> bool:
    try:
        if isinstance(value, str):
            value.encode()
    except UnicodeEncodeError:
        return False
    return True
