"""Compact state: a stored task's hash stays a listpack with Redis' defaults, and reads back the same."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from wanhook.service.task import Task, encode_video

from .conftest import Stack
from .support import Process


def test_a_ready_task_is_a_small_listpack(tmp_path: Path, redis_url: str, processes: list[Process]) -> None:
    stack = Stack(tmp_path, redis_url, processes)
    # A data directory of a deployment's length ("/var/lib/wanhook"): the test's own tmp path is longer
    # than the 64 bytes a listpack value may have, which would make any hash naming it a hashtable.
    short = Path(tempfile.mkdtemp(prefix="wh"))
    stack.data_dir = short / "data"
    stack.env["WANHOOK_DATA_DIR"] = str(stack.data_dir)
    try:
        stack.start()
        task = stack.wait_status(stack.create("compact")["id"], "ready")
        key = "{wanhook}:task:" + task["id"]
        # Default settings of the test Redis: nothing tuned (hash-max-listpack-value 64).
        assert stack.redis.config_get("hash-max-*-value").popitem()[1] == "64"
        assert stack.redis.object("encoding", key) in ("ziplist", "listpack"), sorted(
            (len(v), k) for k, v in stack.redis.hgetall(key).items()
        )[-3:]
        assert stack.redis.memory_usage(key, samples=0) < 1024
        assert not stack.redis.hexists(key, "video")  # kept as short fields
        assert stack.task(task["id"])["video"] == task["video"]
        assert set(task["video"]) == {"path", "bytes", "sha256", "url"}
    finally:
        shutil.rmtree(short, ignore_errors=True)


def test_the_video_encoding_reads_back_both_ways() -> None:
    video = {"path": "/data/videos/abc.mp4", "bytes": 12, "sha256": "f" * 64, "url": "/v1/tasks/abc/video"}
    compact = encode_video("abc", video)
    assert set(compact) == {"video_dir", "video_bytes", "video_sha256"}
    assert all(len(value) <= 64 for value in compact.values())
    assert Task.from_hash({"id": "abc", "status": "ready", **compact}).video == video
    assert Task.from_hash({"id": "abc", "status": "ready", **compact}).internal == {}
    # A video of another shape (stored elsewhere, or by an earlier version) is kept whole, as JSON.
    other = dict(video, path="/elsewhere/other-name.mp4")
    assert set(encode_video("abc", other)) == {"video"}
    assert Task.from_hash({"id": "abc", "status": "ready", **encode_video("abc", other)}).video == other
