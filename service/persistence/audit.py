"""The audit stream's encoding of an event's body (keys.EVENT_LOG): the one place that writes and reads it.

An event of a task wanhook knows keeps its body whole, for audit and replay. DashScope's completion
events are some 800 bytes of which most is the same in every one (field names, the event type, the
model's key): the body is kept deflated against a preset dictionary made of that common part, and
base64-encoded so that the stream stays text for any client (``redis-cli``, a ``decode_responses``
client). A DashScope event then takes about 210 bytes instead of 805. A body that would not shrink is
kept as it was, under ``body``, as every entry written before this encoding was; both read back here.
An entry that keeps the body whole no longer repeats what the body says (the event's source, id,
DashScope task id, status and size): ``read_entry`` gives the entry back with them, whichever version
wrote it.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Mapping

from ..core.errors import InvalidEvent
from ..domain.events import parse
from . import keys

# Field names in an audit entry: the body as received, or deflated against DICTIONARY_1 (base64).
RAW = "body"
DEFLATED_1 = "body_z1"

# The preset dictionary: DashScope's documented completion event (dashscope.md, section 4) with the
# varying values left out. Entries written with it read back only with these exact bytes: never edit
# it; a better one goes under a new field name (body_z2) beside it.
DICTIONARY_1 = (
    b'{"datacontenttype": "application/json;charset=utf-8", "aliyunaccountid": "", "aliyunpublishtime": '
    b'"2026-01-01T00:00:00.000Z", "data": {"start_time": "2026-01-01 00:00:00", "user_api_unique_key": '
    b'"apikey:v1:aigc:video-generation:video-synthesis:wan2.2-t2v-plus", "task_status": "SUCCEEDED", '
    b'"contain_result": false, "end_time": "2026-01-01 00:00:00", "task_id": "", "region": "cn-beijing", '
    b'"request_id": "", "api_key_id": ""}, "aliyunoriginalaccountid": "", "specversion": "1.0", '
    b'"aliyuneventbusname": "default", "id": "", "source": "acs.dashscope", "time": '
    b'"2026-01-01T00:00:00.000Z", "aliyunregionid": "cn-beijing", "type": "dashscope:System:AsyncTaskFinish"}'
)


def encode_body(body: bytes) -> tuple[str, bytes]:
    """The field and value that keep ``body`` whole in an audit entry."""
    # Raw deflate (no header), a 4 KiB window (a body is at most keys.EVENT_LOG_BODY_MAX) and little
    # state: some 16 us an event, where zlib's defaults spend 200 setting up their tables.
    packer = zlib.compressobj(6, zlib.DEFLATED, -12, 4, zlib.Z_DEFAULT_STRATEGY, DICTIONARY_1)
    packed = base64.b64encode(packer.compress(body) + packer.flush())
    return (DEFLATED_1, packed) if len(packed) < len(body) else (RAW, body)


def decode_body(entry: Mapping[str, str] | Mapping[bytes, bytes]) -> bytes | None:
    """The whole body an audit entry keeps, whichever way it was written; None when it keeps only the
    body's digest and first bytes (an event of no known task, or a body over keys.EVENT_LOG_BODY_MAX)."""
    fields = {_text(name): value for name, value in entry.items()}
    if DEFLATED_1 in fields:
        unpacker = zlib.decompressobj(-15, DICTIONARY_1)  # any window up to deflate's largest
        return unpacker.decompress(base64.b64decode(fields[DEFLATED_1])) + unpacker.flush()
    raw = fields.get(RAW)
    if raw is None:
        return None
    return raw if isinstance(raw, bytes) else raw.encode()


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode()


def read_entry(entry: Mapping[str, str] | Mapping[bytes, bytes]) -> dict[str, str]:
    """An audit entry with every field it had before this encoding (source, id, ds_task_id, status, task,
    outcome, body_sha256, body_bytes, and body or body_prefix), the body as text."""
    fields = {_text(name): _text(value) for name, value in entry.items()}
    body = decode_body(entry)
    if body is None:
        return fields
    fields.pop(DEFLATED_1, None)
    fields["body"] = body.decode(errors="replace")
    fields.setdefault("body_bytes", str(len(body)))
    if "source" not in fields:
        try:
            event = parse(body)
            if fields.get("outcome") == "ignored" and not event.foreign:
                # Only a data-only body its transport did not vouch for is ignored yet DashScope's when trusted.
                event = parse(body, data_form_trusted=False)
        except InvalidEvent:  # not written by wanhook: an entry with a whole body was parsed first
            return fields
        fields.update(
            source=_clip(event.source, keys.EVENT_LOG_FIELD_MAX),
            id=_clip(event.id, keys.EVENT_LOG_FIELD_MAX),
            ds_task_id=_clip(event.task_id, keys.EVENT_LOG_FIELD_MAX),
            status=_clip(event.task_status, 32),
        )
    return fields


def _clip(text: str, size: int) -> str:
    # As the script clips what it records: at most ``size`` bytes, never half a character.
    return text.encode()[:size].decode(errors="ignore")
