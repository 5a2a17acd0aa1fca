"""The threads blocking I/O runs on: one bounded pool per purpose, so that one stalled outside party holds
its own threads and nobody else's.

Everything that blocks goes through ``run(POOL, call, *args)``, never through ``asyncio.to_thread`` or the
loop's default executor: that executor (min(32, cores + 4) threads) was shared by the object store's
synchronous client, the disk-space checks and the part files, so a store that answered nothing (each request
waiting out its timeout) queued the downloads' own file work behind it, and the API's deletions with it.

- ``FILES``: local disk work of downloads and deletions (part files, hashing, free space, unlinks). Never waits
  on the network, so a few threads go a long way.
- ``UPLOADS``: the downloader's object-store calls (publish, and the HEADs around it). As many threads as a
  process has download slots: one slot never waits for another's upload.
- ``STORE``: object-store requests someone is waiting for (an API deletion, the sweeper's owed removals). Small,
  and the caller's deadline covers the wait for a thread too, so even a full pool answers in time.
- ``BROKER``: the RocketMQ clients' blocking calls (a receive long-polls for seconds).

A ``deadline`` bounds the whole call, queueing included: past it ``DeadlineExceeded`` is raised at once, and
the thread is left to end at its own client's timeout (a thread cannot be stopped from outside), its result
dropped. That is why every call given a deadline must be safe to finish late (a removal is: it is owed and
retried until it is settled).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import Interrupted

if TYPE_CHECKING:
    from ..config import Settings

T = TypeVar("T")


class DeadlineExceeded(Interrupted):
    """A call on a pool did not end within its caller's deadline (its thread goes on and its result is dropped)."""


class Pool:
    """A named, bounded ``ThreadPoolExecutor``, made on first use (a process that never uses it starts no
    thread) and resized by ``configure`` before then."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self._executor: ThreadPoolExecutor | None = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix=f"wanhook-{self.name}")
        return self._executor

    def resize(self, size: int) -> None:
        if size == self.size:
            return
        old, self._executor, self.size = self._executor, None, size
        if old is not None:
            old.shutdown(wait=False)  # its running calls end on their own threads

    async def run(self, call: Callable[..., T], *args: Any, deadline: float | None = None, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.executor, functools.partial(call, *args, **kwargs))
        if deadline is None:
            return await future
        try:
            return await asyncio.wait_for(future, deadline)
        except TimeoutError:
            raise DeadlineExceeded(f"{self.name}: no answer within {deadline:g} s") from None

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


FILES = Pool("files", 4)
UPLOADS = Pool("uploads", 4)
STORE = Pool("store", 4)
BROKER = Pool("broker", 8)
POOLS = (FILES, UPLOADS, STORE, BROKER)


def configure(settings: Settings) -> None:
    """Size the pools from the settings (at a process's start, before any is used)."""
    FILES.resize(settings.file_threads)
    UPLOADS.resize(settings.download_concurrency)
    STORE.resize(settings.store_threads)


async def run(pool: Pool, call: Callable[..., T], *args: Any, deadline: float | None = None, **kwargs: Any) -> T:
    """``call(*args, **kwargs)`` on one of ``pool``'s threads."""
    return await pool.run(call, *args, deadline=deadline, **kwargs)
