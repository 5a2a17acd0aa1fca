"""A download's two threads: one receives the video's body into a few reused buffers and hashes each
(sha256) as soon as it is filled, the other writes them to the part file, while the event loop only
watches.

Each buffer is filled by one ``readinto`` (``videofetch.py``; whole once the bytes come quickly) and
hashed by the same thread at once, while its bytes are still in that core's cache (the kernel keeps
receiving into the socket's buffer meanwhile). On a GiB here, the sha256 took 0.56 s over one buffer
kept in the cache, 0.7-0.9 s on a thread of its own (the bytes had to come over from the receiving core)
and 0.95 s from memory; on the receiving thread, 0.61-0.65 s with buffers of 2 MiB, 0.72 s with 1 MiB
and 0.86-1.0 s with 256 KiB (fewer hand-overs between the threads, fewer interruptions). The writes
overlap the next buffers' receiving.

The writes go around the page cache (``O_DIRECT`` on Linux, from page-aligned buffers, at aligned
offsets, up to ``WRITE_BATCH`` buffers in one ``writev`` when the writer is behind): the disk takes the
bytes from the buffers themselves, so a GiB costs about 0.1 CPU seconds of writing instead of 0.25-0.35
s of copying into the page cache plus the write-back's work later, a large video does not fill the page
cache (nor push out what else is cached), and the fsync that publishes it has nothing left to write.
Where the file system refuses direct writes, or a write would not be aligned (a resume at an odd offset,
the video's last bytes), it is written the ordinary way and handed to the kernel's write-back as it
lands (``posix_fadvise(DONTNEED)``), so that the disk writes during the download rather than all at once
in the fsync.

``BUFFERS`` buffers of ``BUFFER`` bytes are all a download holds, however much faster the network is
than the disk: a receiver that finds no free buffer waits, stops reading the socket, and TCP's flow
control slows the sender down.

The threads are always waited for before the part file is closed (``close``, also on cancellation): no
write can reach a file whose lock was given up, and no read a response that was closed.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import mmap
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import IO, Any, Protocol

from ..core.errors import WanhookError

BUFFER = 2 << 20  # what one read fills and one update hashes (see above)
BUFFERS = 4  # 8 MiB held per download: one being received, one or two being written, the rest ready
# A read waits until it has filled what it asks for: it asks for FIRST_READ, then twice as much after each
# read done within QUICK_READ seconds, half as much after a slower one. A fast transfer soon reads whole
# buffers; a slow one still reaches the disk (and the task's progress) a little at a time.
FIRST_READ = 64 << 10
QUICK_READ = 0.1
WRITE_BATCH = 2  # buffers in one write at most: the disk here took 1 GiB in 0.75 s by 1 MiB, 0.61 s by 4 MiB
ALIGN = 4096  # direct writes: the buffer's address, the file offset and the length, multiples of this
# Written the ordinary way: every 8 MiB, start the write-out of the last stretch, drop the one before.
WRITEBACK_STEP = 8 << 20
_ADVISE = getattr(os, "posix_fadvise", None)  # not on macOS: the final fsync then does all the writing
_DIRECT = getattr(os, "O_DIRECT", 0)  # Linux; elsewhere every write is an ordinary one

_Item = tuple[mmap.mmap, int]


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
    ``readinto`` raised, or ``TooLarge`` past ``limit`` bytes; ``close`` stops the threads and waits for them.
    ``direct`` is False to write through the page cache always."""

    def __init__(
        self,
        file: IO[bytes],
        digest: hashlib._Hash,
        body: Body,
        *,
        limit: int,
        name: str = "wanhook-part",
        direct: bool = True,
    ) -> None:
        self.file = file
        self.digest = digest
        self.body = body
        self.limit = limit
        self.received = 0  # bytes received by this writer
        self.written = file.tell()  # bytes in the file: its size when this started, then what was written
        self.direct_bytes = 0  # of those written here, how many around the page cache
        self._loop = asyncio.get_running_loop()
        self._free: queue.SimpleQueue[mmap.mmap | None] = queue.SimpleQueue()
        self._to_write: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        for _ in range(BUFFERS):
            self._free.put(mmap.mmap(-1, BUFFER))  # anonymous maps: page-aligned, as direct writes need
        self._flags = fcntl.fcntl(file.fileno(), fcntl.F_GETFL)
        self._direct = direct and bool(_DIRECT)
        self._direct_on = False  # whether the file's descriptor has O_DIRECT set now
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
        """Stop the threads, writing nothing more, and wait for them (even when cancelled)."""
        self._stop()
        await self._joined()

    async def _joined(self) -> None:
        await _wait_out(self._exited)
        for thread in self._threads:
            thread.join()  # done with the file and the body already: what is left of them is returning

    def _stop(self) -> None:
        if not self._abort:
            self._abort = True  # read by the threads between buffers
            self._free.put(None)  # a receiver waiting for a buffer stops
            self.body.interrupt()  # ... and one blocked on the socket

    def _exit(self) -> None:
        self._running -= 1
        if not self._running and not self._exited.done():
            self._exited.set_result(None)

    # -- the threads: receive and hash -> write, each buffer back to the receiver once written -------------

    def _receive(self) -> None:
        size = FIRST_READ
        try:
            while not self._abort and (buffer := self._free.get()) is not None:
                started = time.monotonic()
                count = self.body.readinto(memoryview(buffer)[:size])
                if not count:
                    break
                if count == size:  # the next read: larger while the bytes come quickly, smaller when they trickle
                    quick = time.monotonic() - started < QUICK_READ
                    size = min(BUFFER, size * 2) if quick else max(FIRST_READ, size // 2)
                self.received += count
                if self.received > self.limit:
                    raise TooLarge(f"the body is over {self.limit} bytes")
                self.digest.update(memoryview(buffer)[:count])
                self._to_write.put((buffer, count))
        except BaseException as exc:  # the transfer broke (or went on too long): what came before is written
            self._receive_error = exc
        finally:
            self._to_write.put(None)
            self._call(self._exit)

    def _write(self) -> None:
        fd = self.file.fileno()
        ended = False
        try:
            while not ended and (item := self._to_write.get()) is not None:
                batch = [item]
                while len(batch) < WRITE_BATCH:  # what else is hashed already goes in the same write
                    try:
                        more = self._to_write.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        ended = True
                        break
                    batch.append(more)
                if self._abort:
                    continue  # dropped, up to the end marker
                count = sum(count for _, count in batch)
                if self._write_views(fd, [memoryview(buffer)[:count] for buffer, count in batch]):
                    self._write_back(count)
                self.written += count
                for buffer, _ in batch:
                    self._free.put(buffer)
        except BaseException as exc:  # an OSError (ENOSPC) from a write, mostly: the download stops
            self._write_error = exc
            self._stop()
            while not ended and self._to_write.get() is not None:
                pass  # up to the end marker
        finally:
            try:
                self._set_direct(fd, False)  # what reads the file next (a resume's hash, an upload) reads it plainly
            finally:
                self._call(self._exit)

    def _write_views(self, fd: int, views: list[memoryview]) -> bool:
        """Append ``views`` to the file, directly where it can; whether some went through the page cache."""
        aligned = 0  # the views that can go directly: the leading ones of whole blocks, at an aligned offset
        if self._direct and not self.written % ALIGN:
            while aligned < len(views) and not len(views[aligned]) % ALIGN:
                aligned += 1
        if aligned and self._set_direct(fd, True):
            try:
                written = os.writev(fd, views[:aligned])
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                written = 0  # refused by this file system after all: the ordinary way, from now on
                self._direct = False
            self.direct_bytes += written
            views = _after(views, written)
        if not views:
            return False
        self._set_direct(fd, False)
        for view in views:
            _write_all(fd, view)
        return True

    def _set_direct(self, fd: int, on: bool) -> bool:
        """Turn direct writes on or off for ``fd``; False when the file system does not take them."""
        if on == self._direct_on:
            return True
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, self._flags | _DIRECT if on else self._flags)
        except OSError:
            if not on:
                raise
            self._direct = False  # tmpfs, some FUSE and network file systems
            return False
        self._direct_on = on
        return True

    def _write_back(self, count: int) -> None:
        end = self.written + count
        if _ADVISE is None or end - self._advised < WRITEBACK_STEP:
            return
        fd = self.file.fileno()
        # The stretch before the last one was handed over a step ago and is most likely written out:
        # its pages go; the last stretch starts its write-out (DONTNEED writes dirty pages, keeps them).
        _ADVISE(fd, self._dropped, end - self._dropped, os.POSIX_FADV_DONTNEED)
        self._dropped, self._advised = self._advised, end

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


def _write_all(fd: int, data: memoryview) -> None:
    """Write all of ``data``: a short write (the disk filling up) is followed by another, which then fails
    with ENOSPC instead of losing bytes silently."""
    while data:
        data = data[os.write(fd, data) :]


def _after(views: list[memoryview], count: int) -> list[memoryview]:
    """What is left of ``views`` once their first ``count`` bytes are written."""
    for index, view in enumerate(views):
        if count < len(view):
            return [view[count:], *views[index + 1 :]]
        count -= len(view)
    return []
