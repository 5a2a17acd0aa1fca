"""The per-purpose thread pools: a pool whose threads all hang holds nothing of another pool's work, and a call
given a deadline ends by it, the wait for a thread included."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from wanhook.service.config import Settings
from wanhook.service.core import pools
from wanhook.service.core.pools import DeadlineExceeded, Pool


def test_a_hanging_pool_holds_no_other_pools_work_and_its_callers_end_by_their_deadline() -> None:
    store, files = Pool("store-test", 2), Pool("files-test", 2)
    release = threading.Event()

    async def scenario() -> tuple[list[float], float]:
        # Every thread of the store taken by a call that hangs (a store that answers nothing).
        hanging = [asyncio.ensure_future(store.run(release.wait, 30)) for _ in range(2)]
        took = []
        for _ in range(3):  # queued behind the hanging ones: the deadline covers the wait for a thread
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded, match="store-test: no answer within 0.3 s"):
                await store.run(release.wait, 30, deadline=0.3)
            took.append(time.monotonic() - started)
        started = time.monotonic()
        assert await files.run(sum, [1, 2, 3]) == 6  # file work is not queued behind the store
        file_took = time.monotonic() - started
        release.set()
        assert await asyncio.gather(*hanging) == [True, True]
        return took, file_took

    try:
        took, file_took = asyncio.run(scenario())
    finally:
        release.set()
        store.shutdown()
        files.shutdown()
    assert all(0.25 < seconds < 1.0 for seconds in took), took
    assert file_took < 0.5, file_took


def test_the_pools_are_sized_by_the_settings() -> None:
    before = [pool.size for pool in pools.POOLS]
    try:
        pools.configure(
            Settings.from_env(
                {"WANHOOK_FILE_THREADS": "3", "WANHOOK_S3_THREADS": "5", "WANHOOK_DOWNLOAD_CONCURRENCY": "7"}
            )
        )
        assert (pools.FILES.size, pools.STORE.size, pools.UPLOADS.size) == (3, 5, 7)
        assert pools.FILES.executor._max_workers == 3
    finally:
        for pool, size in zip(pools.POOLS, before, strict=True):
            pool.resize(size)
