"""``wanhook consume`` over the RocketMQ 4.x remoting protocol (``WANHOOK_ROCKETMQ_PROTOCOL=4``, the
design's ``rocketmq-client-python`` on ``librocketmq``) against the real Apache RocketMQ broker, whose
NameServer and broker also speak 4.x remoting. Events are published with the real 5.x producer.

The consumer suite itself runs through 4.x in tests/system/test_rocketmq.py (its ``real4`` cases); here is what
only the 4.x path has: its clean shutdown, and its own check that a broker is there."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wanhook.consumers.remoting import broker_unreachable

from ..conftest import Stack
from ..rocketmq_backends import Real4Backend
from ..rocketmq_broker import RealBroker
from ..support import wait_for
from . import test_rocketmq
from .test_rocketmq import cloud_event, consume, outcomes, submitted

quiet = test_rocketmq.quiet  # the fixture: emulator and wanhook serve, events only from the topic


# One test worker runs every test of the real broker: it is started once for them (a JVM of about 1 GiB).
pytestmark = pytest.mark.xdist_group("rocketmq")


@pytest.fixture
def real(real_broker: RealBroker, client4_dir: Path) -> Iterator[Real4Backend]:
    backend = Real4Backend(real_broker, client4_dir)
    yield backend
    backend.stop()


def test_events_through_4x_recorded_once(quiet: Stack, real: Real4Backend) -> None:
    topic = real.new_topic({real.group: 16})
    consumer = consume(quiet, real, topic)
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


def test_the_broker_check_asks_the_nameserver_in_4x_remoting(real: Real4Backend) -> None:
    """What the 4.x consumer checks, since librocketmq does not say: a route from the NameServer, a broker."""
    topic = real.new_topic({real.group: 16})
    namesrv = real.broker.namesrv_addr
    assert broker_unreachable(namesrv, topic) is None
    assert broker_unreachable(f"127.0.0.1:1;{namesrv}", topic) is None  # any NameServer that answers will do
    unknown = broker_unreachable(namesrv, "no-such-topic")
    assert unknown is not None and f"NameServer {namesrv}: no route for topic no-such-topic" in unknown, unknown
    refused = broker_unreachable("127.0.0.1:1", topic)
    assert refused == "NameServer 127.0.0.1:1: Connection refused", refused


def test_a_broker_gone_for_good_ends_the_4x_consumer(quiet: Stack, real: Real4Backend) -> None:
    """librocketmq retries for ever without a word; the process notices, names the cause, and exits 3 after
    WANHOOK_ROCKETMQ_GIVE_UP_SECONDS, as the 5.x consumer does (tests/system/test_rocketmq_hostile.py)."""
    topic = real.new_topic({real.group: 16})
    consumer = consume(quiet, real, topic, give_up_seconds="5")
    real.publish(topic, b'{"just": "some json"}')  # parked once the consumer works
    wait_for(lambda: quiet.redis.xlen("{wanhook}:dead-letters") == 1, 90, what="the consumer working")
    real.stop_producers()
    # Timed from the stop's start, the stop in a thread of its own: the broker unregisters from the NameServer
    # (which stays) early in its shutdown, and its process may take longer to end than the consumer to give up.
    stopping = threading.Thread(target=real.broker.stop_proxy)
    gone = time.monotonic()
    stopping.start()
    try:
        assert consumer.proc is not None
        status = consumer.proc.wait(60)
        took = time.monotonic() - gone
    finally:
        stopping.join()
        real.broker.start_proxy()  # for the tests after this one
    log = consumer.log()
    assert status == 3, log[-3000:]
    last = log.strip().splitlines()[-1]
    assert last.startswith(f"wanhook consume: no RocketMQ broker for {topic} through NameServer"), last
    assert "WANHOOK_ROCKETMQ_GIVE_UP_SECONDS" in last and "no route for topic" in last, last
    # The cause was logged once, when the checks began failing, not every check.
    assert log.count(f"the check for a broker of {topic}") == 1, log[-3000:]
    assert 4 <= took < 30, took
    print(f"4.x consumer without a broker: exited 3 after {took:.1f}s (give-up 5 s)")


def test_4x_retries_are_the_clients_not_the_groups(quiet: Stack, real: Real4Backend) -> None:
    """A 4.x consumer sends its own maximum retries with each message it gives back, and the broker takes it over
    the group's retryMaxTimes: librocketmq sends 16 (its default; its C API has no setter). So a group allowing
    one retry still delivers a third time, and wanhook parks the message, where the 5.x path meets %DLQ%
    (tests/system/test_rocketmq.py::test_group_retries_below_wanhooks_go_to_the_brokers_dlq)."""
    topic = real.new_topic({real.group: 1})
    consumer = consume(quiet, real, topic, max_deliveries="3")
    quiet.redis.hset("{wanhook}:ds:poison", "not", "a string")  # recording any event for it fails (WRONGTYPE)
    real.publish(topic, cloud_event("poison"), keys=["poison"])
    # Deliveries 10 s and 30 s apart (the broker's delay levels for a first and second retry).
    parked = wait_for(lambda: quiet.redis.xrange("{wanhook}:dead-letters"), 90, what="the message to be parked")
    ((_, entry),) = parked
    assert entry["transport"] == "rocketmq4" and entry["reason"].startswith("gave up after 3 deliveries")
    assert consumer.log().count("it will be redelivered") == 2
    assert real.stored(f"%DLQ%{real.group}") == 0
