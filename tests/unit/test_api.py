"""The HTTP API in this process (Starlette's TestClient, a real Redis): status codes and the contract's error
body, ``{"error": {"code", "message"[, "field"]}}``, for each way a request can go wrong."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from wanhook.service.config import Settings
from wanhook.service.ingress.webhook import EVENT_BODY_LIMIT
from wanhook.service.runtime import Runtime
from wanhook.service.web.creates import TASK_BODY_LIMIT

from ..support import free_port
from .conftest import TOKEN, Api, MakeApi

TASK = {"prompt": "a red fox in fresh snow", "size": "832*480"}


def error_of(response: httpx.Response, status: int, code: str, field: str | None = None) -> str:
    """The error's message, once the answer is ``status`` with the contract's body naming ``code`` (and ``field``)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert error.get("field") == field
    assert set(error) == ({"code", "message", "field"} if field else {"code", "message"})
    assert isinstance(error["message"], str) and error["message"]
    return str(error["message"])


async def create(api: Api, body: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    response = await api.client.post("/v1/tasks", json=body or TASK, headers=headers)
    assert response.status_code == 202, response.text
    return dict(response.json())


async def test_a_task_created_and_read_back(api: Api) -> None:
    response = await api.client.post("/v1/tasks", json={**TASK, "metadata": {"order": "7"}})
    assert response.status_code == 202, response.text
    task = response.json()
    assert response.headers["location"] == f"/v1/tasks/{task['id']}"
    assert task["status"] == "queued"
    assert (task["model"], task["prompt"], task["metadata"]) == ("wan2.2-t2v-plus", TASK["prompt"], {"order": "7"})
    assert task["parameters"] == {"size": "832*480"}
    read = await api.client.get(f"/v1/tasks/{task['id']}")
    assert read.status_code == 200
    assert read.json() == task


async def test_a_request_id_is_echoed_or_made(api: Api) -> None:
    assert (await api.client.get("/healthz", headers={"x-request-id": "req-42"})).headers["x-request-id"] == "req-42"
    made = (await api.client.get("/healthz", headers={"x-request-id": "x" * 129})).headers["x-request-id"]
    assert made != "x" * 129 and len(made) == 32


async def test_health_readiness_metrics_and_the_document(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    assert (await api.client.get("/readyz")).json() == {"status": "ready"}
    metrics = await api.client.get("/metrics")
    assert metrics.status_code == 200 and "wanhook_" in metrics.text
    assert (await api.client.get("/openapi.json")).json()["openapi"].startswith("3.")


async def test_an_unknown_path_is_404(api: Api) -> None:
    error_of(await api.client.get("/v2/nothing"), 404, "not_found")


async def test_an_unknown_task_is_404(api: Api) -> None:
    assert "nope" in error_of(await api.client.get("/v1/tasks/nope"), 404, "task_not_found")
    error_of(await api.client.post("/v1/tasks/nope/cancel"), 404, "task_not_found")
    error_of(await api.client.get("/v1/tasks/nope/video"), 404, "task_not_found")
    error_of(await api.client.get("/v1/tasks/nope/events"), 404, "task_not_found")


@pytest.mark.parametrize(
    "method,path,allow",
    [
        ("DELETE", "/v1/tasks", "GET, HEAD, POST"),
        ("PUT", "/v1/tasks/abc", "DELETE, GET, HEAD"),
        ("GET", "/v1/tasks/abc/cancel", "POST"),
        ("POST", "/v1/tasks/abc/video", "GET, HEAD"),
        ("GET", "/v1/events/dashscope", "POST"),
    ],
)
async def test_a_method_the_path_does_not_take_is_405_with_allow(api: Api, method: str, path: str, allow: str) -> None:
    response = await api.client.request(method, path)
    error_of(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allow


async def test_a_body_over_the_limit_is_413(api: Api) -> None:
    big = json.dumps({**TASK, "prompt": "x" * TASK_BODY_LIMIT})
    error_of(
        await api.client.post("/v1/tasks", content=big, headers={"content-type": "application/json"}),
        413,
        "body_too_large",
    )


async def test_a_body_over_the_limit_without_a_length_is_413(api: Api) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(TASK_BODY_LIMIT // 1024 + 2):
            yield b" " * 1024

    response = await api.client.post("/v1/tasks", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    error_of(response, 413, "body_too_large")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
async def test_a_body_that_is_not_json_by_its_type_is_415(api: Api, content_type: str) -> None:
    response = await api.client.post("/v1/tasks", content=json.dumps(TASK), headers={"content-type": content_type})
    assert content_type in error_of(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("content", [b"{", b"", b"\xff\xfe", b'{"prompt": "\\ud800"}', b"[" * 60_000])
async def test_a_body_that_is_not_json_is_400(api: Api, content: bytes) -> None:
    error_of(
        await api.client.post("/v1/tasks", content=content, headers={"content-type": "application/json"}),
        400,
        "invalid_json",
    )


@pytest.mark.parametrize(
    "body,field",
    [
        ({"size": "832*480"}, "prompt"),
        ({**TASK, "size": "1*1"}, "size"),
        ({**TASK, "model": "wan9"}, "model"),
        ({**TASK, "seed": -1}, "seed"),
        ({**TASK, "callback": {"url": "http://127.0.0.1:9/"}}, "callback.url"),
        ({**TASK, "extra": True}, "extra"),
    ],
)
async def test_an_invalid_field_is_422_naming_it(api: Api, body: dict[str, Any], field: str) -> None:
    assert error_of(await api.client.post("/v1/tasks", json=body), 422, "invalid_field", field).startswith(f"{field}: ")


async def test_a_body_that_is_not_an_object_is_422(api: Api) -> None:
    error_of(await api.client.post("/v1/tasks", json=["a fox"]), 422, "invalid_body")


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "text/plain; x=json", "application/x-www-form-urlencoded"]
)
async def test_a_body_a_browser_may_send_anywhere_is_not_read_as_json(api: Api, content_type: str | None) -> None:
    """Types a page may send to another origin without a CORS preflight: 415, nothing created."""
    headers = {"content-type": content_type} if content_type else {}
    response = await api.client.post("/v1/tasks", content=json.dumps(TASK), headers=headers)
    assert content_type is not None or "content-type" not in response.request.headers
    error_of(response, 415, "unsupported_media_type")
    assert (await api.client.get("/v1/tasks")).json()["tasks"] == []


async def test_json_types_are_json(api: Api) -> None:
    for content_type in ("application/json", "application/json; charset=utf-8", "application/merge-patch+json"):
        response = await api.client.post("/v1/tasks", content=json.dumps(TASK), headers={"content-type": content_type})
        assert response.status_code == 202, (content_type, response.text)


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"origin": "http://127.0.0.1:8000"},  # another port: another origin
        {"origin": "null"},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
    ],
)
async def test_a_write_from_a_page_of_another_origin_is_refused(api: Api, headers: dict[str, str]) -> None:
    body = '--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na fox\r\n--b--\r\n'
    form = {**headers, "content-type": "multipart/form-data; boundary=b"}
    error_of(await api.client.post("/v1/tasks", content=body, headers=form), 403, "cross_site_request")
    error_of(await api.client.post("/v1/tasks", json=TASK, headers=headers), 403, "cross_site_request")
    assert (await api.client.get("/v1/tasks")).json()["tasks"] == []


async def test_the_own_origin_may_write(api: Api) -> None:
    host = api.client.base_url.netloc.decode()
    headers = {"origin": f"http://{host}", "sec-fetch-site": "same-origin"}
    assert (await api.client.post("/v1/tasks", json=TASK, headers=headers)).status_code == 202


async def test_an_idempotency_key_names_one_request(api: Api) -> None:
    first = await create(api, TASK, **{"Idempotency-Key": "k-1"})
    assert (await create(api, TASK, **{"Idempotency-Key": "k-1"}))["id"] == first["id"]
    other = await api.client.post("/v1/tasks", json={**TASK, "prompt": "a cat"}, headers={"Idempotency-Key": "k-1"})
    assert first["id"] in error_of(other, 422, "idempotency_key_reused")
    long = await api.client.post("/v1/tasks", json=TASK, headers={"Idempotency-Key": "k" * 201})
    error_of(long, 400, "invalid_idempotency_key")


async def test_listing_and_its_bad_parameters(api: Api) -> None:
    ids = [(await create(api))["id"] for _ in range(3)]
    page = (await api.client.get("/v1/tasks", params={"limit": 2})).json()
    assert len(page["tasks"]) == 2 and page["next_cursor"]
    rest = (await api.client.get("/v1/tasks", params={"limit": 2, "cursor": page["next_cursor"]})).json()
    assert sorted(task["id"] for task in page["tasks"] + rest["tasks"]) == sorted(ids)
    ready = (await api.client.get("/v1/tasks", params={"status": "ready"})).json()
    assert ready["tasks"] == []
    error_of(await api.client.get("/v1/tasks", params={"status": "done"}), 422, "invalid_field", "status")
    for limit in ("0", "101", "x", "-1"):
        error_of(await api.client.get("/v1/tasks", params={"limit": limit}), 422, "invalid_field", "limit")


async def test_a_queued_task_is_canceled_once_and_then_stays_canceled(api: Api) -> None:
    task = await create(api)
    canceled = await api.client.post(f"/v1/tasks/{task['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    again = await api.client.post(f"/v1/tasks/{task['id']}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "canceled"
    error_of(await api.client.get(f"/v1/tasks/{task['id']}/video"), 409, "not_ready")


async def submitted(api: Api) -> str:
    task_id = (await create(api))["id"]
    result = await api.runtime.store.mark_submitted(
        task_id, "ds-1", "PENDING", "r-1", slot_lease_ms=60_000, sweep_after_ms=60_000
    )
    assert result == "ok"
    return str(task_id)


async def test_a_submitted_task_is_canceled_at_dashscope(api: Api) -> None:
    seen: list[str] = []

    def dashscope(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        return httpx.Response(200, json={"request_id": "r-2"})

    api.answer_dashscope(dashscope)
    task_id = await submitted(api)
    response = await api.client.post(f"/v1/tasks/{task_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "canceled"
    assert seen == ["POST /api/v1/tasks/ds-1/cancel"]


@pytest.mark.parametrize(
    "status,code,expected_status,expected_code",
    [
        (400, "UnsupportedOperation", 409, "too_late"),
        (500, "InternalError", 503, "dashscope_unavailable"),
        (429, "Throttling", 503, "dashscope_unavailable"),
    ],
)
async def test_a_cancel_dashscope_refuses_or_cannot_answer(
    api: Api, status: int, code: str, expected_status: int, expected_code: str
) -> None:
    api.answer_dashscope(lambda request: httpx.Response(status, json={"code": code, "message": "no"}))
    task_id = await submitted(api)
    assert code in error_of(await api.client.post(f"/v1/tasks/{task_id}/cancel"), expected_status, expected_code)
    assert (await api.client.get(f"/v1/tasks/{task_id}")).json()["status"] == "submitted"


async def test_a_cancel_when_dashscope_times_out_is_503(api: Api) -> None:
    def dashscope(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    api.answer_dashscope(dashscope)
    task_id = await submitted(api)
    assert "Timeout" in error_of(await api.client.post(f"/v1/tasks/{task_id}/cancel"), 503, "dashscope_unavailable")


async def test_a_replay_without_callbacks_is_409(api: Api) -> None:
    task = await create(api)
    error_of(await api.client.post(f"/v1/tasks/{task['id']}/callbacks/replay"), 409, "no_callback")


@pytest.mark.parametrize("last_event_id", ["abc", "1-2-3", "1-", "-1", str(2**64)])
async def test_a_bad_last_event_id_is_400(api: Api, last_event_id: str) -> None:
    task = await create(api)
    response = await api.client.get(f"/v1/tasks/{task['id']}/events", headers={"last-event-id": last_event_id})
    error_of(response, 400, "invalid_last_event_id")


async def test_tokens_when_the_api_has_them(make_api: MakeApi) -> None:
    api = await make_api(WANHOOK_API_TOKENS="alpha,beta")
    response = await api.client.post("/v1/tasks", json=TASK)
    error_of(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    error_of(await api.client.get("/v1/tasks", headers={"authorization": "Bearer gamma"}), 401, "unauthorized")
    error_of(await api.client.get("/v1/tasks", headers={"authorization": "Basic alpha"}), 401, "unauthorized")
    task = await create(api, TASK, authorization="Bearer alpha")
    # Another token's task is not there for it; a read may carry its token in the query.
    error_of(
        await api.client.get(f"/v1/tasks/{task['id']}", headers={"authorization": "Bearer beta"}), 404, "task_not_found"
    )
    assert (await api.client.get(f"/v1/tasks/{task['id']}", params={"access_token": "alpha"})).status_code == 200
    # A write never may.
    error_of(
        await api.client.post(f"/v1/tasks/{task['id']}/cancel", params={"access_token": "alpha"}), 401, "unauthorized"
    )


async def test_over_the_request_rate_is_429(make_api: MakeApi) -> None:
    api = await make_api(WANHOOK_RATE_LIMIT="2")
    answers = [await api.client.get("/v1/tasks") for _ in range(3)]
    assert [answer.status_code for answer in answers[:2]] == [200, 200]
    error_of(answers[2], 429, "rate_limited")
    assert int(answers[2].headers["retry-after"]) >= 1


async def test_over_the_queued_cap_is_429(make_api: MakeApi) -> None:
    api = await make_api(WANHOOK_MAX_QUEUED_PER_TOKEN="1")
    await create(api)
    response = await api.client.post("/v1/tasks", json=TASK)
    assert "WANHOOK_MAX_QUEUED_PER_TOKEN is 1" in error_of(response, 429, "too_many_queued")
    assert response.headers["retry-after"] == "60"


async def push(api: Api, body: bytes | dict[str, Any], token: str = TOKEN, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await api.client.post(
        "/v1/events/dashscope",
        content=content,
        headers={"content-type": "application/json", "x-eventbridge-signature-token": token, **headers},
    )


EVENT = {
    "specversion": "1.0",
    "id": "ev-1",
    "source": "acs.dashscope",
    "type": "dashscope:System:AsyncTaskFinish",
    "data": {"task_id": "ds-unknown", "task_status": "SUCCEEDED"},
}


async def test_the_webhook_records_an_event_once(api: Api) -> None:
    first = await push(api, EVENT)
    assert first.status_code == 200, first.text
    assert first.json() == {"outcome": "unknown_task", "event_id": "ev-1"}
    assert (await push(api, EVENT)).json() == {"outcome": "duplicate", "event_id": "ev-1"}
    foreign = await push(api, {**EVENT, "id": "ev-2", "source": "acs.oss"})
    assert foreign.json() == {"outcome": "ignored", "event_id": "ev-2"}


async def test_the_webhook_refuses_a_push_without_the_token(api: Api) -> None:
    error_of(await push(api, EVENT, token="wrong"), 401, "invalid_token")
    error_of(await api.client.post("/v1/events/dashscope", json=EVENT), 401, "invalid_token")


@pytest.mark.parametrize(
    "body,code", [(b"{", "invalid_json"), (b'{"hello": 1}', "invalid_event"), (b"[]", "invalid_event")]
)
async def test_the_webhook_refuses_what_is_not_an_event(api: Api, body: bytes, code: str) -> None:
    error_of(await push(api, body), 400, code)


async def test_the_webhook_limits_and_content_type(api: Api) -> None:
    error_of(await push(api, b" " * (EVENT_BODY_LIMIT + 1)), 413, "body_too_large")
    error_of(await push(api, EVENT, **{"content-type": "text/plain"}), 415, "unsupported_media_type")


async def test_the_webhook_checks_signatures_when_asked(make_api: MakeApi) -> None:
    api = await make_api(WANHOOK_EVENTBRIDGE_VERIFY="signature")
    assert "missing signature header" in error_of(await push(api, EVENT), 401, "invalid_signature")


async def test_redis_unavailable_is_503(make_api: MakeApi, redis_url: str) -> None:
    # A Redis that went away after the start (nothing listens on its port now): the answer asks the caller to retry.
    settings = Settings.from_env({"WANHOOK_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    runtime = Runtime(settings, Redis.from_url(settings.redis_url or "", socket_connect_timeout=1))
    api = await make_api(runtime=runtime)
    for request in (
        api.client.get("/v1/tasks"),
        api.client.post("/v1/tasks", json=TASK),
        api.client.get("/v1/tasks/abc"),
        push(api, EVENT),
    ):
        response = await request
        error_of(response, 503, "redis_unavailable")
        assert response.headers["retry-after"] == "5"
    await runtime.close()


async def test_a_callback_url_with_a_newline_is_refused_and_nothing_is_created(api: Api) -> None:
    body = {**TASK, "callback": {"url": "https://hooks.example.com/in\n"}}
    response = await api.client.post("/v1/tasks", json=body)
    assert "whitespace or control" in error_of(response, 422, "invalid_field", "callback.url")
    assert (await api.client.get("/v1/tasks")).json()["tasks"] == []


async def test_the_dead_letter_routes_take_the_operator_token_only(make_api: MakeApi) -> None:
    closed = await make_api()
    error_of(await closed.client.get("/v1/dead-letters"), 403, "operator_disabled")
    api = await make_api(WANHOOK_OPERATOR_TOKEN="op-secret", WANHOOK_API_TOKENS=TOKEN)
    error_of(await api.client.get("/v1/dead-letters"), 401, "unauthorized")
    tenant = {"authorization": f"Bearer {TOKEN}"}
    error_of(await api.client.get("/v1/dead-letters", headers=tenant), 401, "unauthorized")
    operator = {"authorization": "Bearer op-secret"}
    listed = await api.client.get("/v1/dead-letters", headers=operator)
    assert listed.status_code == 200 and listed.json() == {"dead_letters": []}
    error_of(await api.client.get("/v1/dead-letters?kind=x", headers=operator), 422, "invalid_field", "kind")
    error_of(await api.client.get("/v1/dead-letters?limit=0", headers=operator), 422, "invalid_field", "limit")
    missing = await api.client.post("/v1/dead-letters/download:1-0/replay", headers=operator)
    error_of(missing, 404, "dead_letter_not_found")
    error_of(await api.client.post("/v1/dead-letters/nonsense/replay", headers=operator), 404, "dead_letter_not_found")
