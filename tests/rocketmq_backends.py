"""One RocketMQ consumer suite, two brokers: the emulator's double and a real Apache RocketMQ 5.x.

Tests take the ``broker`` fixture (parametrized ``double`` / ``real``) and use only what both offer:
endpoints, topics and groups made beforehand, publishing, and the messages a topic or a group's ``%DLQ%``
topic holds. Import the fixtures into a test module with ``from .rocketmq_backends import broker, real_broker``.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .rocketmq_broker import RealBroker, missing

# The real proxy's defaults, which the double now keeps too (see emulator/rocketmq.py).
MIN_INVISIBLE = 10
MIN_AWAIT = 3  # the client's deadline is await + 3 s; the proxy polls at least 5 s and refuses a shorter deadline


class Backend:
    kind = ""
    protocol = "5"  # the protocol wanhook consume speaks to it: 5 (gRPC through the proxy) or 4 (remoting)
    endpoints = ""
    namespace = ""
    group = "wanhook"  # the consumer group its tests use (Stack.consume's)

    @property
    def name(self) -> str:
        return self.kind if self.protocol == "5" else f"{self.kind}, 4.x"

    def consumer_settings(self) -> dict[str, str]:
        """The ``WANHOOK_ROCKETMQ_*`` settings (lower-case, no prefix) a consumer of this broker needs beyond
        endpoints, topic and group."""
        return {}

    def create(self, topics: tuple[str, ...] = (), groups: dict[str, int] | None = None) -> None:
        raise NotImplementedError

    def new_topic(self, groups: dict[str, int] | None = None) -> str:
        topic = f"T-{uuid.uuid4().hex[:12]}"
        self.create((topic,), groups)
        return topic

    def publish(
        self,
        topic: str,
        body: bytes,
        keys: list[str] | None = None,
        tag: str | None = None,
        properties: dict[str, str] | None = None,
    ) -> str:
        raise NotImplementedError

    def stored(self, topic: str) -> int:
        """How many messages ``topic`` holds (e.g. ``%DLQ%<group>``)."""
        raise NotImplementedError

    def group_settled(self, topic: str, group: str) -> bool | None:
        """Whether the group has nothing left in ``topic``; None where the broker does not say cheaply."""
        return None

    def stop(self) -> None:
        pass


class DoubleBackend(Backend):
    kind = "double"
    namespace = "ns"  # credentials and a namespace, as on ApsaraMQ: the double takes them in its stride

    def __init__(self) -> None:
        from wanhook.emulator.rocketmq import RocketMQDouble

        self.double = RocketMQDouble(port=0, auto_create=False)
        self.double.start()
        self.endpoints = self.double.endpoints

    def create(self, topics: tuple[str, ...] = (), groups: dict[str, int] | None = None) -> None:
        for topic in topics:
            self.double.create_topic(topic)
        for group, retries in (groups or {}).items():
            self.double.create_group(group, retries)

    def publish(
        self,
        topic: str,
        body: bytes,
        keys: list[str] | None = None,
        tag: str | None = None,
        properties: dict[str, str] | None = None,
    ) -> str:
        return self.double.publish(topic, body, keys=keys, tag=tag, properties=properties)

    def stored(self, topic: str) -> int:
        return self.double.stats()["topics"].get(topic, {}).get("stored", 0)

    def group_settled(self, topic: str, group: str) -> bool | None:
        stats = self.double.stats()["topics"].get(topic, {}).get("groups", {}).get(group)
        return stats == {"depth": 0, "inflight": 0}

    def stop(self) -> None:
        self.double.stop()


class RealBackend(Backend):
    kind = "real"

    def __init__(self, broker: RealBroker) -> None:
        self.broker = broker
        self.endpoints = broker.endpoints
        self._producers: dict[str, Any] = {}
        self._lock = threading.Lock()

    def create(self, topics: tuple[str, ...] = (), groups: dict[str, int] | None = None) -> None:
        self.broker.create(topics, groups)

    def producer(self, topic: str) -> Any:
        import rocketmq as mq

        with self._lock:
            if topic not in self._producers:
                client = mq.Producer(mq.ClientConfiguration(self.endpoints, mq.Credentials()), (topic,))
                client.startup()
                self._producers[topic] = client
            return self._producers[topic]

    def publish(
        self,
        topic: str,
        body: bytes,
        keys: list[str] | None = None,
        tag: str | None = None,
        properties: dict[str, str] | None = None,
    ) -> str:
        """Through a real 5.x producer (Apache's Python client), as EventBridge's RocketMQ target sends."""
        import rocketmq as mq

        message = mq.Message()
        message.topic = topic
        message.body = body
        if tag:
            message.tag = tag
        for key in keys or ():
            message.keys = key  # the setter adds one key per assignment
        for name, value in (properties or {}).items():
            message.add_property(name, value)
        return self.producer(topic).send(message).message_id

    def stored(self, topic: str) -> int:
        return self.broker.stored(topic)[topic]

    def stop_producers(self) -> None:
        """Before the broker restarts: producers made afterwards connect afresh."""
        with self._lock:
            for client in self._producers.values():
                client.shutdown()
            self._producers.clear()

    def stop(self) -> None:
        self.stop_producers()


class Real4Backend(RealBackend):
    """The same real broker, consumed over the 4.x remoting protocol through its NameServer
    (``WANHOOK_ROCKETMQ_PROTOCOL=4``, rocketmq-client-python on librocketmq); published to as before."""

    protocol = "4"

    def __init__(self, broker: RealBroker, client4_dir: Path) -> None:
        super().__init__(broker)
        self.client4_dir = client4_dir
        # A group of its own per test: a 4.x group's retry topic (%RETRY%<group>) is one for all its topics, and
        # its consumers take what a test before left there (messages given back when it stopped them).
        self.group = f"wanhook-{uuid.uuid4().hex[:8]}"

    def consumer_settings(self) -> dict[str, str]:
        return {
            "protocol": "4",
            "namesrv": self.broker.namesrv_addr,
            "client4_dir": str(self.client4_dir),
            "group": self.group,
        }


@pytest.fixture(scope="session")
def client4_dir() -> Path:
    """rocketmq-client-python's package with librocketmq.so beside it (tests/rocketmq4_client.py)."""
    from .rocketmq4_client import obtain

    try:
        return obtain()
    except Exception as exc:
        pytest.skip(f"no RocketMQ 4.x client library: {exc}")


def backend(request: pytest.FixtureRequest, kind: str) -> Backend:
    """``double``, ``real`` (5.x gRPC) or ``real4`` (the real broker through 4.x remoting)."""
    if kind == "double":
        return DoubleBackend()
    if kind == "real4":
        # The library first: without it the case skips at once, before a broker is started for it.
        library = request.getfixturevalue("client4_dir")
        return Real4Backend(request.getfixturevalue("real_broker"), library)
    return RealBackend(request.getfixturevalue("real_broker"))


@pytest.fixture(scope="session")
def real_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealBroker]:
    reason = missing()
    if reason:
        pytest.skip(reason)
    broker = RealBroker(Path(tmp_path_factory.mktemp("rocketmq"))).start()
    print(f"\nRocketMQ {broker.endpoints} started in {broker.start_seconds:.1f}s")
    yield broker
    broker.stop()


@pytest.fixture(params=["double", "real"])
def broker(request: pytest.FixtureRequest) -> Iterator[Backend]:
    chosen = backend(request, request.param)
    yield chosen
    chosen.stop()


def local_ports(pid: int) -> set[int]:
    """The local TCP ports of a process's sockets (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def blocked_writing(redis_client: Any, pid: int) -> bool:
    """Whether process ``pid`` has a Redis command held by CLIENT PAUSE WRITE (flag ``b``, not a blocking read)."""
    ports = local_ports(pid)
    for client in redis_client.client_list():
        port = int(client["addr"].rsplit(":", 1)[1])
        if port in ports and "b" in client["flags"] and not client["cmd"].startswith(("bl", "br", "bz", "xread")):
            return True
    return False
