"""Limits that keep one caller, one video or one disk from hurting the rest."""

from __future__ import annotations

from pathlib import Path

import httpx

from wanhook.service.persistence import keys

from ..conftest import Stack
from ..support import Process, wait_for


def stack_with(tmp_path: Path, redis_url: str, processes: list[Process], **env: str) -> Stack:
    stack = Stack(tmp_path, redis_url, processes)
    stack.env.update(env)
    return stack.start()


def test_request_rate_and_queue_per_token(tmp_path: Path, redis_url: str, processes: list[Process]) -> None:
    stack = stack_with(
        tmp_path,
        redis_url,
        processes,
        WANHOOK_API_TOKENS="busy,calm,queuer",
        WANHOOK_RATE_LIMIT="5",
        WANHOOK_MAX_QUEUED_PER_TOKEN="2",
        WANHOOK_LIMITS="wan2.2-t2v-plus=5/1",
    )
    stack.emulator.configure(render_seconds=30)
    busy = httpx.Client(base_url=stack.url, headers={"Authorization": "Bearer busy"})
    calm = httpx.Client(base_url=stack.url, headers={"Authorization": "Bearer calm"})
    answers = [busy.get("/v1/tasks").status_code for _ in range(12)]
    assert 429 in answers and answers.count(200) <= 6
    limited = busy.get("/v1/tasks")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["code"] == "rate_limited"
    assert calm.get("/v1/tasks").status_code == 200  # another token has its own budget

    wait_for(lambda: busy.get("/v1/tasks").status_code == 200, 10, what="the window to slide")
    # The queue's cap with a token of its own: its five requests fit its rate however fast they go.
    queuer = httpx.Client(base_url=stack.url, headers={"Authorization": "Bearer queuer"})
    first = queuer.post("/v1/tasks", json={"prompt": "p0", "size": "832*480"})
    assert first.status_code == 202

    # Read in Redis, not through the API, whose requests would take from the token's budget.
    task_key = keys.TASK + first.json()["id"]
    wait_for(lambda: stack.redis.hget(task_key, "status") == "submitted", 10, what="the first task at DashScope")
    created = [queuer.post("/v1/tasks", json={"prompt": f"p{n}", "size": "832*480"}) for n in (1, 2)]
    assert [r.status_code for r in created] == [202, 202]  # the first one is at DashScope, two wait
    full = queuer.post("/v1/tasks", json={"prompt": "one too many", "size": "832*480"})
    assert full.status_code == 429 and full.json()["error"]["code"] == "too_many_queued"
    assert len(queuer.get("/v1/tasks").json()["tasks"]) == 3


def test_video_over_the_size_cap_is_refused(tmp_path: Path, redis_url: str, processes: list[Process]) -> None:
    stack = stack_with(tmp_path, redis_url, processes, WANHOOK_MAX_VIDEO_BYTES="1000")
    task = stack.wait_status(stack.create("too big")["id"])
    assert task["status"] == "failed" and task["error"]["code"] == "VideoTooLarge"
    assert not list((stack.data_dir / "videos").glob("*"))


def test_video_host_resolving_inwards_is_refused(tmp_path: Path, redis_url: str, processes: list[Process]) -> None:
    # Matched by a pattern, not named literally: the address it resolves to decides, and loopback is refused.
    stack = stack_with(tmp_path, redis_url, processes, WANHOOK_VIDEO_HOSTS="127.0.0.*")
    task = stack.wait_status(stack.create("inward")["id"])
    assert task["status"] == "failed" and task["error"]["code"] == "VideoHostNotAllowed"
    assert "non-public" in task["error"]["message"]
    assert stack.emulator.stats()["video_requests"] == 0


def test_full_disk_defers_the_download_until_there_is_room(
    tmp_path: Path, redis_url: str, processes: list[Process]
) -> None:
    stack = stack_with(tmp_path, redis_url, processes, WANHOOK_MIN_FREE_BYTES=str(10**18))
    created = stack.create("no room yet")
    waiting = wait_for(lambda: (t := stack.task(created["id"]))["error"] and t, 30, what="the disk-full error")
    assert waiting["status"] == "downloading" and waiting["error"]["code"] == "InsufficientStorage"
    stack.server.stop()
    stack.env["WANHOOK_MIN_FREE_BYTES"] = "1"
    stack.serve(stack.port)  # room again: the pending job is taken up again
    task = stack.wait_status(created["id"], "ready")
    assert task["error"] is None and task["video"]["bytes"] > 0
