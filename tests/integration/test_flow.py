"""The webhook path end to end: POST /v1/tasks -> emulator -> EventBridge push -> Redis -> stored video."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import httpx

from ..conftest import TOKEN, Stack
from ..support import wait_for


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_task_to_stored_video(stack: Stack) -> None:
    created = stack.create("a lighthouse in a storm", metadata={"order": "42"})
    assert created["status"] == "queued"
    assert created["parameters"] == {"size": "832*480"}
    assert created["metadata"] == {"order": "42"}

    task = stack.wait_status(created["id"], "ready")
    video = task["video"]
    path = Path(video["path"])
    assert path == stack.data_dir / "videos" / f"{created['id']}.mp4"
    assert video["bytes"] == path.stat().st_size > 0
    assert video["sha256"] == sha256(path)
    assert task["dashscope"]["status"] == "SUCCEEDED" and task["dashscope"]["task_id"]
    assert not list(path.parent.glob("*.part"))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (832, 480)
        assert stream.codec_context.name == "h264"

    # The stored video is served with Range support.
    whole = stack.http.get(f"/v1/tasks/{created['id']}/video")
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    assert hashlib.sha256(whole.content).hexdigest() == video["sha256"]
    part = stack.http.get(f"/v1/tasks/{created['id']}/video", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == whole.content[10:20]

    # One read of the DashScope task (for the video URL), no polling.
    stats = stack.emulator.stats()
    assert stats["reads_by_task"] == {task["dashscope"]["task_id"]: 1}

    # The event was logged for audit, and counted.
    log = stack.redis.xrange("{wanhook}:events")
    assert [entry["outcome"] for _, entry in log] == ["applied"]
    metrics = stack.http.get("/metrics").text
    assert '\nwanhook_events_total{outcome="applied"} 1.0\n' in metrics
    assert '\nwanhook_tasks{status="ready"} 1.0\n' in metrics


def test_video_is_409_until_ready_and_listing(stack: Stack) -> None:
    stack.emulator.configure(render_seconds=30)
    first = stack.create("first")
    second = stack.create("second")
    response = stack.http.get(f"/v1/tasks/{first['id']}/video")
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_ready"

    listed = stack.http.get("/v1/tasks", params={"limit": 1}).json()
    assert [t["id"] for t in listed["tasks"]] == [second["id"]]
    rest = stack.http.get("/v1/tasks", params={"limit": 1, "cursor": listed["next_cursor"]}).json()
    assert [t["id"] for t in rest["tasks"]] == [first["id"]]
    submitted = wait_for(
        lambda: (
            stack.http.get("/v1/tasks", params={"status": "submitted"}).json()["tasks"]
            if len(stack.http.get("/v1/tasks", params={"status": "submitted"}).json()["tasks"]) == 2
            else None
        ),
        30,
        what="both tasks submitted",
    )
    assert {t["id"] for t in submitted} == {first["id"], second["id"]}
    assert stack.http.get("/v1/tasks", params={"status": "queued"}).json()["tasks"] == []


def test_idempotency_key_returns_the_first_task(stack: Stack) -> None:
    headers = {"Idempotency-Key": "order-7"}
    first = stack.http.post("/v1/tasks", json={"prompt": "p", "size": "832*480"}, headers=headers).json()
    again = stack.http.post("/v1/tasks", json={"prompt": "p", "size": "832*480"}, headers=headers).json()
    assert again["id"] == first["id"]
    assert len(stack.http.get("/v1/tasks").json()["tasks"]) == 1


def test_duplicate_and_body_only_events(stack: Stack) -> None:
    stack.emulator.configure(
        duplicate_events=2, webhook_targets=[{"url": stack.webhook, "token": TOKEN, "body": "data"}]
    )
    task = stack.wait_status(stack.create("duplicates")["id"], "ready")
    outcomes = wait_for(
        lambda: (o := [e["outcome"] for _, e in stack.redis.xrange("{wanhook}:events")]) and len(o) >= 3 and o,
        30,
        what="three deliveries",
    )
    # (A push slower than the emulator's timeout is retried: more copies, still one applied.)
    assert outcomes.count("applied") == 1 and set(outcomes) == {"applied", "duplicate"}
    assert stack.emulator.stats()["reads_by_task"] == {task["dashscope"]["task_id"]: 1}
    assert stack.redis.xlen("{wanhook}:jobs:download") == 0


def test_event_before_the_create_call_returned(stack: Stack) -> None:
    stack.emulator.configure(early_events=True)
    task = stack.wait_status(stack.create("early bird")["id"], "ready")
    outcomes = [e["outcome"] for _, e in stack.redis.xrange("{wanhook}:events")]
    assert outcomes == ["unknown_task"]  # parked, then applied when the create call returned
    assert stack.redis.hget("{wanhook}:counters", "events_early_applied") == "1"
    # Applied, the early record leaves the count of those kept (keys.EARLY_EVENTS) with its key.
    assert stack.redis.zcard("{wanhook}:early-events") == 0 and not list(stack.redis.scan_iter("{wanhook}:early:*"))
    assert task["video"]["sha256"] == sha256(Path(task["video"]["path"]))


def test_reordered_events_never_move_a_task_backwards(stack: Stack) -> None:
    stack.emulator.configure(drop_events=True)
    created = stack.create("ordering")
    ds_id = stack.wait_status(created["id"], "submitted")["dashscope"]["task_id"]
    dashscope = httpx.Client(base_url=stack.emulator.api, headers={"Authorization": "Bearer k"})
    wait_for(
        lambda: dashscope.get(f"/tasks/{ds_id}").json()["output"]["task_status"] == "SUCCEEDED",
        30,
        what="the render to finish",
    )

    def event(status: str, event_id: str) -> dict:
        return {
            "specversion": "1.0",
            "id": event_id,
            "source": "acs.dashscope",
            "type": "dashscope:System:AsyncTaskFinish",
            "data": {
                "task_id": ds_id,
                "task_status": status,
                "user_api_unique_key": "apikey:v1:aigc:video-generation:video-synthesis:wan2.2-t2v-plus",
            },
        }

    assert stack.push(event("SUCCEEDED", "e-1")).json()["outcome"] == "applied"
    ready = stack.wait_status(created["id"], "ready")
    assert stack.push(event("FAILED", "e-2")).json()["outcome"] == "stale"
    assert stack.push(event("RUNNING", "e-3")).json()["outcome"] == "stale"
    assert stack.push(event("SUCCEEDED", "e-1")).json()["outcome"] == "duplicate"
    assert stack.task(created["id"])["status"] == "ready"
    assert stack.task(created["id"])["video"] == ready["video"]


def test_failed_task_records_the_error(stack: Stack) -> None:
    task = stack.wait_status(stack.create("a scene [fail]")["id"])
    assert task["status"] == "failed"
    assert task["dashscope"]["status"] == "FAILED"
    assert task["error"]["code"]


def test_refused_submission_fails_with_dashscope_code(stack: Stack) -> None:
    task = stack.wait_status(stack.create("forbidden [blocked]")["id"])
    assert task["status"] == "failed"
    assert task["error"]["code"] == "DataInspectionFailed"
    assert task["dashscope"]["task_id"] is None


def test_sse_stream_follows_the_task(stack: Stack) -> None:
    stack.emulator.configure(render_seconds=1)
    created = stack.create("stream me")
    states, name = [], ""
    with httpx.stream("GET", f"{stack.url}/v1/tasks/{created['id']}/events", timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name != "task.progress":
                states.append(json.loads(line[6:])["status"])
    # The state when the stream opened, then every change after it, in order, to ready (opened late, the task
    # may already be past some states, even ready: then that alone).
    order = ["queued", "submitted", "downloading", "ready"]
    assert states[-1] == "ready" and states[0] in order, states
    assert states == order[order.index(states[0]) :], states
