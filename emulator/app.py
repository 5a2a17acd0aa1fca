"""Routes: DashScope's task API, the OSS objects, and the /_emulator/ knobs and counters."""

from __future__ import annotations

import asyncio
import base64
import email.policy
import hashlib
import json
import math
import time
import uuid
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import oss
from .clock import china_time, epoch_millis, parse_compact
from .eventbridge import CERT_PATH, USER_API_KEY_PREFIX
from .rules import (
    IMAGE_MODELS,
    LIST_PAGE_SIZE_DEFAULT,
    LIST_PAGE_SIZE_MAX,
    LIST_WINDOW_SECONDS,
    MODELS,
    OSS_RESOLVE_HEADER,
    PATHS,
    UPLOAD_BYTES_MAX,
    UPLOAD_TTL_SECONDS,
)
from .tasks import ApiError, Task, error, fetch_images, invalid, spec_of

UPLOAD_PATH = "/_oss_upload"  # the policy's upload_host: the emulator stands in for the OSS bucket too
IMAGE_FETCH_TIMEOUT = 10.0  # undocumented: how long DashScope waits for an image URL

if TYPE_CHECKING:
    from .server import Emulator

MAX_LIST_WINDOW = LIST_WINDOW_SECONDS


def build_app(emulator: Emulator) -> Starlette:
    app = Starlette(
        routes=[
            Route("/api/v1/services/aigc/{service}/video-synthesis", create, methods=["POST"]),
            Route("/api/v1/uploads", upload_policy),
            Route(UPLOAD_PATH, upload_file, methods=["POST"]),
            Route("/api/v1/tasks", list_tasks),
            Route("/api/v1/tasks/", list_tasks),
            Route("/api/v1/tasks/{task_id}", read_task),
            Route("/api/v1/tasks/{task_id}/cancel", cancel_task, methods=["POST"]),
            Route("/oss/{name}", video),
            Route(CERT_PATH, certificate),
            Route(CERT_PATH.rsplit("/", 1)[0] + "/{name:path}", certificate),
            Route("/_emulator/config", config, methods=["GET", "POST"]),
            Route("/_emulator/stats", stats),
            Route("/_emulator/reset", reset, methods=["POST"]),
            Route("/_emulator/tasks", all_tasks),
            Route("/_emulator/tasks/{task_id}/expire", expire, methods=["POST"]),
        ],
        exception_handlers={ApiError: api_error},
    )
    app.state.emulator = emulator
    # Signed pushes name the certificate this app serves, at the address the emulator listens on once started.
    emulator.bus.signer.certificate_url = lambda: emulator.base_url + CERT_PATH
    return app


def _emulator(request: Request) -> Emulator:
    return request.app.state.emulator


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    body = {"code": exc.code, "message": exc.message, "request_id": str(uuid.uuid4())}
    return JSONResponse(body, exc.status)


def _api_key(request: Request) -> str:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise error("InvalidApiKey")
    return key.strip()


async def create(request: Request) -> Response:
    emulator = _emulator(request)
    service = request.path_params["service"]
    if service not in PATHS.values():
        return JSONResponse({"code": "NotFound", "message": "Not Found"}, 404)
    emulator.stats.creates += 1
    api_key = _api_key(request)
    if request.headers.get("x-dashscope-async", "").lower() != "enable":
        raise error("AccessDenied")
    # The whole request is read before any answer, an injected fault's too, as a server in front of
    # DashScope reads it: the kept-alive connection then holds nothing of it for the next call.
    raw = await request.body()
    fault = emulator.config.create_errors.pop(0) if emulator.config.create_errors else None
    if fault is not None and _faulty(fault) and not fault.get("land"):
        answer = await _injected(fault)  # nothing is created
        if answer is not None:
            return answer
    try:
        body = json.loads(raw)
    except ValueError:
        raise invalid("The request body is not valid JSON.") from None
    request_id = str(uuid.uuid4())
    if emulator.config.create_land_delay_seconds:
        await asyncio.sleep(emulator.config.create_land_delay_seconds)
    resolve = request.headers.get(OSS_RESOLVE_HEADER, "").lower() == "enable"
    images = await fetch_images(body, service, resolve, emulator.uploads, _download)
    task = emulator.tasks.create(body, api_key, request_id, path=service, images=images)
    if emulator.config.early_events:
        await task.settled.wait()
    if emulator.config.create_answer_delay_seconds:
        # The task exists; its answer is late (a client that gave up cannot tell whether it landed).
        await asyncio.sleep(emulator.config.create_answer_delay_seconds)
    if fault is not None:
        # The task exists; its answer is late, broken or an error all the same.
        answer = await _injected(fault)
        if answer is not None:
            return answer
    return JSONResponse({"output": {"task_status": "PENDING", "task_id": task.id}, "request_id": request_id})


async def _download(url: str) -> bytes:
    """An image URL, as DashScope downloads it (at most the largest image it takes)."""
    import httpx

    async with (
        httpx.AsyncClient(timeout=IMAGE_FETCH_TIMEOUT, follow_redirects=True) as client,
        client.stream("GET", url) as response,
    ):
        response.raise_for_status()
        data = bytearray()
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) > UPLOAD_BYTES_MAX:
                raise ValueError("too large")
        return bytes(data)


async def upload_policy(request: Request) -> Response:
    """GET /api/v1/uploads?action=getPolicy&model=...: a form-upload policy (rules, UPLOAD)."""
    emulator = _emulator(request)
    api_key = _api_key(request)
    emulator.stats.upload_policies += 1
    params = request.query_params
    if params.get("action") != "getPolicy":
        raise invalid("action must be getPolicy")
    model = params.get("model", "")
    try:
        spec_of(model)
    except KeyError:
        raise error("ModelNotFound") from None
    directory = f"dashscope-instant/{hashlib.sha256(api_key.encode()).hexdigest()[:16]}/{uuid.uuid4().hex}"
    policy = base64.b64encode(json.dumps({"model": model, "dir": directory}).encode()).decode()
    data = {
        "policy": policy,
        "signature": emulator.bucket.sign_text(policy),
        "upload_dir": directory,
        "upload_host": emulator.base_url + UPLOAD_PATH,
        "expire_in_seconds": 300,
        "max_file_size_mb": UPLOAD_BYTES_MAX >> 20,
        "capacity_limit_mb": 999999999,
        "oss_access_key_id": oss.ACCESS_KEY_ID,
        "x_oss_object_acl": "private",
        "x_oss_forbid_overwrite": "true",
    }
    # The documentation's sample reads "data"; the official SDK reads "output": both carry the policy.
    return JSONResponse({"request_id": str(uuid.uuid4()), "data": data, "output": data})


async def upload_file(request: Request) -> Response:
    """The form upload to upload_host: the file is kept as oss://<key> for the policy's model."""
    emulator = _emulator(request)
    body = await request.body()
    if len(body) > UPLOAD_BYTES_MAX + (1 << 20):
        return oss.error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size.")
    message = BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + request.headers.get("content-type", "").encode() + b"\r\n\r\n" + body
    )
    form: dict[str, bytes] = {}
    if message.is_multipart():
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                form[name] = payload
    policy, key, data = form.get("policy", b"").decode(), form.get("key", b"").decode(), form.get("file")
    if data is None or not key or form.get("Signature", b"").decode() != emulator.bucket.sign_text(policy):
        return oss.error(403, "AccessDenied", "Invalid according to Policy: Policy Condition failed.")
    stated = json.loads(base64.b64decode(policy))
    if not key.startswith(stated["dir"] + "/"):
        return oss.error(403, "AccessDenied", "Invalid according to Policy: Policy Condition failed.")
    emulator.uploads[key] = (stated["model"], data, time.time() + UPLOAD_TTL_SECONDS)
    return Response(status_code=200)


def _faulty(fault: dict[str, Any]) -> bool:
    """Whether an injected fault answers with an error or a raw body (else: DashScope's answer, late)."""
    return bool(fault.keys() & {"status", "code", "message", "body"})


async def _injected(fault: dict[str, Any]) -> Response | None:
    """The fault's answer after its delay; None when it only delays DashScope's own answer."""
    await asyncio.sleep(float(fault.get("delay_seconds", 0)))
    status = int(fault.get("status", 500))
    if "body" in fault:
        return Response(fault["body"], status, media_type=fault.get("content_type", "text/html"))
    if _faulty(fault):
        raise ApiError(status, fault.get("code", "InternalError"), fault.get("message", ""))
    return None


async def read_task(request: Request) -> Response:
    emulator = _emulator(request)
    _api_key(request)
    task_id = request.path_params["task_id"]
    emulator.stats.reads += 1
    emulator.stats.reads_by_task[task_id] = emulator.stats.reads_by_task.get(task_id, 0) + 1
    emulator.tasks.admit_query()
    if emulator.config.read_errors:
        answer = await _injected(emulator.config.read_errors.pop(0))
        if answer is not None:
            return answer
    task = emulator.tasks.by_id.get(task_id)
    body: dict[str, Any] = {"request_id": str(uuid.uuid4())}
    if task is None:
        body["output"] = {"task_id": task_id, "task_status": "UNKNOWN"}
        return JSONResponse(body)
    body["output"] = _output(task)
    if body["output"]["task_status"] == "SUCCEEDED":
        body["usage"] = _usage(task)
    return JSONResponse(body)


def _output(task: Task) -> dict[str, Any]:
    status = task.visible_status()
    output: dict[str, Any] = {"task_id": task.id, "task_status": status}
    if status == "UNKNOWN":
        return output
    output["submit_time"] = china_time(task.submit_time)
    if task.scheduled_time is not None:
        output["scheduled_time"] = china_time(task.scheduled_time)
    if task.end_time is not None:
        output["end_time"] = china_time(task.end_time)
    if status == "SUCCEEDED":
        output["orig_prompt"] = task.prompt
        # The rewritten prompt, where the model reports one (not wan2.6: rules, Model.returns_actual_prompt).
        if task.prompt_extend and (task.model in IMAGE_MODELS or MODELS[task.model].returns_actual_prompt):
            output["actual_prompt"] = task.prompt
        output["video_url"] = task.video_url
    elif status == "FAILED":
        output["code"], output["message"] = task.code, task.message
    return output


def _usage(task: Task) -> dict[str, Any]:
    if task.model in MODELS and MODELS[task.model].usage == "wan2.6":
        short_side = min(int(side) for side in task.size.split("*"))
        return {
            "duration": task.duration,
            "size": task.size,
            "SR": short_side,
            "input_video_duration": 0,
            "output_video_duration": task.duration,
            "video_count": 1,
        }
    return {"video_duration": task.duration, "video_ratio": task.size, "video_count": 1}


async def list_tasks(request: Request) -> Response:
    emulator = _emulator(request)
    _api_key(request)
    emulator.stats.lists += 1
    emulator.tasks.admit_query()
    params = request.query_params
    try:
        zone = emulator.config.list_time_zone
        start = parse_compact(params["start_time"], zone) if params.get("start_time") else None
        # Without end_time: the 24 hours after start_time, or the last 24 hours (rules, LIST_WINDOW_SECONDS).
        end = (
            parse_compact(params["end_time"], zone)
            if params.get("end_time")
            else (time.time() if start is None else start + MAX_LIST_WINDOW)
        )
        start = end - MAX_LIST_WINDOW if start is None else start
        page_no, page_size = int(params.get("page_no", 1)), int(params.get("page_size", LIST_PAGE_SIZE_DEFAULT))
    except ValueError:
        raise invalid("start_time and end_time are YYYYMMDDhhmmss; page_no and page_size are integers") from None
    if not 0 <= end - start <= MAX_LIST_WINDOW:
        raise invalid("The time window from start_time to end_time must be at most 24 hours.")
    if page_no < 1 or not 1 <= page_size <= LIST_PAGE_SIZE_MAX:
        raise invalid(f"page_no must be at least 1 and page_size from 1 to {LIST_PAGE_SIZE_MAX}")
    found = [
        task
        for task in sorted(emulator.tasks.by_id.values(), key=lambda task: task.submit_time, reverse=True)
        if start <= task.submit_time <= end
        and params.get("model_name") in (None, "", task.model)
        and params.get("status") in (None, "", task.visible_status())
    ]
    page = found[(page_no - 1) * page_size : page_no * page_size]
    return JSONResponse(
        {
            "total": len(found),
            "total_page": math.ceil(len(found) / page_size),
            "page_no": page_no,
            "page_size": page_size,
            "request_id": str(uuid.uuid4()),
            "data": [_listed(task, emulator.config.region, emulator.config.account_id) for task in page],
        }
    )


def _listed(task: Task, region: str, account_id: str) -> dict[str, Any]:
    listed = {
        "task_id": task.id,
        "status": task.visible_status(),
        "model_name": task.model,
        "region": region,
        "request_id": task.request_id,
        "api_key_id": task.api_key_id,
        # One account, no RAM users: the caller is the main account.
        "caller_uid": account_id,
        "caller_parent_id": account_id,
        "gmt_create": epoch_millis(task.submit_time),
        "start_time": epoch_millis(task.scheduled_time),
        "end_time": epoch_millis(task.end_time),
        "user_api_unique_key": USER_API_KEY_PREFIX + task.model,
    }
    # A time that has not happened yet is left out, as in the documented RUNNING item without end_time.
    return {name: value for name, value in listed.items() if value is not None}


async def cancel_task(request: Request) -> Response:
    emulator = _emulator(request)
    _api_key(request)
    emulator.stats.cancels += 1
    emulator.tasks.admit_query()
    emulator.tasks.cancel(request.path_params["task_id"])
    return JSONResponse({"request_id": str(uuid.uuid4())})


async def video(request: Request) -> Response:
    emulator = _emulator(request)
    emulator.stats.video_requests += 1
    name = request.path_params["name"]
    refusal = emulator.bucket.refuse(name, request)
    if refusal is not None:
        return refusal
    task = emulator.tasks.by_id.get(name.removesuffix(".mp4"))
    if task is None or task.video is None:
        return oss.error(404, "NoSuchKey", "The specified key does not exist.")
    if task.visible_status() == "UNKNOWN":
        return oss.expired(int(time.time()))
    data = None if task.video.length > oss.IN_MEMORY_MAX else emulator.videos.body(task.video)
    return oss.serve(request, task.video, data, emulator.config, emulator.stats)


async def certificate(request: Request) -> Response:
    """The certificate of the key that signs the HTTP pushes, as EventBridge serves its own from OSS; any other
    name beside it is 404 (counted too: tests see which fetches wanhook made)."""
    emulator = _emulator(request)
    emulator.stats.certificate_requests += 1
    if request.url.path != CERT_PATH:
        return Response(status_code=404)
    return Response(emulator.bus.signer.certificate_pem, media_type="application/x-pem-file")


async def config(request: Request) -> Response:
    emulator = _emulator(request)
    if request.method == "POST":
        try:
            emulator.config.update(json.loads(await request.body() or b"{}"))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        emulator.tasks.reschedule()
    return JSONResponse(emulator.config.knobs())


async def stats(request: Request) -> Response:
    emulator = _emulator(request)
    return JSONResponse({**emulator.stats.as_dict(), "running_now": emulator.tasks.running_now()})


async def reset(request: Request) -> Response:
    emulator = _emulator(request)
    emulator.reset_stats()
    return await stats(request)


async def all_tasks(request: Request) -> Response:
    tasks = _emulator(request).tasks.by_id.values()
    return JSONResponse({"tasks": [_inspected(task) for task in tasks]})


def _inspected(task: Task) -> dict[str, Any]:
    return {
        "task_id": task.id,
        "status": task.visible_status(),
        "model": task.model,
        "kind": task.kind,
        "resolution": task.resolution,
        "prompt": task.prompt,
        "negative_prompt": task.negative_prompt,
        "size": task.size,
        "duration": task.duration,
        "seed": task.seed,
        "prompt_extend": task.prompt_extend,
        "watermark": task.watermark,
        "audio_url": task.audio_url,
        "sound": task.sound,
        "shot_type": task.shot_type,
        "request_id": task.request_id,
        "submit_time": task.submit_time,
        "scheduled_time": task.scheduled_time,
        "end_time": task.end_time,
        "code": task.code,
        "message": task.message,
        "video_url": task.video_url,
        "expired": task.expired,
    }


async def expire(request: Request) -> Response:
    task = _emulator(request).tasks.expire(request.path_params["task_id"])
    if task is None:
        return JSONResponse({"error": "no such task"}, 404)
    return JSONResponse(_inspected(task))
