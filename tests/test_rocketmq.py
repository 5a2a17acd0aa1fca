"""Completion events over RocketMQ: ``wanhook consume`` (the real client, in its own process) against
the RocketMQ 5 double on loopback, with real Redis and the emulator."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from .conftest import Stack
from .support import Process, free_port, wait_for

TOPIC = "dashscope-events"
UNIQUE_KEY = "apikey:v1:aigc:video-generation:video-synthesis:wan2.2-t2v-plus"


def cloud_event(
    ds_task_id: str, status: str = "SUCCEEDED", event_id: str | None = None, unique_key: str = UNIQUE_KEY
) -> bytes:
    return json.dumps(
        {
            "datacontenttype": "application/json;charset=utf-8",
            "specversion": "1.0",
            "aliyuneventbusname": "default",
            "id": event_id or str(uuid.uuid4()),
            "source": "acs.dashscope",
            "type": "dashscope:System:AsyncTaskFinish",
            "time": "2026-11-25T01:45:16.969Z",
            "aliyunregionid": "cn-beijing",
            "data": {
                "task_id": ds_task_id,
                "task_status": status,
                "contain_result": False,
                "user_api_unique_key": unique_key,
                "region": "cn-beijing",
            },
        }
    ).encode()


@pytest.fixture
def double() -> Iterator[Any]:
    from wanhook.emulator.rocketmq import RocketMQDouble

    server = RocketMQDouble(port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def quiet(tmp_path: Path, redis_url: str, processes: list[Process]) -> Iterator[Stack]:
    """Emulator (pushing no events) and wanhook serve: events come only from what the test publishes."""
    stack = Stack(tmp_path, redis_url, processes).start()
    stack.emulator.configure(drop_events=True)
    yield stack
    stack.http.close()


def submitted(stack: Stack, prompt: str = "harbour lights at night") -> tuple[str, str]:
    task = stack.wait_status(stack.create(prompt)["id"], "submitted")
    return task["id"], task["dashscope"]["task_id"]


def outcomes(stack: Stack) -> list[str]:
    return [entry["outcome"] for _, entry in stack.redis.xrange("{wanhook}:events")]


def test_emulator_to_topic_to_stored_video(tmp_path: Path, redis_url: str, processes: list[Process]) -> None:
    port = free_port()
    stack = Stack(
        tmp_path,
        redis_url,
        processes,
        "--rocketmq",
        "--rocketmq-port",
        str(port),
        "--rocketmq-topic",
        TOPIC,
        webhook=False,
    ).start()
    stack.consume(f"127.0.0.1:{port}", TOPIC)
    task = stack.wait_status(stack.create("over the topic")["id"], "ready")
    assert task["video"]["bytes"] > 0
    assert outcomes(stack) == ["applied"]
    assert stack.emulator.stats()["reads_by_task"] == {task["dashscope"]["task_id"]: 1}


def test_duplicates_on_the_topic(quiet: Stack, double: Any) -> None:
    quiet.consume(double.endpoints, TOPIC)
    task_id, ds_id = submitted(quiet)
    body = cloud_event(ds_id, event_id="same-event")
    double.publish(TOPIC, body, keys=[ds_id], tag="AsyncTaskFinish")
    double.publish(TOPIC, body, keys=[ds_id], tag="AsyncTaskFinish")
    quiet.wait_status(task_id, "ready")
    wait_for(lambda: sorted(outcomes(quiet)) == ["applied", "duplicate"], 30, what="both copies settled")
    wait_for(lambda: double.stats()["acked"] == 2, 30, what="both acked")


def test_consumer_killed_before_acking(quiet: Stack, double: Any) -> None:
    consumer = quiet.consume(double.endpoints, TOPIC)
    task_id, ds_id = submitted(quiet)
    admin = redis.Redis.from_url(quiet.redis_url)
    admin.execute_command("CLIENT", "PAUSE", "30000", "WRITE")  # the consumer will hang on recording the event
    try:
        double.publish(TOPIC, cloud_event(ds_id), keys=[ds_id], tag="AsyncTaskFinish")
        wait_for(lambda: double.stats()["received"] >= 1, 30, what="the consumer to receive the message")
        consumer.kill()
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
    killed_at = time.monotonic()
    assert double.stats()["acked"] == 0
    quiet.consume(double.endpoints, TOPIC, name="consume-again")
    quiet.wait_status(task_id, "ready")
    delay = time.monotonic() - killed_at
    stats = double.stats()
    assert stats["redelivered"] >= 1 and stats["acked"] == 1
    assert outcomes(quiet).count("applied") == 1
    assert int(quiet.redis.hget("{wanhook}:counters", "downloads_completed")) == 1
    print(f"redelivery after SIGKILL: task ready {delay:.2f}s after the kill (invisible duration 2s)")


def test_malformed_messages_are_recorded_and_acked(quiet: Stack, double: Any) -> None:
    quiet.consume(double.endpoints, TOPIC)
    double.publish(TOPIC, b"\x00not json at all")
    double.publish(TOPIC, b'{"just": "some json"}')
    double.publish(TOPIC, cloud_event("asr-1", unique_key="apikey:v1:audio:asr:transcription:paraformer-8k-v1"))
    large = b"[" + b"1," * 100_000 + b"1]"  # 200 KB of JSON that is not an event
    double.publish(TOPIC, large)
    wait_for(lambda: double.stats()["acked"] == 4, 30, what="all four acked")
    parked = quiet.redis.xrange("{wanhook}:dead-letters")
    assert len(parked) == 3 and all(entry["reason"].startswith("malformed:") for _, entry in parked)
    # A large body is kept as its digest, size and first bytes, not whole.
    (kept,) = [entry for _, entry in parked if "body" not in entry]
    assert kept["body_bytes"] == str(len(large))
    assert kept["body_sha256"] == hashlib.sha256(large).hexdigest() and large.startswith(kept["body_prefix"].encode())
    assert len(kept["body_prefix"]) == 512
    assert outcomes(quiet) == ["ignored"]
    assert quiet.redis.hget("{wanhook}:counters", "events_invalid") == "3"
    # Acked means gone: nothing comes back after the invisible duration.
    received = double.stats()["received"]
    wait_for(lambda: double.stats()["topics"][TOPIC]["depth"] == 0, 10, what="the topic to drain")
    assert double.stats()["redelivered"] == 0 and double.stats()["received"] == received


def test_poison_message_is_dead_lettered(quiet: Stack, double: Any) -> None:
    quiet.consume(double.endpoints, TOPIC, max_deliveries="2")
    quiet.redis.hset("{wanhook}:ds:poison", "not", "a string")  # recording any event for it fails (WRONGTYPE)
    double.publish(TOPIC, cloud_event("poison"), keys=["poison"])
    parked = wait_for(lambda: quiet.redis.xrange("{wanhook}:dead-letters"), 60, what="the message to be parked")
    ((_, entry),) = parked
    assert entry["attempt"] == "2" and entry["reason"].startswith("gave up after 2 deliveries")
    assert json.loads(entry["body"])["data"]["task_id"] == "poison"
    wait_for(lambda: double.stats()["acked"] == 1, 30, what="the parked message to be acked")


def test_two_consumers_share_200_events(quiet: Stack, double: Any) -> None:
    first = quiet.consume(double.endpoints, TOPIC, name="consume-a")
    second = quiet.consume(double.endpoints, TOPIC, name="consume-b")
    ids = [f"ds-{n}" for n in range(200)]
    started = time.monotonic()
    for ds_id in ids:
        double.publish(TOPIC, cloud_event(ds_id, event_id=f"event-{ds_id}"), keys=[ds_id])
    wait_for(
        lambda: quiet.redis.xlen("{wanhook}:events") >= 200 and double.stats()["acked"] == 200,
        60,
        what="200 events settled",
    )
    elapsed = time.monotonic() - started
    log = quiet.redis.xrange("{wanhook}:events")
    assert sorted(entry["ds_task_id"] for _, entry in log) == sorted(ids)  # each once: nothing handled twice
    assert {entry["outcome"] for _, entry in log} == {"unknown_task"}
    handled = [process.log().count("for DashScope task ds-") for process in (first, second)]
    assert sum(handled) == 200 and min(handled) > 0, handled
    print(f"200 events through 2 consumers in {elapsed:.2f}s: {200 / elapsed:.0f} events/s, split {handled}")
