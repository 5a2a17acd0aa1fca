"""Hostile peers all at once, through real processes: one tenant's callback receivers answer without end
or drip their answers, the same tenant opens 1,500 event streams, and strangers hold 300 connections
with half-sent headers. Meanwhile EventBridge pushes events and a polite tenant works as usual.

What it asserts: every push is recorded with a 2xx promptly, the polite tenant can still create
tasks, follow one and get its callbacks, the half-sent headers are closed at their deadline, and
serve's memory and Redis connections stay bounded.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from ..conftest import Stack
from ..receiver import CallbackReceiver
from ..support import Process, wait_for
from .test_callback_receivers import Hostile, peak_rss_mb
from .test_streams import _closed_within, _half_open, event, open_many, open_stream, p99, timed_push

HOSTILE, POLITE = "hostile-tenant-token", "polite-tenant-token"
EVERY = ["task.queued", "task.submitted", "task.downloading", "task.ready"]
HEADER_DEADLINE = 4.0


def test_hostile_peers_at_once_leave_the_event_path_and_the_polite_tenant_alone(
    tmp_path: Path, redis_url: str, processes: list[Process]
) -> None:
    endless, drip = Hostile(tmp_path, "endless"), Hostile(tmp_path, "drip-body")
    for receiver in (endless, drip):
        processes.append(receiver.launch())
    stack = Stack(tmp_path, redis_url, processes)
    stack.env.update(
        {
            "WANHOOK_API_TOKENS": f"{HOSTILE},{POLITE}",
            "WANHOOK_CALLBACK_ALLOW_PRIVATE": "1",
            "WANHOOK_CALLBACK_TIMEOUT": "3",
            "WANHOOK_CALLBACK_SCHEDULE": "0,2,2",
            # One token may hold most of the process's streams, never all of them.
            "WANHOOK_MAX_STREAMS": "1200",
            "WANHOOK_MAX_STREAMS_PER_TOKEN": "1000",
            "WANHOOK_HEADER_TIMEOUT_SECONDS": str(HEADER_DEADLINE),
            "WANHOOK_RATE_LIMIT": "100000",
            "WANHOOK_LOG_LEVEL": "WARNING",
            "WANHOOK_LIMITS": "wan2.2-t2v-plus=50/100",
        }
    )
    stack.start()
    for receiver in (endless, drip):
        receiver.wait_ready()
    # Tasks wait as "submitted" until this test pushes their events, so the streams stay open.
    stack.emulator.configure(drop_events=True, enforce_limits=False)
    server = stack.server.proc
    assert server is not None
    clients = {
        token: httpx.Client(base_url=stack.url, timeout=30, headers={"Authorization": f"Bearer {token}"})
        for token in (HOSTILE, POLITE)
    }

    def create(token: str, prompt: str, callback: dict[str, Any]) -> str:
        answer = clients[token].post("/v1/tasks", json={"prompt": prompt, "size": "832*480", "callback": callback})
        assert answer.status_code == 202, answer.text
        return answer.json()["id"]

    def submitted(token: str, task_id: str) -> str:
        def check() -> str | None:
            task = clients[token].get(f"/v1/tasks/{task_id}").json()
            return task["status"] == "submitted" and task["dashscope"]["task_id"]

        return wait_for(check, 30, interval=0.1, what=f"task {task_id} submitted")

    hostile = [
        create(HOSTILE, f"hostile {n}", {"url": receiver.url, "events": EVERY})
        for n, receiver in enumerate((endless, drip) * 3)
    ]
    ds_ids = {task_id: submitted(HOSTILE, task_id) for task_id in hostile}
    # The hostile tenant's follows: one task each, or two through the dashboard's stream.
    follows = [
        (
            f"/v1/tasks/{hostile[n % 6]}/events"
            if n % 2
            else f"/v1/stream?tasks={hostile[n % 6]},{hostile[(n + 1) % 6]}",
            HOSTILE,
        )
        for n in range(1500)
    ]

    with CallbackReceiver() as good:

        async def scenario() -> dict[str, Any]:
            async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:

                async def push(body: dict[str, Any]) -> float:
                    return await timed_push(http, body)

                half_open = await _half_open(stack.port, 300)
                half_opened_at = time.monotonic()
                opened = await open_many(stack.port, follows)
                statuses = [item.status for item in opened]
                refused = [item for item in opened if item.status != 200]
                assert all(
                    item.status == 429
                    and item.body["error"]["code"] == "too_many_streams"
                    and int(item.headers["retry-after"]) > 0
                    for item in refused
                ), refused[:1]

                # The polite tenant, meanwhile: creates, follows one task, waits for its callbacks.
                polite = [await asyncio.to_thread(create, POLITE, f"polite {n}", {"url": good.url}) for n in range(4)]
                polite_ds = {task_id: await asyncio.to_thread(submitted, POLITE, task_id) for task_id in polite}
                follow = await open_stream(stack.port, f"/v1/tasks/{polite[0]}/events", POLITE)
                assert follow.status == 200, follow.body

                # EventBridge, meanwhile: events nobody can tie to a task, the hostile tenant's, the polite one's.
                latencies = [await push(event(uuid.uuid4().hex)) for _ in range(200)]
                latencies += [await push(event(ds_ids[task_id])) for task_id in hostile]
                completed_at = time.time()
                latencies += [await push(event(polite_ds[task_id])) for task_id in polite]
                await asyncio.wait_for(follow.ended.wait(), 60)
                closed = await _closed_within(
                    half_open, max(0.1, HEADER_DEADLINE + 3 - (time.monotonic() - half_opened_at))
                )
                clients_open = stack.redis.info("clients")["connected_clients"]
                return {
                    "statuses": statuses,
                    "latencies": latencies,
                    "follow": follow,
                    "closed": closed,
                    "clients": clients_open,
                    "completed_at": completed_at,
                    "polite": polite,
                }

        result = asyncio.run(scenario())
        polite = result["polite"]
        wait_for(lambda: len(good.received) == len(polite), 30, what="the polite tenant's callbacks")
        callback_delay = max(item.at for item in good.received) - result["completed_at"]
        peak = peak_rss_mb(server.pid)

    # Every push recorded, promptly, whatever else was going on.
    latencies = result["latencies"]
    assert len(latencies) == 210 and max(latencies) < 2.0, max(latencies)
    assert stack.redis.xlen("{wanhook}:events") == 210
    # The polite tenant's follow got its task to the end.
    assert [name for _, name, _ in result["follow"].events][-1] == "task.ready"
    assert {item.headers["webhook-id"] for item in good.received} == {f"msg_{task_id}_ready" for task_id in polite}
    held = result["statuses"].count(200)
    assert held == 1000 and result["statuses"].count(429) == 500
    assert all(result["closed"]), result["closed"].count(False)
    # The shared pool, the change feed's reader and the test's client: not one per stream.
    assert result["clients"] < 150, result["clients"]
    assert peak < 400, peak
    for client in clients.values():
        client.close()
    print(
        f"\n1,500 streams asked for by one token, {held:,} held; 300 half-sent headers closed at the deadline; "
        f"webhook p99 {p99(latencies) * 1000:.0f} ms (max {max(latencies) * 1000:.0f} ms) over {len(latencies)} "
        f"pushes; polite callbacks within {callback_delay:.1f} s of the last push; Redis clients "
        f"{result['clients']}; serve peak RSS {peak:.0f} MB"
    )
