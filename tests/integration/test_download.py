"""The downloader against a misbehaving video host: broken transfers, ignored Range, expired URLs."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
from pathlib import Path
from typing import Any

import httpx

from ..conftest import Stack
from ..support import Process, wait_for

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


def succeeded(ds_id: str, video_url: str) -> dict[str, Any]:
    """DashScope's completion event for ``ds_id``, carrying its result (the video URL)."""
    return {
        "specversion": "1.0",
        "id": f"e-ok-{ds_id}",
        "source": "acs.dashscope",
        "type": "dashscope:System:AsyncTaskFinish",
        "data": {
            "task_id": ds_id,
            "task_status": "SUCCEEDED",
            "contain_result": True,
            "output_result": {"output": {"task_status": "SUCCEEDED", "video_url": video_url}},
            "user_api_unique_key": "apikey:v1:aigc:video-generation:video-synthesis:wan2.2-t2v-plus",
        },
    }


def failed(ds_id: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"e-failed-{ds_id}",
        "source": "acs.dashscope",
        "type": "dashscope:System:AsyncTaskFinish",
        "data": {
            "task_id": ds_id,
            "task_status": "FAILED",
            "code": "InternalError.Algo",
            "message": "the render failed late",
            "user_api_unique_key": "apikey:v1:aigc:video-generation:video-synthesis:wan2.2-t2v-plus",
        },
    }


class HostileHost:
    """A video host on loopback, on a thread: every request it gets is answered with ``answer``, then the
    connection closed; ``requests`` counts them."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.requests = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/video.mp4"
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                head = b""
                with contextlib.suppress(OSError):
                    while b"\r\n\r\n" not in head and len(head) < 65536:
                        piece = conn.recv(4096)
                        if not piece:
                            break
                        head += piece
                    self.requests += 1
                    conn.sendall(self.answer)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.listener.close()


def test_a_misframed_answer_fails_the_task_through_real_workers(
    tmp_path: Path, redis_url: str, processes: list[Process]
) -> None:
    """Two Content-Lengths that differ, through serve and its workers: the attempts are spent, each refused
    before a byte is stored, and the task ends failed naming the framing; never ready."""
    host = HostileHost(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 1000\r\n\r\nvideo")
    stack = Stack(tmp_path, redis_url, processes, webhook=False)
    stack.env.update(WANHOOK_DOWNLOAD_ATTEMPTS="3", WANHOOK_JOB_MAX_ATTEMPTS="2")
    try:
        stack.start()
        created = stack.create("misframed")
        ds_id = stack.wait_status(created["id"], "submitted")["dashscope"]["task_id"]
        assert stack.push(succeeded(ds_id, host.url)).json()["outcome"] == "applied"
        task = stack.wait_status(created["id"], "failed", "ready", timeout=60)
    finally:
        host.close()
        stack.http.close()
        stack.redis.close()
    assert task["status"] == "failed" and task["video"] is None
    assert task["error"]["code"] == "DownloadFailed"
    assert "gave up after 3 attempts" in task["error"]["message"]
    assert "Content-Length fields that differ" in task["error"]["message"]
    assert host.requests == 3  # WANHOOK_DOWNLOAD_ATTEMPTS, in one delivery of the job
    assert not list((stack.data_dir / "videos").glob(f"{created['id']}*"))


def test_a_video_stored_after_its_task_failed_is_removed(stack: Stack) -> None:
    """A FAILED event in the middle of a slow download: the download finishes, the task stays failed with
    the event's error, and the file it stored goes (no video is left that no task uses)."""
    task_id = fail_during_download(stack)
    assert not list((stack.data_dir / "videos").glob(f"{task_id}*"))  # neither the video nor its part file


def fail_during_download(stack: Stack) -> str:
    """A slow download, a FAILED event pushed in its middle; once the video is stored and removed again, the
    task's id, checked to be failed still with the event's error."""
    stack.emulator.configure(video_pad_bytes=3 << 20, video_bytes_per_second=1 << 20, drop_events=True)
    created = stack.create("late failure")
    task_id = created["id"]
    part = stack.data_dir / "videos" / f"{task_id}.mp4.part"
    ds_id = stack.wait_status(task_id, "submitted")["dashscope"]["task_id"]
    dashscope = httpx.Client(base_url=stack.emulator.api, headers={"Authorization": "Bearer k"})
    wait_for(
        lambda: dashscope.get(f"/tasks/{ds_id}").json()["output"]["task_status"] == "SUCCEEDED",
        30,
        what="the render to finish",
    )
    video_url = dashscope.get(f"/tasks/{ds_id}").json()["output"]["video_url"]
    dashscope.close()
    assert stack.push(succeeded(ds_id, video_url)).json()["outcome"] == "applied"
    wait_for(lambda: part.exists() and part.stat().st_size > 0, 30, what="the download to be under way")
    assert stack.task(task_id)["status"] == "downloading"
    assert stack.push(failed(ds_id)).json()["outcome"] == "applied"

    def counter(name: str) -> int:
        return int(stack.redis.hget("{wanhook}:counters", name) or 0)

    wait_for(lambda: counter("download_orphans_removed") == 1, 30, what="the stored video to be removed")
    assert counter("download_transfers_completed") == 1  # the whole video was stored first
    task = stack.task(task_id)
    assert task["status"] == "failed" and task["video"] is None
    assert task["error"] == {"code": "InternalError.Algo", "message": "the render failed late"}
    return task_id
