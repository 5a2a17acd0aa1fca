"""Faults through real processes: Redis going away and coming back, and processes killed at random."""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path

import httpx
import pytest
import redis

from wanhook.service.outbound.objectstore import S3Storage

from ..conftest import Stack
from ..integration.test_s3 import Moto
from ..support import Process, RedisServer, free_port, wait_for


def own_redis(tmp_path: Path, processes: list[Process], port: int | None = None) -> RedisServer:
    server = RedisServer(tmp_path / "redis-data", port).start()
    processes.append(server)
    return server


def test_redis_unreachable_then_back(tmp_path: Path, processes: list[Process]) -> None:
    server = own_redis(tmp_path, processes)
    stack = Stack(tmp_path, server.url, processes).start()
    stack.emulator.configure(render_seconds=3, push_retry_delays=[1, 2, 4, 8])
    before = stack.create("accepted before the outage")
    stack.wait_status(before["id"], "submitted")
    server.kill()

    assert stack.http.get("/healthz").status_code == 200  # alive, but not ready
    ready = stack.http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "redis_unavailable"
    push = stack.push(
        {
            "specversion": "1.0",
            "id": "during",
            "source": "acs.dashscope",
            "type": "dashscope:System:AsyncTaskFinish",
            "data": {"task_id": "x", "task_status": "FAILED"},
        }
    )
    assert push.status_code == 503 and push.headers["retry-after"]  # so EventBridge retries
    assert stack.http.post("/v1/tasks", json={"prompt": "p", "size": "832*480"}).status_code == 503

    restarted = RedisServer(tmp_path / "redis-data", server.port).start()  # same port, same AOF
    processes.append(restarted)
    wait_for(lambda: stack.http.get("/readyz").status_code == 200, 30, what="readiness")
    # The render finished during the outage; the emulator's retried push lands now.
    task = stack.wait_status(before["id"], "ready", timeout=60)
    assert task["video"]["sha256"] == hashlib.sha256(Path(task["video"]["path"]).read_bytes()).hexdigest()
    after = stack.wait_status(stack.create("accepted after")["id"], "ready")
    assert after["video"]


def test_redis_restarted_mid_run_loses_nothing(tmp_path: Path, processes: list[Process]) -> None:
    server = own_redis(tmp_path, processes)
    stack = Stack(tmp_path, server.url, processes)
    # A submission Redis broke off goes back to its queue once Redis answers, not when its reservation
    # expires: with reservations this long, the deadlines below hold only if that is so.
    stack.env["WANHOOK_RESERVE_SECONDS"] = "600"
    stack.start()
    stack.emulator.configure(render_seconds=1, push_retry_delays=[0.5, 1, 2, 4])
    ids = [stack.create(f"durable {n}")["id"] for n in range(10)]
    server.kill()  # SIGKILL: only what the AOF holds survives
    restarted = RedisServer(tmp_path / "redis-data", server.port).start()
    processes.append(restarted)
    for task_id in ids:
        stack.wait_status(task_id, "ready", timeout=90)
    assert len(stack.http.get("/v1/tasks", params={"limit": 100}).json()["tasks"]) == 10


@pytest.mark.slow
# The videos on local disk, and in an S3 object store (moto's server), where a kill can also fall
# between a download and its upload.
@pytest.mark.parametrize(("seed", "store"), [(20261125, "disk"), (7, "disk"), (7, "s3")])
def test_random_kills_lose_nothing_and_download_nothing_twice(
    tmp_path: Path, processes: list[Process], seed: int, store: str
) -> None:
    count = 100
    rng = random.Random(seed)
    server = own_redis(tmp_path, processes)
    mq_port = free_port()
    # Every event goes both ways, as with two EventBridge targets: the webhook and the topic.
    stack = Stack(tmp_path, server.url, processes, "--rocketmq", "--rocketmq-port", str(mq_port))
    stack.env.update(
        WANHOOK_LIMITS="wan2.2-t2v-plus=10/10",
        WANHOOK_SWEEP_AFTER_SECONDS="20",
        WANHOOK_SWEEP_INTERVAL_SECONDS="2",
        WANHOOK_RESERVE_SECONDS="3",
    )
    objects: S3Storage | None = None
    if store == "s3":
        moto = Moto(tmp_path)
        processes.append(moto.launch())
        moto.wait_ready().make_bucket()
        stack.env.update(moto.storage_env())
        objects = moto.storage(tmp_path)
    stack.start("--no-workers")
    stack.emulator.configure(
        render_seconds=1,
        limits={"wan2.2-t2v-plus": {"rps": 10, "running": 10}},
        push_retry_delays=[0.5, 1, 2],
        video_bytes_per_second=1_000_000,
    )
    workers = [stack.worker("worker-a"), stack.worker("worker-b")]
    consumer = stack.consume(f"127.0.0.1:{mq_port}", "dashscope-events")
    ids = [stack.create(f"survivor {n % 5}")["id"] for n in range(count)]

    kills = {"serve": 0, "worker": 0, "consume": 0}
    victims = list(kills) * 4
    rng.shuffle(victims)  # each kind killed several times, in a random order
    redis_client = redis.Redis.from_url(server.url, decode_responses=True)
    while victims and redis_client.zcard("{wanhook}:tasks:ready") < count:
        time.sleep(rng.uniform(0.3, 1.2))  # the next kill comes at a random moment
        victim = victims.pop()
        kills[victim] += 1
        if victim == "serve":
            stack.server.kill()
            stack.server = stack.serve(stack.port, "--no-workers")
        elif victim == "worker":
            index = rng.randrange(len(workers))
            workers[index].kill()
            workers[index] = stack.worker(f"worker-{kills['worker']}")
        else:
            consumer.kill()
            consumer = stack.consume(f"127.0.0.1:{mq_port}", "dashscope-events", name=f"consume-{kills['consume']}")

    tasks = [stack.wait_status(task_id, "ready", timeout=120) for task_id in ids]
    for task in tasks:
        if objects is None:
            stored = Path(task["video"]["path"]).read_bytes()
        else:
            assert task["video"]["path"] == objects.location(task["id"])
            assert objects.sha256(task["id"]) == task["video"]["sha256"]  # the object's own record
            stored = httpx.get(objects.presigned_url(task["id"]), timeout=30).content
        assert len(stored) == task["video"]["bytes"]
        assert task["video"]["sha256"] == hashlib.sha256(stored).hexdigest()
    counters = redis_client.hgetall("{wanhook}:counters")
    transfers = int(counters.get("download_transfers_completed", 0))
    assert transfers <= count  # no video fetched whole twice
    assert not list((stack.data_dir / "videos").glob("*.part"))
    if objects is not None:  # nothing of the videos stays on local disk
        assert not [path for path in (stack.data_dir / "videos").iterdir() if path.is_file()]
    print(
        f"\n{count} tasks, kills {kills} ({sum(kills.values())} in all), tasks lost 0, whole transfers "
        f"{transfers}, duplicate downloads {max(0, transfers - count)}, sweeper recovered "
        f"{counters.get('sweeper_recovered', 0)}, slots recovered {counters.get('slots_recovered', 0)}"
    )
    assert httpx.get(stack.url + "/readyz").status_code == 200
