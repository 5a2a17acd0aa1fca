"""The client API: tasks, their video and their live state changes."""

from __future__ import annotations

import base64
import email.policy
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from .. import callbacks, removals
from ..errors import (
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
from ..feed import Ended, Subscription
from ..models import IMAGE_MAX_BYTES
from ..objectstore import S3Storage
from ..runtime import Runtime
from ..task import STATUSES, Status, Task
from ..validation import ALL_IMAGE_FIELDS, DATA_URL, check_image_bytes, check_task
from .responses import ApiError, parse_json, read_body, require_json

TASK_BODY_LIMIT = 64 * 1024
# A task with images may carry them as base64 data URLs: two (first and last frame) of at most 10 MB each,
# base64 adding a third. Other tasks keep TASK_BODY_LIMIT.
IMAGE_TASK_BODY_LIMIT = 2 * ((IMAGE_MAX_BYTES + 2) // 3 * 4) + 64 * 1024
# Images up to this many bytes are stored with the task and sent to DashScope as base64; larger ones are put
# in DashScope's temporary storage when the task is created, and only their oss:// URL is stored (Redis
# keeps tasks small, and a create carries no more than this inline).
INLINE_IMAGE_MAX = 1024 * 1024
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
    content_type = (request.headers.get("content-type") or "").lower()
    if content_type.startswith("multipart/form-data") and "boundary=" in content_type:
        document: Any = await read_form(request)  # its files are its images, whatever the body's size
    else:
        require_json(request)  # a multipart type without a boundary cannot be a form: 415 as before
        body = await read_body(request, IMAGE_TASK_BODY_LIMIT)
        too_large = ApiError(413, "body_too_large", f"the body is over the limit of {TASK_BODY_LIMIT} bytes")
        # Only a task with images may be larger: first by its text (before parsing), then by its fields.
        if len(body) > TASK_BODY_LIMIT and not any(f'"{name}"'.encode() in body for name in ALL_IMAGE_FIELDS):
            raise too_large
        document = parse_json(body)
        images = isinstance(document, dict) and any(isinstance(document.get(name), str) for name in ALL_IMAGE_FIELDS)
        if len(body) > TASK_BODY_LIMIT and not images:
            raise too_large
    fields = check_task(document, allow_private_callbacks=rt.settings.callback_allow_private)
    await _store_large_images(rt, fields)
    fields["owner"] = caller
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= 200:
        raise InvalidInput("invalid_idempotency_key", "Idempotency-Key must be 1 to 200 characters")
    scoped_key = f"{caller}:{key}" if key else None
    # QueueFull and IdempotencyKeyReused, decided with the write, are answered as they come.
    task_id = await rt.store.create(fields, scoped_key, max_queued=rt.settings.max_queued_per_token)
    task = await rt.store.get(task_id)
    return JSONResponse(task, status_code=202, headers={"Location": f"/v1/tasks/{task_id}"})


# multipart/form-data: the task's fields as form fields, images as files (or as URLs in the same fields).
FORM_INTEGERS = ("duration", "seed")
FORM_BOOLEANS = ("prompt_extend", "watermark", "audio")
FORM_JSON = ("callback", "metadata")
FORM_FILE_MAX = IMAGE_MAX_BYTES


async def read_form(request: Request) -> dict[str, Any]:
    """A ``POST /v1/tasks`` form as the JSON body it stands for: each image file becomes a base64 data URL,
    checked afterwards like any other (``check_task``)."""
    body = await read_body(request, IMAGE_TASK_BODY_LIMIT)
    head = b"Content-Type: " + request.headers["content-type"].encode("latin-1") + b"\r\n\r\n"
    message = BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart() or message.defects:
        raise ApiError(400, "invalid_form", "the body is not a valid multipart/form-data form")
    document: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(name, str) or not name or not isinstance(payload, bytes):
            raise ApiError(400, "invalid_form", "every part of the form needs a name and a body")
        if name in document:
            raise InvalidField(name, "is given more than once")
        if part.get_filename() is not None:  # a file: only the image fields take one
            if name not in ALL_IMAGE_FIELDS:
                raise InvalidField(name, f"takes no file; files go in {', '.join(ALL_IMAGE_FIELDS)}")
            check_image_bytes(name, payload)
            kind = part.get_content_type() if part.get_content_type().startswith("image/") else "image/jpeg"
            document[name] = f"data:{kind};base64,{base64.b64encode(payload).decode()}"
            continue
        try:
            value = payload.decode()
        except UnicodeDecodeError:
            raise InvalidField(name, "is not UTF-8 text") from None
        document[name] = _form_value(name, value)
    return document


def _form_value(name: str, value: str) -> Any:
    if name in FORM_INTEGERS:
        if len(value) > 20 or not value.strip().lstrip("-").isdigit():
            raise InvalidField(name, "must be an integer")
        return int(value)
    if name in FORM_BOOLEANS:
        if value not in ("true", "false"):
            raise InvalidField(name, "must be true or false")
        return value == "true"
    if name in FORM_JSON:
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            raise InvalidField(name, "must be JSON in a form") from None
    return value


async def _store_large_images(rt: Runtime, fields: dict[str, Any]) -> None:
    """Images over INLINE_IMAGE_MAX go to DashScope's temporary storage now; the task keeps their URL."""
    parameters = fields["parameters"]
    for name in ALL_IMAGE_FIELDS:
        match = DATA_URL.fullmatch(parameters.get(name) or "")
        if match is None or len(match.group(2)) * 3 // 4 <= INLINE_IMAGE_MAX:
            continue
        content_type = match.group(1)
        data = base64.b64decode(match.group(2))
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
    storage = runtime(request).storage
    if isinstance(storage, S3Storage):
        return await object_video(request, storage, task)
    path = Path(task.video["path"])
    if not path.exists():
        raise VideoGone("the stored video file is missing from the data directory")
    return FileResponse(path, media_type="video/mp4", filename=f"{task.id}.mp4", content_disposition_type="inline")


# What the object store's answer passes on to the client when wanhook streams the video itself.
PASSED_HEADERS = ("content-length", "content-range", "accept-ranges", "etag", "last-modified")


async def object_video(request: Request, storage: S3Storage, task: Task) -> Response:
    """A short-lived presigned URL to the object (302), or, with WANHOOK_S3_SERVE=stream, the object relayed
    through wanhook with the client's Range."""
    url = storage.presigned_url(task.id)
    if storage.config.serve == "redirect":
        return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})
    client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0))
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
