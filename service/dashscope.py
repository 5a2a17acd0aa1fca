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

from .errors import DashScopeError, RequestRejected, ServerError, Throttled, Unreachable

CREATE_PATH = "/services/aigc/video-generation/video-synthesis"


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
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, follow_redirects=False, transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        endpoint = (
            "create"
            if path == CREATE_PATH
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

    async def create_task(self, model: str, input: dict[str, Any], parameters: dict[str, Any]) -> CreatedTask:
        body = await self._request(
            "POST",
            CREATE_PATH,
            json={"model": model, "input": input, "parameters": parameters},
            headers={"X-DashScope-Async": "enable"},
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
