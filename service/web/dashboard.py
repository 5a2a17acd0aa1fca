"""The dashboard: a page at ``/`` that shows tasks move through their states as the events arrive.

The page is plain HTML, CSS and JavaScript from ``static/``. Without JavaScript it still lists the
latest tasks (when the API is open) with their videos and errors, rendered here.

Two JSON endpoints serve it: ``GET /v1/stats`` (tasks per state, DashScope slots per model against
the quota) and ``GET /v1/stream?tasks=a,b``, one Server-Sent Events stream for several tasks. A browser
keeps at most six HTTP/1.1 connections per host, so one ``/v1/tasks/{id}/events`` stream per task
would stall the page's own requests (the form, the videos) once six tasks were in flight.
"""

from __future__ import annotations

import html
import json
from collections.abc import AsyncIterator
from pathlib import Path
from string import Template
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..core.errors import InvalidField
from ..domain.models import DEFAULT_MODEL, DEFAULT_MODELS, MODELS, T2V, TIERS
from ..domain.task import Status
from ..flows.feed import Ended
from . import api

STATIC = Path(__file__).parent / "static"
PAGE = Template((STATIC / "index.html").read_text(encoding="utf-8"))
STREAM_MAX_TASKS = 100
KEEPALIVE_MS = 15_000
FALLBACK_TASKS = 20

# The page loads nothing from anywhere else; the policy makes the browser hold it to that.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def page_config(request: Request) -> dict[str, Any]:
    """What the page's script needs: each model's sizes, durations and prompt limit, and whether to ask for a token."""
    return {
        "auth": bool(api.runtime(request).settings.api_tokens),
        "default_models": DEFAULT_MODELS,
        "models": [
            {
                "name": rules.name,
                "kind": rules.kind,
                # Text-to-video picks a size within each tier; the image kinds pick the tier itself (resolution).
                "tiers": {tier: list(TIERS[tier]) for tier in rules.tiers} if rules.kind == T2V else {},
                "resolutions": list(rules.tiers) if rules.kind != T2V else [],
                "default_resolution": rules.default_resolution,
                "prompt_required": rules.prompt_required,
                "durations": list(rules.durations),
                "default_duration": rules.default_duration,
                "prompt_max": rules.prompt_max,
            }
            for rules in MODELS.values()
        ],
    }


async def page(request: Request) -> Response:
    rt = api.runtime(request)
    config = page_config(request)
    if config["auth"]:
        counts: dict[str, int] = {}
        items = (
            '<li class="placeholder">This server requires an API token. The page asks for it once '
            'JavaScript runs; without JavaScript, use the API: <code>curl -H "Authorization: Bearer '
            '&lt;token&gt;" /v1/tasks</code>.</li>'
        )
    else:
        counts = await rt.store.status_counts()
        tasks, _ = await rt.store.list("", None, FALLBACK_TASKS, None)  # the open API's tasks: owner ""
        items = "".join(_task_item(task.public()) for task in tasks)
        items = items or '<li class="placeholder">No tasks yet.</li>'
    body = PAGE.substitute(
        config=json.dumps(config).replace("<", "\\u003c"),
        queued=counts.get(Status.QUEUED, "–"),
        submitted=counts.get(Status.SUBMITTED, "–"),
        downloading=counts.get(Status.DOWNLOADING, "–"),
        ready=counts.get(Status.READY, "–"),
        failed=(counts[Status.FAILED] + counts[Status.EXPIRED]) if counts else "–",
        model_options="".join(
            f'<option value="{name}" data-kind="{rules.kind}"'
            f"{' selected' if name == DEFAULT_MODEL else ''}{'' if rules.kind == T2V else ' hidden'}>"
            f"{name}</option>"
            for name, rules in MODELS.items()
        ),
        tasks=items,
    )
    return HTMLResponse(body, headers=PAGE_HEADERS)


def _task_item(task: dict[str, Any]) -> str:
    """One task as the page shows it before (or without) its script."""
    e = html.escape
    status = task["status"]
    size = (task.get("parameters") or {}).get("size") or (task.get("parameters") or {}).get("resolution", "")
    created = (task.get("created_at") or "").replace("T", " ")[:19]
    meta = " · ".join(
        part
        for part in (
            e(task.get("model") or ""),
            e(size.replace("*", "×")),
            f"created {e(created)} UTC" if created else "",
        )
        if part
    )
    body = ""
    if status == Status.READY and task.get("video"):
        url = e(task["video"]["url"])
        body = (
            f'<video controls preload="metadata" src="{url}"></video>'
            f'<p><a href="{url}" download>Download the MP4</a> ({task["video"]["bytes"]:,} bytes)</p>'
        )
    elif task.get("error"):
        error = task["error"]
        body = f'<p class="error"><strong>{e(error.get("code") or "")}</strong> {e(error.get("message") or "")}</p>'
    return (
        f'<li class="task" data-status="{e(status)}"><article><header class="task-head">'
        f'<span class="badge">{e(status)}</span><h3 class="prompt">{e(task.get("prompt") or "")}</h3></header>'
        f'<p class="meta">{meta}</p>{body}</article></li>'
    )


async def stats(request: Request) -> Response:
    """Tasks per state (the whole account, as in /metrics) and DashScope slots in use per model."""
    await api.authorize(request)  # within the caller's request rate, as every route
    rt = api.runtime(request)
    counts = await rt.store.status_counts()
    running = await rt.store.slots_in_use(rt.limits)
    models = {
        model: {"running": count, "limit": limit.running, "rps": limit.rps}
        for (model, limit), count in zip(rt.limits.items(), running, strict=True)
    }
    return JSONResponse({"tasks": counts, "models": models})


async def stream(request: Request) -> Response:
    """Server-Sent Events for several tasks: each one's current state, then its changes, as
    ``/v1/tasks/{id}/events`` sends them. Tasks unknown to the caller are left out; the stream ends with
    an ``end`` event once every task it follows has reached a terminal state. A reconnection starts again
    from the current states, so it needs no Last-Event-ID."""
    caller = await api.authorize(request)
    ids = list(dict.fromkeys(part for part in request.query_params.get("tasks", "").split(",") if part))
    if not ids or len(ids) > STREAM_MAX_TASKS or any(len(task_id) > 64 for task_id in ids):
        raise InvalidField("tasks", f"1 to {STREAM_MAX_TASKS} comma-separated task ids")
    rt = api.runtime(request)
    store = rt.store
    subscription = await api.open_stream(request, caller)

    async def events() -> AsyncIterator[str]:
        # Each change stream's position before its task: a change in between is sent twice, never missed.
        after = {task_id: await rt.store.newest_change_id(task_id) for task_id in ids}
        for task_id in ids:
            stored = await store.task(task_id)
            if stored is None or stored.owner != caller:
                del after[task_id]
                continue
            yield _event(stored.public())
            if stored.status.terminal:
                del after[task_id]
        if after:
            await subscription.follow(after)
        while after:
            try:
                changes = await subscription.next(KEEPALIVE_MS / 1000)
            except Ended:
                return  # too slow a reader: it reconnects, and starts again from the current states
            if not changes:
                yield ": keep-alive\n\n"
                continue
            newest = {change.task_id: change.entry_id for change in changes}  # per task, its last change here
            tasks: dict[str, dict[str, Any]] = {}
            for change in changes:
                task_id = change.task_id
                if task_id not in after:
                    continue  # its terminal state has been sent
                if task_id not in tasks:
                    fetched = await rt.feed.snapshot(task_id, newest[task_id], store.get)
                    tasks[task_id] = fetched or {}
                fields = change.fields
                snapshot = dict(tasks[task_id], status=fields["status"], updated_at=fields.get("at"))
                if fields.get("bytes"):
                    snapshot["progress"] = {
                        "bytes": int(fields["bytes"]),
                        "total": int(fields.get("total") or 0) or None,
                    }
                    yield _event(snapshot, "task.progress")
                    continue
                snapshot.pop("progress", None)
                yield _event(snapshot)
                if Status(fields["status"]).terminal:
                    del after[task_id]
                    subscription.unfollow(task_id)
        # Said before closing, so that EventSource does not reconnect to a stream with nothing left.
        yield "event: end\ndata: {}\n\n"

    return api.EventStream(events(), subscription)


def _event(task: dict[str, Any], name: str | None = None) -> str:
    return f"event: {name or 'task.' + task['status']}\ndata: {json.dumps(task)}\n\n"


ROUTES: list = [
    Route("/", page, methods=["GET", "HEAD"]),
    Route("/v1/stats", stats, methods=["GET"]),
    Route("/v1/stream", stream, methods=["GET"]),
    Mount("/static", StaticFiles(directory=STATIC / "assets"), name="static"),
]
