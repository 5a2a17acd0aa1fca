"""Scale-out: two of each process on one Redis, events arriving by both transports at once."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from ..conftest import TOKEN, Stack
from ..receiver import CallbackReceiver
from ..support import Process, free_port, wait_for


@pytest.mark.slow
def test_two_of_each_process_share_500_tasks(tmp_path: Path, redis_url: str, processes: list[Process]) -> None:
    count = 500
    mq_port = free_port()
    stack = Stack(tmp_path, redis_url, processes, "--rocketmq", "--rocketmq-port", str(mq_port))
    stack.env.update(
        WANHOOK_LIMITS="wan2.2-t2v-plus=50/25",
        WANHOOK_CALLBACK_ALLOW_PRIVATE="1",
        WANHOOK_DOWNLOAD_CONCURRENCY="8",
        WANHOOK_RATE_LIMIT="100000",
    )
    stack.start("--no-workers")
    second = stack.serve(None, "--no-workers")
    # Every event is pushed to both receivers and written to the topic: three copies, one effect.
    stack.emulator.configure(
        render_seconds=0.5,
        limits={"wan2.2-t2v-plus": {"rps": 50, "running": 25}},
        webhook_targets=[
            {"url": stack.webhook, "token": TOKEN},
            {"url": second.url + "/v1/events/dashscope", "token": TOKEN},
        ],
    )
    workers = [stack.worker("worker-a"), stack.worker("worker-b")]
    consumers = [stack.consume(f"127.0.0.1:{mq_port}", "dashscope-events", name=f"consume-{n}") for n in "ab"]
    clients = [stack.http, httpx.Client(base_url=second.url, timeout=30)]
    with CallbackReceiver() as receiver:
        started = time.monotonic()
        ids = [
            clients[n % 2]
            .post("/v1/tasks", json={"prompt": f"crowd {n % 7}", "size": "832*480", "callback": {"url": receiver.url}})
            .json()["id"]
            for n in range(count)
        ]
        wait_for(
            lambda: stack.redis.zcard("{wanhook}:tasks:ready") == count, 300, interval=0.5, what="every task ready"
        )
        elapsed = time.monotonic() - started
        wait_for(
            lambda: len({r.headers["webhook-id"] for r in receiver.received}) == count, 60, what="a callback per task"
        )
        per_id = Counter(r.headers["webhook-id"] for r in receiver.received)
    assert set(per_id) == {f"msg_{task_id}_ready" for task_id in ids}
    assert max(per_id.values()) == 1  # no callback twice (none needed a retry)

    counters = stack.redis.hgetall("{wanhook}:counters")
    assert int(counters["download_transfers_completed"]) == count  # no video downloaded twice
    # Each event applied once: on arrival, or (when it beat its create's answer, as it can under load) by the
    # script that records that answer.
    assert int(counters["events_applied"]) + int(counters.get("events_early_applied", 0)) == count
    downloads = [worker.log().count('"logger": "wanhook.download", "message": "task ') for worker in workers]
    handled = [consumer.log().count('"logger": "wanhook.events"') for consumer in consumers]
    assert min(downloads) > count * 0.2 and min(handled) > count * 0.2, (downloads, handled)
    print(
        f"\n{count} tasks, 2 serve + 2 worker + 2 consume, 3 copies of every event: all ready in {elapsed:.1f}s "
        f"({count / elapsed:.1f} tasks/s); downloads per worker {downloads}, events per consumer {handled}; "
        f"duplicate downloads 0, duplicate callbacks 0"
    )
