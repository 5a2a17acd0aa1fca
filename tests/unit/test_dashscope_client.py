"""The DashScope client against ``httpx.MockTransport``: what it sends, and each answer mapped to a result or to
the right ``DashScopeError`` with the right ``retryable``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from wanhook.service.outbound.dashscope import (
    CREATE_PATH,
    CreatedTask,
    DashScopeClient,
    DashScopeError,
    RequestRejected,
    ServerError,
    Throttled,
    Unreachable,
)

BASE = "https://dashscope.test/api/v1"
Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, **kwargs: Any) -> DashScopeClient:
    return DashScopeClient("sk-test", BASE + "/", transport=httpx.MockTransport(handler), **kwargs)


def answer(status: int, body: object) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    return handler


async def test_create_sends_the_async_request_and_returns_the_task() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"output": {"task_id": "ds-1", "task_status": "PENDING"}, "request_id": "r-1"})

    ds = client(handler, workspace="ws-1")
    created = await ds.create_task("wan2.2-t2v-plus", {"prompt": "a fox"}, {"size": "832*480"})
    await ds.aclose()

    assert created == CreatedTask("ds-1", "PENDING", "r-1")
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == BASE + CREATE_PATH
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["x-dashscope-async"] == "enable"
    assert request.headers["x-dashscope-workspace"] == "ws-1"
    assert json.loads(request.content) == {
        "model": "wan2.2-t2v-plus",
        "input": {"prompt": "a fox"},
        "parameters": {"size": "832*480"},
    }


async def test_create_without_a_workspace_sends_no_workspace_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"output": {"task_id": "ds-1"}})

    ds = client(handler)
    created = await ds.create_task("wan2.2-t2v-plus", {"prompt": "a fox"}, {})
    await ds.aclose()
    assert "x-dashscope-workspace" not in seen[0].headers
    # No status or request id in the answer: PENDING, and no id.
    assert created == CreatedTask("ds-1", "PENDING", None)


@pytest.mark.parametrize(
    "body",
    [
        {"output": {}},
        {"output": {"task_id": ""}},
        {"output": {"task_id": 7}},
        {"output": "ds-1"},
        {"request_id": "r-1"},
    ],
)
async def test_create_answered_without_a_task_id_is_unreachable(body: object) -> None:
    ds = client(answer(200, body))
    with pytest.raises(Unreachable) as caught:
        await ds.create_task("wan2.2-t2v-plus", {"prompt": "a fox"}, {})
    await ds.aclose()
    assert caught.value.code == "InvalidResponse"
    assert caught.value.retryable


async def test_read_returns_the_output_with_the_request_id() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={
                "request_id": "r-2",
                "output": {"task_id": "ds-1", "task_status": "SUCCEEDED", "video_url": "https://oss.test/v.mp4"},
            },
        )

    ds = client(handler)
    output = await ds.get_task("ds-1")
    await ds.aclose()
    assert (seen[0].method, seen[0].url.path) == ("GET", "/api/v1/tasks/ds-1")
    assert output == {
        "task_id": "ds-1",
        "task_status": "SUCCEEDED",
        "video_url": "https://oss.test/v.mp4",
        "request_id": "r-2",
    }


async def test_read_fills_in_what_the_output_leaves_out() -> None:
    ds = client(answer(200, {"output": {}}))
    output = await ds.get_task("ds-9")
    await ds.aclose()
    assert output == {"task_id": "ds-9", "task_status": "UNKNOWN", "request_id": None}


async def test_read_without_an_output_object_is_unreachable() -> None:
    ds = client(answer(200, {"output": ["no"]}))
    with pytest.raises(Unreachable) as caught:
        await ds.get_task("ds-1")
    await ds.aclose()
    assert caught.value.code == "InvalidResponse"


async def test_cancel_posts_to_the_task() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"request_id": "r-3"})

    ds = client(handler)
    assert await ds.cancel_task("ds-1") is None
    await ds.aclose()
    assert (seen[0].method, seen[0].url.path) == ("POST", "/api/v1/tasks/ds-1/cancel")


# Every code of the spec's table (shared/spec/dashscope.md, "Error codes"): its HTTP status, the exception it
# becomes, and whether trying again can help.
DOCUMENTED = [
    (400, "InvalidParameter", RequestRejected, False),
    (400, "DataInspectionFailed", RequestRejected, False),
    (400, "IPInfringementSuspect", RequestRejected, False),
    (400, "Arrearage", RequestRejected, False),
    (400, "UnsupportedOperation", RequestRejected, False),
    (401, "InvalidApiKey", RequestRejected, False),
    (403, "AccessDenied", RequestRejected, False),
    (403, "AccessDenied.Unpurchased", RequestRejected, False),
    (404, "ModelNotFound", RequestRejected, False),
    (429, "Throttling", Throttled, True),
    (429, "Throttling.RateQuota", Throttled, True),
    (429, "Throttling.BurstRate", Throttled, True),
    (429, "Throttling.AllocationQuota", RequestRejected, False),  # used up: waiting does not help
    (500, "InternalError", ServerError, True),
    (500, "InternalError.Algo", ServerError, True),
    (500, "SystemError", ServerError, True),
    (500, "InternalError.Timeout", ServerError, True),
]


@pytest.mark.parametrize("status,code,kind,retryable", DOCUMENTED, ids=[row[1] for row in DOCUMENTED])
@pytest.mark.parametrize("call", ["create", "read", "cancel"])
async def test_each_documented_error_code(
    status: int, code: str, kind: type[DashScopeError], retryable: bool, call: str
) -> None:
    ds = client(answer(status, {"code": code, "message": f"said {code}", "request_id": "r-err"}))
    with pytest.raises(DashScopeError) as caught:
        if call == "create":
            await ds.create_task("wan2.2-t2v-plus", {"prompt": "a fox"}, {})
        elif call == "read":
            await ds.get_task("ds-1")
        else:
            await ds.cancel_task("ds-1")
    await ds.aclose()
    error = caught.value
    assert type(error) is kind
    assert error.retryable is retryable
    assert (error.code, error.message, error.status_code, error.request_id) == (code, f"said {code}", status, "r-err")


@pytest.mark.parametrize("status,kind", [(400, RequestRejected), (429, Throttled), (503, ServerError)])
async def test_an_error_without_a_code_is_named_by_its_status(status: int, kind: type[DashScopeError]) -> None:
    ds = client(answer(status, {}))
    with pytest.raises(kind) as caught:
        await ds.get_task("ds-1")
    await ds.aclose()
    assert caught.value.code == f"HTTP{status}"
    assert caught.value.message  # the reason phrase


@pytest.mark.parametrize("status", [200, 502])
async def test_a_body_that_is_not_json_is_unreachable(status: int) -> None:
    ds = client(lambda request: httpx.Response(status, text="<html>bad gateway</html>"))
    with pytest.raises(Unreachable) as caught:
        await ds.get_task("ds-1")
    await ds.aclose()
    assert caught.value.code == "InvalidResponse"
    assert caught.value.retryable


@pytest.mark.parametrize(
    "raised,code",
    [
        (httpx.ConnectTimeout("connect"), "Timeout"),
        (httpx.ReadTimeout("read"), "Timeout"),
        (httpx.ConnectError("refused"), "ConnectionError"),
        (httpx.RemoteProtocolError("closed"), "ConnectionError"),
    ],
)
async def test_timeouts_and_connection_errors_are_unreachable_and_retryable(raised: Exception, code: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise raised

    calls: list[tuple[str, str]] = []

    async def on_call(endpoint: str, status: str) -> None:
        calls.append((endpoint, status))

    ds = client(handler, on_call=on_call)
    with pytest.raises(Unreachable) as caught:
        await ds.create_task("wan2.2-t2v-plus", {"prompt": "a fox"}, {})
    await ds.aclose()
    assert caught.value.code == code
    assert caught.value.retryable
    assert calls == [("create", "timeout" if code == "Timeout" else "connection_error")]


async def test_every_call_is_recorded_by_endpoint_and_status() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/cancel"):
            return httpx.Response(400, json={"code": "UnsupportedOperation", "message": "too late"})
        if request.url.path.endswith("/tasks/"):
            return httpx.Response(200, json={"data": [], "total": 0})
        if request.method == "POST":
            return httpx.Response(200, json={"output": {"task_id": "ds-1"}})
        return httpx.Response(200, json={"output": {"task_status": "RUNNING"}})

    calls: list[tuple[str, str]] = []

    async def on_call(endpoint: str, status: str) -> None:
        calls.append((endpoint, status))

    ds = client(handler, on_call=on_call)
    await ds.create_task("wan2.2-t2v-plus", {"prompt": "a fox"}, {})
    await ds.get_task("ds-1")
    assert await ds.list_tasks(page_no=1, status=None) == {"data": [], "total": 0}
    with pytest.raises(RequestRejected):
        await ds.cancel_task("ds-1")
    await ds.aclose()
    assert calls == [("create", "200"), ("read", "200"), ("list", "200"), ("cancel", "400")]


async def test_a_failing_metrics_hook_never_fails_the_call() -> None:
    async def on_call(endpoint: str, status: str) -> None:
        raise RuntimeError("metrics store down")

    ds = client(answer(200, {"output": {"task_id": "ds-1"}}), on_call=on_call)
    assert (await ds.create_task("wan2.2-t2v-plus", {"prompt": "a fox"}, {})).task_id == "ds-1"
    await ds.aclose()


async def test_list_leaves_out_unset_parameters() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": []})

    ds = client(handler)
    await ds.list_tasks(page_no=2, status=None, model="wan2.2-t2v-plus")
    await ds.aclose()
    assert dict(seen[0].url.params) == {"page_no": "2", "model": "wan2.2-t2v-plus"}


async def test_a_redirect_is_not_followed() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(302, headers={"Location": "https://elsewhere.test/"}, json={"code": "Moved"})

    ds = client(handler)
    with pytest.raises(RequestRejected) as caught:
        await ds.get_task("ds-1")
    await ds.aclose()
    assert seen == ["/api/v1/tasks/ds-1"]
    assert caught.value.status_code == 302
