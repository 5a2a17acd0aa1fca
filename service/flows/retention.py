"""Retention: ended tasks and stored videos removed once past their time, oldest first.

The elected sweeper (sweeper.py) applies it each round. It reads two time-ordered indexes that the
scripts keep as tasks end, each holding an ended task once: ready tasks whose video is kept
(keys.VIDEOS_KEPT) and the others (keys.TASKS_ENDED); never a scan of every key: a round costs what
it removes. Each removal is its own atomic step (scripts.DELETE,
scripts.DROP_VIDEO), the file after the record, so a process stopped half-way leaves at most a file
no task names, never a task naming a file that is gone; in an object store, the script records the
object's removal as owed, so that even that object goes once the store answers (removals.py). A video
past its time leaves its task behind with ``video: null`` and ``video_removed`` saying why; a task past
its time goes with everything kept for it, as ``DELETE /v1/tasks/{id}`` does (but no tombstone: nobody
deletes it twice).
"""

from __future__ import annotations

import logging

from ..outbound.storage import VideoStorage
from ..persistence import keys
from ..persistence.store import TaskStore
from . import removals

log = logging.getLogger("wanhook.retention")

BATCH = 200
# Every ended task is in one of these (keys.py), at the time it ended.
ENDED = (keys.TASKS_ENDED, keys.VIDEOS_KEPT)
# A round stops after this many removals, so that the sweeper's lease (and its own work) is not held
# up behind a backlog: the next round goes on where this one stopped.
ROUND_MAX = 2000


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} seconds"


class Retention:
    def __init__(
        self,
        store: TaskStore,
        storage: VideoStorage,
        *,
        task_seconds: float,
        video_seconds: float,
        dry_run: bool = False,
        batch: int = BATCH,
    ) -> None:
        self.store = store
        self.storage = storage
        self.owe_object = removals.owes_removal(storage)
        self.task_ms = int(task_seconds * 1000)
        self.video_ms = int(video_seconds * 1000)
        self.video_seconds = video_seconds
        self.dry_run = dry_run
        self.batch = batch

    @property
    def enabled(self) -> bool:
        return bool(self.task_ms or self.video_ms)

    async def apply(self) -> dict[str, int]:
        """One round: what was removed (in a dry run, what would be), by kind ("task", "video")."""
        if self.dry_run:
            due = {
                "video": await self.store.retention_count([keys.VIDEOS_KEPT], self.video_ms) if self.video_ms else 0,
                "task": await self.store.retention_count(ENDED, self.task_ms) if self.task_ms else 0,
            }
            if any(due.values()):
                log.info(
                    "retention (dry run): %d videos and %d ended tasks are past their time; nothing removed",
                    due["video"],
                    due["task"],
                )
            return due
        # Videos first: a task that goes now takes its video with it anyway.
        removed = {"video": await self._videos() if self.video_ms else 0}
        removed["task"] = await self._tasks() if self.task_ms else 0
        if any(removed.values()):
            log.info("retention: removed %d videos and %d ended tasks", removed["video"], removed["task"])
        return removed

    async def _videos(self) -> int:
        reason = f"kept {_duration(self.video_seconds)} (WANHOOK_VIDEO_RETENTION_SECONDS), then removed"
        removed = 0
        while removed < ROUND_MAX:
            due = await self.store.retention_due([keys.VIDEOS_KEPT], self.video_ms, self.batch)
            done = 0
            for task_id in due:
                if await self.store.drop_video(task_id, "retention", reason, owe_object=self.owe_object):
                    await removals.remove(self.store, self.storage, task_id)
                    done += 1
            removed += done
            if done:
                await self.store.count("retention_deleted|what=video", done)
            if len(due) < self.batch:
                break
        return removed

    async def _tasks(self) -> int:
        removed = 0
        while removed < ROUND_MAX:
            due = await self.store.retention_due(ENDED, self.task_ms, self.batch)
            done = 0
            for task_id in due:
                if (await self.store.delete(task_id, tombstone=False, owe_object=self.owe_object)).outcome == "deleted":
                    await removals.remove(self.store, self.storage, task_id)
                    done += 1
            removed += done
            if done:
                await self.store.count("retention_deleted|what=task", done)
            if len(due) < self.batch:
                break
        return removed
