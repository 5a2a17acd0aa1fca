"""Workers apart from the server, and a worker killed in the middle of a download."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx

from ..conftest import Stack
from ..support import wait_for


def test_worker_killed_mid_download_another_finishes(stack: Stack) -> None:
    stack.server.stop()
    stack.serve(stack.port, "--no-workers")
    first = stack.worker("worker-a")
    stack.emulator.configure(video_bytes_per_second=250_000)
    created = stack.create("a slow river under a stone bridge")
    part = stack.data_dir / "videos" / f"{created['id']}.mp4.part"
    wait_for(lambda: part.exists() and part.stat().st_size > 100_000, 60, what="the download to be under way")
    first.kill()
    written_by_first = part.stat().st_size
    second = stack.worker("worker-b")
    task = stack.wait_status(created["id"], "ready", timeout=90)

    dashscope = httpx.Client(base_url=stack.emulator.api, headers={"Authorization": "Bearer k"})
    url = dashscope.get(f"/tasks/{task['dashscope']['task_id']}").json()["output"]["video_url"]
    stack.emulator.configure(video_bytes_per_second=0)
    original = httpx.get(url).content
    stored = Path(task["video"]["path"]).read_bytes()
    assert stored == original
    assert task["video"]["sha256"] == hashlib.sha256(original).hexdigest()
    assert f"resuming at byte {written_by_first}" in second.log()
    assert stack.redis.hget("{wanhook}:counters", "downloads_completed") == "1"
    assert not part.exists()
