"""The RocketMQ 5 consumer protocol, driven by Apache's real Python client over loopback, against the
emulator's double and a real Apache RocketMQ 5.x (NameServer + local-mode Proxy): the same tests for both,
the real broker the reference for what the double does."""

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
from typing import Any

import pytest

from ..rocketmq_backends import MIN_AWAIT, MIN_INVISIBLE, Backend

# One test worker runs every test of the real broker: it is started once for them (a JVM of about 1 GiB).
pytestmark = pytest.mark.xdist_group("rocketmq")


ROOT = Path(__file__).resolve().parents[2]
# Seconds (the client only takes whole seconds): the shortest invisible duration the real proxy lets a
# receive ask for. A test that needs a message back sooner shortens it with change_invisible_duration,
# which has no minimum, as a PushConsumer's failed listener does.
INVISIBLE = MIN_INVISIBLE


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="session")
def mq(home: Path) -> ModuleType:
    # The client fixes its log directory, $HOME/logs/rocketmq_python, when it is first imported.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        return importlib.import_module("rocketmq")


@pytest.fixture
def groups() -> dict[str, int]:
    """The consumer groups a test's topic is made with, and their maximum retries."""
    return {"G": 16, "P": 16, "billing": 16, "notifier": 16}


@pytest.fixture
def topic(broker: Backend, groups: dict[str, int]) -> str:
    return broker.new_topic(groups)


@pytest.fixture
def config(mq: ModuleType, broker: Backend) -> Any:
    # The double takes credentials and a namespace (as on ApsaraMQ) in its stride; the real broker runs
    # without ACL and without a namespace.
    return mq.ClientConfiguration(broker.endpoints, mq.Credentials("user", "secret"), namespace=broker.namespace)


@pytest.fixture
def consumer(mq: ModuleType, config: Any, topic: str) -> Iterator[Callable[..., Any]]:
    started = []

    def start(group: str = "G", tags: str = "*", await_duration: int = MIN_AWAIT) -> Any:
        client = mq.SimpleConsumer(config, group, {topic: mq.FilterExpression(tags)}, await_duration)
        client.startup()
        started.append(client)
        return Settled(client, mq)

    yield start
    for client in started:
        client.shutdown()


@pytest.fixture
def producer(mq: ModuleType, config: Any, topic: str) -> Iterator[Any]:
    client = mq.Producer(config, (topic,))
    client.startup()
    yield client
    client.shutdown()


class Settled:
    """A SimpleConsumer whose receives wait until the broker has its settings.

    startup() returns once the client has sent its settings on the telemetry stream, not once the proxy
    has taken them: a receive in the next milliseconds is answered 50001 INTERNAL_SERVER_ERROR ("settings"
    is null) by the real proxy. Retried here for up to 5 s; wanhook's consumer retries it like any failure."""

    def __init__(self, client: Any, mq: ModuleType) -> None:
        self._client = client
        self._mq = mq
        self._ready = False

    def receive(self, *args: Any) -> Any:
        deadline = time.monotonic() + 5
        while True:
            try:
                received = self._client.receive(*args)
                self._ready = True
                return received
            except self._mq.v5.exception.InternalErrorException as error:
                if self._ready or "settings" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def message(mq: ModuleType, topic: str, body: bytes, tag: str | None = None, keys: tuple[str, ...] = ()) -> Any:
    msg = mq.Message()
    msg.topic = topic
    msg.body = body
    if tag:
        msg.tag = tag
    for key in keys:
        msg.keys = key  # the setter adds one key per assignment
    return msg


def receive(consumer: Any, count: int, invisible: int = INVISIBLE, within: float = 30.0) -> list[Any]:
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


def settled(broker: Backend, topic: str, group: str = "G") -> None:
    """Nothing left for the group: asked of the double; the real broker's answer is what comes back or not."""
    assert broker.group_settled(topic, group) in (True, None)


def test_send_receive_ack(mq: ModuleType, broker: Backend, producer: Any, consumer: Any, topic: str) -> None:
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
    settled(broker, topic)


def test_publish_wakes_a_parked_receive(broker: Backend, consumer: Any, topic: str) -> None:
    client = consumer(await_duration=15)
    received: list[Any] = []
    thread = threading.Thread(target=lambda: received.extend(client.receive(8, INVISIBLE)))
    thread.start()
    if broker.kind == "double":  # only the double says when a receive is parked
        polling = broker.double.stats()["polling"]
        wait_for(lambda: broker.double.stats()["polling"] > polling)

    started = time.monotonic()
    message_id = broker.publish(topic, b"event", keys=["t-2"], tag="AsyncTaskFinish", properties={"a": "b"})
    thread.join(20)

    assert time.monotonic() - started < 8, "the long poll was not woken"
    [msg] = received
    assert (msg.message_id, msg.body, msg.keys, msg.tag, msg.properties) == (
        message_id,
        b"event",
        {"t-2"},
        "AsyncTaskFinish",
        {"a": "b"},
    )
    client.ack(msg)


def test_unacked_message_comes_back(mq: ModuleType, broker: Backend, consumer: Any, topic: str) -> None:
    broker.publish(topic, b"retry me")
    client = consumer()

    [first] = receive(client, 1)
    started = time.monotonic()
    [second] = receive(client, 1)
    waited = time.monotonic() - started

    assert waited >= INVISIBLE - 0.5, "redelivered before its invisible duration ended"
    assert second.message_id == first.message_id
    assert (first.delivery_attempt, second.delivery_attempt) == (1, 2)
    assert second.receipt_handle != first.receipt_handle
    # A handle of an earlier delivery is refused.
    with pytest.raises(mq.v5.exception.BadRequestException) as stale:
        client.ack(first)
    assert stale.value.code == mq.grpc_protocol.Code.INVALID_RECEIPT_HANDLE
    client.ack(second)
    settled(broker, topic)


def test_change_invisible_duration_extends(broker: Backend, consumer: Any, topic: str) -> None:
    broker.publish(topic, b"slow work")
    client = consumer()
    [msg] = receive(client, 1)
    first_handle = msg.receipt_handle

    client.change_invisible_duration(msg, INVISIBLE * 2)
    # Past the first invisible duration the message must still be hidden.
    extended_until = time.monotonic() + INVISIBLE + 3
    while time.monotonic() < extended_until:
        assert client.receive(32, INVISIBLE) == []

    assert msg.receipt_handle != first_handle
    client.ack(msg)
    settled(broker, topic)


def test_ack_with_a_handle_replaced_by_a_change_does_nothing(broker: Backend, consumer: Any, topic: str) -> None:
    """Real broker: the ack is answered OK and the message still comes back when the new handle runs out."""
    broker.publish(topic, b"changed")
    client = consumer()
    [msg] = receive(client, 1)
    old_handle = msg.receipt_handle
    client.change_invisible_duration(msg, 1)  # no minimum here, unlike a receive
    new_handle = msg.receipt_handle
    msg.receipt_handle = old_handle
    client.ack(msg)  # no error

    [again] = receive(client, 1)
    assert again.message_id == msg.message_id and again.delivery_attempt == 2
    assert new_handle != old_handle
    client.ack(again)
    settled(broker, topic)


def test_invisible_duration_bounds(mq: ModuleType, broker: Backend, consumer: Any, topic: str) -> None:
    client = consumer()
    for seconds, word in ((INVISIBLE - 1, "too small. min is 10000"), (43_201, "too large. max is 43200000")):
        with pytest.raises(mq.v5.exception.BadRequestException) as refused:
            client.receive(32, seconds)
        assert refused.value.code == mq.grpc_protocol.Code.ILLEGAL_INVISIBLE_TIME
        assert word in str(refused.value)
    broker.publish(topic, b"bounds")
    [msg] = receive(client, 1)
    with pytest.raises(mq.v5.exception.BadRequestException) as refused:
        client.change_invisible_duration(msg, 43_201)
    assert refused.value.code == mq.grpc_protocol.Code.ILLEGAL_INVISIBLE_TIME


def test_long_polling_bounds(mq: ModuleType, consumer: Any) -> None:
    # The client's deadline is its await duration + 3 s: under the proxy's 5 s minimum poll it is refused.
    with pytest.raises(mq.v5.exception.BadRequestException) as refused:
        consumer(await_duration=1).receive(32, INVISIBLE)
    assert refused.value.code == mq.grpc_protocol.Code.ILLEGAL_POLLING_TIME
    # A shorter wait is lengthened to 5 s.
    client = consumer(await_duration=MIN_AWAIT)
    started = time.monotonic()
    assert client.receive(32, INVISIBLE) == []
    assert 4.0 <= time.monotonic() - started <= 7.5


def test_unknown_topic_and_group_are_refused(mq: ModuleType, config: Any, topic: str) -> None:
    absent = f"absent-{uuid.uuid4().hex[:8]}"
    client = mq.Producer(config, (absent,))
    client.startup()
    try:
        with pytest.raises(Exception, match="failed to fetch topic"):
            client.send(message(mq, absent, b"nowhere"))
    finally:
        client.shutdown()
    stranger = mq.SimpleConsumer(config, absent, {topic: mq.FilterExpression("*")}, MIN_AWAIT)
    stranger.startup()
    try:
        with pytest.raises(mq.v5.exception.InternalErrorException):
            stranger.receive(32, INVISIBLE)
    finally:
        stranger.shutdown()


@pytest.mark.parametrize("groups", [{"G": 2}])
def test_after_the_groups_retries_the_message_goes_to_its_dlq(broker: Backend, consumer: Any, topic: str) -> None:
    broker.publish(topic, b"poison")
    client = consumer()
    attempts: list[int] = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 15:  # nothing more for longer than a redelivery takes
        for msg in client.receive(32, INVISIBLE):
            attempts.append(msg.delivery_attempt)
            client.change_invisible_duration(msg, 1)  # fail it: back in about a second
            quiet_since = time.monotonic()
    assert attempts == [1, 2, 3]  # retryMaxTimes 2: three deliveries
    wait_for(lambda: broker.stored("%DLQ%G") == 1, 30)


def test_tag_filter(broker: Backend, consumer: Any, topic: str) -> None:
    for tag in ("a", "b", None, "c"):
        broker.publish(topic, f"tagged {tag}".encode(), tag=tag)
    client = consumer(tags="a || c")

    received = receive(client, 2)

    assert sorted(msg.tag for msg in received) == ["a", "c"]
    for msg in received:
        client.ack(msg)
    # What the filter skips is consumed for the group.
    settled(broker, topic)


def test_one_group_shares_messages(mq: ModuleType, broker: Backend, producer: Any, consumer: Any, topic: str) -> None:
    clients = [consumer(), consumer()]
    sent = {producer.send(message(mq, topic, b"job %d" % n)).message_id for n in range(200)}
    taken: list[list[str]] = [[], []]
    lock = threading.Lock()

    def work(index: int) -> None:
        deadline = time.monotonic() + 40
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
        worker.join(60)

    assert taken[0] and taken[1], "one consumer got everything"
    assert not set(taken[0]) & set(taken[1])
    assert sorted(taken[0] + taken[1]) == sorted(sent)
    settled(broker, topic)


def test_each_group_gets_every_message(broker: Backend, consumer: Any, topic: str) -> None:
    # Published before either group reads: groups start from the beginning of the topic.
    published = {broker.publish(topic, b"fan out %d" % n) for n in range(20)}

    for group in ("billing", "notifier"):
        client = consumer(group=group)
        received = receive(client, 20, invisible=30)
        for msg in received:
            client.ack(msg)
        assert {msg.message_id for msg in received} == published
        assert len(received) == 20


def test_push_consumer(mq: ModuleType, broker: Backend, config: Any, topic: str) -> None:
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
        broker.publish(topic, b"fine")
        broker.publish(topic, b"flaky")
        wait_for(lambda: len(consumed) == 3, 60)
    finally:
        client.shutdown()

    assert sorted(consumed) == [(b"fine", 1), (b"flaky", 1), (b"flaky", 2)]
    settled(broker, topic, "P")


def test_runs_as_its_own_process(mq: ModuleType, home: Path) -> None:
    topic = f"T-{uuid.uuid4().hex[:12]}"
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
