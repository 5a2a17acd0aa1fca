"""``wanhook consume`` over the RocketMQ 4.x remoting protocol (``WANHOOK_ROCKETMQ_PROTOCOL=4``, the
design's ``rocketmq-client-python`` on ``librocketmq``) against the real Apache RocketMQ broker, whose
NameServer and broker also speak 4.x remoting. Events are published with the real 5.x producer."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import test_rocketmq
from .conftest import Stack
from .rocketmq4_client import obtain
from .rocketmq_backends import RealBackend
from .rocketmq_broker import RealBroker
from .support import Wanhook, wait_for
from .test_rocketmq import GROUP, cloud_event, outcomes, submitted

quiet = test_rocketmq.quiet  # the fixture: emulator and wanhook serve, events only from the topic


@pytest.fixture(scope="session")
def client4_dir() -> Path:
    try:
        return obtain()
    except Exception as exc:
        pytest.skip(f"no RocketMQ 4.x client library: {exc}")


@pytest.fixture
def real(real_broker: RealBroker) -> Iterator[RealBackend]:
    backend = RealBackend(real_broker)
    yield backend
    backend.stop()


def consume4(stack: Stack, real: RealBackend, topic: str, client4_dir: Path, **settings: str) -> Wanhook:
    return stack.consume(
        real.endpoints,
        topic,
        protocol="4",
        namesrv=real.broker.namesrv_addr,
        client4_dir=str(client4_dir),
        **settings,
    )


def test_events_through_4x_recorded_once(quiet: Stack, real: RealBackend, client4_dir: Path) -> None:
    topic = real.new_topic({GROUP: 16})
    consumer = consume4(quiet, real, topic, client4_dir)
    # Two: the emulator runs two tasks at a time per key, as DashScope does; a third would wait queued.
    tasks = [submitted(quiet, f"4.x event {n}") for n in range(2)]
    for _, ds_id in tasks:
        real.publish(topic, cloud_event(ds_id), keys=[ds_id], tag="AsyncTaskFinish")
    real.publish(topic, cloud_event(tasks[0][1], event_id="again"), keys=[tasks[0][1]])  # a second event, same task
    for task_id, _ in tasks:
        assert quiet.wait_status(task_id, "ready", timeout=90)["video"]["bytes"] > 0
    wait_for(lambda: len(outcomes(quiet)) == 3, 60, what="three events settled")
    assert sorted(outcomes(quiet)).count("applied") == 2
    # Clean shutdown: SIGTERM, exit status 0 (the library's shutdown does not crash the process).
    consumer.proc.send_signal(signal.SIGTERM)
    assert consumer.proc.wait(30) == 0, consumer.log()


def test_poison_message_dead_lettered_through_4x(quiet: Stack, real: RealBackend, client4_dir: Path) -> None:
    topic = real.new_topic({GROUP: 16})
    consume4(quiet, real, topic, client4_dir)
    real.publish(topic, b"\x00not json at all")
    wait_for(lambda: len(quiet.redis.xrange("{wanhook}:dead-letters")) == 1, 90, what="parked")
    (parked,) = [entry for _, entry in quiet.redis.xrange("{wanhook}:dead-letters")]
    assert parked["transport"] == "rocketmq4" and parked["reason"].startswith("malformed:")
