"""The client API: tasks, their video and their live state changes."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ..core.errors import (
    DashScopeError,
    InvalidField,
    InvalidInput,
    RateLimited,
    TaskConflict,
    TaskNotFound,
    TooManyStreams,
    Unavailable,
    VideoGone,
)
from ..domain.models import IMAGE_MAX_BYTES
from ..domain.task import STATUSES, Status, Task
from ..flows import callbacks, removals
from ..flows.feed import Ended, Subscription
from ..jobs import deadletters
from ..jobs.queue import KINDS
from ..outbound.objectstore import S3Storage
from ..runtime import Runtime
from . import bodies, creates
from .responses import ApiError, refuse_cross_site, require_json

# A task with images may carry them as base64 data URLs: two (first and last frame) of at most 10 MB each,
# base64 adding a third. Other tasks keep TASK_BODY_LIMIT.
IMAGE_TASK_BODY_LIMIT = 2 * ((IMAGE_MAX_BYTES + 2) // 3 * 4) + 64 * 1024
KEEPALIVE_SECONDS = 15.0


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def owner(request: Request) -> str:
    """The caller's identity: a digest of its bearer token ("" when the API is open)."""
    tokens = runtime(request).settings.api_tokens
    if not tokens:
        return ""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if not given and request.method in ("GET", "HEAD") and "access_token" in request.query_params:
        # A browser cannot put a header on an EventSource or a <video>: reads may carry the token in
        # the query (RFC 6750, section 2.3). Writes never may, so a leaked URL cannot create or cancel.
        scheme, given = "bearer", request.query_params["access_token"]
    # Compare against every token, always, so timing does not tell which one nearly matched.
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(given.encode(), token.encode())
    if scheme.lower() != "bearer" or not matched:
        raise ApiError(
            401,
            "unauthorized",
            "a valid 'Authorization: Bearer <token>' header is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return hashlib.sha256(given.encode()).hexdigest()[:16]


async def authorize(request: Request) -> str:
    """The caller (``owner``), within its request rate: ``WANHOOK_RATE_LIMIT`` requests a second."""
    refuse_cross_site(request.headers, request.method, own_host=request.headers.get("host"))
    caller = owner(request)
    rt = runtime(request)
    wait_ms = await rt.request_limiter.take_request(caller, rt.settings.rate_limit)
    if wait_ms:
        raise RateLimited(rt.settings.rate_limit, max(1, round(wait_ms / 1000)))
    return caller


async def load_task(request: Request) -> Task:
    """The stored task named in the path, if the caller may see it (another owner's task is not found)."""
    caller = await authorize(request)
    task_id = request.path_params["task_id"]
    task = await runtime(request).store.task(task_id)
    if task is None or task.owner != caller:
        raise TaskNotFound(task_id)
    return task


async def create_task(request: Request) -> Response:
    caller = await authorize(request)
    rt = runtime(request)
    content_type = request.headers.get("content-type") or ""
    if not creates.is_form(content_type):
        require_json(request.headers)  # a multipart type without a boundary cannot be a form: 415 as before
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= 200:
        raise InvalidInput("invalid_idempotency_key", "Idempotency-Key must be 1 to 200 characters")
    scoped_key = f"{caller}:{key}" if key else None
    prepare = functools.partial(
        creates.prepare, owner=caller, allow_private=rt.settings.callback_allow_private, digest=scoped_key is not None
    )
    if not bodies.is_large(request.headers):
        prepared = prepare(await _read(request, IMAGE_TASK_BODY_LIMIT), content_type)
        return await _create(rt, prepared, scoped_key)
    # A large body (images): read under one of the slots that bound them, parsed and checked off the loop, and
    # the slot kept until the task is stored, as long as its images (decoded, for the upload) are held.
    large_bodies: bodies.LargeBodies = request.app.state.large_bodies
    async with large_bodies.slot(caller):
        body = await _read(request, IMAGE_TASK_BODY_LIMIT)
        if len(body) <= bodies.INLINE_MAX:
            prepared = prepare(body, content_type)
        else:
            prepared = await large_bodies.run(prepare, body, content_type)
        del body  # the fields hold what is kept of it
        return await _create(rt, prepared, scoped_key)


async def _create(rt: Runtime, prepared: creates.Prepared, scoped_key: str | None) -> Response:
    fields, digest = prepared.fields, prepared.digest
    max_queued = rt.settings.max_queued_per_token
    if prepared.uploads:
        # Validation, the Idempotency-Key and admission before any upload: a faithful retry answers its first
        # task and a create the queue refuses costs DashScope nothing. (Decided again with the write below.)
        first = await rt.store.admissible(fields, scoped_key, max_queued=max_queued, digest=digest)
        if first is not None:
            return JSONResponse(await rt.store.get(first), status_code=202, headers={"Location": f"/v1/tasks/{first}"})
        await _store_large_images(rt, fields, prepared.uploads)
        prepared.uploads.clear()
    # QueueFull and IdempotencyKeyReused, decided with the write, are answered as they come.
    task_id = await rt.store.create(fields, scoped_key, max_queued=max_queued, digest=digest)
    task = await rt.store.get(task_id)
    return JSONResponse(task, status_code=202, headers={"Location": f"/v1/tasks/{task_id}"})


async def _read(request: Request, limit: int) -> bytes:
    body = await bodies.read(request.receive, request.headers, limit, runtime(request).settings)
    if body is None:
        raise ClientDisconnect()
    return body


async def _store_large_images(rt: Runtime, fields: dict[str, Any], uploads: dict[str, tuple[str, bytes]]) -> None:
    """Images over INLINE_IMAGE_MAX go to DashScope's temporary storage now; the task keeps their URL."""
    parameters = fields["parameters"]
    for name, (content_type, data) in uploads.items():
        extension = content_type.rsplit("/", 1)[-1].replace("jpeg", "jpg")
        filename = f"{hashlib.sha256(data).hexdigest()[:32]}.{extension}"
        try:
            parameters[name] = await rt.dashscope.upload(fields["model"], filename, data, content_type)
        except DashScopeError as exc:
            raise ApiError(
                502,
                "upload_failed",
                f"{name}: DashScope's temporary storage refused the image ({exc.code}: {exc.message})",
                field=name,
            ) from None


async def get_task(request: Request) -> Response:
    task = await load_task(request)
    shown = task.public()
    if task.callback:
        shown["callbacks"] = await callbacks.deliveries(runtime(request).redis, task.id)
    return JSONResponse(shown)


async def replay_callbacks(request: Request) -> Response:
    """Send the task's dead-lettered callback deliveries again."""
    task = await load_task(request)
    if not task.callback:
        raise TaskConflict("no_callback", "the task has no callback settings")
    replayed = await callbacks.replay(runtime(request).redis, task.id)
    return JSONResponse(
        {"replayed": replayed, "callbacks": await callbacks.deliveries(runtime(request).redis, task.id)}
    )


async def list_tasks(request: Request) -> Response:
    caller = await authorize(request)
    status = request.query_params.get("status")
    if status is not None and status not in STATUSES:
        raise InvalidField("status", f"expected one of {', '.join(STATUSES)}")
    raw_limit = request.query_params.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise InvalidField("limit", "must be an integer from 1 to 100")
    limit = int(raw_limit)
    cursor = request.query_params.get("cursor") or None
    page, cursor = await runtime(request).store.list(caller, status, limit, cursor)
    return JSONResponse({"tasks": [task.public() for task in page], "next_cursor": cursor})


async def cancel(rt: Runtime, task: Task) -> tuple[Task, str]:
    """Cancel a task that has not ended: it leaves its queue ("queue") or is canceled at DashScope first
    ("dashscope"); one canceled already is left as it is ("already"). ``TaskConflict`` when it is too late."""
    task_id = task.id
    if task.status == Status.QUEUED and await rt.store.transition(task_id, Status.CANCELED):
        return await rt.store.task(task_id) or task, "queue"
    task = await rt.store.task(task_id) or task
    if task.status == Status.SUBMITTED and task.awaiting_reason:
        # DashScope has ended it already (FAILED); its reason is being read.
        raise TaskConflict("too_late", "DashScope reported the task FAILED: it can no longer be canceled")
    if task.status == Status.SUBMITTED and task.ds_task_id:
        try:
            async with rt.reads.request():
                await rt.dashscope.cancel_task(task.ds_task_id)
        except DashScopeError as exc:
            if exc.retryable:
                raise Unavailable(
                    "dashscope_unavailable", f"DashScope could not be reached to cancel: {exc.code}"
                ) from None
            raise TaskConflict(
                "too_late", f"DashScope refused to cancel the task ({exc.code}): it is no longer PENDING"
            ) from None
        await rt.store.transition(task_id, Status.CANCELED, ds_status="CANCELED")
        return await rt.store.task(task_id) or task, "dashscope"
    if task.status == Status.CANCELED:
        return task, "already"
    raise TaskConflict("too_late", f"the task is {task.status}: it can no longer be canceled")


async def cancel_task(request: Request) -> Response:
    task, _ = await cancel(runtime(request), await load_task(request))
    return JSONResponse(task.public())


async def delete_task(request: Request) -> Response:
    """Delete a task and everything kept for it; one that has not ended is canceled first (as by cancel).

    A second DELETE of a task its caller deleted is answered as done (``already_deleted``), for a day.
    """
    caller = await authorize(request)
    rt = runtime(request)
    task_id = request.path_params["task_id"]
    task = await rt.store.task(task_id)
    removed: dict[str, Any] = {
        "from_queue": False,
        "canceled_at_dashscope": False,
        "task": False,
        "index_entries": 0,
        "change_stream": False,
        "callback_deliveries": 0,
        "video": False,
    }
    if task is None or task.owner != caller:
        gone = await rt.store.delete(task_id) if task is None else None
        if gone is not None and gone.outcome == "gone" and gone.detail == caller:
            # The tombstone says the caller deleted it: deleting twice is harmless.
            return JSONResponse({"id": task_id, "deleted": True, "already_deleted": True, "removed": removed})
        raise TaskNotFound(task_id)
    if not task.status.terminal:
        task, how = await cancel(rt, task)
        removed["from_queue"] = how == "queue"
        removed["canceled_at_dashscope"] = how == "dashscope"
    result = await rt.store.delete(task_id, owe_object=removals.owes_removal(rt.storage))
    if result.outcome == "active":
        raise TaskConflict(
            "too_late", f"the task is {result.detail}: it can be deleted once it has ended (its video is on its way)"
        )
    if result.outcome in ("missing", "gone"):
        # Deleted by another request (or retention) meanwhile.
        return JSONResponse({"id": task_id, "deleted": True, "already_deleted": True, "removed": removed})
    # The records went first: a failure from here on leaves a file no task names, never a task without its file;
    # an object the store could not remove now stays owed, and is removed once the store answers (removals.py).
    video = await removals.remove(rt.store, rt.storage, task_id)
    removed.update(
        task=True,
        index_entries=result.index_entries,
        change_stream=result.change_stream,
        callback_deliveries=result.deliveries,
        video=bool(video),
    )
    if video is None:
        removed["video_pending"] = True
    await rt.store.count("tasks_deleted")
    return JSONResponse({"id": task_id, "deleted": True, "already_deleted": False, "removed": removed})


async def get_video(request: Request) -> Response:
    task = await load_task(request)
    if task.status == Status.READY and not task.video and task.video_removed:
        raise VideoGone(
            f"the video was removed ({task.video_removed.get('reason')}): {task.video_removed.get('message')}"
        )
    if task.status != Status.READY or not task.video:
        raise TaskConflict("not_ready", f"the task is {task.status}: no video yet")
    # Where the task records its video decides, not this process's own storage setting: a task stored in
    # an object store is served from there, one stored on disk from the file.
    location = str(task.video["path"])
    if location.startswith("s3://"):
        storage = runtime(request).storage
        if not isinstance(storage, S3Storage) or not storage.holds(location):
            raise Unavailable(
                "object_store_not_configured",
                f"the video is in the object store {location.rpartition('/')[0]}/, which this process is not "
                "set up to read (WANHOOK_STORAGE_URL)",
            )
        return await object_video(request, storage, task, location)
    path = Path(location)
    if not path.exists():
        raise VideoGone("the stored video file is missing from the data directory")
    return FileResponse(path, media_type="video/mp4", filename=f"{task.id}.mp4", content_disposition_type="inline")


# What the object store's answer passes on to the client when wanhook streams the video itself.
PASSED_HEADERS = ("content-length", "content-range", "accept-ranges", "etag", "last-modified")


async def object_video(request: Request, storage: S3Storage, task: Task, location: str) -> Response:
    """A short-lived presigned URL to the object (302), or, with WANHOOK_S3_SERVE=stream, the object relayed
    through wanhook with the client's Range."""
    url = storage.presigned_location(location)
    if storage.config.serve == "redirect":
        return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})
    # A client waits: the store's answer within the request deadline (and each read of the body then too).
    client = httpx.AsyncClient(timeout=httpx.Timeout(storage.config.request_timeout))
    headers = {"Range": request.headers["range"]} if "range" in request.headers else {}
    try:
        upstream = await client.send(client.build_request("GET", url, headers=headers), stream=True)
    except httpx.HTTPError:
        await client.aclose()
        raise Unavailable("object_store_unreachable", "the object store did not answer") from None
    if upstream.status_code == 404:
        await upstream.aclose()
        await client.aclose()
        raise VideoGone("the stored video object is missing from the object store")
    if upstream.status_code not in (200, 206, 416):
        await upstream.aclose()
        await client.aclose()
        raise Unavailable("object_store_error", f"the object store answered HTTP {upstream.status_code}")

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await upstream.aclose()
            await client.aclose()

    passed = {name: upstream.headers[name] for name in PASSED_HEADERS if name in upstream.headers}
    passed["content-disposition"] = f'inline; filename="{task.id}.mp4"'
    return StreamingResponse(body(), status_code=upstream.status_code, headers=passed, media_type="video/mp4")


STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def open_stream(request: Request, caller: str) -> Subscription:
    """A slot for one more event stream of ``caller``; ``TooManyStreams`` past its token's cap or the process's."""
    try:
        return runtime(request).feed.subscribe(caller)
    except TooManyStreams as exc:
        await runtime(request).store.count(f"streams_refused|cap={'token' if exc.per_token else 'process'}")
        raise


class EventStream(StreamingResponse):
    """An SSE response that gives its stream's slot back however it ends: done, the client gone, or the
    server stopping (a body iterator never started would not run its own ``finally``)."""

    def __init__(self, content: AsyncIterator[str], subscription: Subscription) -> None:
        super().__init__(content, media_type="text/event-stream", headers=STREAM_HEADERS)
        self.subscription = subscription

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.subscription.close()


async def task_events(request: Request) -> Response:
    """Server-Sent Events: the current state, then every change, resumable with Last-Event-ID."""
    known = await load_task(request)
    store = runtime(request).store
    task_id = known.id
    given = [
        value
        for value in (request.headers.get("last-event-id"), request.query_params.get("last_event_id"))
        if value is not None
    ]
    if not all(_stream_id(value) for value in given):
        # Checked before the stream starts: once it has, a Redis error could only break the connection.
        raise InvalidInput(
            "invalid_last_event_id", "Last-Event-ID must be an id this stream sent, e.g. 1732536000000-0"
        )
    resume = given[0] if given else None
    subscription = await open_stream(request, known.owner)

    async def stream() -> AsyncIterator[str]:
        if resume:
            # Status first, then the stream's end: a task that had ended by then has nothing after its end.
            ended = (await store.task(task_id) or known).status.terminal
            newest = await runtime(request).store.newest_change_id(task_id)
            # An id past the end (never sent, or from a clock ahead) resumes at the end, not at that id,
            # which would skip whatever comes before it.
            after = resume if _id_order(resume) < _id_order(newest) else newest
            if ended and after == newest:
                # Nothing will follow: the final state once more, so that the client stops instead of
                # waiting (or reconnecting) for ever.
                yield _sse(newest, await store.get(task_id))
                return
        else:
            # The change stream's position first, then the task, shown in the state of that position:
            # a change in between follows as the next event.
            after, latest = await store.latest_change(task_id)
            task = await store.get(task_id)
            if task is not None and latest:
                task.update(status=latest["status"], updated_at=latest.get("at"))
            yield _sse(after, task)
            if task is None or Status(task["status"]).terminal:
                return
        await subscription.follow({task_id: after})
        while True:
            try:
                changes = await subscription.next(KEEPALIVE_SECONDS)
            except Ended:
                return  # too slow a reader: it reconnects and resumes from its Last-Event-ID
            if not changes:
                yield ": keep-alive\n\n"
                continue
            task = await runtime(request).feed.snapshot(task_id, changes[-1].entry_id, store.get)
            for change in changes:
                entry_id, fields = change.entry_id, change.fields
                snapshot = dict(task or {}, status=fields["status"], updated_at=fields.get("at"))
                if "bytes" in fields:
                    snapshot["progress"] = {"bytes": int(fields["bytes"]), "total": int(fields["total"] or 0) or None}
                    yield _sse(entry_id, snapshot, "task.progress")
                    continue
                snapshot.pop("progress", None)
                yield _sse(entry_id, snapshot)
                if Status(fields["status"]).terminal:
                    return

    return EventStream(stream(), subscription)


def _id_order(value: str) -> tuple[int, int]:
    milliseconds, _, sequence = value.partition("-")
    return int(milliseconds), int(sequence or 0)


def _stream_id(value: str) -> bool:
    """Whether ``value`` is a Redis stream id (``<ms>-<seq>``, or ``<ms>``), each part a 64-bit number."""
    parts = value.split("-")
    return 1 <= len(parts) <= 2 and all(
        part.isascii() and part.isdigit() and len(part) <= 20 and int(part) < 2**64 for part in parts
    )


def _sse(entry_id: str, task: dict[str, Any] | None, event: str | None = None) -> str:
    event = event or f"task.{(task or {}).get('status')}"
    return f"id: {entry_id}\nevent: {event}\ndata: {json.dumps(task)}\n\n"


def operator(request: Request) -> None:
    """The operator's routes (dead letters) take ``Authorization: Bearer <WANHOOK_OPERATOR_TOKEN>``, never a
    submitter's token: a dead letter names any submitter's task."""
    configured = runtime(request).settings.operator_token
    if configured is None:
        raise ApiError(403, "operator_disabled", "the operator's routes are off: WANHOOK_OPERATOR_TOKEN is not set")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), configured.encode()):
        raise ApiError(
            401,
            "unauthorized",
            "a valid 'Authorization: Bearer <operator token>' header is required",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def list_dead_letters(request: Request) -> Response:
    """The jobs given up after their attempts, newest first."""
    operator(request)
    kind = request.query_params.get("kind") or None
    if kind is not None and kind not in KINDS:
        raise InvalidField("kind", f"expected one of {', '.join(KINDS)}")
    raw_limit = request.query_params.get("limit", "100")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
        raise InvalidField("limit", "must be an integer from 1 to 1000")
    letters = await deadletters.listing(runtime(request).redis, kind, int(raw_limit))
    return JSONResponse({"dead_letters": letters})


async def replay_dead_letter(request: Request) -> Response:
    """Queue a dead letter's job again (its task opened again if the dead letter ended it)."""
    operator(request)
    letter = request.path_params["letter_id"]
    answer = await deadletters.replay(runtime(request).redis, letter)
    result = answer["result"]
    if result == "missing":
        raise ApiError(404, "dead_letter_not_found", f"no dead letter {letter!r}")
    if result == "gone":
        raise TaskConflict("task_gone", f"the task of dead letter {letter!r} has been deleted")
    if result == "ended":
        raise TaskConflict("task_ended", f"the task of dead letter {letter!r} has since ended {answer['status']}")
    return JSONResponse({"id": letter, "replayed": True, "job": answer["job"]})
