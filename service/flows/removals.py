"""Removing a deleted task's video, for good even when the object store is down.

A local video file goes at once, with its task (an unlink does not fail for a reason that passes). An
object in an object store can fail to go: the store unreachable, a 5xx. So with videos in an object
store, the script that removes a task's records (``DELETE /v1/tasks/{id}``, retention) also records,
in the same step, that the object's removal is owed (``keys.OBJECTS_TO_REMOVE``). The object is then
removed at once, and the entry settled; when the store fails, the entry stays, and the elected sweeper
tries it again each round (``Removals.retry``) until the store answers. Neither a store down for hours
nor a process dying between the records and the object leaves an object behind that nothing names.
"""

from __future__ import annotations

import logging
import time

from ..core.pools import DeadlineExceeded
from ..outbound.storage import LocalStorage, UploadFailed, VideoStorage, remove_video
from ..persistence.store import TaskStore

log = logging.getLogger("wanhook.removals")

BATCH = 100
# The warnings of a store that keeps failing: one a minute per process, not one per deletion or round.
WARN_INTERVAL = 60.0


def owes_removal(storage: VideoStorage) -> bool:
    """Whether a video's removal is recorded as owed until done: in an object store, not on local disk."""
    return not isinstance(storage, LocalStorage)


class _Warnings:
    """A warning at most once per ``WARN_INTERVAL``; what was held back is counted into the next one."""

    def __init__(self) -> None:
        self.last = -WARN_INTERVAL
        self.held = 0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.last < WARN_INTERVAL:
            self.held += 1
            return
        suffix = f" ({self.held} more such failures in the last minute not logged)" if self.held else ""
        log.warning(message + suffix, *args)
        self.last, self.held = now, 0


_deferred = _Warnings()  # a deletion that could not remove its object at once
_owed = _Warnings()  # the sweeper's retries failing


async def remove(store: TaskStore, storage: VideoStorage, task_id: str) -> bool | None:
    """Remove the stored video of a task whose records are gone: whether there was one, or None when the
    object store failed (its removal stays owed, and the sweeper tries it again)."""
    if not owes_removal(storage):
        return await remove_video(storage, task_id)
    try:
        existed = await remove_video(storage, task_id)
    except (UploadFailed, DeadlineExceeded) as exc:
        await store.count("object_removals|outcome=deferred")
        _deferred.warn(
            "task %s: the video could not be removed from the object store now (%s); tried again later", task_id, exc
        )
        return None
    await store.removal_done(task_id)
    return existed


class Removals:
    """The removals owed, tried again by the elected sweeper each round."""

    def __init__(self, store: TaskStore, storage: VideoStorage, *, retry_seconds: float, batch: int = BATCH) -> None:
        """``retry_seconds``: a removal that failed is due again this much later (the sweeper's interval: its
        next round); those owed longer go first meanwhile, so that one object the store keeps refusing holds
        up none of the others."""
        self.store = store
        self.storage = storage
        self.retry_ms = max(1, int(retry_seconds * 1000))
        self.batch = batch

    async def retry(self) -> int:
        """Try the removals due; how many went. The first failure ends the round: the store is most likely
        down, and the next round tries again (the one that failed behind the others)."""
        if not owes_removal(self.storage):
            return 0
        removed = 0
        for task_id in await self.store.removals_due(self.batch):
            try:
                await remove_video(self.storage, task_id)
            except (UploadFailed, DeadlineExceeded) as exc:
                await self.store.removal_later(task_id, self.retry_ms)
                owed = await self.store.removals_owed()
                _owed.warn("%d video removals from the object store are owed, the store failing (%s)", owed, exc)
                break
            await self.store.removal_done(task_id)
            removed += 1
        if removed:
            await self.store.count("object_removals|outcome=late", removed)
            log.info("removed %d videos from the object store whose removal had failed before", removed)
        return removed
