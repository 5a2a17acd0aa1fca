"""Every bad input gets the contract's error shape with the right status, and changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from wanhook.service.persistence import keys

from ..conftest import TOKEN, Stack

EVENT = {
    "specversion": "1.0",
    "id": "evt-1",
    "source": "acs.dashscope",
    "type": "dashscope:System:AsyncTaskFinish",
    "data": {
        "task_id": "ds-1",
        "task_status": "SUCCEEDED",
        "user_api_unique_key": "apikey:v1:aigc:video-generation:video-synthesis:wan2.2-t2v-plus",
    },
}


def snapshot(stack: Stack) -> dict[str, Any]:
    """Everything in Redis but the counters (which count refused requests on purpose)."""
    state = {}
    for key in sorted(stack.redis.keys("*")):
        if key == keys.COUNTERS or key.startswith("{wanhook}:rate:"):
            continue  # refused requests are counted, and take from their caller's rate, on purpose
        if key in (keys.WAKE, keys.CALLBACKS_WAKE) or key.startswith(keys.FEED_WAKE):
            continue  # a worker's wake-up signal, taken by the worker whenever it comes: no state of a task
        kind = stack.redis.type(key)
        state[key] = (
            stack.redis.hgetall(key)
            if kind == "hash"
            else stack.redis.xrange(key)
            if kind == "stream"
            else stack.redis.zrange(key, 0, -1)
            if kind == "zset"
            else stack.redis.get(key)
        )
    return state


def assert_error(response: Any, status: int, code: str, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    if field:
        assert error["field"] == field


@pytest.fixture
def quiet_stack(stack: Stack) -> Stack:
    stack.emulator.configure(render_seconds=60)
    # So that "changes nothing" is checked against a non-empty, settled store.
    stack.wait_status(stack.create("already here")["id"], "submitted")
    return stack


TASK_CASES = [
    ({"size": "832*480"}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": 42}, "prompt"),
    ({"prompt": "x" * 801}, "prompt"),
    ({"prompt": "p", "model": "wan9-t2v"}, "model"),
    ({"prompt": "p", "size": "1280*720"}, "size"),  # 720P is not a wan2.2 tier
    ({"prompt": "p", "size": "1080P"}, "size"),
    ({"prompt": "p", "duration": 10}, "duration"),
    ({"prompt": "p", "model": "wan2.6-t2v", "duration": 16}, "duration"),
    ({"prompt": "p", "seed": -1}, "seed"),
    ({"prompt": "p", "seed": "7"}, "seed"),
    ({"prompt": "p", "watermark": "yes"}, "watermark"),
    ({"prompt": "p", "negative_prompt": "n" * 501}, "negative_prompt"),
    ({"prompt": "p", "metadata": {"a": 1}}, "metadata"),
    ({"prompt": "p", "callback": {"url": "ftp://example.com/x"}}, "callback.url"),
    ({"prompt": "p", "callback": {"url": "http://127.0.0.1:9/x"}}, "callback.url"),
    ({"prompt": "p", "callback": {"url": "http://10.1.2.3/x"}}, "callback.url"),
    ({"prompt": "p", "callback": {"url": "https://example.com/x", "events": ["task.done"]}}, "callback.events"),
    ({"prompt": "p", "colour": "red"}, "colour"),
    # Text-to-video takes a size; resolution is image-to-video's.
    ({"prompt": "p", "resolution": "720P"}, "resolution"),
    # Parameters of newer models, sent to a model that does not take them or with a value none takes.
    ({"prompt": "p", "audio_url": "https://example.com/a.mp3"}, "audio_url"),
    ({"prompt": "p", "audio": False}, "audio"),  # image-to-video's switch; text-to-video has none
    ({"prompt": "p", "shot_type": "multi"}, "shot_type"),
    ({"prompt": "p", "model": "wan2.5-t2v-preview", "shot_type": "single"}, "shot_type"),
    ({"prompt": "p", "model": "wan2.6-t2v", "size": "1280*720", "shot_type": "many"}, "shot_type"),
    (
        {"prompt": "p", "model": "wan2.6-t2v", "size": "1280*720", "shot_type": "multi", "prompt_extend": False},
        "shot_type",
    ),
    ({"prompt": "p", "model": "wan2.6-t2v", "size": "1280*720", "audio": False}, "audio"),
    ({"prompt": "p", "model": "wan2.5-t2v-preview", "audio_url": "ftp://example.com/a.mp3"}, "audio_url"),
    ({"prompt": "p", "model": "wan2.5-t2v-preview", "audio_url": 7}, "audio_url"),
]


def test_bad_task_requests(quiet_stack: Stack) -> None:
    stack = quiet_stack
    before = snapshot(stack)
    for body, field in TASK_CASES:
        assert_error(stack.http.post("/v1/tasks", json=body), 422, "invalid_field", field)
    assert_error(stack.http.post("/v1/tasks", json=["prompt"]), 422, "invalid_body")
    assert_error(
        stack.http.post("/v1/tasks", content=b"{not json", headers={"content-type": "application/json"}),
        400,
        "invalid_json",
    )
    assert_error(
        stack.http.post(
            "/v1/tasks", content=b"prompt=x", headers={"content-type": "application/x-www-form-urlencoded"}
        ),
        415,
        "unsupported_media_type",
    )
    assert_error(stack.http.post("/v1/tasks", json={"prompt": "p" * 70_000}), 413, "body_too_large")
    assert_error(stack.http.get("/v1/tasks/nope"), 404, "task_not_found")
    assert_error(stack.http.get("/v1/tasks", params={"status": "done"}), 422, "invalid_field", "status")
    assert_error(stack.http.get("/v1/tasks", params={"limit": "0"}), 422, "invalid_field", "limit")
    assert_error(stack.http.post("/v1/tasks/nope/cancel"), 404, "task_not_found")
    assert_error(stack.http.get("/v1/nothing"), 404, "not_found")
    assert snapshot(stack) == before


def test_valid_edge_values_are_accepted(quiet_stack: Stack) -> None:
    task = quiet_stack.create("x" * 800, seed=2147483647, watermark=True, prompt_extend=False)
    assert task["parameters"] == {"size": "832*480", "seed": 2147483647, "watermark": True, "prompt_extend": False}
    wan26 = quiet_stack.create("p" * 1500, model="wan2.6-t2v", size="1280*720", duration=15)
    assert wan26["parameters"]["duration"] == 15
    default = quiet_stack.http.post("/v1/tasks", json={"prompt": "defaults"}).json()
    assert default["model"] == "wan2.2-t2v-plus" and default["parameters"]["size"] == "1920*1080"


def test_bad_pushes(quiet_stack: Stack) -> None:
    stack = quiet_stack
    before = snapshot(stack)
    headers = {"x-eventbridge-signature-token": TOKEN, "content-type": "application/json"}
    assert_error(stack.push(EVENT, token="wrong"), 401, "invalid_token")
    assert_error(stack.http.post("/v1/events/dashscope", json=EVENT), 401, "invalid_token")
    assert_error(stack.http.post("/v1/events/dashscope", content=b"{oops", headers=headers), 400, "invalid_json")
    assert_error(stack.http.post("/v1/events/dashscope", content=b"[1, 2]", headers=headers), 400, "invalid_event")
    assert_error(
        stack.http.post("/v1/events/dashscope", content=b'{"hello": "world"}', headers=headers), 400, "invalid_event"
    )
    for broken in (
        {**EVENT, "id": None},
        {**EVENT, "data": "text"},
        {**EVENT, "data": {**EVENT["data"], "task_status": "DONE"}},
        {**EVENT, "data": {**EVENT["data"], "task_id": 7}},
    ):
        assert_error(stack.push(broken), 400, "invalid_event")
    assert_error(
        stack.http.post(
            "/v1/events/dashscope", content=json.dumps(EVENT).encode(), headers={**headers, "content-type": "text/html"}
        ),
        415,
        "unsupported_media_type",
    )
    big = {**EVENT, "data": {**EVENT["data"], "padding": "x" * (256 * 1024)}}
    assert_error(stack.push(big), 413, "body_too_large")
    assert snapshot(stack) == before


def test_foreign_and_unknown_events_are_acknowledged(quiet_stack: Stack) -> None:
    stack = quiet_stack
    asr = {
        **EVENT,
        "id": "evt-asr",
        "data": {**EVENT["data"], "user_api_unique_key": "apikey:v1:audio:asr:transcription:paraformer-8k-v1"},
    }
    other = {**EVENT, "id": "evt-oss", "source": "acs.oss", "type": "oss:ObjectCreated:PutObject", "data": {}}
    unknown = {**EVENT, "id": "evt-unknown", "time": "2023-1-25T01:45:16.969Z"}  # the spec's malformed time
    assert stack.push(asr).json() == {"outcome": "ignored", "event_id": "evt-asr"}
    assert stack.push(other).json()["outcome"] == "ignored"
    assert stack.push(unknown).json()["outcome"] == "unknown_task"
    assert stack.push(unknown).json()["outcome"] == "duplicate"
    counters = stack.redis.hgetall("{wanhook}:counters")
    assert counters["events_ignored"] == "2" and counters["events_unknown_task"] == "1"
    assert counters["events_duplicate"] == "1"
    assert stack.redis.xlen("{wanhook}:events") == 4


def test_a_method_a_path_does_not_take_is_405_naming_those_it_does(stack: Stack) -> None:
    task_id = stack.create("here")["id"]
    for method, path, allowed in (
        # One path, two routes (a route per method): Allow names both, and HEAD with GET.
        ("DELETE", "/v1/tasks", "GET, HEAD, POST"),
        ("PUT", "/v1/tasks", "GET, HEAD, POST"),
        ("POST", f"/v1/tasks/{task_id}", "DELETE, GET, HEAD"),
        ("GET", f"/v1/tasks/{task_id}/cancel", "POST"),
        ("DELETE", f"/v1/tasks/{task_id}/video", "GET, HEAD"),
        ("GET", "/v1/events/dashscope", "POST"),
        ("POST", "/metrics", "GET, HEAD"),
        ("POST", "/openapi.json", "GET, HEAD"),
        # Static files answer 405 with no Allow of their own.
        ("POST", "/static/dashboard.css", "GET, HEAD"),
    ):
        response = stack.http.request(method, path)
        assert_error(response, 405, "method_not_allowed")
        assert response.headers["allow"] == allowed, (method, path)
    # Other errors carry no Allow.
    assert "allow" not in stack.http.get("/v1/nothing").headers
