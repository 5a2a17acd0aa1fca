"""Disk space for downloads: reserved before a video's bytes are written, across every process.

Several workers (on one host, or on several mounting the data directory at the same path) write into
one videos directory, so the reservations live in Redis, in a ledger per directory (``RESERVE_DISK``,
``lua/reserve_disk.lua``). A download may write when its bytes fit: free space, less
``WANHOOK_MIN_FREE_BYTES``, less what the other reservations have still to write, less what the
downloads waiting longer need. A download that does not fit waits in line, holding no space at all
(its part file is freed, see ``Downloader``), so a disk too small for everything in flight lets the
oldest waiting download through first and the others one by one after it: nothing ever waits on
space that a waiting download holds.

Every entry is a lease renewed while its download runs; the entries of a process that died lapse
after ``lease`` seconds. A waiting download asks again every ``ROOM_POLL_SECONDS``, which costs one
``statvfs`` and one short script, and at once when a download of its own process gives space back:
room made by anyone (a video deleted, a volume grown, another host finishing) is seen within that.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from ..config import Settings
from ..core import pools
from ..outbound.storage import VideoStorage
from ..persistence import keys, scripts

log = logging.getLogger("wanhook.diskspace")

ROOM_POLL_SECONDS = 0.25


def disk_full(exc: OSError) -> bool:
    """The write failed for want of space (or of the quota standing for it)."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def check_floor(settings: Settings) -> None:
    """Warn when the floor looks too small for the embedded Redis' AOF on the videos' disk.

    The AOF is never reserved for: it grows into the floor (``WANHOOK_MIN_FREE_BYTES``). Between two
    rewrites it grows to twice its rewritten size, and a rewrite writes a new copy beside it, so the
    floor should hold about twice what it takes now."""
    if settings.redis_url:
        return
    aof = settings.data_dir / "redis"
    try:
        if os.stat(aof).st_dev != os.stat(settings.videos_dir).st_dev:
            return
        size = sum(path.stat().st_size for path in aof.rglob("*") if path.is_file())
    except OSError:
        return
    if settings.min_free_bytes < 2 * size:
        log.warning(
            "WANHOOK_MIN_FREE_BYTES (%d) is less than twice the embedded Redis' files on the same disk "
            "(%d bytes in %s): the AOF grows into that floor, so raise it",
            settings.min_free_bytes,
            size,
            aof,
        )


@dataclass(frozen=True)
class Grant:
    granted: bool
    free: int  # measured on the disk just before asking
    room: int  # free, less the floor and the other reservations' bytes still to write
    reserved: int  # bytes the other reservations have still to write
    ahead: int  # bytes the downloads waiting longer need
    since_ms: int  # when this download first waited (Redis' clock): its place in line

    def explain(self, need: int, floor: int) -> str:
        return (
            f"{self.free} bytes free; the video needs {need}, downloads in progress have {self.reserved} "
            f"still to write, downloads waiting longer need {self.ahead}, and WANHOOK_MIN_FREE_BYTES "
            f"keeps {floor} free"
        )


class DiskSpace:
    def __init__(
        self, redis: Redis, storage: VideoStorage, directory: Path, *, floor: int, lease_seconds: float, owner: str
    ) -> None:
        self.storage = storage
        self.owner = owner  # names this process's entries: only it renews or gives them back
        self.floor = floor
        self.lease_ms = max(1000, int(lease_seconds * 1000))
        # The directory's absolute path names its ledger: processes sharing it mount it at the same
        # path (see "The data directory across hosts" in docs/operations.md).
        where = str(directory.absolute())
        self.keys = [keys.DISK_HELD + where, keys.DISK_WAITING + where]
        self._reserve = redis.register_script(scripts.RESERVE_DISK)
        self._renew = redis.register_script(scripts.RENEW_DISK)
        self._release = redis.register_script(scripts.RELEASE_DISK)
        self._freed = asyncio.Event()  # replaced on each release: every waiter of the process wakes

    @property
    def renew_interval(self) -> float:
        return self.lease_ms / 3000

    async def reserve(self, task_id: str, need: int, since_ms: int = 0) -> Grant:
        """Reserve ``need`` bytes for the task, or put it in line (keeping ``since_ms``) when they do not fit."""
        free, capacity = await pools.FILES.run(self.storage.disk_space)
        granted, room, reserved, ahead, since = await self._reserve(
            keys=self.keys, args=[task_id, need, free, capacity, self.floor, self.lease_ms, since_ms, self.owner]
        )
        return Grant(bool(granted), free, int(room), int(reserved), int(ahead), int(since))

    async def renew(self, task_id: str, remaining: int | None = None) -> bool:
        """Keep the task's entry alive; a held one also says how many bytes it has still to write.
        False when the ledger has no entry of this process for the task (its lease lapsed)."""
        return bool(
            await self._renew(
                keys=self.keys,
                args=[task_id, -1 if remaining is None else max(0, remaining), self.lease_ms, self.owner],
            )
        )

    async def release(self, task_id: str) -> None:
        """Give back the task's reservation, or its place in line."""
        await self._release(keys=self.keys, args=[task_id, self.owner])
        freed, self._freed = self._freed, asyncio.Event()
        freed.set()

    async def wait_for_room(self, task_id: str, need: int, since_ms: int, stop: asyncio.Event) -> Grant | None:
        """Wait in line until ``need`` bytes are reserved for the task; None when ``stop`` came first."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                grant = await self.reserve(task_id, need, since_ms)
                if grant.granted:
                    return grant
                since_ms = grant.since_ms
                freed = asyncio.ensure_future(self._freed.wait())
                await asyncio.wait({freed, stopping}, timeout=ROOM_POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED)
                freed.cancel()
            return None
        finally:
            stopping.cancel()
