"""``wanhook consume`` when RocketMQ cannot be reached: the cause in wanhook's own log, not a line a second."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import grpc
import pytest

from wanhook.consumers.rocketmq import ClientErrors, FailureLog, describe

from ..support import Process, Wanhook, free_port, wait_for

# One test worker runs every test of the real broker: it is started once for them (a JVM of about 1 GiB).
pytestmark = pytest.mark.xdist_group("rocketmq")


def failure_lines(log: str) -> list[str]:
    lines = []
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("logger") == "wanhook.consumer" and "failed" in record.get("message", ""):
            lines.append(record["message"])
    return lines


def test_a_broker_gone_is_named_once_not_every_second_and_its_return_said(
    tmp_path: Path, redis_url: str, processes: list[Process]
) -> None:
    """The endpoint answers at start (unreachable at start is exit 3, see test_settings_check), then goes."""
    from wanhook.emulator.rocketmq import RocketMQDouble

    port = free_port()
    home = tmp_path / "home"
    env = {
        "WANHOOK_REDIS_URL": redis_url,
        "WANHOOK_DATA_DIR": str(tmp_path / "data"),
        "WANHOOK_ROCKETMQ_ENDPOINTS": f"127.0.0.1:{port}",
        "WANHOOK_ROCKETMQ_TOPIC": "dashscope-events",
        "WANHOOK_ROCKETMQ_GROUP": "wanhook",
        "WANHOOK_ROCKETMQ_AWAIT_SECONDS": "3",
        "WANHOOK_LOG_LEVEL": "INFO",
        # The client's own log, where each failed receive leaves a line: the count of retries.
        "HOME": str(home),
    }
    client_log = home / "logs" / "rocketmq_python" / "rocketmq_client.log"

    def attempts() -> int:
        text = client_log.read_text(errors="replace") if client_log.exists() else ""
        return text.count("receive message exception")

    double = RocketMQDouble(port=port)
    double.start()
    consume = Wanhook(tmp_path, env, name="consume", port=free_port())
    processes.append(consume.start())
    try:

        def receiving() -> bool:
            topic = double.stats().get("topics", {}).get("dashscope-events", {})
            return "wanhook" in topic.get("groups", {})

        wait_for(receiving, 30, what="the consumer receiving")
        # Like the real proxy, the double refuses a receive that outruns the client's settings: a start can
        # leave one line (and its "works again") before this point. Only what follows the stop is counted.
        wait_for(
            lambda: len(failure_lines(consume.log())) == 0 or "works again" in consume.log(),
            30,
            what="the consumer past its start",
        )
        mark = len(consume.log())
    finally:
        double.stop()

    def after_stop() -> list[str]:
        return failure_lines(consume.log()[mark:])

    first = wait_for(after_stop, 30, what="the consumer's first failure line")[0]
    assert f"127.0.0.1:{port}" in first
    assert "UNAVAILABLE" in first, first
    # Five more attempts (a second apart) after the first line: each would have been a line before.
    seen = attempts()
    wait_for(lambda: attempts() >= seen + 5, 30, interval=0.2, what="five more receive attempts")
    assert consume.alive
    assert len(after_stop()) == 1, after_stop()

    double = RocketMQDouble(port=port)  # the endpoint comes back
    double.start()
    try:
        # It works again: a message published now is received and settled (a malformed one is parked and acked).
        double.publish("dashscope-events", b'{"just": "some json"}')
        wait_for(lambda: double.stats()["acked"] == 1, 60, interval=0.2, what="the consumer to receive again")
        wait_for(lambda: "works again after" in consume.log(), 10, interval=0.2, what="the consumer to say so")
    finally:
        double.stop()
    assert len(after_stop()) == 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_failure_log_counts_what_it_holds_back(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    failures = FailureLog("receive from here", interval=30, clock=clock)
    with caplog.at_level(logging.INFO, logger="wanhook.consumer"):
        for _ in range(10):
            failures.failed("UNAVAILABLE: Connection refused")
            clock.now += 1
        clock.now += 25
        failures.failed("UNAVAILABLE: Connection refused")
        failures.succeeded()
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3, messages
    assert "UNAVAILABLE: Connection refused" in messages[0] and "more failures" not in messages[0]
    assert "9 more failures since the last line" in messages[1]
    assert "works again after 11 failures" in messages[2]


def test_failure_log_keeps_the_give_up_clock() -> None:
    """Both consumers give up after WANHOOK_ROCKETMQ_GIVE_UP_SECONDS of failures with no success between."""
    clock = Clock()
    failures = FailureLog("receive from here", clock=clock)
    assert failures.failing_for() == 0
    failures.failed("UNAVAILABLE")
    clock.now += 7
    failures.failed("UNAVAILABLE")
    assert failures.failing_for() == 7
    failures.succeeded()
    assert failures.failing_for() == 0
    clock.now += 100
    failures.failed("UNAVAILABLE")  # a new run of failures starts its own clock
    clock.now += 2
    assert failures.failing_for() == 2


def test_describe_unwraps_and_names_grpc_status() -> None:
    class RpcError(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNAVAILABLE

        def details(self) -> str:
            return "failed to connect to all addresses; last error: Connection refused"

    try:
        try:
            raise RpcError()
        except RpcError as inner:
            raise RuntimeError("receive failed") from inner
    except RuntimeError as outer:
        assert describe(outer) == "UNAVAILABLE: failed to connect to all addresses; last error: Connection refused"
    refused = "ConnectionRefusedError: [Errno 111] Connection refused"
    assert describe(Exception(OSError(111, "Connection refused"))) == refused  # wrapped as an argument
    assert describe(TimeoutError()) == "TimeoutError"


def test_client_errors_keep_the_logged_grpc_status() -> None:
    errors = ClientErrors()
    errors.emit(
        logging.LogRecord(
            "rocketmq-python-client",
            logging.ERROR,
            __file__,
            1,
            "query topic raise exception, <AioRpcError of RPC that terminated with:\n"
            '\tstatus = StatusCode.UNAUTHENTICATED\n\tdetails = "bad signature"\n'
            '\tdebug_error_string = "..."\n>',
            None,
            None,
        )
    )
    errors.emit(
        logging.LogRecord(
            "rocketmq-python-client",
            logging.ERROR,
            __file__,
            1,
            "select topic queue raise exception: failed to fetch topic:t route.",
            None,
            None,
        )
    )
    assert errors.best(besides="failed to fetch topic:t route.") == "UNAUTHENTICATED: bad signature"
    errors.clear()
    errors.emit(
        logging.LogRecord(
            "rocketmq-python-client",
            logging.ERROR,
            __file__,
            1,
            "select topic queue raise exception: failed to fetch topic:t route.",
            None,
            None,
        )
    )
    assert errors.best(besides="failed to fetch topic:t route.") is None
