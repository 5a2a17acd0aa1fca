"""Retention: ended tasks and stored videos removed once past their time, by the elected sweeper.

Second-scale retention against real processes: a video goes first (its task says so), then the task;
over many tasks, what Redis holds for them and the videos directory stay flat.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import httpx

from ..conftest import Stack
from ..support import Process, wait_for, wanhook

# Bounded by design rather than by retention: deduplication keys expire on their own (a TTL), the
# audit stream and the submission windows are capped, the tombstones last a day; counters and
# settings are a few fixed fields.
BOUNDED = ("{wanhook}:seen:", "{wanhook}:events", "{wanhook}:rate:", "{wanhook}:deleted:")


def start(tmp_path: Path, redis_url: str, processes: list[Process], **env: str) -> Stack:
    stack = Stack(tmp_path, redis_url, processes)
    stack.env.update({"WANHOOK_SWEEP_INTERVAL_SECONDS": "0.3", **env})
    return stack.start()


def task_state(stack: Stack) -> dict[str, Any]:
    """What Redis holds beyond the bounded structures: the keys, and their bytes (MEMORY USAGE)."""
    names = sorted(key for key in stack.redis.scan_iter("{wanhook}:*") if not key.startswith(BOUNDED))
    sizes = {name: stack.redis.memory_usage(name, samples=0) or 0 for name in names}
    return {"keys": len(names), "bytes": sum(sizes.values()), "names": names}


def test_video_then_task_go_past_their_time(tmp_path: Path, redis_url: str, processes: list[Process]) -> None:
    stack = start(
        tmp_path, redis_url, processes, WANHOOK_VIDEO_RETENTION_SECONDS="1", WANHOOK_TASK_RETENTION_SECONDS="4"
    )
    task = stack.wait_status(stack.create("kept a little while")["id"], "ready")
    video = Path(task["video"]["path"])
    assert video.exists()
    # In one retention index at a time: that of kept videos, then that of the other ended tasks.
    ended = stack.redis.zscore("{wanhook}:videos", task["id"])
    assert ended and stack.redis.zscore("{wanhook}:ended", task["id"]) is None

    gone = wait_for(
        lambda: (shown := stack.task(task["id"]))["video"] is None and shown, 20, what="the video to be removed"
    )
    assert gone["status"] == "ready" and gone["video_removed"]["reason"] == "retention"
    assert "WANHOOK_VIDEO_RETENTION_SECONDS" in gone["video_removed"]["message"]
    assert stack.redis.zscore("{wanhook}:ended", task["id"]) == ended
    assert stack.redis.zscore("{wanhook}:videos", task["id"]) is None
    assert not video.exists()
    answer = stack.http.get(f"/v1/tasks/{task['id']}/video")
    assert answer.status_code == 410 and answer.json()["error"]["code"] == "video_gone"
    assert "retention" in answer.json()["error"]["message"]

    wait_for(lambda: stack.http.get(f"/v1/tasks/{task['id']}").status_code == 404, 20, what="the task to go")
    assert [key for key in stack.redis.scan_iter("{wanhook}:*") if task["id"] in key] == []
    metrics = stack.http.get("/metrics").text
    assert '\nwanhook_retention_deleted_total{what="video"} 1.0\n' in metrics
    assert '\nwanhook_retention_deleted_total{what="task"} 1.0\n' in metrics


def test_dry_run_removes_nothing(tmp_path: Path, redis_url: str, processes: list[Process]) -> None:
    stack = start(
        tmp_path,
        redis_url,
        processes,
        WANHOOK_VIDEO_RETENTION_SECONDS="0.2",
        WANHOOK_TASK_RETENTION_SECONDS="0.2",
        WANHOOK_RETENTION_DRY_RUN="1",
    )
    task = stack.wait_status(stack.create("only counted")["id"], "ready")
    wait_for(lambda: "retention (dry run): 1 videos and 1 ended tasks" in stack.server.log(), 20, what="the dry run")
    assert stack.task(task["id"])["video"]["path"] == task["video"]["path"]
    assert Path(task["video"]["path"]).exists()
    assert '\nwanhook_retention_deleted_total{what="task"} 0.0\n' in stack.http.get("/metrics").text


def test_redis_and_disk_stay_flat_over_many_tasks(tmp_path: Path, redis_url: str, processes: list[Process]) -> None:
    stack = start(
        tmp_path,
        redis_url,
        processes,
        WANHOOK_VIDEO_RETENTION_SECONDS="0.5",
        WANHOOK_TASK_RETENTION_SECONDS="1",
        WANHOOK_CALLBACK_ALLOW_PRIVATE="1",
        WANHOOK_RATE_LIMIT="100000",
    )
    videos = stack.data_dir / "videos"
    http = httpx.Client(base_url=stack.url, timeout=30)
    rounds, per_round = 4, 15
    states = []
    for round_number in range(rounds):
        ids = [
            http.post(
                "/v1/tasks",
                json={
                    "prompt": f"round {round_number} task {n}",
                    "size": "832*480",
                    "metadata": {"round": str(round_number)},
                    # A callback nobody answers: its deliveries must go with the task too.
                    "callback": {"url": "http://127.0.0.1:9/hook", "events": ["task.ready"]},
                },
            ).json()["id"]
            for n in range(per_round)
        ]
        # Every task of the round ends, then retention takes it with everything kept for it.
        wait_for(
            lambda ids=ids: all(http.get(f"/v1/tasks/{task_id}").status_code == 404 for task_id in ids),
            120,
            interval=0.3,
            what=f"round {round_number}'s tasks to be removed",
        )
        wait_for(lambda: not list(videos.iterdir()), 10, what="the videos directory to empty")
        states.append(task_state(stack))
    # Flat: the same keys, of the same size, after every round (a round's tasks left nothing behind).
    assert len({state["keys"] for state in states}) == 1, [state["names"] for state in states]
    assert max(state["bytes"] for state in states) - min(state["bytes"] for state in states) < 1024, states
    assert not any(name.startswith(("{wanhook}:task:", "{wanhook}:changes:")) for name in states[-1]["names"])
    counters = stack.redis.hgetall("{wanhook}:counters")
    assert int(counters["retention_deleted|what=task"]) == rounds * per_round


def test_tasks_ended_before_the_indexes_existed_are_added_once(
    tmp_path: Path, redis_url: str, processes: list[Process]
) -> None:
    stack = start(
        tmp_path, redis_url, processes, WANHOOK_VIDEO_RETENTION_SECONDS="0", WANHOOK_TASK_RETENTION_SECONDS="0"
    )
    old = stack.wait_status(stack.create("stored by an earlier version")["id"], "ready")
    stack.emulator.configure(render_seconds=600)
    waiting = stack.create("still rendering")  # not ended: never retention's
    # As an earlier version left it: in neither retention index, and the one-time indexing never done.
    stack.redis.zrem("{wanhook}:ended", old["id"])
    stack.redis.zrem("{wanhook}:videos", old["id"])
    stack.redis.delete("{wanhook}:retention-index-ready")
    stack.server.stop()
    # Retention is shared by every process of the installation: changed on purpose, with every process stopped.
    recorded = subprocess.run(
        wanhook("installation", "record"),
        env={**os.environ, **stack.env, "WANHOOK_TASK_RETENTION_SECONDS": "1"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert recorded.returncode == 0, recorded.stderr
    assert '"task_retention_seconds": "1.0"' in recorded.stdout
    stack.serve(stack.port, env={"WANHOOK_TASK_RETENTION_SECONDS": "1"})
    wait_for(lambda: stack.http.get(f"/v1/tasks/{old['id']}").status_code == 404, 20, what="the old task to go")
    assert not Path(old["video"]["path"]).exists()
    assert stack.redis.get("{wanhook}:retention-index-ready") == "1"
    assert stack.http.get(f"/v1/tasks/{waiting['id']}").status_code == 200
