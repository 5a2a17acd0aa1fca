"""``wanhook consume`` tried as bad luck would: a huge body, settings the proxy refuses, a broker gone for
good, a SIGTERM while Redis hangs."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ..conftest import Stack
from ..rocketmq_backends import Backend, blocked_writing
from ..support import ROOT, Process, wait_for
from .test_rocketmq import GROUP, cloud_event, outcomes, submitted

# One test worker runs every test of the real broker: it is started once for them (a JVM of about 1 GiB).
pytestmark = pytest.mark.xdist_group("rocketmq")


@pytest.fixture
def quiet(tmp_path: Path, redis_url: str, processes: list[Process]) -> Iterator[Stack]:
    stack = Stack(tmp_path, redis_url, processes).start()
    stack.emulator.configure(drop_events=True)
    yield stack
    stack.http.close()


def consume_once(tmp_path: Path, redis_url: str, timeout: float, **settings: str) -> tuple[int, str, float]:
    """Run ``wanhook consume`` to its end: exit status, stderr, seconds taken."""
    env = {
        **os.environ,
        "WANHOOK_REDIS_URL": redis_url,
        "WANHOOK_DATA_DIR": str(tmp_path / "data"),
        "WANHOOK_ROCKETMQ_TOPIC": "dashscope-events",
        "WANHOOK_ROCKETMQ_GROUP": GROUP,
        **{f"WANHOOK_ROCKETMQ_{key.upper()}": value for key, value in settings.items()},
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "wanhook.service.cli", "consume"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stderr, time.monotonic() - started


def test_a_body_over_256_kib_is_parked_as_a_digest(quiet: Stack, broker: Backend) -> None:
    topic = broker.new_topic({GROUP: 16})
    quiet.consume(broker.endpoints, topic)
    task_id, ds_id = submitted(quiet)
    huge = cloud_event(ds_id)[:-1] + b', "padding": "' + b"x" * (1024 * 1024) + b'"}'  # a valid event, 1 MiB
    broker.publish(topic, huge, keys=[ds_id], tag="AsyncTaskFinish")
    ((_, entry),) = wait_for(lambda: quiet.redis.xrange("{wanhook}:dead-letters"), 30, what="the body parked")
    assert entry["reason"].startswith("malformed: too_large:")
    assert "body" not in entry and entry["body_bytes"] == str(len(huge))
    assert entry["body_sha256"] == hashlib.sha256(huge).hexdigest()
    assert outcomes(quiet) == []  # never parsed, nothing in the audit stream
    assert quiet.task(task_id)["status"] == "submitted"
    # The same event at its normal size still goes through.
    broker.publish(topic, cloud_event(ds_id), keys=[ds_id], tag="AsyncTaskFinish")
    quiet.wait_status(task_id, "ready")


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("invisible_seconds", "5", "WANHOOK_ROCKETMQ_INVISIBLE_SECONDS must be 10 to 43200"),
        ("invisible_seconds", "50000", "WANHOOK_ROCKETMQ_INVISIBLE_SECONDS must be 10 to 43200"),
        ("await_seconds", "1", "WANHOOK_ROCKETMQ_AWAIT_SECONDS must be at least 3"),
    ],
)
def test_settings_the_proxy_refuses_stop_it_at_start(
    tmp_path: Path, redis_url: str, name: str, value: str, says: str
) -> None:
    status, stderr, _ = consume_once(tmp_path, redis_url, 30, endpoints="127.0.0.1:1", **{name: value})
    assert status == 2
    [line] = stderr.strip().splitlines()
    assert says in line, line


def test_a_broker_gone_for_good_ends_the_process(tmp_path: Path, redis_url: str) -> None:
    from wanhook.emulator.rocketmq import RocketMQDouble

    double = RocketMQDouble(port=0)
    double.start()
    env = {
        **os.environ,
        "WANHOOK_REDIS_URL": redis_url,
        "WANHOOK_DATA_DIR": str(tmp_path / "data"),
        "WANHOOK_ROCKETMQ_ENDPOINTS": double.endpoints,
        "WANHOOK_ROCKETMQ_TOPIC": "dashscope-events",
        "WANHOOK_ROCKETMQ_GROUP": GROUP,
        "WANHOOK_ROCKETMQ_AWAIT_SECONDS": "3",
        "WANHOOK_ROCKETMQ_GIVE_UP_SECONDS": "5",
        "WANHOOK_LOG_LEVEL": "INFO",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "wanhook.service.cli", "consume"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(lambda: "dashscope-events" in double.stats()["topics"], 30, what="the consumer receiving")
        double.stop()
        gone = time.monotonic()
        status = process.wait(60)
        took = time.monotonic() - gone
        assert process.stderr is not None
        last = process.stderr.read().strip().splitlines()[-1]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        double.stop()
    assert status == 3, last
    assert last.startswith("wanhook consume: no RocketMQ broker at") and "WANHOOK_ROCKETMQ_GIVE_UP_SECONDS" in last
    assert 4 <= took < 20, took  # counted from the first failed receive, during the stop


def test_sigterm_while_redis_hangs_exits_within_the_bound(quiet: Stack, broker: Backend) -> None:
    topic = broker.new_topic({GROUP: 16})
    consumer = quiet.consume(broker.endpoints, topic, shutdown_seconds="3")
    task_id, ds_id = submitted(quiet)
    admin = redis.Redis.from_url(quiet.redis_url)
    admin.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
    try:
        broker.publish(topic, cloud_event(ds_id), keys=[ds_id], tag="AsyncTaskFinish")
        assert consumer.proc is not None
        wait_for(lambda: blocked_writing(admin, consumer.proc.pid), 30, what="the consumer hanging on Redis")
        consumer.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        consumer.proc.wait(30)
        took = time.monotonic() - started
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
    assert took < 3 + 5, f"took {took:.1f}s to exit"  # the bound, plus the client's own shutdown
    assert "left unacknowledged" in consumer.log()
    # Not acknowledged: a consumer started afterwards records it once its invisible duration is over.
    quiet.consume(broker.endpoints, topic, name="consume-again")
    quiet.wait_status(task_id, "ready")
    print(f"SIGTERM with Redis hanging ({broker.kind}): exited in {took:.1f}s")


def test_a_data_only_message_is_dashscopes_only_when_the_operator_says_so(quiet: Stack) -> None:
    """Anyone who can publish to the topic can send a bare ``data`` object naming a task: it is recorded and
    acknowledged as ignored, and fails nothing, unless WANHOOK_ROCKETMQ_TRUST_DATA_FORM=1 says the
    EventBridge target's Body is $.data."""
    import json

    from ..rocketmq_backends import DoubleBackend

    broker = DoubleBackend()
    try:
        topic = broker.new_topic({GROUP: 16})
        consumer = quiet.consume(broker.endpoints, topic)
        task_id, ds_id = submitted(quiet)
        forged = json.dumps({"task_id": ds_id, "task_status": "FAILED", "code": "Forged", "message": "x"}).encode()
        broker.publish(topic, forged)
        wait_for(lambda: outcomes(quiet) == ["ignored"], 30, what="the data-only message recorded as ignored")
        [(_, entry)] = quiet.redis.xrange("{wanhook}:events")
        assert entry["task"] == "" and not list(quiet.redis.scan_iter("{wanhook}:early:*"))
        assert quiet.task(task_id)["status"] == "submitted"
        # Acknowledged: never redelivered.
        wait_for(lambda: broker.double.stats()["acked"] >= 1, 30, what="the ack")

        # The operator who set the target's Body to $.data says so: the same form now applies.
        consumer.stop()
        quiet.consume(broker.endpoints, topic, trust_data_form="1")
        real = json.dumps({"task_id": ds_id, "task_status": "FAILED", "code": "DataInspectionFailed"}).encode()
        broker.publish(topic, real)
        assert quiet.wait_status(task_id, "failed")["error"]["code"] == "DataInspectionFailed"
        assert outcomes(quiet) == ["ignored", "applied"]
    finally:
        broker.stop()
