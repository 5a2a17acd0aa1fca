"""Downloader: stores a finished task's video before its signed URL dies.

This is the orchestration of a download: the job held while it runs, the disk space reserved and
waited for, a refused URL read again from DashScope, attempts counted, the upload to an object store
retried, the task's transitions. The HTTP exchange itself is ``videofetch.py``'s (``PartFetch``): the
GET, the Range protocol that resumes a part file (from zero when the server ignores Range), and every
check of what the host answered, which it returns checked (``Fetched``) or refuses with an error that
says what to do next (another attempt, a fresh URL, the task's end).

The video streams into its part file (``storage.py``): received and hashed on a thread of its own,
written on another while the next bytes arrive (``partwriter.py``); the part is published (fsynced and
renamed into place), and only then is the task ``ready`` and the job acknowledged. The part file is
locked by the worker writing it, so a worker that takes over a job from a stalled one cannot write into
it at the same time.

Disk space is reserved (``diskspace.py``) once the video host has said how large the video is, before
its bytes are written. The part-file rule: a part file is kept only while its download holds a
reservation for the rest of it. A download refused its reservation, or that meets a full disk
(``ENOSPC`` on a write, the fsync or the rename), gives its part file's space back at once and waits
in line for room, the task showing ``InsufficientStorage``; it starts over from byte zero when its
turn comes. So a download holds either all the space it still needs or none, and the downloads that
hold space can always finish: a disk too small for everything in flight lets them through one after
another instead of leaving each stuck on a partial file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from fnmatch import fnmatch
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

from redis.exceptions import RedisError

from ..config import Settings
from ..core import pools
from ..core.errors import DashScopeError, Interrupted, WanhookError
from ..core.redact import redact_url
from ..domain.task import Status
from ..jobs.queue import Job, JobQueue, work
from ..observability import metrics
from ..outbound import egress, videofetch
from ..outbound.dashscope import DashScopeClient
from ..outbound.objectstore import S3Storage
from ..outbound.storage import LocalStorage, StorageBusy, UploadFailed, VideoStorage
from ..persistence.store import TaskStore
from . import removals
from .diskspace import DiskSpace, check_floor, disk_full
from .quota import ReadLimiter

log = logging.getLogger("wanhook.download")
T = TypeVar("T")

UPLOAD_FAILED = "UploadFailed"  # the error of a task whose upload to the object store fails
UPLOAD_LOG_INTERVAL = 60.0  # an upload that keeps failing is logged once a minute at most (the task shows each)


class DownloadError(WanhookError):
    """A failure that ends the task; ``code`` and ``message`` become its error."""

    def __init__(
        self, code: str, message: str, status: str = Status.FAILED, *, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.details = details or {}  # more fields of the task's error (an upload's attempts)


class TransientError(Interrupted):
    """A read of the DashScope task worth another attempt (5xx, timeout, a status behind the event's).

    A transfer's own such failures are ``videofetch.FetchFailed``; both count against
    ``WANHOOK_DOWNLOAD_ATTEMPTS``."""


def host_allowed(url: str, patterns: tuple[str, ...]) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return False
    return any(fnmatch(host, pattern.lower()) for pattern in patterns)


class Downloader:
    def __init__(
        self,
        store: TaskStore,
        client: DashScopeClient,
        queue: JobQueue,
        reads: ReadLimiter,
        settings: Settings,
        *,
        storage: VideoStorage | None = None,
    ) -> None:
        """``storage`` keeps the videos (``LocalStorage`` in the data directory unless given). Videos are
        fetched from public addresses only, or from the hosts named in ``WANHOOK_VIDEO_HOSTS``
        (``videofetch.py``)."""
        self.store = store
        self.client = client
        self.queue = queue
        self.reads = reads
        self.settings = settings
        self.storage: VideoStorage = storage if storage is not None else LocalStorage(settings.videos_dir)
        self.upload_retry_seconds = (
            self.storage.config.upload_retry_seconds if isinstance(self.storage, S3Storage) else 6 * 3600.0
        )
        # Leases as long as a job's: a dead worker's space comes back by the time its job is taken over.
        self.space = DiskSpace(
            store.redis,
            self.storage,
            settings.videos_dir,
            floor=settings.min_free_bytes,
            lease_seconds=settings.claim_idle_seconds,
            owner=queue.consumer,
        )
        # What every video's GET is held to (videofetch.py checks the answers against it).
        self.limits = videofetch.Limits(
            settings.max_video_bytes, settings.download_min_rate, settings.download_rate_window, settings.video_hosts
        )
        self.stopping = asyncio.Event()  # set with the worker's stop: downloads waiting for room give up
        check_floor(settings)

    async def run(self, stop: asyncio.Event, concurrency: int = 4) -> None:
        self.stopping = stop
        await work(self.queue, self.process, stop, concurrency, log)

    async def process(self, job: Job) -> None:
        task = await self.store.raw(job.task_id)
        if not task or task["status"] != Status.DOWNLOADING:
            await self.queue.ack(job)
            return
        started = time.monotonic()
        try:
            async with self._holding(job) as lost:
                video = await self._download(task, lost)
        except DownloadError as exc:
            log.warning("task %s: %s: %s", job.task_id, exc.code, exc.message)
            self.storage.discard(job.task_id)  # the task is over: free the space
            error = {"code": exc.code, "message": exc.message, **exc.details}
            await self.store.transition(job.task_id, exc.status, error=error)
            await self.store.count(f"downloads_{exc.status}")
        except JobLost:
            log.info("task %s: another worker took the download over", job.task_id)
            return
        except WaitAbandoned:
            # The worker stops while the download waits for room: the job stays pending, and another
            # worker takes it up after WANHOOK_CLAIM_IDLE_SECONDS.
            log.info("task %s: stopping while waiting for disk space; the job stays pending", job.task_id)
            return
        else:
            if await self.store.transition(job.task_id, Status.READY, video=video):
                if task.get("error"):  # an upload's failures that are over; cleared only once ready, so that
                    await self.store.clear_fields(job.task_id, "error")  # a failure's own error stays
                await self.store.count("downloads_completed")
                await self.store.count("download_bytes", video["bytes"])
                await metrics.observe_download(self.store, time.monotonic() - started)
            else:
                await self._orphaned(job.task_id)
        await self.queue.ack(job)

    async def _orphaned(self, task_id: str) -> None:
        """The video is stored but the task did not take it: it ended meanwhile (a FAILED or CANCELED event
        came during the download) or was deleted. Unless it is ``ready`` (with this very video, from a
        worker that took the job over), the video goes through the removal machinery (``removals.py``): from
        an object store its removal is recorded as owed first, so that a store down now leaves nothing
        behind that nothing names."""
        current = await self.store.raw(task_id)
        if current is not None and current.get("status") in (Status.READY, Status.DOWNLOADING):
            return  # its video, or one it still waits for
        if removals.owes_removal(self.storage):
            await self.store.owe_removal(task_id)
        await removals.remove(self.store, self.storage, task_id)
        await self.store.count("download_orphans_removed")
        state = current.get("status") if current is not None else "deleted"
        log.info("task %s: the video was stored after the task ended (%s); it is removed", task_id, state)

    async def _download(self, task: dict[str, str], lost: asyncio.Event) -> dict[str, Any]:
        """Fetch the video, waiting for room on disk as often as the disk is full; the reservation
        and the task's place in line are given back however this ends."""
        task_id = task["id"]
        since_ms = 0  # when the download first waited for room: its place in line, kept across waits
        full_disk_errors = 0
        renewer = asyncio.create_task(self._renew(task_id))
        try:
            while True:
                try:
                    return await self._fetch(task, lost)
                except InsufficientStorage as exc:
                    waited = time.monotonic()
                    # Not the video's fault: the job stays, and the task says why meanwhile.
                    log.warning("task %s: waiting for disk space: %s", task_id, exc)
                    await self.store.set_fields(task_id, error={"code": "InsufficientStorage", "message": str(exc)})
                    await self.store.count("downloads_deferred_disk_full")
                    if exc.disk_full:
                        # The disk filled under a reservation (something outside the ledger wrote to
                        # it). The reservation goes at once; and each time again the download pauses
                        # longer before it asks for room, so that a disk full for a reason the free space
                        # does not show (no inodes left) cannot turn into a stream of requests.
                        await self.space.release(task_id)
                        full_disk_errors += 1
                        if full_disk_errors > 1:
                            await self._pause(min(30.0, 0.25 * 2 ** (full_disk_errors - 1)))
                    grant = await self.space.wait_for_room(task_id, exc.need, exc.since_ms or since_ms, self.stopping)
                    if grant is None:
                        raise WaitAbandoned() from None
                    since_ms = grant.since_ms
                    await self.store.clear_fields(task_id, "error")
                    task.pop("error", None)
                    log.info("task %s: room on disk after %.2f s; downloading", task_id, time.monotonic() - waited)
                    await self.store.count("downloads_resumed_disk_room")
        finally:
            renewer.cancel()
            try:
                await self.space.release(task_id)
            except RedisError as exc:  # the lease lapses by itself: the outcome of the download stands
                log.warning("task %s: could not give back the disk reservation (%s)", task_id, type(exc).__name__)

    async def _renew(self, task_id: str) -> None:
        """Keep the task's entry in the disk ledger alive (held or waiting) while the download runs."""
        while True:
            await asyncio.sleep(self.space.renew_interval)
            try:
                await self.space.renew(task_id)
            except Exception as exc:  # Redis away for a moment: the lease outlives a few misses
                log.warning("task %s: could not renew the disk reservation (%s)", task_id, type(exc).__name__)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    @contextlib.asynccontextmanager
    async def _holding(self, job: Job) -> AsyncIterator[asyncio.Event]:
        """Keeps the job ours while working on it; the work is cancelled if another worker took it."""
        lost = asyncio.Event()
        current = asyncio.current_task()
        assert current is not None

        async def keep() -> None:
            while True:
                await asyncio.sleep(self.queue.claim_idle_ms / 3000)
                if not await self.queue.hold(job):
                    lost.set()
                    current.cancel()
                    return

        keeper = asyncio.create_task(keep())
        try:
            yield lost
        except asyncio.CancelledError:
            if lost.is_set():
                raise JobLost() from None
            raise
        finally:
            keeper.cancel()

    async def _fetch(self, task: dict[str, str], lost: asyncio.Event) -> dict[str, Any]:
        task_id = task["id"]
        expected = int(task.get("dl_total") or 0)
        # With an object store, these are requests: in a thread, and tried again as an upload is.
        if expected and await self._store_call(task, lost, self.storage.stored_size, task_id) == expected:
            # Published by a worker that died before recording it: with an object store, maybe before its
            # part file went too (the object was checked before the part is removed), so it goes now.
            digest = await self._store_call(task, lost, self.storage.sha256, task_id)
            await pools.FILES.run(self.storage.discard, task_id)
            return await self._store_call(task, lost, self._video, task_id, digest)

        with self._part(task_id, expected) as file:
            try:
                digest = await self._fetch_into(task, file)
                await self._store_call(task, lost, self.storage.publish, task_id, file, digest)
            except InsufficientStorage:
                await pools.FILES.run(self.storage.free_part, task_id, file)
                raise
            except OSError as exc:
                if not disk_full(exc):
                    raise
                await pools.FILES.run(self.storage.free_part, task_id, file)
                raise InsufficientStorage(
                    f"the disk is full ({os.strerror(exc.errno or errno.ENOSPC)}); the part file was given back",
                    need=self._expected_size(task),
                    disk_full=True,
                ) from None
        await self.store.count("download_transfers_completed")  # a whole video fetched and in place
        return await self._store_call(task, lost, self._video, task_id, digest)

    async def _store_call(self, task: dict[str, str], lost: asyncio.Event, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` in a thread; when the object store fails it (``UploadFailed``), it is tried again
        with backoff (the part file stays, so nothing is downloaded again).

        The failures show on the task meanwhile, as its ``error`` (``UploadFailed``, the last failure, the
        attempts so far and since when), kept across workers; once ``WANHOOK_S3_UPLOAD_RETRY_SECONDS`` have
        passed since the first, the task fails with that error and its part file goes. The log says so at
        the first failure and then once a minute at most."""
        task_id = task["id"]
        logged = -UPLOAD_LOG_INTERVAL
        while True:
            try:
                return await self.storage.pool.run(call, *args)
            except UploadFailed as exc:
                if lost.is_set():
                    raise JobLost() from None
                attempts, since = _upload_failures(task)
                attempts += 1
                now = time.time()
                since = since if since is not None else now
                until = since + self.upload_retry_seconds
                details = {"attempts": attempts, "failing_since": _iso(since)}
                if now >= until:
                    raise DownloadError(
                        UPLOAD_FAILED,
                        f"the object store failed the upload {attempts} times in "
                        f"{now - since:.0f} s (WANHOOK_S3_UPLOAD_RETRY_SECONDS): {exc}",
                        details=details,
                    ) from None
                error = {
                    "code": UPLOAD_FAILED,
                    "message": f"{exc}; uploading again until {_iso(until)}",
                    **details,
                }
                await self.store.set_fields(task_id, error=error)
                task["error"] = json.dumps(error)  # cleared once published (process)
                await self.store.count("upload_retries")
                if time.monotonic() - logged >= UPLOAD_LOG_INTERVAL:
                    logged = time.monotonic()
                    log.warning(
                        "task %s: %s; uploading again (attempt %d, failing since %s; logged once a minute at most)",
                        task_id,
                        exc,
                        attempts + 1,
                        details["failing_since"],
                    )
                await asyncio.sleep(min(0.2 * 2 ** min(attempts, 8), 30.0, max(0.0, until - now)))

    async def _fetch_into(self, task: dict[str, str], file: IO[bytes]) -> str:
        """Read the video URL when needed and transfer the video into ``file``, retrying what is
        worth it; returns the whole file's sha256."""
        task_id = task["id"]
        url: str | None = task.get("video_url") or None
        stale: str | None = None  # a URL the video host refused
        refreshed = False
        attempts = 0
        while True:
            try:
                # Inside the attempts: a read that fails (5xx, timeout, not JSON) is retried within
                # WANHOOK_DOWNLOAD_ATTEMPTS like a broken transfer, instead of leaving the job to be
                # taken over and read again without end.
                if url is None:
                    url = await self._read_url(task, stale)
            except TransientError as exc:
                attempts = await self._after_failure(task_id, attempts, exc)
                continue
            if not host_allowed(url, self.settings.video_hosts):
                raise DownloadError(
                    "VideoHostNotAllowed", f"video host {urlsplit(url).hostname!r} is not in WANHOOK_VIDEO_HOSTS"
                )
            try:
                return await self._transfer(task, url, file)
            except videofetch.InvalidVideoURL as exc:  # no attempt can succeed
                raise DownloadError("VideoURLInvalid", str(exc)) from None
            except egress.DestinationRefused as exc:  # the host resolved inwards as it was connected
                raise DownloadError("VideoHostNotAllowed", str(exc)) from None
            except videofetch.URLExpired:
                if refreshed:
                    raise DownloadError(
                        "VideoURLExpired",
                        "the video URL was refused (expired) even after reading the task again",
                        status=Status.EXPIRED,
                    ) from None
                stale, url, refreshed = url, None, True
            except videofetch.FetchFailed as exc:  # a broken transfer, or an answer that does not hold up
                attempts = await self._after_failure(task_id, attempts, exc)

    @contextlib.contextmanager
    def _part(self, task_id: str, expected: int) -> Iterator[IO[bytes]]:
        try:
            with self.storage.open_part(task_id) as file:
                yield file
        except StorageBusy:
            raise JobLost() from None
        except OSError as exc:
            if not disk_full(exc):
                raise
            raise InsufficientStorage(
                "the disk is full: no room for a part file",
                need=expected or self.settings.max_video_bytes,
                disk_full=True,
            ) from None

    def _expected_size(self, task: dict[str, str]) -> int:
        """The bytes a video needs on disk: its size when the host said it, else the size cap."""
        return int(task.get("dl_total") or 0) or self.settings.max_video_bytes

    async def _reserve(self, task_id: str, head: videofetch.Head) -> None:
        """Reserve the disk space for the rest of the video the host is about to send."""
        grant = await self.space.reserve(task_id, head.size - head.resumed_from)
        if not grant.granted:
            # Refused: the part file is given back (by the caller), so the whole video is what it waits for.
            raise InsufficientStorage(
                grant.explain(head.size - head.resumed_from, self.space.floor), need=head.size, since_ms=grant.since_ms
            )

    async def _after_failure(self, task_id: str, attempts: int, exc: Interrupted) -> int:
        """Count a failed attempt and wait before the next; the task fails once the attempts are spent."""
        attempts += 1
        if attempts >= self.settings.download_attempts:
            raise DownloadError("DownloadFailed", f"gave up after {attempts} attempts: {exc}") from None
        await self.store.count("download_retries")
        log.info("task %s: %s; trying again (attempt %d)", task_id, exc, attempts + 1)
        await asyncio.sleep(min(0.2 * 2**attempts, 30.0))
        return attempts

    def _video(self, task_id: str, sha256: str) -> dict[str, Any]:
        return {
            "path": self.storage.location(task_id),
            "bytes": self.storage.stored_size(task_id),
            "sha256": sha256,
            "url": f"/v1/tasks/{task_id}/video",
        }

    async def _read_url(self, task: dict[str, str], stale_url: str | None) -> str:
        """One read of the DashScope task for its (fresh) video URL."""
        try:
            async with self.reads.request():
                output = await self.client.get_task(task["ds_task_id"])
        except DashScopeError as exc:
            if exc.retryable:
                raise TransientError(f"reading the DashScope task: {exc.code}") from None
            raise DownloadError(exc.code, exc.message) from None
        await self.store.count("dashscope_reads_download")
        status = output.get("task_status")
        url = output.get("video_url")
        if status == "SUCCEEDED" and isinstance(url, str) and url and url != stale_url:
            await self.store.set_fields(task["id"], video_url=url)
            return url
        if status == "UNKNOWN" or (status == "SUCCEEDED" and url == stale_url):
            raise DownloadError(
                "VideoURLExpired", "the video URL expired before the video was stored", status=Status.EXPIRED
            )
        if status in ("PENDING", "RUNNING", "SUSPENDED"):
            # The event said SUCCEEDED; a read that lags behind it is retried, not believed.
            raise TransientError(f"DashScope still reports the task {status}")
        raise DownloadError(
            str(output.get("code") or "NoVideo"),
            str(output.get("message") or f"DashScope task is {status} without a video URL"),
        )

    async def _transfer(self, task: dict[str, str], url: str, file: IO[bytes]) -> str:
        """Append the rest of the video to ``file`` (``videofetch.PartFetch``: the Range protocol and every
        check of the answer), reserving its room and reporting its progress; returns the whole file's sha256."""
        task_id = task["id"]
        fetch = videofetch.PartFetch(url, file, task.get("dl_etag"), self.limits)
        if fetch.resuming_at:
            log.info("task %s: resuming at byte %d", task_id, fetch.resuming_at)
        recorded = False  # whether the task keeps what a resume needs (the first report records it)

        async def progress(head: videofetch.Head, written: int) -> None:
            # Throttled by the fetch. What is in the file, not what was received: the ledger learns of bytes once
            # they are on the disk (no longer in the reservation), so it errs on the safe side, and others may use
            # the difference.
            nonlocal recorded
            fields: dict[str, Any] = {}
            if not recorded:
                fields.update(dl_etag=head.validator, dl_total=head.total or "")
                task.update(dl_etag=head.validator, dl_total=str(head.total or ""))
                recorded = True
            await self.store.progress(task_id, written, head.total, **fields)
            await self.space.renew(task_id, head.size - written)

        try:
            admit = functools.partial(self._reserve, task_id)  # the room for the rest, before a byte of it is written
            fetched = await fetch.run(admit=admit, progress=progress, name=f"wanhook-part-{task_id}")
        except videofetch.VideoTooLarge as exc:
            raise DownloadError(exc.code, exc.message) from None
        if not fetched.whole_already:
            log.info("task %s: stored %d bytes from %s", task_id, fetched.total, redact_url(url))
        return fetched.sha256


class InsufficientStorage(Interrupted):
    """The disk is too full for this video now; the download waits rather than fail.

    ``need`` is what it waits for (its part file is given back, so the whole video), ``since_ms`` its
    place in line when the ledger gave one, ``disk_full`` whether a write met a full disk."""

    def __init__(self, message: str, *, need: int, since_ms: int = 0, disk_full: bool = False) -> None:
        super().__init__(message)
        self.need = need
        self.since_ms = since_ms
        self.disk_full = disk_full


class WaitAbandoned(Interrupted):
    """The worker stops while the download waits for room."""


class JobLost(Interrupted):
    """Another worker holds the job (it took it over, or holds the part file's lock)."""


def _upload_failures(task: dict[str, str]) -> tuple[int, float | None]:
    """The failed attempts of the task's upload so far, and when the first was (epoch seconds), as its error
    says (set by this worker, or by one before it that stopped or died): (0, None) when it has none."""
    try:
        error = json.loads(task.get("error") or "null")
        if not isinstance(error, dict) or error.get("code") != UPLOAD_FAILED:
            return 0, None
        since = datetime.fromisoformat(str(error["failing_since"])).timestamp()
        return int(error.get("attempts") or 0), since
    except (ValueError, KeyError, TypeError):
        return 0, None


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
