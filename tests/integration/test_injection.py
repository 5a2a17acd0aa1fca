"""The HTTP transports are parameters: a test gives an ``httpx.MockTransport`` where the runtime gives the real one."""

from __future__ import annotations

import json

import httpx
import pytest

from wanhook.service.outbound.dashscope import DashScopeClient, Throttled


async def test_the_dashscope_client_sends_through_the_transport_it_is_given() -> None:
    seen: list[httpx.Request] = []

    def dashscope(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/tasks/t-2"):
            return httpx.Response(429, json={"code": "Throttling", "message": "slow down", "request_id": "r-2"})
        return httpx.Response(200, json={"request_id": "r-1", "output": {"task_id": "t-1", "task_status": "PENDING"}})

    client = DashScopeClient(
        "sk-test-key", "https://dashscope.example/api/v1", transport=httpx.MockTransport(dashscope)
    )
    try:
        created = await client.create_task("wan2.2-t2v-plus", {"prompt": "a heron"}, {"size": "1280*720"})
        assert (created.task_id, created.task_status, created.request_id) == ("t-1", "PENDING", "r-1")
        with pytest.raises(Throttled) as throttled:
            await client.get_task("t-2")
        assert throttled.value.retryable and throttled.value.status_code == 429
        assert throttled.value.request_id == "r-2"
    finally:
        await client.aclose()
    create = seen[0]
    assert str(create.url) == "https://dashscope.example/api/v1/services/aigc/video-generation/video-synthesis"
    assert create.headers["authorization"] == "Bearer sk-test-key" and create.headers["x-dashscope-async"] == "enable"
    assert json.loads(create.content)["input"] == {"prompt": "a heron"}
