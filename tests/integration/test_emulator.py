"""The emulator against real HTTP: a `python -m emulator` process, a webhook receiver, the official SDK."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import av
import dashscope
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from wanhook.emulator import Emulator, EmulatorConfig, RocketMQTarget
from wanhook.emulator.rules import LIST_FIELDS

ROOT = Path(__file__).resolve().parents[2]
MODEL = "wan2.2-t2v-plus"
SIZE = "832*480"
PROMPT = "a kitten running under the moon"
TOKEN = "test-token"
# The tests poll a lot and reuse one model: only the tests about limits keep DashScope's.
UNLIMITED = {MODEL: {"rps": 1000, "running": 100}}
CREATE = "/api/v1/services/aigc/video-generation/video-synthesis"
CHINA_MS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$")
CHINA_S = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
UTC_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Receiver:
    """An EventBridge HTTP target on loopback that records every push and can refuse the next few."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.pushes: list[dict[str, Any]] = []
        self.refuse_next = 0
        app = Starlette(routes=[Route("/{path}", self._push, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, port=self.port, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    async def _push(self, request: Request) -> Response:
        refused = self.refuse_next > 0
        self.refuse_next -= refused
        body = json.loads(await request.body())
        self.pushes.append(
            {"path": request.url.path, "headers": dict(request.headers), "body": body, "ok": not refused}
        )
        return Response(status_code=500 if refused else 200)

    def for_task(self, task_id: str, ok: bool | None = True) -> list[dict[str, Any]]:
        def task_of(body: dict[str, Any]) -> str:
            return (body.get("data") or body)["task_id"]

        return [p for p in self.pushes if task_of(p["body"]) == task_id and ok in (None, p["ok"])]

    def __enter__(self) -> Receiver:
        self._thread.start()
        wait_for(lambda: self._server.started, what="the receiver")
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)


def start_emulator(port: int, *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "wanhook.emulator", "--port", str(port), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert f"listening on http://127.0.0.1:{port}" in line, line
    return process


class Client:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)
        self.api = base_url + "/api/v1"

    def create(self, prompt: str = PROMPT, model: str = MODEL, headers: dict[str, str] | None = None, **params: Any):
        body = {"model": model, "input": {"prompt": prompt}, "parameters": {"size": SIZE, **params}}
        sent = {"Authorization": "Bearer sk-test", "X-DashScope-Async": "enable", **(headers or {})}
        return self.http.post(CREATE, json=body, headers=sent)

    def submit(self, prompt: str = PROMPT, model: str = MODEL, **params: Any) -> str:
        response = self.create(prompt, model, **params)
        assert response.status_code == 200, response.text
        return response.json()["output"]["task_id"]

    def read(self, task_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/tasks/{task_id}", headers={"Authorization": "Bearer sk-test"})
        assert response.status_code == 200, response.text
        return response.json()

    def wait(self, task_id: str, *statuses: str) -> dict[str, Any]:
        statuses = statuses or ("SUCCEEDED",)
        return wait_for(
            lambda: (body := self.read(task_id))["output"]["task_status"] in statuses and body, what=statuses
        )

    def knobs(self, **changes: Any) -> dict[str, Any]:
        response = self.http.post("/_emulator/config", json=changes)
        assert response.status_code == 200, response.text
        return response.json()

    def stats(self) -> dict[str, Any]:
        return self.http.get("/_emulator/stats").json()

    def tasks(self) -> dict[str, dict[str, Any]]:
        return {task["task_id"]: task for task in self.http.get("/_emulator/tasks").json()["tasks"]}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def client(receiver: Receiver) -> Iterator[Client]:
    port = free_port()
    args = ["--render-seconds", "0.2", "--webhook-url", receiver.url, "--webhook-token", TOKEN]
    process = start_emulator(port, *args)
    client = Client(f"http://127.0.0.1:{port}")
    yield client
    client.http.close()
    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 0


def default_knobs(receiver: Receiver) -> dict[str, Any]:
    return {
        "render_seconds": 0.2,
        "url_ttl_seconds": 3600,
        "duplicate_events": 0,
        "event_delay_seconds": 0,
        "early_events": False,
        "drop_events": False,
        "create_errors": [],
        "break_downloads": 0,
        "break_after_bytes": None,
        "ignore_range": False,
        "push_retry_delays": [0.05, 0.05, 0.05],
        "enforce_limits": True,
        "limits": UNLIMITED,
        "query_qps": 1000,
        "webhook_targets": [{"url": receiver.url, "token": TOKEN, "body": "original"}],
    }


@pytest.fixture(autouse=True)
def defaults(request: pytest.FixtureRequest) -> None:
    if "client" in request.fixturenames:
        receiver: Receiver = request.getfixturevalue("receiver")
        receiver.refuse_next = 0
        request.getfixturevalue("client").knobs(**default_knobs(receiver))


@pytest.fixture(scope="module")
def finished(client: Client, receiver: Receiver) -> dict[str, Any]:
    """One SUCCEEDED task and its video, shared by the download tests."""
    client.knobs(**default_knobs(receiver))  # made before the per-test defaults apply
    task_id = client.submit()
    body = client.wait(task_id)
    response = httpx.get(body["output"]["video_url"])
    assert response.status_code == 200
    return {"id": task_id, "url": body["output"]["video_url"], "body": response.content, "headers": response.headers}


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert set(body) == {"code", "message", "request_id"}
    return response.status_code, body["code"], body["message"]


@pytest.mark.parametrize(
    ("change", "status", "code", "mentions"),
    [
        ({"headers": {"Authorization": ""}}, 401, "InvalidApiKey", "API-key"),
        ({"headers": {"Authorization": "Bearer"}}, 401, "InvalidApiKey", "API-key"),
        ({"headers": {"X-DashScope-Async": ""}}, 403, "AccessDenied", "does not support synchronous calls"),
        ({"model": "wan9-t2v"}, 404, "ModelNotFound", ""),
        ({"prompt": ""}, 400, "InvalidParameter", "prompt"),
        ({"size": "1280*720"}, 400, "InvalidParameter", "size"),
        ({"size": "1080P"}, 400, "InvalidParameter", "size"),
        ({"duration": 10}, 400, "InvalidParameter", "duration"),
        ({"seed": -1}, 400, "InvalidParameter", "seed"),
        ({"seed": 2147483648}, 400, "InvalidParameter", "seed"),
        ({"prompt": "a [blocked] cat"}, 400, "DataInspectionFailed", ""),
    ],
)
def test_create_refusals(client: Client, change: dict[str, Any], status: int, code: str, mentions: str) -> None:
    response = client.create(**{"prompt": PROMPT, **change})
    assert error_of(response)[:2] == (status, code)
    assert mentions in error_of(response)[2]


def test_long_prompts_are_truncated_not_refused(client: Client) -> None:
    """DashScope cuts an over-long prompt or negative_prompt to the model's limit (emulator/rules.py)."""
    body = {
        "model": MODEL,
        "input": {
            "prompt": "p" * 801,
            "negative_prompt": "x" * 501,
            "extend_prompt": True,
            "function": "video-synthesis",
        },
        "parameters": {"size": SIZE},
    }
    headers = {"Authorization": "Bearer k", "X-DashScope-Async": "enable"}
    response = client.http.post(CREATE, json=body, headers=headers)
    assert response.status_code == 200, response.text
    task_id = response.json()["output"]["task_id"]
    record = next(task for task in client.http.get("/_emulator/tasks").json()["tasks"] if task["task_id"] == task_id)
    assert record["prompt"] == "p" * 800 and record["negative_prompt"] == "x" * 500


def create_body(model: str, given: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    return {"model": model, "input": {"prompt": PROMPT, **given}, "parameters": parameters}


@pytest.mark.parametrize(
    ("model", "given", "parameters", "status", "mentions"),
    [
        # emulator/rules.py: audio_url for wan2.5 and wan2.6 only, shot_type for wan2.6 only; resolution and
        # audio are image-to-video's.
        ("wan2.2-t2v-plus", {"audio_url": "https://example.com/a.mp3"}, {"size": SIZE}, 400, "audio_url"),
        ("wan2.1-t2v-turbo", {}, {"size": SIZE, "audio": False}, 400, "audio"),
        ("wan2.6-t2v", {}, {"size": "1280*720", "audio": False}, 400, "audio"),
        ("wan2.5-t2v-preview", {}, {"size": SIZE, "shot_type": "multi"}, 400, "shot_type"),
        ("wan2.6-t2v", {}, {"size": "1280*720", "resolution": "720P"}, 400, "resolution"),
        ("wan2.6-t2v", {}, {"size": "1280*720", "shot_type": "triple"}, 400, "shot_type"),
        ("wan2.6-t2v", {"audio_url": "file:///a.mp3"}, {"size": "1280*720"}, 400, "audio_url"),
        ("wan2.6-t2v", {"img_url": "https://example.com/a.png"}, {"size": "1280*720"}, 400, "img_url"),
        ("wan2.6-t2v", {}, {"size": SIZE}, 400, "size"),  # wan2.6 has no 480P tier
        ("wan2.6-t2v", {}, {"size": "1280*720", "duration": 1}, 400, "duration"),
        (
            "wan2.6-t2v",
            {"audio_url": "https://example.com/a.mp3"},
            {"size": "1280*720", "duration": 2, "shot_type": "multi", "watermark": True},
            200,
            "",
        ),
        ("wan2.5-t2v-preview", {"audio_url": "https://example.com/a.mp3"}, {"duration": 10}, 200, ""),
    ],
)
def test_parameters_per_model(
    client: Client, model: str, given: dict[str, Any], parameters: dict[str, Any], status: int, mentions: str
) -> None:
    client.knobs(limits={**UNLIMITED, model: {"rps": 1000, "running": 100}})
    headers = {"Authorization": "Bearer k", "X-DashScope-Async": "enable"}
    response = client.http.post(CREATE, json=create_body(model, given, parameters), headers=headers)
    assert response.status_code == status, response.text
    if status != 200:
        assert error_of(response)[1] == "InvalidParameter" and mentions in error_of(response)[2]


def test_actual_prompt_and_usage_per_model(client: Client) -> None:
    """wan2.6 answers no actual_prompt and reports usage in its own shape (emulator/rules.py)."""
    client.knobs(limits={**UNLIMITED, "wan2.6-t2v": {"rps": 1000, "running": 100}})
    headers = {"Authorization": "Bearer k", "X-DashScope-Async": "enable"}
    wan26 = client.http.post(
        CREATE, json=create_body("wan2.6-t2v", {}, {"size": "1280*720", "duration": 2}), headers=headers
    ).json()["output"]["task_id"]
    wan22 = client.submit()
    newer, older = client.wait(wan26), client.wait(wan22)
    assert "actual_prompt" not in newer["output"] and newer["output"]["orig_prompt"] == PROMPT
    assert set(newer["usage"]) == {
        "duration",
        "size",
        "SR",
        "input_video_duration",
        "output_video_duration",
        "video_count",
    }
    assert newer["usage"]["SR"] == 720 and newer["usage"]["duration"] == 2
    assert older["output"]["actual_prompt"] and set(older["usage"]) == {"video_duration", "video_ratio", "video_count"}


def test_injected_create_errors_are_used_once_each(client: Client) -> None:
    client.knobs(
        create_errors=[
            {"status": 429, "code": "Throttling", "message": "slow down"},
            {"status": 500, "code": "InternalError", "message": "boom"},
        ]
    )
    assert error_of(client.create()) == (429, "Throttling", "slow down")
    assert error_of(client.create()) == (500, "InternalError", "boom")
    assert client.create().status_code == 200


def test_submit_rate_limit(client: Client) -> None:
    model = "wanx2.1-t2v-turbo"  # used by no other test, so its one-second window starts empty
    client.knobs(limits={**UNLIMITED, model: {"rps": 2, "running": 100}})
    before = client.stats()["creates_throttled"]
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        responses = list(pool.map(lambda _: client.create(model=model), range(5)))
    assert sorted(r.status_code for r in responses) == [200, 200, 429, 429, 429]
    assert {error_of(r)[1] for r in responses if r.status_code == 429} == {"Throttling.RateQuota"}
    assert client.stats()["creates_throttled"] - before == 3


def test_running_limit_queues_fifo(client: Client) -> None:
    model = "wan2.1-t2v-turbo"
    client.knobs(limits={**UNLIMITED, model: {"rps": 100, "running": 0}}, render_seconds=0.3)
    ids = [client.submit(model=model) for _ in range(5)]
    assert {client.read(i)["output"]["task_status"] for i in ids} == {"PENDING"}
    client.knobs(limits={**UNLIMITED, model: {"rps": 100, "running": 2}})
    assert client.stats()["running_now"][model] == 2
    for task_id in ids:
        client.wait(task_id)
    tasks = [client.tasks()[i] for i in ids]
    starts = [task["scheduled_time"] for task in tasks]
    assert starts == sorted(starts)
    for start in starts:
        assert sum(t["scheduled_time"] <= start < t["end_time"] for t in tasks) <= 2
    assert client.stats()["max_running_seen"][model] == 2


def test_lifecycle_and_video(client: Client) -> None:
    reads_before = client.stats()["reads"]
    task_id = client.submit()
    first = client.read(task_id)["output"]
    assert first["task_status"] in ("PENDING", "RUNNING") and CHINA_MS.match(first["submit_time"])
    body = client.wait(task_id)
    output = body["output"]
    assert set(body) == {"request_id", "output", "usage"}
    assert body["usage"] == {"video_duration": 5, "video_ratio": SIZE, "video_count": 1}
    assert output["orig_prompt"] == PROMPT and output["task_id"] == task_id
    for name in ("submit_time", "scheduled_time", "end_time"):
        assert CHINA_MS.match(output[name]), output[name]
    assert output["video_url"].startswith(client.http.base_url.join("/oss/").__str__())
    stats = client.stats()
    assert stats["reads"] > reads_before and stats["reads_by_task"][task_id] >= 2

    data = httpx.get(output["video_url"]).content
    with av.open(__import__("io").BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.width, stream.height, stream.average_rate) == (832, 480, 30)
        assert stream.frames == 150 and float(stream.duration * stream.time_base) == 5.0


def test_head_and_ranges(client: Client, finished: dict[str, Any]) -> None:
    url, data = finished["url"], finished["body"]
    etag, modified = finished["headers"]["etag"], finished["headers"]["last-modified"]
    assert re.fullmatch(r'"[0-9A-F]{32}"', etag)
    head = httpx.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data)) and not head.content

    def fetch(range_: str, **headers: str) -> httpx.Response:
        return httpx.get(url, headers={"Range": range_, **headers})

    part = fetch("bytes=0-99")
    assert part.status_code == 206 and part.content == data[:100]
    assert part.headers["content-range"] == f"bytes 0-99/{len(data)}"
    assert fetch("bytes=100-").content == data[100:]
    assert fetch("bytes=-50").content == data[-50:]
    assert fetch(f"bytes={len(data)}-").status_code == 416
    assert fetch("bytes=10-19", **{"If-Range": etag}).content == data[10:20]
    assert fetch("bytes=10-19", **{"If-Range": modified}).status_code == 206
    stale = fetch("bytes=10-19", **{"If-Range": '"0000"'})
    assert stale.status_code == 200 and stale.content == data
    client.knobs(ignore_range=True)
    assert fetch("bytes=0-99").status_code == 200


def test_broken_download(client: Client, finished: dict[str, Any]) -> None:
    before = client.stats()["downloads_broken"]
    client.knobs(break_downloads=1, break_after_bytes=1000)
    received = bytearray()
    with pytest.raises(httpx.HTTPError), httpx.stream("GET", finished["url"]) as response:
        for chunk in response.iter_bytes():
            received += chunk
    assert len(received) == 1000
    assert httpx.get(finished["url"]).content == finished["body"]
    assert client.stats()["downloads_broken"] == before + 1


def test_url_signature_and_expiry(client: Client, finished: dict[str, Any]) -> None:
    forged = re.sub(r"Signature=[^&]+", "Signature=AAAA", finished["url"])
    refused = httpx.get(forged)
    assert refused.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in refused.text
    assert httpx.get(finished["url"].split("?")[0]).status_code == 403

    client.knobs(url_ttl_seconds=1)
    url = client.wait(client.submit())["output"]["video_url"]
    expired = wait_for(lambda: (r := httpx.get(url)).status_code == 403 and r, what="the URL to expire")
    assert "<Code>AccessDenied</Code>" in expired.text and "expired" in expired.text
    assert expired.headers["content-type"].startswith("application/xml")


def test_expire_route(client: Client) -> None:
    client.knobs(url_ttl_seconds=3600)
    task_id = client.submit()
    url = client.wait(task_id)["output"]["video_url"]
    assert client.http.post(f"/_emulator/tasks/{task_id}/expire").status_code == 200
    assert client.read(task_id)["output"] == {"task_id": task_id, "task_status": "UNKNOWN"}
    assert httpx.get(url).status_code == 403
    never_seen = str(uuid.uuid4())
    assert client.read(never_seen)["output"] == {"task_id": never_seen, "task_status": "UNKNOWN"}


def test_event_shape_and_token(client: Client, receiver: Receiver) -> None:
    task_id = client.submit()
    request_id = client.tasks()[task_id]["request_id"]
    client.wait(task_id)
    push = wait_for(lambda: receiver.for_task(task_id), what="the event")[0]
    assert push["headers"]["x-eventbridge-signature-token"] == TOKEN
    assert push["headers"]["content-type"] == "application/json;charset=utf-8"
    event = push["body"]
    assert list(event) == [
        "datacontenttype", "aliyunaccountid", "aliyunpublishtime", "data", "aliyunoriginalaccountid",
        "specversion", "aliyuneventbusname", "id", "source", "time", "aliyunregionid", "type",
    ]  # fmt: skip
    data = event["data"]
    assert list(data) == [
        "start_time", "user_api_unique_key", "task_status", "contain_result", "end_time",
        "task_id", "region", "request_id", "api_key_id",
    ]  # fmt: skip
    assert data["user_api_unique_key"] == f"apikey:v1:aigc:video-generation:video-synthesis:{MODEL}"
    assert (data["task_status"], data["contain_result"], data["request_id"]) == ("SUCCEEDED", False, request_id)
    assert CHINA_S.match(data["start_time"]) and CHINA_S.match(data["end_time"])
    assert UTC_ISO.match(event["time"]) and UTC_ISO.match(event["aliyunpublishtime"])
    assert uuid.UUID(event["id"]) and event["source"] == "acs.dashscope"
    assert event["type"] == "dashscope:System:AsyncTaskFinish" and event["specversion"] == "1.0"
    assert event["datacontenttype"] == "application/json;charset=utf-8"
    assert event["aliyunregionid"] == data["region"] == "cn-beijing" and event["aliyuneventbusname"] == "default"


def test_event_body_data_without_token(client: Client, receiver: Receiver) -> None:
    client.knobs(webhook_targets=[{"url": receiver.url.replace("/hook", "/data"), "body": "data"}])
    task_id = client.submit()
    push = wait_for(lambda: receiver.for_task(task_id), what="the event")[0]
    assert push["path"] == "/data" and push["body"]["task_id"] == task_id and "data" not in push["body"]
    assert "x-eventbridge-signature-token" not in push["headers"]


def test_push_retries(client: Client, receiver: Receiver) -> None:
    receiver.refuse_next = 2
    before = client.stats()
    task_id = client.submit()
    wait_for(lambda: receiver.for_task(task_id), what="the retried event")
    pushes = receiver.for_task(task_id, ok=None)
    assert [p["ok"] for p in pushes] == [False, False, True]
    assert len({p["body"]["id"] for p in pushes}) == 1
    stats = client.stats()
    assert stats["push_attempts"] - before["push_attempts"] == 3
    assert stats["push_failures"] - before["push_failures"] == 2


def test_push_gives_up_after_three_retries(client: Client) -> None:
    client.knobs(webhook_targets=[{"url": f"http://127.0.0.1:{free_port()}/closed"}])
    before = client.stats()["push_failures"]
    client.submit()
    wait_for(lambda: client.stats()["push_failures"] - before == 4, what="four failed attempts")


def test_duplicate_events(client: Client, receiver: Receiver) -> None:
    client.knobs(duplicate_events=2)
    task_id = client.submit()
    pushes = wait_for(lambda: len(receiver.for_task(task_id)) == 3 and receiver.for_task(task_id), what="3 copies")
    assert len({p["body"]["id"] for p in pushes}) == 1


def test_early_events(client: Client, receiver: Receiver) -> None:
    client.knobs(early_events=True)
    task_id = client.submit()
    assert [p["body"]["data"]["task_status"] for p in receiver.for_task(task_id)] == ["SUCCEEDED"]


def test_drop_events(client: Client, receiver: Receiver) -> None:
    client.knobs(drop_events=True)
    published = client.stats()["events_published"]
    dropped = client.submit()
    client.wait(dropped)
    assert client.stats()["events_published"] == published
    client.knobs(drop_events=False)
    # Events are pushed in order of the tasks' ends: once the next one arrives, the dropped one never will.
    wait_for(lambda: receiver.for_task(client.wait(client.submit())["output"]["task_id"]), what="the next event")
    assert receiver.for_task(dropped, ok=None) == []


def test_fail_marker(client: Client, receiver: Receiver) -> None:
    task_id = client.submit(prompt="a kitten [fail]")
    output = client.wait(task_id, "FAILED")["output"]
    assert output["code"] == "InternalError.Algo" and output["message"] and "video_url" not in output
    push = wait_for(lambda: receiver.for_task(task_id), what="the event")[0]
    assert push["body"]["data"]["task_status"] == "FAILED"


def test_cancel(client: Client, receiver: Receiver) -> None:
    model = "wanx2.1-t2v-plus"
    client.knobs(limits={**UNLIMITED, model: {"rps": 100, "running": 0}})
    task_id = client.submit(model=model, size="1280*720")
    cancel = client.http.post(f"/api/v1/tasks/{task_id}/cancel", headers={"Authorization": "Bearer k"})
    assert cancel.status_code == 200 and set(cancel.json()) == {"request_id"}
    assert client.read(task_id)["output"]["task_status"] == "CANCELED"
    push = wait_for(lambda: receiver.for_task(task_id), what="the event")[0]
    assert push["body"]["data"]["task_status"] == "CANCELED"
    again = client.http.post(f"/api/v1/tasks/{task_id}/cancel", headers={"Authorization": "Bearer k"})
    assert error_of(again)[:2] == (400, "UnsupportedOperation")
    running = client.wait(client.submit(), "RUNNING", "SUCCEEDED")["output"]["task_id"]
    late = client.http.post(f"/api/v1/tasks/{running}/cancel", headers={"Authorization": "Bearer k"})
    assert error_of(late)[:2] == (400, "UnsupportedOperation")
    assert client.stats()["cancels"] >= 3


def test_list(client: Client) -> None:
    ids = [client.submit(), client.submit()]
    for task_id in ids:
        client.wait(task_id)
    now = time.time() + 8 * 3600  # the window is given in China time
    window = {
        "start_time": time.strftime("%Y%m%d%H%M%S", time.gmtime(now - 600)),
        "end_time": time.strftime("%Y%m%d%H%M%S", time.gmtime(now + 60)),
    }
    auth = {"Authorization": "Bearer k"}
    listed = client.http.get("/api/v1/tasks/", params={**window, "model_name": MODEL, "page_size": 100}, headers=auth)
    body = listed.json()
    assert set(body) == {"total", "total_page", "page_no", "page_size", "request_id", "data"}
    items = {item["task_id"]: item for item in body["data"]}
    assert set(ids) <= set(items)
    item = items[ids[0]]
    assert set(item) == set(LIST_FIELDS)  # a finished task has every time
    assert item["status"] == "SUCCEEDED" and item["model_name"] == MODEL
    assert abs(item["gmt_create"] / 1000 - time.time()) < 600 and item["end_time"] >= item["gmt_create"]
    paged = client.http.get("/api/v1/tasks", params={**window, "page_size": 1, "status": "SUCCEEDED"}, headers=auth)
    assert len(paged.json()["data"]) == 1 and paged.json()["total_page"] == paged.json()["total"] >= 2
    # Without end_time, the 24 hours after start_time.
    after = client.http.get(
        "/api/v1/tasks",
        params={"start_time": window["start_time"], "model_name": MODEL, "page_size": 100},
        headers=auth,
    ).json()
    assert set(ids) <= {item["task_id"] for item in after["data"]}
    none = client.http.get("/api/v1/tasks", params={**window, "model_name": "wan2.1-t2v-plus"}, headers=auth).json()
    assert none["total"] == 0 and none["data"] == []
    two_days = {"start_time": "20250101000000", "end_time": "20250103000000"}
    too_wide = client.http.get("/api/v1/tasks", params=two_days, headers=auth)
    assert error_of(too_wide)[:2] == (400, "InvalidParameter")


def test_query_rate_limit(client: Client) -> None:
    client.knobs(query_qps=5)
    task_id = str(uuid.uuid4())
    auth = {"Authorization": "Bearer k"}
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(lambda _: client.http.get(f"/api/v1/tasks/{task_id}", headers=auth), range(10)))
    codes = [r.status_code for r in responses]
    assert codes.count(200) <= 5 and codes.count(429) >= 5
    assert {error_of(r)[1] for r in responses if r.status_code == 429} == {"Throttling.RateQuota"}


def test_config_refuses_unknown_or_mistyped_knobs(client: Client) -> None:
    assert client.http.post("/_emulator/config", json={"no_such_knob": 1}).status_code == 400
    assert client.http.post("/_emulator/config", json={"render_seconds": "fast"}).status_code == 400
    assert client.knobs()["render_seconds"] == 0.2


def test_reset_clears_stats(client: Client) -> None:
    client.submit()
    stats = client.http.post("/_emulator/reset").json()
    assert stats["creates"] == 0 and stats["reads_by_task"] == {}


def test_official_sdk_unchanged(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashscope, "base_http_api_url", client.api)
    result = dashscope.VideoSynthesis.call(model=MODEL, prompt=PROMPT, size=SIZE, api_key="x")
    assert result.status_code == 200 and result.output.task_status == "SUCCEEDED"
    assert httpx.get(result.output.video_url).content[4:8] == b"ftyp"


def test_cli_flags_and_sigint(receiver: Receiver) -> None:
    port = free_port()
    url = receiver.url.replace("/hook", "/cli")
    process = start_emulator(port, "--render-seconds", "0.1", "--webhook-url", url, "--webhook-body", "data")
    try:
        task_id = Client(f"http://127.0.0.1:{port}").submit()
        push = wait_for(lambda: receiver.for_task(task_id), what="the event")[0]
        assert push["path"] == "/cli" and push["body"]["task_id"] == task_id
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(15) == 0


class FakeDouble:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, list[str], str]] = []

    def publish(self, topic: str, body: bytes, keys: list[str], tag: str) -> str:
        self.messages.append((topic, body, keys, tag))
        return str(uuid.uuid4())


@pytest.mark.asyncio
async def test_in_process_with_a_rocketmq_target() -> None:
    emulator = Emulator(EmulatorConfig(render_seconds=0.1, push_retry_delays=[0.05]))
    double = FakeDouble()
    emulator.add_target(RocketMQTarget(double, "dashscope-events"))
    await emulator.start()
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", emulator.base_url)
        assert emulator.api_base_url == emulator.base_url + "/api/v1"
        async with httpx.AsyncClient(base_url=emulator.base_url) as http:
            headers = {"Authorization": "Bearer k", "X-DashScope-Async": "enable"}
            body = {"model": MODEL, "input": {"prompt": PROMPT}, "parameters": {"size": SIZE}}
            task_id = (await http.post(CREATE, json=body, headers=headers)).json()["output"]["task_id"]
            await asyncio.wait_for(emulator.tasks.by_id[task_id].settled.wait(), 30)
        [(topic, payload, keys, tag)] = double.messages
        event = json.loads(payload)
        assert (topic, keys, tag) == ("dashscope-events", [task_id], "AsyncTaskFinish")
        assert event["data"]["task_id"] == task_id and event["data"]["task_status"] == "SUCCEEDED"
    finally:
        await emulator.stop()
