"""Redis beyond one server: a real 3-master Cluster and a real Sentinel, started from redis-server.

Every multi-key operation wanhook runs (its Lua scripts, its transactions) touches keys of the one
hash slot of ``{wanhook}``, so the whole flow works unchanged on either."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import Stack
from ..receiver import CallbackReceiver
from ..support import Process, RedisCluster, RedisSentinel, free_port, wait_for


@pytest.fixture(params=["cluster", "sentinel"])
def topology_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    server = RedisCluster(tmp_path / "cluster") if request.param == "cluster" else RedisSentinel(tmp_path / "sentinel")
    server.start()
    yield server.url
    server.stop()


def test_whole_flow_on_the_topology(topology_url: str, tmp_path: Path, processes: list[Process]) -> None:
    mq_port = free_port()
    stack = Stack(tmp_path, topology_url, processes, "--rocketmq", "--rocketmq-port", str(mq_port))
    stack.env.update(WANHOOK_CALLBACK_ALLOW_PRIVATE="1", WANHOOK_LIMITS="wan2.2-t2v-plus=10/3")
    stack.start()
    stack.consume(f"127.0.0.1:{mq_port}", "dashscope-events")
    with CallbackReceiver() as receiver:
        ids = [stack.create(f"clustered {n}", callback={"url": receiver.url})["id"] for n in range(6)]
        canceled = stack.create("never sent")
        assert stack.http.post(f"/v1/tasks/{canceled['id']}/cancel").json()["status"] == "canceled"
        with httpx.stream("GET", f"{stack.url}/v1/tasks/{ids[0]}/events", timeout=60) as response:
            streamed = [json.loads(line[6:])["status"] for line in response.iter_lines() if line.startswith("data: ")]
        assert streamed[-1] == "ready"
        for task_id in ids:
            stack.wait_status(task_id, "ready")
        wait_for(lambda: len(receiver.received) == 6, 30, what="six callbacks")
    outcomes = [entry["outcome"] for _, entry in stack.redis.xrange("{wanhook}:events")]
    assert outcomes.count("applied") == 6 and set(outcomes) <= {"applied", "duplicate", "stale"}  # both transports
    assert stack.emulator.stats()["max_running_seen"]["wan2.2-t2v-plus"] <= 3
    assert '\nwanhook_tasks{status="ready"} 6.0\n' in stack.http.get("/metrics").text
    assert stack.http.get("/readyz").status_code == 200
