"""The one worker loop (service/jobs/worker.py): stop, Redis away and back, the outage's log lines, crashes."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from wanhook.service.jobs import worker
from wanhook.service.jobs.supervisor import Supervisor

from ..support import Process, RedisServer, free_port

LOG = logging.getLogger("wanhook.test-worker")


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOG.name]


async def test_a_stop_ends_the_loop_at_once_even_mid_pause() -> None:
    stop = asyncio.Event()
    steps = 0

    async def step() -> None:
        nonlocal steps
        steps += 1

    loop = asyncio.create_task(worker.run_forever(step, stop, log=LOG, interval=3600))
    while steps == 0:
        await asyncio.sleep(0.001)
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(loop, 5)
    assert time.monotonic() - started < 1 and steps == 1  # the hour's pause was cut short


async def test_redis_away_pauses_the_loop_and_it_goes_on_when_redis_is_back(
    tmp_path: Path, processes: list[Process], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOG.name)
    port = free_port()
    # Nothing listens there yet: a real refusal, at once (redis-py's own retries are not under test).
    redis = Redis(port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    stop = asyncio.Event()
    attempts: list[float] = []
    answered = asyncio.Event()

    async def step() -> None:
        attempts.append(time.monotonic())
        await redis.ping()
        answered.set()
        stop.set()

    loop = asyncio.create_task(worker.run_forever(step, stop, log=LOG, retry_seconds=0.05))
    try:
        async with asyncio.timeout(10):
            while len(attempts) < 4:
                await asyncio.sleep(0.01)
        assert not loop.done()  # refused again and again, and still running
        server = RedisServer(tmp_path, port=port)
        processes.append(server.launch())
        await asyncio.to_thread(server.wait_ready)
        await asyncio.wait_for(answered.wait(), 15)
        await asyncio.wait_for(loop, 5)
    finally:
        stop.set()
        await redis.aclose()
    gaps = [later - earlier for earlier, later in zip(attempts, attempts[1:], strict=False)]
    assert all(gap >= 0.045 for gap in gaps), gaps  # paced, not a busy loop
    logged = lines(caplog)
    # Said once with its cause (not once per failure), and its end said.
    assert len([line for line in logged if line.startswith("Redis unavailable (ConnectionError: ")]) == 1, logged
    assert "retrying" in logged[0] and str(port) in logged[0]
    assert logged[-1].startswith(f"Redis answers again after {len(attempts) - 1} failures"), logged


def test_an_outage_is_logged_at_once_then_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOG.name)
    now = [100.0]
    outage = worker.Outage(LOG, then="sweeping later", every=60, clock=lambda: now[0])
    for _ in range(30):  # thirty failures a second apart, each with another text
        outage.failed(RedisConnectionError(f"Error 111 connecting to 127.0.0.1:{now[0]:.0f}. Connection refused."))
        now[0] += 1
    assert lines(caplog) == [
        "Redis unavailable (ConnectionError: Error 111 connecting to 127.0.0.1:100. "
        "Connection refused.); sweeping later"
    ]
    now[0] = 161.0
    outage.failed(TimeoutError())
    assert lines(caplog)[1:] == [
        "Redis unavailable (TimeoutError); sweeping later; 29 more failures since the last line"
    ]
    outage.over()
    assert lines(caplog)[2:] == ["Redis answers again after 31 failures in 61.0 s"]
    outage.over()  # nothing more to say while it works
    now[0] = 170.0
    outage.failed(RedisConnectionError("again"))  # a flap within the minute brings no line at once
    assert len(lines(caplog)) == 3


async def test_anything_but_redis_ends_the_loop_and_the_supervisor_restarts_it() -> None:
    stop = asyncio.Event()
    runs = 0

    async def step() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RedisConnectionError("away")  # ridden out here
        if runs == 2:
            raise ValueError("data the worker cannot read")  # left to the supervisor
        stop.set()

    async def loop(stop: asyncio.Event) -> None:
        await worker.run_forever(step, stop, log=LOG, retry_seconds=0.01)

    supervisor = Supervisor(first_delay=0.01, max_delay=0.05)
    await asyncio.wait_for(supervisor.run({"reader": loop}, stop), 10)
    assert runs == 3 and supervisor.restarts == {"reader": 1}
