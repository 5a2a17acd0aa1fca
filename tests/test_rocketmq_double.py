"""The RocketMQ 5 test double, driven by Apache's real Python client over loopback."""

from __future__ import annotations

import importlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from wanhook.emulator.rocketmq import RocketMQDouble

ROOT = Path(__file__).resolve().parents[1]
INVISIBLE = 1  # seconds; the client only takes whole seconds


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="session")
def mq(home: Path) -> ModuleType:
    # The client fixes its log directory, $HOME/logs/rocketmq_python, when it is first imported.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        return importlib.import_module("rocketmq")


@pytest.fixture(scope="session")
def double(mq: ModuleType) -> Iterator[RocketMQDouble]:
    from wanhook.emulator.rocketmq import RocketMQDouble

    server = RocketMQDouble(port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def topic() -> str:
    return f"T-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def config(mq: ModuleType, double: RocketMQDouble) -> Any:
    # Credentials and a namespace, as on ApsaraMQ: the double must take them in its stride.
    return mq.ClientConfiguration(double.endpoints, mq.Credentials("user", "secret"), namespace="ns")


@pytest.fixture
def consumer(mq: ModuleType, config: Any, topic: str) -> Iterator[Callable[..., Any]]:
    started = []

    def start(group: str = "G", tags: str = "*", await_duration: int = 1) -> Any:
        client = mq.SimpleConsumer(config, group, {topic: mq.FilterExpression(tags)}, await_duration)
        client.startup()
        started.append(client)
        return client

    yield start
    for client in started:
        client.shutdown()


@pytest.fixture
def producer(mq: ModuleType, config: Any, topic: str) -> Iterator[Any]:
    client = mq.Producer(config, (topic,))
    client.startup()
    yield client
    client.shutdown()


def message(mq: ModuleType, topic: str, body: bytes, tag: str | None = None, keys: tuple[str, ...] = ()) -> Any:
    msg = mq.Message()
    msg.topic = topic
    msg.body = body
    if tag:
        msg.tag = tag
    for key in keys:
        msg.keys = key  # the setter adds one key per assignment
    return msg


def receive(consumer: Any, count: int, invisible: int = INVISIBLE, within: float = 15.0) -> list[Any]:
    received: list[Any] = []
    deadline = time.monotonic() + within
    while len(received) < count and time.monotonic() < deadline:
        received.extend(consumer.receive(32, invisible))
    return received


def wait_for(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def group_stats(double: RocketMQDouble, topic: str, group: str = "G") -> dict[str, int] | None:
    return double.stats()["topics"].get(topic, {}).get("groups", {}).get(group)


def test_send_receive_ack(mq: ModuleType, double: RocketMQDouble, producer: Any, consumer: Any, topic: str) -> None:
    outgoing = message(mq, topic, b'{"task_id": "t-1"}', tag="AsyncTaskFinish", keys=("t-1", "req-1"))
    outgoing.add_property("source", "acs:dashscope")
    receipt = producer.send(outgoing)
    client = consumer()

    [msg] = receive(client, 1)

    assert msg.body == b'{"task_id": "t-1"}'
    assert msg.tag == "AsyncTaskFinish"
    assert msg.keys == {"t-1", "req-1"}
    assert msg.properties == {"source": "acs:dashscope"}
    assert msg.message_id == receipt.message_id
    assert msg.topic == topic
    assert msg.delivery_attempt == 1
    assert not msg.corrupted
    client.ack(msg)
    assert group_stats(double, topic) == {"depth": 0, "inflight": 0}


def test_server_publish_wakes_a_parked_receive(double: RocketMQDouble, consumer: Any, topic: str) -> None:
    client = consumer(await_duration=10)
    received: list[Any] = []
    polling = double.stats()["polling"]
    thread = threading.Thread(target=lambda: received.extend(client.receive(8, INVISIBLE)))
    thread.start()
    wait_for(lambda: double.stats()["polling"] > polling)

    started = time.monotonic()
    message_id = double.publish(topic, b"event", keys=["t-2"], tag="AsyncTaskFinish", properties={"a": "b"})
    thread.join(10)

    assert time.monotonic() - started < 5, "the long poll was not woken"
    [msg] = received
    assert (msg.message_id, msg.body, msg.keys, msg.tag, msg.properties) == (
        message_id,
        b"event",
        {"t-2"},
        "AsyncTaskFinish",
        {"a": "b"},
    )
    client.ack(msg)


def test_unacked_message_comes_back(mq: ModuleType, double: RocketMQDouble, consumer: Any, topic: str) -> None:
    double.publish(topic, b"retry me")
    client = consumer()

    [first] = receive(client, 1)
    [second] = receive(client, 1)

    assert second.message_id == first.message_id
    assert (first.delivery_attempt, second.delivery_attempt) == (1, 2)
    assert second.receipt_handle != first.receipt_handle
    with pytest.raises(mq.v5.exception.BadRequestException) as stale:
        client.ack(first)
    assert stale.value.code == mq.grpc_protocol.Code.INVALID_RECEIPT_HANDLE
    client.ack(second)
    assert double.stats()["redelivered"] >= 1
    assert group_stats(double, topic) == {"depth": 0, "inflight": 0}


def test_change_invisible_duration_extends(double: RocketMQDouble, consumer: Any, topic: str) -> None:
    double.publish(topic, b"slow work")
    client = consumer()
    [msg] = receive(client, 1)
    first_handle = msg.receipt_handle

    client.change_invisible_duration(msg, 4)
    # Past the first invisible duration the message must still be hidden.
    extended_until = time.monotonic() + INVISIBLE + 1
    while time.monotonic() < extended_until:
        assert client.receive(32, INVISIBLE) == []

    assert msg.receipt_handle != first_handle
    client.ack(msg)
    assert group_stats(double, topic) == {"depth": 0, "inflight": 0}


def test_tag_filter(double: RocketMQDouble, consumer: Any, topic: str) -> None:
    for tag in ("a", "b", None, "c"):
        double.publish(topic, f"tagged {tag}".encode(), tag=tag)
    client = consumer(tags="a || c")

    received = receive(client, 2)

    assert sorted(msg.tag for msg in received) == ["a", "c"]
    for msg in received:
        client.ack(msg)
    # What the filter skips is consumed for the group.
    assert group_stats(double, topic) == {"depth": 0, "inflight": 0}


def test_one_group_shares_messages(
    mq: ModuleType, double: RocketMQDouble, producer: Any, consumer: Any, topic: str
) -> None:
    clients = [consumer(), consumer()]
    sent = {producer.send(message(mq, topic, b"job %d" % n)).message_id for n in range(200)}
    taken: list[list[str]] = [[], []]
    lock = threading.Lock()

    def work(index: int) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with lock:
                if sum(map(len, taken)) >= len(sent):
                    return
            for msg in clients[index].receive(8, 30):
                clients[index].ack(msg)
                with lock:
                    taken[index].append(msg.message_id)

    workers = [threading.Thread(target=work, args=(index,)) for index in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)

    assert taken[0] and taken[1], "one consumer got everything"
    assert not set(taken[0]) & set(taken[1])
    assert sorted(taken[0] + taken[1]) == sorted(sent)
    assert group_stats(double, topic) == {"depth": 0, "inflight": 0}


def test_each_group_gets_every_message(double: RocketMQDouble, consumer: Any, topic: str) -> None:
    # Published before either group exists: groups start from the beginning of the topic.
    published = {double.publish(topic, b"fan out %d" % n) for n in range(20)}

    for group in ("billing", "notifier"):
        client = consumer(group=group)
        received = receive(client, 20, invisible=30)
        for msg in received:
            client.ack(msg)
        assert {msg.message_id for msg in received} == published
        assert len(received) == 20


def test_push_consumer(mq: ModuleType, double: RocketMQDouble, config: Any, topic: str) -> None:
    consumed: list[tuple[bytes, int]] = []

    class Listener(mq.MessageListener):
        def consume(self, msg: Any) -> Any:
            consumed.append((msg.body, msg.delivery_attempt))
            if msg.body == b"flaky" and msg.delivery_attempt == 1:
                return mq.ConsumeResult.FAILURE
            return mq.ConsumeResult.SUCCESS

    client = mq.PushConsumer(config, "P", Listener(), {topic: mq.FilterExpression()})
    client.startup()
    try:
        double.publish(topic, b"fine")
        double.publish(topic, b"flaky")
        wait_for(lambda: group_stats(double, topic, "P") == {"depth": 0, "inflight": 0} and len(consumed) == 3)
    finally:
        client.shutdown()

    assert sorted(consumed) == [(b"fine", 1), (b"flaky", 1), (b"flaky", 2)]


def test_runs_as_its_own_process(mq: ModuleType, home: Path, topic: str) -> None:
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "wanhook.emulator.rocketmq", "--port", "0"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 20)
        assert ready, "the double did not report where it listens"
        endpoints = process.stdout.readline().split()[-1]

        client = mq.Producer(mq.ClientConfiguration(endpoints, mq.Credentials()), (topic,))
        client.startup()
        try:
            assert client.send(message(mq, topic, b"hello")).message_id
        finally:
            client.shutdown()

        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        process.kill()
        process.wait()
