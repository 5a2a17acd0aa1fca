"""The Starlette application: routes, error handling and the process's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Settings
from ..core import pools
from ..core.errors import WanhookError
from ..observability import logs, metrics
from ..persistence import embedded
from ..runtime import Runtime
from . import api, bodies, dashboard, push
from .openapi import DOCUMENT
from .responses import STATUS, ApiError, error_response

log = logging.getLogger("wanhook.app")


def _embedded_down() -> dict[str, Any] | None:
    servers = embedded.down()
    if not servers:
        return None
    server = servers[0]
    return {"state": server.state, "down_since": server.down_since, "restarts": server.restarts}


async def healthz(request: Request) -> Response:
    """The process is alive, and so is the Redis it runs itself. While that embedded Redis is down
    (being restarted) this answers 503, so that an orchestrator restarts serve should it never come back."""
    down = _embedded_down()
    if down is not None:
        return JSONResponse({"status": "embedded_redis_down", "embedded_redis": down}, status_code=503)
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready: Redis answers and every worker loop of this process runs (none waits to be restarted)."""
    down = _embedded_down()
    if down is not None:
        return error_response(
            ApiError(
                503,
                "embedded_redis_down",
                "the embedded Redis is down and being restarted from its AOF",
                headers={"Retry-After": "1"},
            )
        )
    runtime = request.app.state.runtime
    await runtime.redis.ping()
    loops = runtime.supervisor.down()
    if loops:
        return error_response(
            ApiError(
                503,
                "worker_loop_down",
                f"worker loops down, being restarted: {', '.join(sorted(loops))}",
                headers={"Retry-After": "1"},
            )
        )
    return JSONResponse({"status": "ready"})


async def metrics_text(request: Request) -> Response:
    return Response(
        metrics.exposition(await metrics.snapshot(request.app.state.runtime.store)), media_type=metrics.CONTENT_TYPE
    )


async def openapi(request: Request) -> Response:
    return JSONResponse(DOCUMENT)


async def on_error(request: Request, exc: Exception) -> Response:
    """A domain error (or the web layer's own ``ApiError``) answered as ``responses.STATUS`` says."""
    assert isinstance(exc, WanhookError)
    return error_response(exc)


def allowed_methods(request: Request) -> str:
    """What the path takes, from every route that serves it: one path may have a route per method
    (/v1/tasks), and Starlette's own Allow names only the first route's. A mount of static files (which
    gives no Allow of its own) takes GET and HEAD."""
    # The request as the app's router first saw it: a mount has since moved its prefix to root_path.
    root_path = request.scope.get("app_root_path", request.scope.get("root_path", ""))
    scope = {"type": "http", "method": "GET", "root_path": root_path, "path": request.scope["path"]}
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches(scope)
        if match is Match.NONE:
            continue
        if isinstance(route, Route):
            methods |= route.methods or set()
        elif isinstance(route, Mount) and isinstance(route.app, StaticFiles):
            methods |= {"GET", "HEAD"}
    return ", ".join(sorted(methods))


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # RFC 9110: a 405 answer names the methods the resource takes.
        headers["Allow"] = allowed_methods(request) or headers.get("Allow", "")
    return error_response(ApiError(exc.status_code, code, str(exc.detail), headers=headers or None))


async def on_redis_error(request: Request, exc: Exception) -> Response:
    # 503 makes EventBridge (and well-behaved clients) retry once Redis is back.
    log.warning("Redis unavailable: %s", type(exc).__name__)
    return error_response(
        ApiError(
            503, "redis_unavailable", "the task store (Redis) is unavailable; retry later", headers={"Retry-After": "5"}
        )
    )


ROUTES = [
    Route("/v1/tasks", api.create_task, methods=["POST"]),
    Route("/v1/tasks", api.list_tasks, methods=["GET"]),
    Route("/v1/tasks/{task_id}", api.get_task, methods=["GET"]),
    Route("/v1/tasks/{task_id}", api.delete_task, methods=["DELETE"]),
    Route("/v1/tasks/{task_id}/cancel", api.cancel_task, methods=["POST"]),
    Route("/v1/tasks/{task_id}/callbacks/replay", api.replay_callbacks, methods=["POST"]),
    Route("/v1/tasks/{task_id}/video", api.get_video, methods=["GET", "HEAD"]),
    Route("/v1/tasks/{task_id}/events", api.task_events, methods=["GET"]),
    Route("/v1/dead-letters", api.list_dead_letters, methods=["GET"]),
    Route("/v1/dead-letters/{letter_id}/replay", api.replay_dead_letter, methods=["POST"]),
    # Served by App past the middleware; the route answers other methods (405 with Allow) as every route does.
    Route(push.PATH, push.Endpoint(), methods=["POST"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics_text, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    *dashboard.ROUTES,
]


class RequestIds:
    """Every request gets an id (the caller's ``X-Request-ID`` when it is sane), echoed in the answer
    and carried by every log line written while handling it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        value = given if 0 < len(given) <= 128 and given.isprintable() and given.isascii() else uuid.uuid4().hex
        token = logs.request_id.set(value)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("x-request-id", value)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logs.request_id.reset(token)


class App(Starlette):
    """Starlette, with EventBridge's pushes (``POST /v1/events/dashscope``) handed straight to their endpoint:
    past the middleware and the router, which cost as much as recording the event and do nothing a push
    needs that ``push.receive_event`` does not do itself (its request id, its error answers)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path, root = scope["path"], scope.get("root_path", "")
            if path == push.PATH or (root and path == root + push.PATH):
                await push.receive_event(self.state.runtime, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, *, workers: bool = True, runtime: Runtime | None = None) -> Starlette:
    """The app; with ``workers`` it also runs the submission and download workers in this process.

    A ready ``runtime`` can be passed in (the demo shares one between the app and other parts).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own = runtime is None
        rt = runtime or await Runtime.open(settings or Settings.from_env())
        app.state.runtime = rt
        app.state.large_bodies = large_bodies = bodies.LargeBodies.from_settings(rt.settings)
        stop = asyncio.Event()
        worker = asyncio.create_task(rt.run_workers(stop)) if workers else None
        try:
            yield
        finally:
            stop.set()
            if worker is not None:
                await worker
            large_bodies.close()
            if own:
                await rt.close()
                # The embedded Redis (if this process runs it) stops with the server: uvicorn ends the
                # process by the signal it received, and exit handlers do not run then.
                await pools.FILES.run(embedded.stop_all)

    return App(
        routes=ROUTES,
        lifespan=lifespan,
        middleware=[Middleware(RequestIds)],
        # Only the errors that have an answer: any other is a bug, answered 500 (Starlette's own handler).
        # replication.NotReplicated is an Unavailable (in STATUS) before it is a RedisError: it is answered
        # 503 not_replicated by on_error, found first along its bases.
        exception_handlers={
            **dict.fromkeys((*STATUS, ApiError), on_error),
            HTTPException: on_http_error,
            RedisError: on_redis_error,
        },
    )


def app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory service.app:app_from_env`` (several uvicorn workers)."""
    return create_app(Settings.from_env())
