"""An async client for DashScope's video-synthesis and task APIs.

Errors are a small hierarchy (in ``errors.py``): every failure is a ``DashScopeError`` whose ``retryable``
says whether trying again later can help (throttling, server errors, network trouble) or not (the request
itself was refused).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ..core.errors import DashScopeError, RequestRejected, ServerError, Throttled, Unreachable

CREATE_PATH = "/services/aigc/video-generation/video-synthesis"
# First-and-last-frame models are created here instead (models.ENDPOINTS names the source).
IMAGE2VIDEO_PATH = "/services/aigc/image2video/video-synthesis"
CREATE_PATHS = (CREATE_PATH, IMAGE2VIDEO_PATH)
UPLOADS_PATH = "/uploads"
# A create naming an oss:// temporary file must ask DashScope to resolve it
# (https://www.alibabacloud.com/help/en/model-studio/get-temporary-file-url).
OSS_RESOLVE = {"X-DashScope-OssResourceResolve": "enable"}


@dataclass(frozen=True)
class CreatedTask:
    task_id: str
    task_status: str
    request_id: str | None


def error_from_response(response: httpx.Response) -> DashScopeError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return Unreachable(
            "InvalidResponse",
            f"HTTP {response.status_code} with a body that is not JSON",
            status_code=response.status_code,
        )
    code = str(body.get("code") or f"HTTP{response.status_code}")
    message = str(body.get("message") or response.reason_phrase)
    kwargs: dict[str, Any] = {"status_code": response.status_code, "request_id": body.get("request_id")}
    if response.status_code == 429 and code != "Throttling.AllocationQuota":
        return Throttled(code, message, **kwargs)
    if response.status_code >= 500:
        return ServerError(code, message, **kwargs)
    return RequestRejected(code, message, **kwargs)


class DashScopeClient:
    def __init__(
        self,
        api_key: str | None,
        base_url: str,
        *,
        timeout: float = 30.0,
        workspace: str | None = None,
        on_call: Callable[[str, str], Awaitable[None]] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``transport``, unless given, is httpx's own (which honours HTTPS_PROXY and the like: DashScope is
        a fixed public endpoint, reached as the host's other HTTPS clients reach it); a test gives an
        ``httpx.MockTransport``."""
        self.on_call = on_call  # (endpoint, status or error) after every call, for metrics
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {api_key or ''}"}
        if workspace:
            headers["X-DashScope-WorkSpace"] = workspace
        # ``transport`` replaces the network (tests answer with httpx.MockTransport).
        self._transport = transport
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, follow_redirects=False, transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        endpoint = (
            "create"
            if path in CREATE_PATHS
            else "upload"
            if path == UPLOADS_PATH
            else "cancel"
            if path.endswith("/cancel")
            else "list"
            if path == "/tasks/"
            else "read"
        )
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            await self._record(endpoint, "timeout")
            raise Unreachable("Timeout", f"{method} {path} timed out") from exc
        except httpx.HTTPError as exc:
            await self._record(endpoint, "connection_error")
            raise Unreachable("ConnectionError", f"{method} {path}: {type(exc).__name__}") from exc
        await self._record(endpoint, str(response.status_code))
        if response.status_code != 200:
            raise error_from_response(response)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise Unreachable("InvalidResponse", f"{method} {path} answered 200 with a body that is not JSON")
        return body

    async def _record(self, endpoint: str, status: str) -> None:
        if self.on_call is not None:
            try:
                await self.on_call(endpoint, status)
            except Exception:  # metrics must never fail a call
                pass

    async def create_task(
        self, model: str, input: dict[str, Any], parameters: dict[str, Any], *, path: str = CREATE_PATH
    ) -> CreatedTask:
        headers = {"X-DashScope-Async": "enable"}
        if any(isinstance(value, str) and value.startswith("oss://") for value in input.values()):
            headers.update(OSS_RESOLVE)
        body = await self._request(
            "POST",
            path,
            json={"model": model, "input": input, "parameters": parameters},
            headers=headers,
        )
        output = body.get("output")
        # Anything but DashScope's shape is an answer that cannot be used (as if none had come), not a crash.
        if not isinstance(output, dict) or not isinstance(output.get("task_id"), str) or not output["task_id"]:
            raise Unreachable("InvalidResponse", "create answered without output.task_id")
        status, request_id = output.get("task_status"), body.get("request_id")
        return CreatedTask(
            output["task_id"],
            status if isinstance(status, str) else "PENDING",
            request_id if isinstance(request_id, str) else None,
        )

    async def upload(self, model: str, name: str, data: bytes, content_type: str) -> str:
        """``data`` put in DashScope's temporary storage for ``model``: its oss:// URL, valid 48 hours.

        GET /uploads?action=getPolicy&model=..., then a form POST of the file to the policy's upload_host
        (https://www.alibabacloud.com/help/en/model-studio/get-temporary-file-url)."""
        body = await self._request("GET", UPLOADS_PATH, params={"action": "getPolicy", "model": model})
        policy = body.get("data") if isinstance(body.get("data"), dict) else body.get("output")
        if not isinstance(policy, dict) or not all(
            isinstance(policy.get(k), str) for k in ("upload_host", "upload_dir", "policy", "signature")
        ):
            raise Unreachable("InvalidResponse", "getPolicy answered without an upload policy")
        key = f"{policy['upload_dir']}/{name}"
        form = {
            "OSSAccessKeyId": str(policy.get("oss_access_key_id", "")),
            "Signature": policy["signature"],
            "policy": policy["policy"],
            "key": key,
            "x-oss-object-acl": str(policy.get("x_oss_object_acl", "private")),
            "x-oss-forbid-overwrite": str(policy.get("x_oss_forbid_overwrite", "true")),
            "success_action_status": "200",
            "x-oss-content-type": content_type,
        }
        try:
            # The upload host is OSS, not DashScope: no Authorization header goes there.
            async with httpx.AsyncClient(timeout=self.timeout, transport=self._transport) as oss:
                response = await oss.post(policy["upload_host"], data=form, files={"file": (name, data, content_type)})
        except httpx.HTTPError as exc:
            await self._record("upload", "connection_error")
            raise Unreachable("ConnectionError", f"upload to temporary storage: {type(exc).__name__}") from exc
        await self._record("upload", str(response.status_code))
        if response.status_code != 200:
            raise ServerError(
                "UploadFailed",
                f"temporary storage answered HTTP {response.status_code}",
                status_code=response.status_code,
            )
        return f"oss://{key}"

    async def get_task(self, task_id: str) -> dict[str, Any]:
        """The task's ``output`` (status, video_url or code/message), with ``request_id`` added."""
        body = await self._request("GET", f"/tasks/{task_id}")
        if not isinstance(body.get("output"), dict):
            raise Unreachable("InvalidResponse", f"GET /tasks/{task_id} answered without an output object")
        output = dict(body["output"])
        output.setdefault("task_id", task_id)
        output.setdefault("task_status", "UNKNOWN")
        output["request_id"] = body.get("request_id")
        return output

    async def list_tasks(self, **params: Any) -> dict[str, Any]:
        return await self._request("GET", "/tasks/", params={k: v for k, v in params.items() if v is not None})

    async def cancel_task(self, task_id: str) -> None:
        await self._request("POST", f"/tasks/{task_id}/cancel")


def reported_text(value: Any, limit: int | None = None) -> str:
    """A code or message of a task DashScope reports, as text: "" unless it is a string or a number,
    cut to ``limit`` characters when one is given (bounded as an event's are, keys.py)."""
    if isinstance(value, str | int | float) and not isinstance(value, bool) and value != "":
        return str(value)[:limit]
    return ""
