"""A download's two threads: one receives the video's body into a few reused buffers, the other hashes
each buffer and writes it to the part file, while the event loop only watches.

Each buffer is filled whole by one ``readinto`` (``videofetch.py``), then hashed (sha256) and written
at once, while its bytes are still in the cache: on a GiB here, hashing bytes fresh from the socket
took 0.56 s and writing them 0.25 s, against 0.95 s and more for the same bytes once fallen out of the
cache (the larger the buffers in flight, the slower: 4 MiB buffers doubled the downloader's CPU time).
Receiving the next buffer overlaps the hashing and writing of the last one.

``BUFFERS`` buffers of ``BUFFER`` bytes are all a download holds, however much faster the network is
than the disk: a receiver that finds no free buffer waits, stops reading the socket, and TCP's flow
control slows the sender down.

As the written bytes land, they are handed to the kernel's write-back (``posix_fadvise(DONTNEED)`` on
Linux starts writing dirty pages out and drops the ones already written): the disk writes during the
download rather than all at once in the fsync that publishes it, and a large video does not fill the
page cache (nor push out what else is cached).

The threads are always waited for before the part file is closed (``close``, also on cancellation): no
write can reach a file whose lock was given up, and no read a response that was closed.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from typing import IO, Any, Protocol

from .errors import WanhookError

BUFFER = 1 << 20  # what one read fills: 1 MiB; buffers of 4 MiB fell out of the cache between the threads
BUFFERS = 3  # one being received, one being hashed and written, one ready: ~3 MiB held per download
# Every 8 MiB written: start the write-out of the last stretch, drop the one before (written out by now).
WRITEBACK_STEP = 8 << 20
_ADVISE = getattr(os, "posix_fadvise", None)  # not on macOS: the final fsync then does all the writing


class Body(Protocol):
    """Where the bytes come from: an answer's body (``videofetch.VideoResponse``)."""

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` (blocking); 0 at the end. Raises what broke the transfer."""

    def interrupt(self) -> None:
        """Make a ``readinto`` blocked on another thread return (short, or failing)."""


class TooLarge(WanhookError):
    """The body went on past the limit it was given."""


class PartWriter:
    """Receives ``body`` into ``file`` (unbuffered, positioned at its end), updating ``digest`` with every byte.

    ``finish`` raises what stopped it: a write's ``OSError`` (``ENOSPC`` among them), else what the body's
    ``readinto`` raised, or ``TooLarge`` past ``limit`` bytes; ``close`` stops the threads and waits for them."""

    def __init__(
        self,
        file: IO[bytes],
        digest: hashlib._Hash,
        body: Body,
        *,
        limit: int,
        name: str = "wanhook-part",
    ) -> None:
        self.file = file
        self.digest = digest
        self.body = body
        self.limit = limit
        self.received = 0  # bytes received by this writer
        self.written = file.tell()  # bytes in the file: its size when this started, then what was written
        self._loop = asyncio.get_running_loop()
        self._free: queue.SimpleQueue[bytearray | None] = queue.SimpleQueue()
        self._full: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        for _ in range(BUFFERS):
            self._free.put(bytearray(BUFFER))
        self._receive_error: BaseException | None = None
        self._write_error: BaseException | None = None
        self._abort = False
        self._running = 2
        self._exited: asyncio.Future[None] = self._loop.create_future()
        self._advised = self._dropped = self.written
        self._threads = [
            threading.Thread(target=self._receive, name=f"{name}-receive", daemon=True),
            threading.Thread(target=self._write, name=f"{name}-write", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- the event loop's side ------------------------------------------------------------------------------

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the body to be received and written whole (or to fail):
        whether it is over."""
        try:
            await asyncio.wait_for(asyncio.shield(self._exited), timeout)
        except TimeoutError:
            return False
        return True

    async def finish(self) -> str:
        """Wait for the whole body to be written; the whole file's sha256 (hex)."""
        await self._joined()
        if self._write_error is not None:
            raise self._write_error
        if self._receive_error is not None:
            raise self._receive_error
        return self.digest.hexdigest()

    async def close(self) -> None:
        """Stop both threads, writing nothing more, and wait for them (even when cancelled)."""
        self._stop()
        await self._joined()

    async def _joined(self) -> None:
        await _wait_out(self._exited)
        for thread in self._threads:
            thread.join()  # done with the file and the body already: what is left of them is returning

    def _stop(self) -> None:
        if not self._abort:
            self._abort = True  # read by both threads between buffers
            self._free.put(None)  # a receiver waiting for a buffer stops
            self.body.interrupt()  # ... and one blocked on the socket

    def _exit(self) -> None:
        self._running -= 1
        if not self._running and not self._exited.done():
            self._exited.set_result(None)

    # -- the threads ---------------------------------------------------------------------------------------

    def _receive(self) -> None:
        try:
            while not self._abort and (buffer := self._free.get()) is not None:
                count = self.body.readinto(memoryview(buffer))
                if not count:
                    break
                self.received += count
                if self.received > self.limit:
                    raise TooLarge(f"the body is over {self.limit} bytes")
                self._full.put((buffer, count))
        except BaseException as exc:  # the transfer broke (or went on too long): written so far, it stays
            self._receive_error = exc
        finally:
            self._full.put(None)
            self._call(self._exit)

    def _write(self) -> None:
        try:
            while (item := self._full.get()) is not None:
                if self._abort:
                    continue  # drained without writing, up to the end marker
                buffer, count = item
                view = memoryview(buffer)[:count]
                self.digest.update(view)
                _write_all(self.file, view)
                self.written += count
                self._write_back()
                self._free.put(buffer)
        except BaseException as exc:  # an OSError (ENOSPC) from a write, mostly: the download stops
            self._write_error = exc
            self._stop()
            while self._full.get() is not None:
                pass  # up to the receiver's end marker
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
    """Wait for ``future`` even through a cancellation, which is raised again once it is done: the threads
    must be over before the caller goes on to close or give back the part file."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError()


def _write_all(file: IO[bytes], data: memoryview) -> None:
    """Write all of ``data`` to an unbuffered file: a short write (the disk filling up) is followed by
    another, which then fails with ENOSPC instead of losing bytes silently."""
    while data:
        written = file.write(data)
        if written is None:  # not for a regular file; stated for the type checker
            raise BlockingIOError(errno.EAGAIN, "the part file would block")
        data = data[written:]
