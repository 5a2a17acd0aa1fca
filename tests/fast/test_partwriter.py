"""The download's writer threads (service/partwriter.py), in this process against real files: what they write
and hash, how much they hold at most, a full disk (/dev/full), and a cancellation that waits for them."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import threading
from pathlib import Path

import pytest

from wanhook.service import partwriter
from wanhook.service.partwriter import BATCH, SLOTS, PartWriter


def chunks(count: int, size: int) -> list[bytes]:
    return [os.urandom(size) for _ in range(count)]


async def test_it_appends_and_hashes_every_byte(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4.part"
    path.write_bytes(b"resumed prefix")
    data = chunks(200, 100_000) + [b"", b"x", os.urandom(3 << 20)]  # small, empty, odd and large chunks
    with open(path, "ab+", buffering=0) as file:
        digest = hashlib.sha256(b"resumed prefix")  # as a resume computes it (storage.sha256_prefix)
        writer = PartWriter(file, digest)
        assert writer.written == len(b"resumed prefix")
        for chunk in data:
            await writer.write(chunk)
        sha256 = await writer.finish()
        await writer.close()  # after finish: nothing left to do
    whole = b"resumed prefix" + b"".join(data)
    assert path.read_bytes() == whole
    assert sha256 == hashlib.sha256(whole).hexdigest()
    assert writer.written == len(whole)


async def test_a_slow_disk_holds_the_reader_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At most SLOTS batches are handed over and not yet written: the loop waits for room instead of piling up
    what it receives (the memory a download holds stays flat however slow the disk)."""
    gate = threading.Event()
    original = partwriter._write_all

    def stalled(file: object, data: bytes) -> None:
        gate.wait(10)  # the disk does not move until the test says so
        original(file, data)  # type: ignore[arg-type]

    monkeypatch.setattr(partwriter, "_write_all", stalled)
    with open(tmp_path / "v.mp4.part", "ab+", buffering=0) as file:
        writer = PartWriter(file, hashlib.sha256())
        sent = 0

        async def feed() -> None:
            nonlocal sent
            for chunk in chunks(4 * SLOTS, BATCH):
                await writer.write(chunk)
                sent += 1

        feeding = asyncio.create_task(feed())
        # It stops at the slots (the thread holds one batch while blocked, SLOTS wait in line), plus the one
        # batch it is filling.
        for _ in range(200):
            await asyncio.sleep(0.01)
        assert not feeding.done()
        assert sent <= SLOTS + 2
        gate.set()
        await asyncio.wait_for(feeding, 30)
        await writer.finish()
    assert (tmp_path / "v.mp4.part").stat().st_size == 4 * SLOTS * BATCH


async def test_a_full_disk_is_raised_in_the_loop() -> None:
    with open("/dev/full", "ab", buffering=0) as file:
        writer = PartWriter(file, hashlib.sha256())
        with pytest.raises(OSError) as raised:
            for chunk in chunks(4 * SLOTS, BATCH):  # the thread fails on the first batch; a later write says so
                await writer.write(chunk)
            await writer.finish()
        assert raised.value.errno == errno.ENOSPC
        await writer.close()


async def test_a_cancelled_download_waits_for_the_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The part file is closed (and its lock given up) only once the thread is done with it."""
    gate = threading.Event()
    writing = threading.Event()
    original = partwriter._write_all

    def stalled(file: object, data: bytes) -> None:
        writing.set()
        gate.wait(10)
        original(file, data)  # type: ignore[arg-type]

    monkeypatch.setattr(partwriter, "_write_all", stalled)
    with open(tmp_path / "v.mp4.part", "ab+", buffering=0) as file:
        writer = PartWriter(file, hashlib.sha256())

        async def download() -> None:
            try:
                for chunk in chunks(4 * SLOTS, BATCH):
                    await writer.write(chunk)
            finally:
                await writer.close()

        running = asyncio.create_task(download())
        await asyncio.to_thread(writing.wait, 10)
        running.cancel()
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert not running.done()  # still waiting for the thread, cancelled or not
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(running, 30)
        # The thread wrote the batch it was in and dropped the rest.
        assert not writer._thread.is_alive() and not writer._hasher.is_alive()
    assert (tmp_path / "v.mp4.part").stat().st_size == BATCH
