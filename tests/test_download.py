"""The downloader against a misbehaving video host: broken transfers, ignored Range, expired URLs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx

from .conftest import Stack
from .support import wait_for

PROMPT = "waves breaking on black sand"


def stored_sha(task: dict) -> str:
    return hashlib.sha256(Path(task["video"]["path"]).read_bytes()).hexdigest()


def reference(stack: Stack) -> dict:
    """A task of the same prompt and size downloaded without faults: the emulator renders it identically."""
    task = stack.wait_status(stack.create(PROMPT)["id"], "ready")
    assert stored_sha(task) == task["video"]["sha256"]
    return task


def test_broken_transfer_resumes_with_range(stack: Stack) -> None:
    clean = reference(stack)
    stack.emulator.configure(break_downloads=2, break_after_bytes=100_000)
    task = stack.wait_status(stack.create(PROMPT)["id"], "ready")
    assert task["video"]["sha256"] == clean["video"]["sha256"] == stored_sha(task)
    assert task["video"]["bytes"] == clean["video"]["bytes"]
    assert stack.emulator.stats()["downloads_broken"] == 2
    assert int(stack.redis.hget("{wanhook}:counters", "download_retries")) == 2
    assert not list(stack.data_dir.glob("videos/*.part"))


def test_server_ignoring_range_restarts_from_zero(stack: Stack) -> None:
    clean = reference(stack)
    stack.emulator.configure(break_downloads=1, ignore_range=True)
    task = stack.wait_status(stack.create(PROMPT)["id"], "ready")
    assert task["video"]["sha256"] == clean["video"]["sha256"] == stored_sha(task)
    assert stack.emulator.stats()["downloads_broken"] == 1


def test_expired_url_is_read_again_then_expires_the_task(stack: Stack) -> None:
    stack.emulator.configure(url_ttl_seconds=-1)  # every URL DashScope hands out is already dead
    task = stack.wait_status(stack.create(PROMPT)["id"])
    assert task["status"] == "expired"
    assert task["error"]["code"] == "VideoURLExpired"
    assert task["video"] is None
    # The URL that came with the read was refused: exactly one more read for a fresh one, then no more.
    assert stack.emulator.stats()["reads_by_task"] == {task["dashscope"]["task_id"]: 2}
    assert not list(stack.data_dir.glob("videos/*.mp4"))


def test_task_that_died_at_dashscope_expires(stack: Stack) -> None:
    stack.emulator.configure(drop_events=True)
    created = stack.create(PROMPT)
    ds_id = stack.wait_status(created["id"], "submitted")["dashscope"]["task_id"]
    dashscope = httpx.Client(base_url=stack.emulator.api, headers={"Authorization": "Bearer k"})
    wait_for(
        lambda: dashscope.get(f"/tasks/{ds_id}").json()["output"]["task_status"] == "SUCCEEDED", 30, what="the render"
    )
    assert httpx.post(f"{stack.emulator.url}/_emulator/tasks/{ds_id}/expire").status_code == 200
    stack.push(
        {
            "specversion": "1.0",
            "id": "late-event",
            "source": "acs.dashscope",
            "type": "dashscope:System:AsyncTaskFinish",
            "data": {"task_id": ds_id, "task_status": "SUCCEEDED"},
        }
    )
    task = stack.wait_status(created["id"])
    assert task["status"] == "expired" and task["error"]["code"] == "VideoURLExpired"


def test_video_host_outside_the_allow_list_is_refused(stack: Stack, tmp_path: Path) -> None:
    stack.server.stop()
    stack.serve(stack.port, env={"WANHOOK_VIDEO_HOSTS": "*.aliyuncs.com"})
    task = stack.wait_status(stack.create(PROMPT)["id"])
    assert task["status"] == "failed"
    assert task["error"]["code"] == "VideoHostNotAllowed"
    assert stack.emulator.stats()["video_requests"] == 0
