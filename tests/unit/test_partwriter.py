"""The download's two threads (service/outbound/partwriter.py), in this process against real files: what they receive,
write and hash, how far they read ahead at most, a full disk (/dev/full), a broken or too long body, and a
cancellation that waits for them. The body here is an in-memory stand-in for ``videofetch.VideoResponse``
(its ``readinto`` and ``interrupt``); the real one is read in test_videofetch and the download tests."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import os
import threading
from pathlib import Path

import pytest

from wanhook.service.outbound import partwriter
from wanhook.service.outbound.partwriter import BUFFER, BUFFERS, WRITE_BATCH, PartWriter, TooLarge

MIB = 1 << 20


class Body:
    """A body of ``data``, handed over in pieces of at most ``piece`` bytes per ``readinto`` (as a socket would);
    ``fail`` is raised once ``fail_at`` bytes were read; ``gate``, when given, holds every read until set."""

    def __init__(
        self,
        data: bytes,
        piece: int = BUFFER,
        *,
        fail_at: int | None = None,
        gate: threading.Event | None = None,
    ) -> None:
        self.data = memoryview(data)
        self.piece = piece
        self.position = 0
        self.fail_at = fail_at
        self.gate = gate
        self.interrupted = threading.Event()
        self.reads = 0
        self.asked: list[int] = []  # the size of each read asked for

    def readinto(self, buffer: memoryview) -> int:
        if self.gate is not None:
            self.gate.wait(10)
        if self.interrupted.is_set():
            raise ConnectionResetError("interrupted")
        if self.fail_at is not None and self.position >= self.fail_at:
            raise ConnectionResetError("the peer went away")
        self.asked.append(len(buffer))
        count = min(len(buffer), self.piece, len(self.data) - self.position)
        buffer[:count] = self.data[self.position : self.position + count]
        self.position += count
        self.reads += 1
        return count

    def interrupt(self) -> None:
        self.interrupted.set()


async def finished(writer: PartWriter) -> None:
    for _ in range(600):
        if await writer.wait(0.05):
            return
    raise AssertionError("the writer did not finish in 30 s")


async def test_it_appends_and_hashes_every_byte(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4.part"
    path.write_bytes(b"resumed prefix")
    data = os.urandom(5 * BUFFER + 12345)
    for piece in (BUFFER, 100_000, 7):  # whole buffers, or whatever a read returns
        path.write_bytes(b"resumed prefix")
        with open(path, "ab+", buffering=0) as file:
            digest = hashlib.sha256(b"resumed prefix")  # as a resume computes it (storage.sha256_prefix)
            writer = PartWriter(file, digest, Body(data if piece > 7 else data[:50_000], piece), limit=len(data))
            await finished(writer)
            sha256 = await writer.finish()
            await writer.close()  # after finish: nothing left to do
        whole = b"resumed prefix" + (data if piece > 7 else data[:50_000])
        assert path.read_bytes() == whole
        assert sha256 == hashlib.sha256(whole).hexdigest()
        assert writer.written == len(whole) and writer.received == len(whole) - len(b"resumed prefix")


async def test_a_slow_disk_holds_the_receiver_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At most BUFFERS buffers are received and not yet written: the receiver stops reading the body (and TCP
    then holds the sender back) instead of piling up what arrives; the memory a download holds stays flat."""
    gate = threading.Event()
    original = PartWriter._write_views

    def stalled(self: PartWriter, fd: int, views: list[memoryview]) -> bool:
        gate.wait(10)  # the disk does not move until the test says so
        return original(self, fd, views)

    monkeypatch.setattr(PartWriter, "_write_views", stalled)
    body = Body(os.urandom(4 * BUFFERS * BUFFER))
    with open(tmp_path / "v.mp4.part", "ab+", buffering=0) as file:
        writer = PartWriter(file, hashlib.sha256(), body, limit=1 << 40)
        assert not await writer.wait(0.3)
        assert body.reads == BUFFERS  # every buffer filled, none free: no read more
        gate.set()
        await finished(writer)
        await writer.finish()
    assert (tmp_path / "v.mp4.part").stat().st_size == 4 * BUFFERS * BUFFER


async def test_a_full_disk_stops_the_receiver_and_is_raised() -> None:
    body = Body(os.urandom(4 * BUFFERS * BUFFER))
    with open("/dev/full", "ab", buffering=0) as file:
        writer = PartWriter(file, hashlib.sha256(), body, limit=1 << 40)
        await finished(writer)
        with pytest.raises(OSError) as raised:
            await writer.finish()
        assert raised.value.errno == errno.ENOSPC
        assert body.interrupted.is_set()  # a receiver blocked on the socket is woken to stop
        assert body.position < len(body.data)
        await writer.close()


async def test_a_broken_body_is_raised_after_what_arrived_is_written(tmp_path: Path) -> None:
    """What came before the break is in the file (a resume continues from it), then the break is raised."""
    data = os.urandom(3 * BUFFER)
    with open(tmp_path / "v.mp4.part", "ab+", buffering=0) as file:
        body = Body(data, fail_at=2 * BUFFER)
        writer = PartWriter(file, hashlib.sha256(), body, limit=len(data))
        await finished(writer)
        with pytest.raises(ConnectionResetError, match="went away"):
            await writer.finish()
        await writer.close()
    assert body.position >= 2 * BUFFER
    assert (tmp_path / "v.mp4.part").read_bytes() == data[: body.position]


async def test_a_body_past_its_limit_stops(tmp_path: Path) -> None:
    data = os.urandom(4 * BUFFER)
    with open(tmp_path / "v.mp4.part", "ab+", buffering=0) as file:
        writer = PartWriter(file, hashlib.sha256(), Body(data), limit=2 * BUFFER + 1)
        await finished(writer)
        with pytest.raises(TooLarge):
            await writer.finish()
        await writer.close()
        assert writer.limit < writer.received <= writer.limit + BUFFER  # it stops at the first read past the limit


async def test_a_cancelled_download_waits_for_the_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The part file is closed (and its lock given up) only once both threads are done with it."""
    gate = threading.Event()
    writing = threading.Event()
    original = PartWriter._write_views

    def stalled(self: PartWriter, fd: int, views: list[memoryview]) -> bool:
        writing.set()
        gate.wait(10)
        return original(self, fd, views)

    monkeypatch.setattr(PartWriter, "_write_views", stalled)
    body = Body(os.urandom(4 * BUFFERS * BUFFER))
    with open(tmp_path / "v.mp4.part", "ab+", buffering=0) as file:
        writer = PartWriter(file, hashlib.sha256(), body, limit=1 << 40)

        async def download() -> None:
            try:
                while not await writer.wait(0.05):
                    pass
            finally:
                await writer.close()

        running = asyncio.create_task(download())
        await asyncio.to_thread(writing.wait, 10)
        running.cancel()
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert not running.done()  # still waiting for the threads, cancelled or not
        assert body.interrupted.is_set()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(running, 30)
        # The writer wrote the batch it was in (the buffers received by then, one write) and dropped the rest.
        assert not any(thread.is_alive() for thread in writer._threads)
    size = (tmp_path / "v.mp4.part").stat().st_size
    assert 0 < size == writer.written <= WRITE_BATCH * BUFFER < len(body.data)


def direct_on(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="direct writes are Linux's")
async def test_whole_buffers_go_around_the_page_cache_and_the_rest_through_it(tmp_path: Path) -> None:
    """A fresh download's whole buffers are written directly, its last bytes the ordinary way; the file is left
    without O_DIRECT for what reads it next. A resume at an offset that is not aligned writes the ordinary way."""
    data = os.urandom(6 * BUFFER + 1000)
    path = tmp_path / "v.mp4.part"
    with open(path, "ab+", buffering=0) as file:
        writer = PartWriter(file, hashlib.sha256(), Body(data), limit=len(data))
        await finished(writer)
        assert await writer.finish() == hashlib.sha256(data).hexdigest()
        await writer.close()
        # All but the last read (its 1,000 odd bytes): the test's file system (ext4 here) takes direct writes.
        assert 0 < len(data) - writer.direct_bytes <= BUFFER and writer.direct_bytes % partwriter.ALIGN == 0
        assert not direct_on(file.fileno())
        file.seek(0)
        assert file.read() == data  # read back through the same descriptor

    path.write_bytes(b"odd prefix")
    with open(path, "ab+", buffering=0) as file:
        writer = PartWriter(file, hashlib.sha256(b"odd prefix"), Body(data), limit=len(data))
        await finished(writer)
        await writer.finish()
        assert writer.direct_bytes == 0 and not direct_on(file.fileno())
    assert path.read_bytes() == b"odd prefix" + data


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="direct writes are Linux's")
async def test_a_file_system_refusing_direct_writes_gets_ordinary_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EINVAL from a direct write (a file system that takes the flag but not the write): that buffer and all
    after it are written the ordinary way, nothing lost."""
    refused = []
    writev = os.writev

    def refusing(fd: int, views: list[memoryview]) -> int:
        if direct_on(fd):
            refused.append(len(views))
            raise OSError(errno.EINVAL, "Invalid argument")
        return writev(fd, views)

    monkeypatch.setattr(partwriter.os, "writev", refusing)
    data = os.urandom(5 * BUFFER)
    with open(tmp_path / "v.mp4.part", "ab+", buffering=0) as file:
        writer = PartWriter(file, hashlib.sha256(), Body(data), limit=len(data))
        await finished(writer)
        assert await writer.finish() == hashlib.sha256(data).hexdigest()
        assert len(refused) == 1 and writer.direct_bytes == 0 and not direct_on(file.fileno())
    assert (tmp_path / "v.mp4.part").read_bytes() == data


async def test_reads_grow_while_the_bytes_come_quickly_and_stay_small_when_they_trickle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fast body is soon read a whole buffer at a time (few hand-overs); a slow one keeps small reads, so that
    its bytes reach the disk, and the task's progress, a little at a time instead of a buffer at a time."""
    data = os.urandom(8 * BUFFER)
    with open(tmp_path / "fast.part", "ab+", buffering=0) as file:
        fast = Body(data)
        writer = PartWriter(file, hashlib.sha256(), fast, limit=len(data))
        await finished(writer)
        await writer.finish()
    first = partwriter.FIRST_READ
    ramp = [first << step for step in range((BUFFER // first).bit_length())]
    assert ramp[-1] == BUFFER and fast.asked[: len(ramp)] == ramp
    assert set(fast.asked[len(ramp) :]) == {BUFFER}

    monkeypatch.setattr(partwriter, "QUICK_READ", 0.0)  # every read counts as slow
    with open(tmp_path / "slow.part", "ab+", buffering=0) as file:
        slow = Body(data[: 20 * first])
        writer = PartWriter(file, hashlib.sha256(), slow, limit=len(data))
        await finished(writer)
        await writer.finish()
    assert set(slow.asked) == {first}
    assert (tmp_path / "slow.part").read_bytes() == data[: 20 * first]
