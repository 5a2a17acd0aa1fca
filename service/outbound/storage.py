"""Where videos are kept: the one interface the downloader and the video endpoint use.

``LocalStorage`` keeps ``<data dir>/videos/<task id>.mp4``. A video is written to ``<id>.mp4.part``
(locked, so two workers never write one video), fsynced, and renamed into place. An object store
is the second implementation (``objectstore.py``): the part file stays on local disk and ``publish`` uploads it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from ..core import pools
from ..core.errors import Interrupted
from ..core.pools import Pool

if TYPE_CHECKING:
    from ..config import Settings

CHUNK = 1 << 20


class StorageBusy(Interrupted):
    """Another worker is writing this video."""


class UploadFailed(Interrupted):
    """The object store refused or broke off an upload, or the stored object did not match: tried again."""


class VideoStorage(Protocol):
    # The pool the downloader runs this storage's calls on (pools.py): local disk work, or object-store requests.
    pool: Pool

    def open_part(self, task_id: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """The video's part file for appending (what it holds so far is resumable), locked while open."""
        ...

    def publish(self, task_id: str, part: IO[bytes], sha256: str) -> str:
        """Make the finished part file the stored video, durably; returns where it is. ``sha256`` is what
        the download computed of it (hex): a store that copies the file checks the copy against it."""
        ...

    def discard(self, task_id: str) -> None: ...

    def stored_size(self, task_id: str) -> int | None: ...

    def sha256(self, task_id: str) -> str: ...

    def location(self, task_id: str) -> str: ...

    def free_part(self, task_id: str, part: IO[bytes]) -> None:
        """Give back the space of the part file ``part`` (still locked), unless it has been published."""
        ...

    def disk_space(self) -> tuple[int, int]:
        """Bytes free for writing where videos are kept, and the size of that disk."""
        ...

    def remove(self, task_id: str) -> bool:
        """Remove the stored video (and any part file) of the task; whether a stored video was there."""
        ...


def sha256_prefix(file: IO[bytes], length: int) -> hashlib._Hash:
    """The running digest of the first ``length`` bytes of ``file``, to resume hashing a part file."""
    digest = hashlib.sha256()
    file.seek(0)
    remaining = length
    while remaining and (chunk := file.read(min(CHUNK, remaining))):
        digest.update(chunk)
        remaining -= len(chunk)
    return digest


class LocalStorage:
    pool = pools.FILES

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, task_id: str, suffix: str = "") -> Path:
        return self.directory / f"{task_id}.mp4{suffix}"

    @contextlib.contextmanager
    def open_part(self, task_id: str) -> Iterator[IO[bytes]]:
        # Unbuffered: a write either reaches the file or fails (ENOSPC) there and then, and no bytes wait
        # in a buffer to fail again when the file is closed or given back.
        with open(self._path(task_id, ".part"), "ab+", buffering=0) as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StorageBusy(task_id) from None
            yield file

    def publish(self, task_id: str, part: IO[bytes], sha256: str) -> str:
        # Renamed in place, not copied: the bytes are the ones the download hashed as it wrote them.
        part.flush()
        os.fsync(part.fileno())
        final = self._path(task_id)
        os.replace(self._path(task_id, ".part"), final)
        directory = os.open(self.directory, os.O_RDONLY)  # the rename itself must survive a power cut
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return str(final)

    def discard(self, task_id: str) -> None:
        self._path(task_id, ".part").unlink(missing_ok=True)

    def stored_size(self, task_id: str) -> int | None:
        path = self._path(task_id)
        return path.stat().st_size if path.exists() else None

    def sha256(self, task_id: str) -> str:
        with open(self._path(task_id), "rb") as file:
            return sha256_prefix(file, self._path(task_id).stat().st_size).hexdigest()

    def location(self, task_id: str) -> str:
        return str(self._path(task_id))

    def remove(self, task_id: str) -> bool:
        # Deletion and retention: a part file left by a download that ended (or broke off) goes too.
        self._path(task_id, ".part").unlink(missing_ok=True)
        try:
            self._path(task_id).unlink()
        except FileNotFoundError:
            return False
        return True

    def free_part(self, task_id: str, part: IO[bytes]) -> None:
        path = self._path(task_id, ".part")
        try:
            same = os.path.samestat(os.stat(path), os.fstat(part.fileno()))
        except FileNotFoundError:
            return  # renamed into place before the failure: it is the video now, not a part
        if same:
            # Truncated while still locked, then removed: the space is back at once, and no other
            # worker can be writing into this file meanwhile.
            part.truncate(0)
            path.unlink(missing_ok=True)

    def disk_space(self) -> tuple[int, int]:
        usage = shutil.disk_usage(self.directory)
        return usage.free, usage.total


def make_storage(settings: Settings) -> VideoStorage:
    """The object store of ``WANHOOK_STORAGE_URL`` when set (part files still in the data directory), else
    the data directory itself."""
    if settings.object_store is not None:
        from .objectstore import S3Storage

        return S3Storage(settings.object_store, settings.videos_dir)
    return LocalStorage(settings.videos_dir)


async def remove_video(storage: VideoStorage, task_id: str) -> bool:
    """``storage.remove`` from the event loop. A local file goes at once, on the loop (an unlink is quick,
    and no request can see the task gone but its file still there); an object store's requests run on the
    store's pool within its request deadline (``pools.DeadlineExceeded`` past it, queueing included)."""
    if isinstance(storage, LocalStorage):
        return storage.remove(task_id)
    from .objectstore import S3Storage

    deadline = storage.config.request_timeout if isinstance(storage, S3Storage) else None
    return await pools.STORE.run(storage.remove, task_id, deadline=deadline)
