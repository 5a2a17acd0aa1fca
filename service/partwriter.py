"""A download's writer: two threads, one writing the video's bytes into its part file and one hashing
them, while the event loop receives the next ones.

The loop hands the received chunks over in batches of about ``BATCH`` bytes, at most ``SLOTS`` batches
in flight: memory stays flat however much faster the network is than the disk, since a loop that finds
no free slot waits, stops reading the socket, and TCP's flow control slows the sender down. The writes
and the sha256 both release the GIL, and each has its own thread: a batch is written and hashed at the
same time (on a GiB, about 0.4 s of writing and 0.7 s of hashing here), so the download takes the longer
of the two rather than their sum. A batch's slot is free once both threads are done with it.

As the written bytes land, they are handed to the kernel's write-back (``posix_fadvise(DONTNEED)`` on
Linux starts writing dirty pages out and drops the ones already written): the disk writes during the
download rather than all at once in the fsync that publishes it, and a large video does not fill the
page cache (nor push out what else is cached).

The threads are always waited for before the part file is closed (``close``, also on cancellation): no
write can reach a file whose lock was given up.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from typing import IO, Any

# About 1 MiB per hand-over; 4 in flight: at most ~8 MiB held per download (a batch can exceed BATCH by
# one chunk of up to 1 MiB, download.READ_SIZE), a few milliseconds of a fast disk's writing.
BATCH = 1 << 20
SLOTS = 4
# Every 8 MiB written: start the write-out of the last stretch, drop the one before (written out by now).
WRITEBACK_STEP = 8 << 20
_ADVISE = getattr(os, "posix_fadvise", None)  # not on macOS: the final fsync then does all the writing


class PartWriter:
    """Appends to ``file`` (unbuffered, positioned at its end) on one thread and updates ``digest`` on another.

    ``write`` and ``finish`` raise what a write raised (``OSError``, ``ENOSPC`` among them); ``close``
    stops the threads (dropping what they were not yet given) and waits for them."""

    def __init__(self, file: IO[bytes], digest: hashlib._Hash, *, name: str = "wanhook-part-writer") -> None:
        self.file = file
        self.digest = digest
        self.written = file.tell()  # bytes in the file: its size when this started, then what the thread wrote
        self._loop = asyncio.get_running_loop()
        self._batches: queue.SimpleQueue[list[bytes] | None] = queue.SimpleQueue()
        self._to_hash: queue.SimpleQueue[list[bytes] | None] = queue.SimpleQueue()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._handed = 0  # batches handed over; and done by each thread:
        self._done = {"write": 0, "hash": 0}
        self._room = asyncio.Event()
        self._error: BaseException | None = None
        self._abort = False
        self._closing = False
        self._running = 2
        self._exited: asyncio.Future[None] = self._loop.create_future()
        self._advised = self._dropped = self.written
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._hasher = threading.Thread(target=self._hash, name=f"{name}-sha256", daemon=True)
        self._thread.start()
        self._hasher.start()

    @property
    def _in_flight(self) -> int:
        return self._handed - min(self._done.values())

    # -- the event loop's side ------------------------------------------------------------------------------

    async def write(self, chunk: bytes) -> None:
        """Queue ``chunk``; waits only when ``SLOTS`` batches are in flight already."""
        self._raise()
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if self._pending_bytes >= BATCH:
            await self._hand_over()

    async def finish(self) -> str:
        """Write and hash everything queued, stop the threads; the whole file's sha256 (hex)."""
        if self._pending:
            await self._hand_over()
        self._stop(abort=False)
        await self._joined()
        self._raise()
        return self.digest.hexdigest()

    async def close(self) -> None:
        """Stop the threads without writing what is still queued, and wait for them (even when cancelled)."""
        self._stop(abort=True)
        await self._joined()

    async def _joined(self) -> None:
        await _wait_out(self._exited)
        self._thread.join()  # done with the file already: what is left of them is returning
        self._hasher.join()

    async def _hand_over(self) -> None:
        while self._in_flight >= SLOTS and self._error is None:
            self._room.clear()
            await self._room.wait()
        self._raise()
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        self._handed += 1
        self._to_hash.put(batch)
        self._batches.put(batch)

    def _stop(self, *, abort: bool) -> None:
        if abort:
            self._abort = True  # read by the thread between batches
        if not self._closing:
            self._closing = True
            self._to_hash.put(None)
            self._batches.put(None)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _one_done(self, side: str) -> None:
        self._done[side] += 1
        self._room.set()

    def _exit(self) -> None:
        self._running -= 1
        if not self._running and not self._exited.done():
            self._exited.set_result(None)

    # -- the threads ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while (batch := self._batches.get()) is not None:
                if self._abort:
                    continue  # drained without writing, up to the end marker
                for chunk in batch:
                    _write_all(self.file, chunk)
                    self.written += len(chunk)
                self._write_back()
                self._call(self._one_done, "write")
        except BaseException as exc:  # an OSError (ENOSPC) from a write, mostly: the loop raises it
            self._error = exc
            self._call(self._room.set)
        finally:
            self._call(self._exit)

    def _hash(self) -> None:
        try:
            while (batch := self._to_hash.get()) is not None:
                if self._abort or self._error is not None:
                    continue  # the digest is not wanted any more
                for chunk in batch:
                    self.digest.update(chunk)
                self._call(self._one_done, "hash")
        except BaseException as exc:  # MemoryError at worst; the download fails with it
            self._error = exc
            self._call(self._room.set)
        finally:
            self._call(self._exit)

    def _write_back(self) -> None:
        if _ADVISE is None or self.written - self._advised < WRITEBACK_STEP:
            return
        fd = self.file.fileno()
        # The stretch before the last one was handed over a step ago and is most likely written out:
        # its pages go; the last stretch starts its write-out (DONTNEED writes dirty pages, keeps them).
        _ADVISE(fd, self._dropped, self.written - self._dropped, os.POSIX_FADV_DONTNEED)
        self._dropped, self._advised = self._advised, self.written

    def _call(self, callback: Callable[..., object], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


async def _wait_out(future: asyncio.Future[None]) -> None:
    """Wait for ``future`` even through a cancellation, which is raised again once it is done: the thread
    must be over before the caller goes on to close or give back the part file."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError()


def _write_all(file: IO[bytes], data: bytes) -> None:
    """Write all of ``data`` to an unbuffered file: a short write (the disk filling up) is followed by
    another, which then fails with ENOSPC instead of losing bytes silently."""
    view = memoryview(data)
    while view:
        written = file.write(view)
        if written is None:  # not for a regular file; stated for the type checker
            raise BlockingIOError(errno.EAGAIN, "the part file would block")
        view = view[written:]
