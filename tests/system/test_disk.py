"""A disk too small for the downloads in flight: reservations across processes, ENOSPC, no deadlock.

Each test mounts a small tmpfs of its own, so free space is exact and nothing else writes to it;
mounting needs root, and the tests are skipped with a message otherwise.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from wanhook.service.flows.diskspace import ROOM_POLL_SECONDS, DiskSpace
from wanhook.service.outbound.storage import LocalStorage
from wanhook.service.persistence import keys

from ..conftest import Stack
from ..support import Process, wait_for

MIB = 1 << 20


def mount_tmpfs(where: Path, size: int) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root: run the disk tests as root")
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield where
    finally:
        # Lazily: a process that outlived its test must not keep the mount (and the test) hanging.
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB filesystem for the ledger's own tests."""
    yield from mount_tmpfs(tmp_path / "small", 8 * MIB)


@pytest.fixture
def videos_disk(tmp_path: Path) -> Iterator[Path]:
    """A 40 MiB filesystem mounted as the stack's videos directory; requested before ``processes``, so it
    is unmounted after they have stopped."""
    yield from mount_tmpfs(tmp_path / "data" / "videos", 40 * MIB)


def fill(path: Path, size: int | None = None) -> int:
    """Write ``size`` bytes to ``path`` (None: until the disk is full); returns the bytes written."""
    written = 0
    block = b"\0" * (256 << 10)
    with open(path, "wb", buffering=0) as file:
        while size is None or written < size:
            try:
                written += file.write(block[: len(block) if size is None else min(len(block), size - written)])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(block) == 1:
                    break
                block = block[: len(block) // 2]  # fill the last pages too
    return written


# ---- The ledger, in-process, on a real Redis and a real small filesystem -------------------------------------


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[list[Redis]]:
    opened: list[Redis] = []
    yield opened
    for client in opened:
        await client.aclose()


def ledger(clients: list[Redis], redis_url: str, directory: Path, lease_seconds: float = 30.0) -> DiskSpace:
    """One process's view of the ledger of ``directory``, with a Redis connection of its own."""
    clients.append(Redis.from_url(redis_url))
    return DiskSpace(
        clients[-1],
        LocalStorage(directory),
        directory,
        floor=1 * MIB,
        lease_seconds=lease_seconds,
        owner=f"process-{len(clients)}",
    )


async def test_reservations_count_across_processes_and_the_oldest_waiter_comes_first(
    small_disk: Path, redis_url: str, clients: list[Redis]
) -> None:
    one, two = ledger(clients, redis_url, small_disk), ledger(clients, redis_url, small_disk)
    free, _ = LocalStorage(small_disk).disk_space()
    assert free == 8 * MIB

    first = await one.reserve("first", 4 * MIB)
    assert first.granted
    # 8 free, 4 reserved by the other process, 1 kept as the floor: 3 left.
    second = await two.reserve("second", 4 * MIB)
    assert not second.granted and second.room == 3 * MIB and second.reserved == 4 * MIB
    # 2 MiB would fit in the 3 left, but the download that waits longer needs them first.
    third = await one.reserve("third", 2 * MIB)
    assert not third.granted and third.ahead == 4 * MIB
    assert "downloads waiting longer need 4194304" in third.explain(2 * MIB, one.floor)

    # The first writes its video and says so: the bytes are on disk, no longer in its reservation.
    (small_disk / "first.mp4").write_bytes(b"v" * (4 * MIB))
    await one.renew("first", 0)
    assert not (await two.reserve("second", 4 * MIB, second.since_ms)).granted  # 4 free, floor 1: 3 left
    (small_disk / "first.mp4").unlink()  # room made: the video was taken away
    await one.release("first")
    # Behind "second", yet with room for both: 8 free, 1 floor, 4 set aside for "second", 3 left.
    assert (await one.reserve("third", 2 * MIB)).granted
    assert (await two.reserve("second", 4 * MIB)).granted
    fourth = await two.reserve("fourth", 2 * MIB)
    assert not fourth.granted and fourth.room == 1 * MIB and fourth.reserved == 6 * MIB
    for space, task_id in ((two, "second"), (one, "third"), (two, "fourth")):
        await space.release(task_id)
    assert [await clients[0].hlen(key) for key in one.keys] == [0, 0]  # nothing held, nobody waiting


async def test_a_need_larger_than_the_disk_keeps_no_one_waiting(
    small_disk: Path, redis_url: str, clients: list[Redis]
) -> None:
    space = ledger(clients, redis_url, small_disk)
    huge = await space.reserve("huge", 64 * MIB)
    assert not huge.granted
    assert (await space.reserve("small", 2 * MIB)).granted
    assert (await space.reserve("huge", 64 * MIB, huge.since_ms)).since_ms == huge.since_ms  # keeps its place


async def test_the_reservation_of_a_dead_process_lapses(small_disk: Path, redis_url: str, clients: list[Redis]) -> None:
    dead = ledger(clients, redis_url, small_disk, lease_seconds=1)
    alive = ledger(clients, redis_url, small_disk)
    assert (await dead.reserve("orphan", 6 * MIB)).granted  # then never renewed: its process died
    assert not (await alive.reserve("next", 6 * MIB)).granted
    started = time.monotonic()
    while not (await alive.reserve("next", 6 * MIB)).granted:
        assert time.monotonic() - started < 5, "the dead process's reservation never lapsed"
        await asyncio.sleep(0.05)
    assert time.monotonic() - started >= 0.5
    # Its job was taken over: the process that took it holds the task's entry now, and the late one
    # (back from a stall) can neither renew nor give it back.
    assert (await alive.reserve("orphan", 1 * MIB)).granted  # 8 free, 6 held, 1 floor: 1 left
    assert not await dead.renew("orphan", 0)
    await dead.release("orphan")
    assert await clients[0].hget(alive.keys[0], "orphan")
    assert await alive.renew("orphan", 0)


async def test_a_waiting_download_proceeds_as_soon_as_room_is_made(
    small_disk: Path, redis_url: str, clients: list[Redis]
) -> None:
    space = ledger(clients, redis_url, small_disk)
    filler = small_disk / "filler"
    fill(filler, 6 * MIB)
    stop = asyncio.Event()
    waiting = asyncio.create_task(space.wait_for_room("waiting", 4 * MIB, 0, stop))
    await asyncio.sleep(3 * ROOM_POLL_SECONDS)
    assert not waiting.done()
    filler.unlink()
    made = time.monotonic()
    grant = await asyncio.wait_for(waiting, 5)
    assert grant is not None and grant.granted
    print(f"\nroom made -> reservation granted: {time.monotonic() - made:.3f} s (polling every {ROOM_POLL_SECONDS} s)")
    assert time.monotonic() - made < 2 * ROOM_POLL_SECONDS + 0.5
    # A waiter gives up when its worker stops.
    fill(filler, 6 * MIB)
    stopped = asyncio.create_task(space.wait_for_room("another", 4 * MIB, 0, stop))
    await asyncio.sleep(ROOM_POLL_SECONDS)
    stop.set()
    assert await asyncio.wait_for(stopped, 5) is None


def test_a_part_is_given_back_but_never_a_published_video(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "videos")
    with storage.open_part("kept") as part:
        part.write(b"x" * 1000)
        storage.free_part("kept", part)  # the part, still locked: truncated and gone
        assert not (tmp_path / "videos" / "kept.mp4.part").exists()
    with storage.open_part("published") as part:
        part.write(b"y" * 1000)
        storage.publish("published", part, hashlib.sha256(b"y" * 1000).hexdigest())
        storage.free_part("published", part)  # the rename happened (an fsync after it failed): keep it
    assert storage.stored_size("published") == 1000


# ---- Through real processes: more videos than the disk holds ---------------------------------------------------


def waiting_for_room(stack: Stack, ids: list[str]) -> list[str]:
    """The tasks among ``ids`` that show InsufficientStorage now (read from Redis: fast enough to time)."""
    with stack.redis.pipeline(transaction=False) as pipe:
        for task_id in ids:
            pipe.hget(keys.TASK + task_id, "error")
        errors = pipe.execute()
    return [task_id for task_id, error in zip(ids, errors, strict=True) if error and "InsufficientStorage" in error]


def parts(videos: Path) -> list[Path]:
    return sorted(videos.glob("*.part"))


def served_sha256(stack: Stack, ds_task_id: str) -> str:
    """The sha256 of the video as the emulator serves it now (its URL read from the DashScope API)."""
    with httpx.Client(base_url=stack.emulator.api, headers={"Authorization": "Bearer k"}, timeout=30) as api:
        url = api.get(f"/tasks/{ds_task_id}").json()["output"]["video_url"]
    return hashlib.sha256(httpx.get(url, timeout=60).content).hexdigest()


def test_a_disk_too_small_for_the_downloads_never_deadlocks(
    tmp_path: Path, videos_disk: Path, redis_url: str, processes: list[Process]
) -> None:
    videos = videos_disk
    stack = Stack(tmp_path, redis_url, processes)
    stack.env.update(WANHOOK_MIN_FREE_BYTES=str(1 * MIB), WANHOOK_DOWNLOAD_CONCURRENCY="4")
    stack.start()
    stack.worker()  # a second process on the same videos directory: the ledger is shared
    # Every video 6 MiB, sent at 1 MiB/s so that downloads are caught in flight: 8 of them (48 MiB) never
    # fit the 40 MiB disk at once.
    stack.emulator.configure(video_pad_bytes=6 * MIB, video_bytes_per_second=1 * MIB)
    filler, eater = videos / "filler", videos / "eater"
    fill(filler, shutil.disk_usage(videos).free - 14 * MIB)  # 14 MiB free: room for two videos over the floor
    fill(eater)  # ... and then none

    # 1. A full disk: every download waits, holding no space.
    ids = [stack.create(f"a lighthouse in a storm, take {n}")["id"] for n in range(8)]
    wait_for(lambda: len(waiting_for_room(stack, ids)) == 8, 60, what="every download to wait for room")
    assert all(stack.task(task_id)["status"] == "downloading" for task_id in ids)
    assert not parts(videos)
    where = str(videos.absolute())
    line = sorted(
        stack.redis.hgetall(keys.DISK_WAITING + where).items(), key=lambda item: (int(item[1].split(":")[1]), item[0])
    )  # by when each began to wait
    assert len(line) == 8

    # 2. Room for two: the two downloads waiting longest go, one reservation each, and no more.
    eater.unlink()
    made = time.monotonic()
    wait_for(lambda: len(waiting_for_room(stack, ids)) < 8, 10, interval=0.005, what="a waiting download to resume")
    resumed = time.monotonic() - made
    print(f"\nroom made -> first waiting download resumed: {resumed * 1000:.0f} ms")
    wait_for(lambda: len(waiting_for_room(stack, ids)) == 6, 10, what="two downloads to resume")
    in_flight = [task_id for task_id in ids if task_id not in waiting_for_room(stack, ids)]
    assert sorted(in_flight) == sorted(task_id for task_id, _ in line[:2])
    wait_for(
        lambda: len(parts(videos)) == 2 and all(p.stat().st_size for p in parts(videos)),
        10,
        interval=0.005,
        what="the two downloads to write",
    )

    # 3. The disk fills under them (something outside wanhook writes): ENOSPC mid-transfer. Both give
    #    their part files back and wait again; nothing fails.
    fill(eater)
    wait_for(
        lambda: len(waiting_for_room(stack, ids)) == 8 and not parts(videos),
        15,
        what="the two downloads to give their space back and wait",
    )
    for task_id in in_flight:
        assert "disk is full" in stack.task(task_id)["error"]["message"]
    assert int(stack.redis.hget(keys.COUNTERS, "downloads_deferred_disk_full")) >= 10

    # 4. Room for six at once (the eater and the filler go), the videos sent at full speed now; as
    #    videos become ready they are checked and taken away, which makes room for the last ones.
    stack.emulator.configure(video_bytes_per_second=0)
    eater.unlink()
    filler.unlink()
    checked: dict[str, str] = {}
    most_parts = 0

    def drain() -> bool:
        nonlocal most_parts
        most_parts = max(most_parts, len(parts(videos)))
        for task_id in ids:
            if task_id in checked:
                continue
            task = stack.task(task_id)
            assert task["status"] in ("downloading", "ready"), f"task {task_id} is {task['status']}: {task['error']}"
            if task["status"] == "ready":
                stored = Path(task["video"]["path"])
                assert task["error"] is None
                assert hashlib.sha256(stored.read_bytes()).hexdigest() == task["video"]["sha256"]
                assert task["video"]["bytes"] == 6 * MIB
                checked[task_id] = task["video"]["sha256"]
                # Compared with what the emulator serves later, off the disk's clock.
                stored.unlink()
        return len(checked) == len(ids)

    wait_for(drain, 90, interval=0.05, what="every task to be ready")
    for task_id in ids:
        assert served_sha256(stack, stack.task(task_id)["dashscope"]["task_id"]) == checked[task_id]
    assert len(set(checked.values())) == len(ids)
    assert not parts(videos)
    assert most_parts <= 6  # 39 MiB of room over the floor: six 6 MiB videos at most, never seven
    assert stack.redis.hlen(keys.DISK_HELD + where) == 0 and stack.redis.hlen(keys.DISK_WAITING + where) == 0
    assert int(stack.redis.hget(keys.COUNTERS, "downloads_completed")) == len(ids)


@pytest.fixture
def tight_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB videos directory, for room for one video at a time."""
    yield from mount_tmpfs(tmp_path / "data" / "videos", 16 * MIB)


def test_a_worker_killed_while_holding_space_does_not_keep_it(
    tmp_path: Path, tight_disk: Path, redis_url: str, processes: list[Process]
) -> None:
    videos = tight_disk
    stack = Stack(tmp_path, redis_url, processes)
    stack.env.update(WANHOOK_MIN_FREE_BYTES=str(1 * MIB))
    stack.start("--no-workers")
    stack.emulator.configure(video_pad_bytes=6 * MIB, video_bytes_per_second=1 * MIB)
    fill(videos / "filler", shutil.disk_usage(videos).free - 8 * MIB)  # room for one 6 MiB video over the floor
    doomed = stack.worker("worker-doomed")
    first = stack.create("a kite over the dunes")["id"]
    wait_for(lambda: parts(videos) and parts(videos)[0].stat().st_size >= 1 * MIB, 60, what="the first download")
    second = stack.create("a kite over the sea")["id"]
    wait_for(lambda: waiting_for_room(stack, [second]), 60, what="the second download to wait for room")

    doomed.kill()  # SIGKILL while it holds a reservation and a place in line: neither is given back
    killed = time.monotonic()
    stack.emulator.configure(video_bytes_per_second=0)
    stack.worker("worker-heir")
    # The jobs are taken over after WANHOOK_CLAIM_IDLE_SECONDS (2 s), by when the dead worker's leases
    # have lapsed: the heir holds no space for them twice. Whichever goes first (the first resumed from
    # its part file, or the second, which waited longer, while the first frees its part and waits),
    # one video is stored and the other waits for room: 2 MiB are left.
    wait_for(
        lambda: sum(stack.task(t)["status"] == "ready" for t in (first, second)) == 1, 60, what="one video to be stored"
    )
    print(f"\nkilled -> first video stored: {time.monotonic() - killed:.2f} s")
    done = next(t for t in (first, second) if stack.task(t)["status"] == "ready")
    other = second if done == first else first
    wait_for(
        lambda: waiting_for_room(stack, [other]) and not parts(videos), 30, what="the other to wait, holding nothing"
    )

    stored = Path(stack.task(done)["video"]["path"])
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == stack.task(done)["video"]["sha256"]
    stored.unlink()  # taken away: room for the other
    task = stack.wait_status(other, "ready", timeout=30)
    assert task["error"] is None
    assert hashlib.sha256(Path(task["video"]["path"]).read_bytes()).hexdigest() == task["video"]["sha256"]
    assert served_sha256(stack, task["dashscope"]["task_id"]) == task["video"]["sha256"]
    assert not parts(videos)
    where = str(videos.absolute())
    assert stack.redis.hlen(keys.DISK_HELD + where) == 0 and stack.redis.hlen(keys.DISK_WAITING + where) == 0
