"""The OpenAPI document served at ``/openapi.json``.

It names every route the app serves with every status it can answer, so that a client generated
from it (or a fuzzer such as schemathesis) meets no answer it was not told about.
"""

from __future__ import annotations

from typing import Any

from ..domain.models import (
    DEFAULT_MODELS,
    KIND_NAMES,
    KINDS,
    MODELS,
    NEGATIVE_PROMPT_MAX,
    RESOLUTIONS,
    SEED_MAX,
    SHOT_TYPES,
    SIZES_480P,
    SIZES_720P,
    SIZES_1080P,
)
from ..domain.task import CALLBACK_EVENTS, STATUSES, Outcome
from ..domain.validation import AUDIO_URL_MAX_LENGTH, METADATA_MAX_KEYS

ERROR = {"$ref": "#/components/schemas/Error"}
TASK = {"$ref": "#/components/schemas/Task"}
NULLABLE_STRING = {"type": "string", "nullable": True}
IMAGE_DESCRIPTION = (
    "{what}. An http(s) URL (passed on; DashScope fetches it), an oss:// temporary URL, or a base64 data URL "
    "(data:image/jpeg;base64,...): JPEG, PNG without alpha, BMP or WEBP, sides 360-2000 pixels, at most 10 MB. "
    "Data URLs over 1 MiB are put in DashScope's temporary storage when the task is created."
)


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _json(ERROR, "error") for status in statuses}


def _client(*statuses: int) -> dict[str, Any]:
    """The errors of a client API route: its own, plus no or a wrong token (401), over the request rate
    (429) and Redis unreachable (503)."""
    return _errors(*sorted({*statuses, 401, 429, 503}))


TASK_ID = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}
# One Server-Sent Event: "event: task.<state>" (or task.progress, or end) and "data: <task JSON>".
SSE = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "required": ["event", "data"],
            "properties": {"id": {"type": "string"}, "event": {"type": "string"}, "data": {"type": "string"}},
        }
    }
}
VIDEO = {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "wanhook",
        "version": "0.1.0",
        "description": "DashScope Wan text-to-video without polling: tasks, completion events, videos. "
        'Every error is {"error": {"code", "message"}}, plus "field" when one field '
        "is at fault. The bearer token is needed only when the server has WANHOOK_API_TOKENS.",
    },
    # Either a bearer token or none (a server without WANHOOK_API_TOKENS, on loopback).
    "security": [{"bearer": []}, {}],
    "paths": {
        "/v1/tasks": {
            "post": {
                "operationId": "createTask",
                "summary": "Create a task",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/TaskRequest"}},
                        # The same fields as a form; img_url, first_frame_url and last_frame_url may be files.
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    **{
                                        name: {
                                            "type": "string",
                                            "format": "binary",
                                            "description": "an image file, or a URL",
                                        }
                                        for name in ("img_url", "first_frame_url", "last_frame_url")
                                    },
                                    **{
                                        name: {"type": "string"}
                                        for name in (
                                            "prompt",
                                            "kind",
                                            "model",
                                            "resolution",
                                            "size",
                                            "negative_prompt",
                                            "audio_url",
                                            "shot_type",
                                        )
                                    },
                                    **{name: {"type": "integer"} for name in ("duration", "seed")},
                                    **{
                                        name: {"type": "string", "enum": ["true", "false"]}
                                        for name in ("prompt_extend", "watermark", "audio")
                                    },
                                    **{
                                        name: {"type": "string", "description": "JSON, as in the JSON body"}
                                        for name in ("callback", "metadata")
                                    },
                                },
                            }
                        },
                    },
                },
                "responses": {
                    "202": _json(TASK, "the task, queued (or the Idempotency-Key's task)"),
                    **_client(400, 413, 415, 422),
                    "422": _json(
                        ERROR,
                        "invalid_body or invalid_field (naming the field); "
                        "idempotency_key_reused: the Idempotency-Key was first sent "
                        "with a different body, and nothing was created",
                    ),
                    "429": _json(
                        ERROR,
                        "rate_limited, or too_many_queued: the token has "
                        "WANHOOK_MAX_QUEUED_PER_TOKEN tasks queued (Retry-After)",
                    ),
                },
            },
            "get": {
                "operationId": "listTasks",
                "summary": "List tasks, newest first",
                "parameters": [
                    {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(STATUSES)}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["tasks", "next_cursor"],
                            "properties": {"tasks": {"type": "array", "items": TASK}, "next_cursor": NULLABLE_STRING},
                        },
                        "a page of tasks",
                    ),
                    **_client(422),
                },
            },
        },
        "/v1/tasks/{task_id}": {
            "get": {
                "operationId": "getTask",
                "summary": "Read a task, with its callback deliveries",
                "parameters": [TASK_ID],
                "responses": {"200": _json(TASK, "the task"), **_client(404)},
            },
            "delete": {
                "operationId": "deleteTask",
                "summary": "Delete a task, its records and its video; one not ended is canceled first",
                "parameters": [TASK_ID],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Deleted"}, "what was removed"),
                    **_client(404, 409),
                    "409": _json(
                        ERROR,
                        "too_late: the task can no longer be canceled (running at DashScope, or its video is "
                        "being downloaded), so it is not deleted; the message says why",
                    ),
                    "503": _json(ERROR, "redis_unavailable, or dashscope_unavailable: the cancel could not be sent"),
                },
            },
        },
        "/v1/tasks/{task_id}/cancel": {
            "post": {
                "operationId": "cancelTask",
                "summary": "Cancel a queued or PENDING task",
                "parameters": [TASK_ID],
                "responses": {"200": _json(TASK, "the canceled task"), **_client(404, 409)},
            }
        },
        "/v1/tasks/{task_id}/callbacks/replay": {
            "post": {
                "operationId": "replayCallbacks",
                "summary": "Send the task's dead and gone callback deliveries again",
                "parameters": [TASK_ID],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["replayed", "callbacks"],
                            "properties": {
                                "replayed": {"type": "integer", "minimum": 0},
                                "callbacks": {"type": "array", "items": {"$ref": "#/components/schemas/Delivery"}},
                            },
                        },
                        "how many deliveries were replayed, and all of them",
                    ),
                    **_client(404, 409),
                },
            }
        },
        "/v1/dead-letters": {
            "get": {
                "operationId": "listDeadLetters",
                "summary": "Jobs given up after their attempts, newest first (operator token)",
                "parameters": [
                    {
                        "name": "kind",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["download", "failure", "callback"]},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                    },
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["dead_letters"],
                            "properties": {
                                "dead_letters": {"type": "array", "items": {"$ref": "#/components/schemas/DeadLetter"}}
                            },
                        },
                        "the dead letters",
                    ),
                    **_errors(401, 403, 422, 503),
                },
            }
        },
        "/v1/dead-letters/{letter_id}/replay": {
            "post": {
                "operationId": "replayDeadLetter",
                "summary": "Queue a dead letter's job again, its task opened again if the dead letter ended it",
                "parameters": [{"name": "letter_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["id", "replayed", "job"],
                            "properties": {
                                "id": {"type": "string"},
                                "replayed": {"type": "boolean"},
                                "job": {"type": "string"},
                            },
                        },
                        "the job queued again",
                    ),
                    **_errors(401, 403, 404, 409, 503),
                },
            }
        },
        "/v1/tasks/{task_id}/video": {
            "get": {
                "operationId": "getVideo",
                "summary": "The stored video (Range supported)",
                "parameters": [TASK_ID],
                "responses": {
                    "200": {"description": "the MP4", "content": VIDEO},
                    "206": {"description": "a range of the MP4", "content": VIDEO},
                    "416": {"description": "a range beyond the end of the MP4"},
                    **_client(404, 409, 410),
                },
            },
            "head": {
                "operationId": "headVideo",
                "summary": "The stored video's headers",
                "parameters": [TASK_ID],
                "responses": {
                    "200": {"description": "the MP4's headers"},
                    "206": {"description": "a range's headers"},
                    "416": {"description": "a range beyond the end of the MP4"},
                    **_client(404, 409, 410),
                },
            },
        },
        "/v1/tasks/{task_id}/events": {
            "get": {
                "operationId": "streamTaskEvents",
                "summary": "Server-Sent Events: the current state, then each change; ends after a terminal state. "
                "Streams are capped per token (429) and per process (503), both too_many_streams",
                "parameters": [
                    TASK_ID,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "description": "resume after this event (an id the stream sent)",
                        "schema": {"type": "string", "pattern": "^[0-9]+(-[0-9]+)?$"},
                    },
                    {
                        "name": "last_event_id",
                        "in": "query",
                        "required": False,
                        "description": "the same, for clients that cannot set the header",
                        "schema": {"type": "string", "pattern": "^[0-9]+(-[0-9]+)?$"},
                    },
                ],
                "responses": {"200": {"description": "event stream", "content": SSE}, **_client(400, 404)},
            }
        },
        "/v1/stats": {
            "get": {
                "operationId": "getStats",
                "summary": "Tasks per state, and DashScope slots in use per model against the quota",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["tasks", "models"],
                            "properties": {
                                "tasks": {"type": "object", "additionalProperties": {"type": "integer"}},
                                "models": {
                                    "type": "object",
                                    "additionalProperties": {
                                        "type": "object",
                                        "properties": {
                                            "running": {"type": "integer"},
                                            "limit": {"type": "integer"},
                                            "rps": {"type": "integer"},
                                        },
                                    },
                                },
                            },
                        },
                        "counts",
                    ),
                    **_errors(401, 503),
                },
            }
        },
        "/v1/stream": {
            "get": {
                "operationId": "streamTasks",
                "summary": "Server-Sent Events for several tasks; ends with an 'end' event once all are terminal. "
                "Capped as /v1/tasks/{task_id}/events is",
                "parameters": [
                    {
                        "name": "tasks",
                        "in": "query",
                        "required": True,
                        "description": "1 to 100 comma-separated task ids",
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {"200": {"description": "event stream", "content": SSE}, **_errors(401, 422, 429, 503)},
            }
        },
        "/v1/events/dashscope": {
            "post": {
                "operationId": "receiveDashscopeEvent",
                "summary": "EventBridge HTTP target for DashScope's AsyncTaskFinish CloudEvent (or its data alone)",
                "security": [{"eventbridge": []}, {}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["outcome", "event_id"],
                            "properties": {
                                "outcome": {"type": "string", "enum": [outcome.value for outcome in Outcome]},
                                "event_id": {"type": "string"},
                            },
                        },
                        "recorded",
                    ),
                    **_errors(400, 401, 413, 415, 503),
                },
            }
        },
        "/": {
            "get": {
                "operationId": "getDashboard",
                "summary": "The dashboard page",
                "security": [{}],
                "responses": {
                    "200": {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}},
                    **_errors(503),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "checkLiveness",
                "summary": "Liveness (and the embedded Redis, when this process runs it)",
                "security": [{}],
                "responses": {
                    "200": _json({"type": "object"}, "alive"),
                    "503": _json({"type": "object"}, "the embedded Redis is down, being restarted"),
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "checkReadiness",
                "summary": "Readiness (Redis answers, no worker loop is down)",
                "security": [{}],
                "responses": {"200": _json({"type": "object"}, "ready"), **_errors(503)},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "summary": "Prometheus metrics",
                "security": [{}],
                "responses": {
                    "200": {
                        "description": "text exposition",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(503),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenApiDocument",
                "summary": "This document",
                "security": [{}],
                "responses": {"200": _json({"type": "object"}, "the OpenAPI document")},
            }
        },
    },
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "one of WANHOOK_API_TOKENS"},
            "eventbridge": {
                "type": "apiKey",
                "in": "header",
                "name": "x-eventbridge-signature-token",
                "description": "WANHOOK_EVENTBRIDGE_TOKEN, when the server has one",
            },
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "additionalProperties": False,
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "additionalProperties": False,
                        "properties": {
                            "code": {"type": "string", "minLength": 1},
                            "message": {"type": "string", "minLength": 1},
                            "field": {"type": "string"},
                        },
                    }
                },
            },
            "TaskRequest": {
                "type": "object",
                "additionalProperties": False,
                "description": (
                    "A text-to-video task needs prompt; an image-to-video task (kind i2v) img_url, a "
                    "first-and-last-frame task (kind kf2v) first_frame_url and last_frame_url, the prompt optional. "
                    "Each model's own rules are checked too (422 naming the field)."
                ),
                "properties": {
                    # The widest of the models' rules; each model's own is checked too (422 naming the field).
                    "prompt": {"type": "string", "maxLength": max(rules.prompt_max for rules in MODELS.values())},
                    "kind": {
                        "type": "string",
                        "enum": [*KIND_NAMES, *KINDS],
                        "description": (
                            "text-to-video (t2v), image-to-video (i2v), first-and-last-frame (kf2v); default: the "
                            "model's kind, or text-to-video. Default models: "
                            f"{', '.join(f'{k} {m}' for k, m in DEFAULT_MODELS.items())}"
                        ),
                    },
                    "model": {
                        "type": "string",
                        "enum": list(MODELS),
                        "description": "; ".join(
                            f"{kind}: {', '.join(m for m, r in MODELS.items() if r.kind == kind)}" for kind in KINDS
                        ),
                    },
                    **{
                        name: {"type": "string", "description": IMAGE_DESCRIPTION.format(what=what)}
                        for name, what in (
                            ("img_url", "i2v: the first frame"),
                            ("first_frame_url", "kf2v: the first frame"),
                            ("last_frame_url", "kf2v: the last frame"),
                        )
                    },
                    "resolution": {
                        "type": "string",
                        "enum": list(RESOLUTIONS),
                        "description": (
                            "i2v and kf2v only (they take no size): the tier; the video keeps the image's aspect "
                            "ratio. Default: the model's"
                        ),
                    },
                    "audio": {"type": "boolean", "description": "wan2.5-i2v-preview only: make sound (default true)"},
                    "negative_prompt": {"type": "string", "maxLength": NEGATIVE_PROMPT_MAX},
                    "size": {"type": "string", "enum": [*SIZES_480P, *SIZES_720P, *SIZES_1080P]},
                    "duration": {
                        "type": "integer",
                        "minimum": min(d for rules in MODELS.values() for d in rules.durations),
                        "maximum": max(d for rules in MODELS.values() for d in rules.durations),
                    },
                    "seed": {"type": "integer", "minimum": 0, "maximum": SEED_MAX},
                    "prompt_extend": {"type": "boolean"},
                    "watermark": {"type": "boolean"},
                    "audio_url": {
                        "type": "string",
                        "maxLength": AUDIO_URL_MAX_LENGTH,
                        "description": (
                            "http or https URL of a wav or mp3 track (3-30 s, at most 15 MB) the video follows, "
                            "instead of sound of the model's own; only "
                            f"{', '.join(m for m, r in MODELS.items() if r.audio)}"
                        ),
                    },
                    "shot_type": {
                        "type": "string",
                        "enum": list(SHOT_TYPES),
                        "description": (
                            "multi: a multi-shot narrative (needs prompt_extend true); only "
                            f"{', '.join(m for m, r in MODELS.items() if r.shot_type)}"
                        ),
                    },
                    "callback": {
                        "type": "object",
                        "required": ["url"],
                        "additionalProperties": False,
                        "properties": {
                            "url": {
                                "type": "string",
                                "description": "http or https; no private address unless "
                                "WANHOOK_CALLBACK_ALLOW_PRIVATE=1",
                            },
                            "events": {
                                "type": "array",
                                "minItems": 1,
                                "items": {"type": "string", "enum": list(CALLBACK_EVENTS)},
                            },
                        },
                    },
                    "metadata": {
                        "type": "object",
                        "maxProperties": METADATA_MAX_KEYS,
                        "additionalProperties": {"type": "string"},
                    },
                },
            },
            "Deleted": {
                "type": "object",
                "required": ["id", "deleted", "already_deleted", "removed"],
                "properties": {
                    "id": {"type": "string"},
                    "deleted": {"type": "boolean"},
                    "already_deleted": {
                        "type": "boolean",
                        "description": "the caller had deleted it before (within a day): nothing more was removed",
                    },
                    "removed": {
                        "type": "object",
                        "required": [
                            "from_queue",
                            "canceled_at_dashscope",
                            "task",
                            "index_entries",
                            "change_stream",
                            "callback_deliveries",
                            "video",
                        ],
                        "properties": {
                            "from_queue": {"type": "boolean"},
                            "canceled_at_dashscope": {"type": "boolean"},
                            "task": {"type": "boolean"},
                            "index_entries": {"type": "integer", "minimum": 0},
                            "change_stream": {"type": "boolean"},
                            "callback_deliveries": {"type": "integer", "minimum": 0},
                            "video": {"type": "boolean"},
                            "video_pending": {
                                "type": "boolean",
                                "description": "present (true) when the object store could not remove the video "
                                "now: its removal is recorded and tried again until the store answers",
                            },
                        },
                    },
                },
            },
            "DeadLetter": {
                "type": "object",
                "required": ["id", "kind", "task_id", "job", "attempts", "cause", "at"],
                "properties": {
                    "id": {"type": "string", "description": "<kind>:<entry id>, what the replay takes"},
                    "kind": {"type": "string", "enum": ["download", "failure", "callback"]},
                    "task_id": {"type": "string"},
                    "job": {"type": "string", "description": "the job's entry id, or the callback's webhook id"},
                    "attempts": {"type": "integer", "minimum": 0},
                    "cause": {"type": "string", "description": "the last failure, Type: message (redacted)"},
                    "at": {"type": "string", "format": "date-time"},
                },
            },
            "Delivery": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "event": {"type": "string"},
                    "status": {"type": "string", "enum": ["pending", "delivered", "gone", "dead"]},
                    "attempts": {"type": "integer"},
                    "last_outcome": NULLABLE_STRING,
                    "next_attempt_at": NULLABLE_STRING,
                },
            },
            "Task": {
                "type": "object",
                "required": ["id", "status"],
                "properties": {
                    "id": {"type": "string"},
                    "status": {"type": "string", "enum": list(STATUSES)},
                    "model": {"type": "string"},
                    "prompt": {"type": "string"},
                    "negative_prompt": NULLABLE_STRING,
                    "parameters": {"type": "object"},
                    "metadata": {"type": "object"},
                    "callback": {"type": "object", "nullable": True},
                    "callbacks": {"type": "array", "items": {"$ref": "#/components/schemas/Delivery"}},
                    "dashscope": {
                        "type": "object",
                        "properties": {
                            "task_id": NULLABLE_STRING,
                            "status": NULLABLE_STRING,
                            "request_id": NULLABLE_STRING,
                        },
                    },
                    "video": {
                        "type": "object",
                        "nullable": True,
                        "properties": {
                            "path": {"type": "string"},
                            "bytes": {"type": "integer"},
                            "sha256": {"type": "string"},
                            "url": {"type": "string"},
                        },
                    },
                    "video_removed": {
                        "type": "object",
                        "description": "Present when a ready task's video was removed (reason: retention, "
                        "after WANHOOK_VIDEO_RETENTION_SECONDS): video is then null and /video answers 410.",
                        "required": ["reason", "message", "at"],
                        "properties": {
                            "reason": {"type": "string"},
                            "message": {"type": "string"},
                            "at": {"type": "string"},
                        },
                    },
                    "error": {
                        "type": "object",
                        "nullable": True,
                        "description": "Why the task failed or expired. For a task DashScope failed, DashScope's "
                        "own code and message (read from the task before it turned failed), or "
                        "TaskFailed with a message saying why they could not be read. Also set on a task still "
                        "downloading that waits: InsufficientStorage (for disk space), or UploadFailed (its upload "
                        "to the object store failing and tried again, with attempts and failing_since; the task "
                        "fails with it after WANHOOK_S3_UPLOAD_RETRY_SECONDS).",
                        "properties": {
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                            "attempts": {
                                "type": "integer",
                                "description": "UploadFailed: the failed attempts of the upload so far",
                            },
                            "failing_since": {
                                "type": "string",
                                "description": "UploadFailed: when the upload first failed (ISO 8601, UTC)",
                            },
                        },
                    },
                    "progress": {
                        "type": "object",
                        "properties": {"bytes": {"type": "integer"}, "total": {"type": "integer", "nullable": True}},
                    },
                    "created_at": {"type": "string"},
                    "updated_at": {"type": "string"},
                },
            },
        },
    },
}
