"""The OpenAPI document served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from .models import MODELS, SIZES_480P, SIZES_720P, SIZES_1080P
from .types import CALLBACK_EVENTS, STATUSES

ERROR = {"$ref": "#/components/schemas/Error"}
TASK = {"$ref": "#/components/schemas/Task"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _json(ERROR, "error") for status in statuses}


TASK_ID = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "wanhook", "version": "0.1.0",
             "description": "DashScope Wan text-to-video without polling: tasks, completion events, videos."},
    "paths": {
        "/v1/tasks": {
            "post": {
                "summary": "Create a task",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                "schema": {"type": "string", "maxLength": 200}}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/TaskRequest"}}}},
                "responses": {"202": _json(TASK, "the task, queued"), **_errors(400, 401, 413, 415, 422, 503)},
            },
            "get": {
                "summary": "List tasks, newest first",
                "parameters": [
                    {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(STATUSES)}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": _json({"type": "object", "properties": {
                    "tasks": {"type": "array", "items": TASK},
                    "next_cursor": {"type": "string", "nullable": True}}}, "a page of tasks"),
                    **_errors(401, 422, 503)},
            },
        },
        "/v1/tasks/{task_id}": {"get": {
            "summary": "Read a task", "parameters": [TASK_ID],
            "responses": {"200": _json(TASK, "the task"), **_errors(401, 404, 503)}}},
        "/v1/tasks/{task_id}/cancel": {"post": {
            "summary": "Cancel a queued or PENDING task", "parameters": [TASK_ID],
            "responses": {"200": _json(TASK, "the canceled task"), **_errors(401, 404, 409, 503)}}},
        "/v1/tasks/{task_id}/video": {"get": {
            "summary": "The stored video (Range supported)", "parameters": [TASK_ID],
            "responses": {"200": {"description": "the MP4", "content": {"video/mp4": {}}},
                          "206": {"description": "a range of the MP4", "content": {"video/mp4": {}}},
                          **_errors(401, 404, 409, 410, 503)}}},
        "/v1/tasks/{task_id}/events": {"get": {
            "summary": "Server-Sent Events: the current state, then each change", "parameters": [TASK_ID],
            "responses": {"200": {"description": "event stream", "content": {"text/event-stream": {}}},
                          **_errors(401, 404, 503)}}},
        "/v1/events/dashscope": {"post": {
            "summary": "EventBridge HTTP target for DashScope's AsyncTaskFinish CloudEvent",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {"200": _json({"type": "object", "properties": {
                "outcome": {"type": "string"}, "event_id": {"type": "string"}}}, "recorded"),
                **_errors(400, 401, 413, 415, 503)}}},
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
        "/readyz": {"get": {"summary": "Readiness (Redis answers)",
                            "responses": {"200": {"description": "ready"}, **_errors(503)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics",
                             "responses": {"200": {"description": "text exposition"}, **_errors(503)}}},
    },
    "components": {"schemas": {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}}}}},
        "TaskRequest": {"type": "object", "required": ["prompt"], "additionalProperties": False, "properties": {
            "prompt": {"type": "string", "minLength": 1, "maxLength": 1500},
            "model": {"type": "string", "enum": list(MODELS)},
            "negative_prompt": {"type": "string", "maxLength": 500},
            "size": {"type": "string", "enum": [*SIZES_480P, *SIZES_720P, *SIZES_1080P]},
            "duration": {"type": "integer", "minimum": 2, "maximum": 15},
            "seed": {"type": "integer", "minimum": 0, "maximum": 2147483647},
            "prompt_extend": {"type": "boolean"},
            "watermark": {"type": "boolean"},
            "callback": {"type": "object", "required": ["url"], "additionalProperties": False, "properties": {
                "url": {"type": "string"},
                "events": {"type": "array", "items": {"type": "string", "enum": list(CALLBACK_EVENTS)}}}},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        }},
        "Task": {"type": "object", "properties": {
            "id": {"type": "string"}, "status": {"type": "string", "enum": list(STATUSES)},
            "model": {"type": "string"}, "prompt": {"type": "string"},
            "negative_prompt": {"type": "string", "nullable": True},
            "parameters": {"type": "object"}, "metadata": {"type": "object"},
            "callback": {"type": "object", "nullable": True},
            "dashscope": {"type": "object"}, "video": {"type": "object", "nullable": True},
            "error": {"type": "object", "nullable": True},
            "progress": {"type": "object"},
            "created_at": {"type": "string"}, "updated_at": {"type": "string"}}},
    }},
}
