"""Completion events over RocketMQ: ``wanhook consume`` (the real client, in its own process) against the
RocketMQ 5 double and a real Apache RocketMQ 5.x on loopback, the latter through both protocols: 5.x gRPC
through its proxy and 4.x remoting through its NameServer (``WANHOOK_ROCKETMQ_PROTOCOL=4``). The ``broker``
fixture is parametrized over the three; real Redis and the emulator."""

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

from wanhook.service.persistence import audit

from ..conftest import Stack
from ..rocketmq_backends import MIN_INVISIBLE, Backend, RealBackend, backend, blocked_writing
from ..support import Process, Wanhook, free_port, wait_for

# One test worker runs every test of the real broker: it is started once for them (a JVM of about 1 GiB).
pytestmark = pytest.mark.xdist_group("rocketmq")


TOPIC = "dashscope-events"
GROUP = "wanhook"  # Stack.consume's group
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


@pytest.fixture(params=["double", "real", "real4"])
def broker(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The double, and the real broker through either protocol: the same tests for both clients."""
    chosen = backend(request, request.param)
    yield chosen
    chosen.stop()


def consume(stack: Stack, broker: Backend, topic: str, name: str = "consume", **settings: str) -> Wanhook:
    """A ``wanhook consume`` process of the group "wanhook", speaking the broker's protocol."""
    return stack.consume(broker.endpoints, topic, name=name, **{**broker.consumer_settings(), **settings})


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


def topic_for(broker: Backend, retries: int = 16) -> str:
    """A new topic, with wanhook's group made for it; ``retries``: the group's retries before its %DLQ%."""
    return broker.new_topic({broker.group: retries})


def acked(broker: Backend, count: int) -> None:
    """The double counts acks; on the real broker an ack shows as a message that does not come back."""
    if broker.kind == "double":
        wait_for(lambda: broker.double.stats()["acked"] >= count, 30, what=f"{count} acks")


def stays(check: Any, seconds: float) -> None:
    """``check`` holds for ``seconds`` (longer than a redelivery would take): nothing comes back."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check()
        time.sleep(0.2)


def test_eventbridge_message_shape(quiet: Stack, broker: Backend) -> None:
    """As EventBridge's RocketMQ target sends (Body ORIGINAL): the whole CloudEvent as the body, the task id as
    Keys and AsyncTaskFinish as the Tag when the target maps them, and neither when it does not."""
    topic = topic_for(broker)
    consume(quiet, broker, topic)
    mapped_task, mapped_ds = submitted(quiet, "keys and a tag")
    bare_task, bare_ds = submitted(quiet, "neither keys nor a tag")
    broker.publish(topic, cloud_event(mapped_ds), keys=[mapped_ds], tag="AsyncTaskFinish")
    broker.publish(topic, cloud_event(bare_ds))
    for task_id in (mapped_task, bare_task):
        assert quiet.wait_status(task_id, "ready")["video"]["bytes"] > 0
    assert outcomes(quiet) == ["applied", "applied"]


def test_duplicates_on_the_topic(quiet: Stack, broker: Backend) -> None:
    topic = topic_for(broker)
    consume(quiet, broker, topic)
    task_id, ds_id = submitted(quiet)
    body = cloud_event(ds_id, event_id="same-event")
    broker.publish(topic, body, keys=[ds_id], tag="AsyncTaskFinish")
    broker.publish(topic, body, keys=[ds_id], tag="AsyncTaskFinish")
    quiet.wait_status(task_id, "ready")
    wait_for(lambda: sorted(outcomes(quiet)) == ["applied", "duplicate"], 30, what="both copies settled")
    acked(broker, 2)


def test_consumer_killed_before_acking(quiet: Stack, broker: Backend) -> None:
    topic = topic_for(broker)
    consumer = consume(quiet, broker, topic)
    task_id, ds_id = submitted(quiet)
    admin = redis.Redis.from_url(quiet.redis_url)
    admin.execute_command("CLIENT", "PAUSE", "30000", "WRITE")  # the consumer will hang on recording the event
    try:
        broker.publish(topic, cloud_event(ds_id), keys=[ds_id], tag="AsyncTaskFinish")
        assert consumer.proc is not None
        wait_for(
            lambda: blocked_writing(admin, consumer.proc.pid),
            30,
            what="the consumer to receive the message and hang recording it",
        )
        consumer.kill()
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
    killed_at = time.monotonic()
    if broker.kind == "double":
        assert broker.double.stats()["acked"] == 0
    consume(quiet, broker, topic, name="consume-again")
    quiet.wait_status(task_id, "ready")
    delay = time.monotonic() - killed_at
    if broker.kind == "double":
        stats = broker.double.stats()
        assert stats["redelivered"] >= 1 and stats["acked"] == 1
    assert outcomes(quiet).count("applied") == 1
    assert int(quiet.redis.hget("{wanhook}:counters", "downloads_completed")) == 1
    # 5.x: back after the message's invisible duration; 4.x: at once, from the group's committed offset, when
    # the new consumer takes the queue over.
    comeback = "from the committed offset" if broker.protocol == "4" else f"invisible duration {MIN_INVISIBLE}s"
    print(f"redelivery after SIGKILL ({broker.name}): task ready {delay:.2f}s after the kill ({comeback})")


def test_malformed_messages_are_recorded_and_acked(quiet: Stack, broker: Backend) -> None:
    topic = topic_for(broker)
    consume(quiet, broker, topic)
    broker.publish(topic, b"\x00not json at all")
    broker.publish(topic, b'{"just": "some json"}')
    broker.publish(topic, cloud_event("asr-1", unique_key="apikey:v1:audio:asr:transcription:paraformer-8k-v1"))
    large = b"[" + b"1," * 100_000 + b"1]"  # 200 KB of JSON that is not an event
    broker.publish(topic, large)
    wait_for(
        lambda: len(quiet.redis.xrange("{wanhook}:dead-letters")) == 3 and outcomes(quiet) == ["ignored"],
        30,
        what="all four settled",
    )
    acked(broker, 4)
    parked = quiet.redis.xrange("{wanhook}:dead-letters")
    assert len(parked) == 3 and all(entry["reason"].startswith("malformed:") for _, entry in parked)
    assert {entry["transport"] for _, entry in parked} == {"rocketmq4" if broker.protocol == "4" else "rocketmq5"}
    # A large body is kept as its digest, size and first bytes, not whole.
    (kept,) = [entry for _, entry in parked if "body" not in entry]
    assert kept["body_bytes"] == str(len(large))
    assert kept["body_sha256"] == hashlib.sha256(large).hexdigest() and large.startswith(kept["body_prefix"].encode())
    assert len(kept["body_prefix"]) == 512
    assert quiet.redis.hget("{wanhook}:counters", "events_invalid") == "3"
    # Acked means gone: nothing comes back after the invisible duration.
    stays(
        lambda: len(quiet.redis.xrange("{wanhook}:dead-letters")) == 3 and outcomes(quiet) == ["ignored"],
        MIN_INVISIBLE + 4,
    )
    if broker.kind == "double":
        assert broker.double.stats()["redelivered"] == 0


def test_poison_message_is_dead_lettered(quiet: Stack, broker: Backend) -> None:
    """wanhook parks it after its configured deliveries and acknowledges it: the broker stops delivering it,
    and nothing reaches the group's own %DLQ% topic."""
    topic = topic_for(broker)
    consumer = consume(quiet, broker, topic, max_deliveries="2")
    quiet.redis.hset("{wanhook}:ds:poison", "not", "a string")  # recording any event for it fails (WRONGTYPE)
    broker.publish(topic, cloud_event("poison"), keys=["poison"])
    parked = wait_for(lambda: quiet.redis.xrange("{wanhook}:dead-letters"), 60, what="the message to be parked")
    ((_, entry),) = parked
    assert entry["attempt"] == "2" and entry["reason"].startswith("gave up after 2 deliveries")
    assert json.loads(entry["body"])["data"]["task_id"] == "poison"
    acked(broker, 1)
    stays(
        lambda: consumer.log().count("(delivery 3)") == 0 and len(quiet.redis.xrange("{wanhook}:dead-letters")) == 1,
        MIN_INVISIBLE + 4,
    )
    assert broker.stored(f"%DLQ%{broker.group}") == 0


def test_group_retries_below_wanhooks_go_to_the_brokers_dlq(quiet: Stack, broker: Backend) -> None:
    """The mismatch an operator must avoid: a group whose retries run out before wanhook's maximum deliveries
    moves the message to %DLQ%<group> unseen by wanhook. Replayed by consuming that topic."""
    if broker.protocol == "4":
        pytest.skip(
            "through 4.x the broker takes the client's maximum retries (librocketmq sends 16) over the group's: "
            "see test_rocketmq4.py::test_4x_retries_are_the_clients_not_the_groups"
        )
    topic = topic_for(broker, retries=1)  # two deliveries, then the broker's %DLQ%
    consumer = consume(quiet, broker, topic, max_deliveries="5")
    quiet.redis.hset("{wanhook}:ds:poison", "not", "a string")
    broker.publish(topic, cloud_event("poison"), keys=["poison"])
    wait_for(lambda: broker.stored(f"%DLQ%{GROUP}") == 1, 90, interval=1, what="the broker's own dead-letter queue")
    assert quiet.redis.xlen("{wanhook}:dead-letters") == 0
    assert consumer.log().count("it will be redelivered") == 2
    # Replay once the cause is fixed: a consumer of the %DLQ% topic, in a group of its own.
    quiet.redis.delete("{wanhook}:ds:poison")
    broker.create(groups={"wanhook-replay": 16})
    consume(quiet, broker, f"%DLQ%{GROUP}", name="replay", group="wanhook-replay")
    wait_for(lambda: outcomes(quiet) == ["unknown_task"], 60, what="the replayed event recorded")


def test_two_consumers_share_1000_events(quiet: Stack, broker: Backend) -> None:
    topic = topic_for(broker)
    first = consume(quiet, broker, topic, name="consume-a")
    second = consume(quiet, broker, topic, name="consume-b")
    if isinstance(broker, RealBackend) and broker.protocol == "4":
        # 4.x consumers share a topic by queues: until both are in the group, the first pulls every queue, and
        # what it took from a queue that then moves to the second comes again from the queue's committed offset
        # (delivered twice: the second copy is recorded as a duplicate and changes nothing). Sharing starts here.
        wait_for(lambda: broker.broker.connections(broker.group) == 2, 60, interval=1, what="both in the group")
    # Both consuming before the first event: a lone early consumer can drain all 1,000 before the other starts.
    wait_for(lambda: all("consuming" in process.log() for process in (first, second)), 60, what="both consuming")
    ids = [f"ds-{n}" for n in range(1000)]
    started = time.monotonic()
    for ds_id in ids:
        broker.publish(topic, cloud_event(ds_id, event_id=f"event-{ds_id}"), keys=[ds_id], tag="AsyncTaskFinish")
    wait_for(lambda: quiet.redis.xlen("{wanhook}:events") >= 1000, 120, interval=0.2, what="1,000 events settled")
    elapsed = time.monotonic() - started
    acked(broker, 1000)
    log = quiet.redis.xrange("{wanhook}:events")
    # Each once: nothing handled twice (an entry keeping the whole body reads its ids from it).
    assert sorted(audit.read_entry(entry)["ds_task_id"] for _, entry in log) == sorted(ids)
    assert {entry["outcome"] for _, entry in log} == {"unknown_task"}
    handled = [process.log().count("for DashScope task ds-") for process in (first, second)]
    assert sum(handled) == 1000 and min(handled) > 0, handled
    print(
        f"1,000 events through 2 consumers ({broker.name}) in {elapsed:.2f}s: {1000 / elapsed:.0f} events/s, "
        f"split {handled}"
    )


def test_broker_restart_mid_run(quiet: Stack, broker: Backend) -> None:
    """The broker (the proxy and the broker in it) stops and comes back on the same store: the consumer
    reconnects by itself and nothing is lost."""
    if not isinstance(broker, RealBackend):
        pytest.skip("the double keeps nothing across a restart of its process; see test_consumer_errors")
    topic = topic_for(broker)
    consumer = consume(quiet, broker, topic)
    ids = [f"ds-r{n}" for n in range(200)]
    for ds_id in ids[:100]:
        broker.publish(topic, cloud_event(ds_id, event_id=f"event-{ds_id}"), keys=[ds_id])
    wait_for(lambda: quiet.redis.xlen("{wanhook}:events") >= 20, 60, interval=0.1, what="the first events")
    broker.stop_producers()
    broker.broker.stop_proxy()
    restarted = time.monotonic()
    broker.broker.start_proxy()
    # The broker registers with the NameServer again in the background: until then a route is not found.
    first = ids[100]
    wait_for(
        lambda: broker.publish(topic, cloud_event(first, event_id=f"event-{first}"), keys=[first]),
        60,
        interval=0.5,
        what="the restarted broker to take messages",
    )
    for ds_id in ids[101:]:
        broker.publish(topic, cloud_event(ds_id, event_id=f"event-{ds_id}"), keys=[ds_id])
    wait_for(
        lambda: (
            len({audit.read_entry(entry)["ds_task_id"] for _, entry in quiet.redis.xrange("{wanhook}:events")}) >= 200
        ),
        120,
        interval=0.2,
        what="all 200 events",
    )
    log = quiet.redis.xrange("{wanhook}:events")
    again = []
    if broker.protocol == "4":
        # 4.x: what the consumer had settled but not yet committed (its offsets go to the broker every few
        # seconds) when the broker went comes again from the committed offset: a duplicate, nothing done twice.
        again = [audit.read_entry(entry)["ds_task_id"] for _, entry in log if entry["outcome"] == "duplicate"]
        log = [(entry_id, entry) for entry_id, entry in log if entry["outcome"] != "duplicate"]
    assert sorted(audit.read_entry(entry)["ds_task_id"] for _, entry in log) == sorted(ids)
    assert consumer.alive
    print(
        f"broker restart ({broker.name}): back in {broker.broker.start_seconds:.1f}s, all events recorded "
        f"{time.monotonic() - restarted:.1f}s after the restart began; {len(again)} delivered again"
    )
