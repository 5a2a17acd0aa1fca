"""What a wanhook process holds while it runs: settings, Redis, the store, DashScope, the workers."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import uuid
import weakref

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .config import Settings, parse_limits, parse_schedule
from .core import pools
from .flows import callbacks
from .flows.download import Downloader
from .flows.failures import FailureReader
from .flows.feed import ChangeFeed
from .flows.quota import Admission, RateLimiter, ReadLimiter
from .flows.removals import Removals
from .flows.retention import Retention
from .flows.submission import Dispatcher, Submitter
from .flows.sweeper import Sweeper
from .jobs.queue import JobQueue
from .jobs.supervisor import Supervisor
from .outbound import egress
from .outbound.dashscope import DashScopeClient
from .outbound.storage import VideoStorage, make_storage
from .persistence import installation, keys, replication
from .persistence.connection import connect
from .persistence.store import TaskStore

log = logging.getLogger("wanhook.runtime")


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Runtime:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.store = TaskStore(redis)
        self.store.require(settings.durability)
        self.following: asyncio.Task[None] | None = None
        self.dashscope = DashScopeClient(
            settings.api_key, settings.dashscope_base_url, timeout=settings.dashscope_timeout, on_call=self._count_call
        )
        self.consumer = consumer_name()
        self.limits = parse_limits(settings.limits)
        self.request_limiter = RateLimiter(redis)
        self.reads = ReadLimiter(self.request_limiter, settings.dashscope_qps)
        # A submitted task keeps its slot until its event; should the event be lost, until the sweeper
        # has had time to read the task.
        self.slot_lease_seconds = settings.sweep_after_seconds + 3 * settings.sweep_interval_seconds
        self.supervisor = Supervisor()
        self.feed_clients: weakref.WeakSet[Redis] = weakref.WeakSet()
        # The event streams' changes, read on connections of the feed's own, never from the shared pool.
        self.feed = ChangeFeed(
            self._feed_client,
            redis,
            self.consumer,
            max_streams=settings.max_streams,
            max_streams_per_token=settings.max_streams_per_token if settings.api_tokens else None,
        )

    async def _feed_client(self) -> Redis:
        client = await connect(self.settings, max_connections=1)
        # Through Sentinel, the feed's readers follow a promotion with the shared pool (replication.py).
        self.feed_clients.add(client)
        return client

    @functools.cached_property
    def storage(self) -> VideoStorage:
        """Where videos are kept, for the downloader, the API's video and deletions and the retention sweep
        (made on first use: a process that never needs it does not create the directory)."""
        return make_storage(self.settings)

    async def _count_call(self, endpoint: str, status: str) -> None:
        await self.store.count(f"dashscope_calls|endpoint={endpoint}|status={status}")

    @classmethod
    async def open(cls, settings: Settings) -> Runtime:
        pools.configure(settings)
        redis = await connect(settings)
        try:
            await installation.check(redis, settings)
        except BaseException:
            await redis.aclose()
            raise
        runtime = cls(settings, redis)
        runtime.following = replication.start_following(runtime.redis, lambda: list(runtime.feed_clients))
        await replication.warn_if_short(runtime.redis, settings.durability)
        try:
            await runtime.store.record_settings(max(1, int(settings.changes_retention_seconds * 1000)))
        except RedisError as exc:
            # The scripts fall back to the default retention; nothing else depends on it.
            log.warning("could not record the change streams' retention (%s)", type(exc).__name__)
        try:
            indexed = await runtime.store.index_owners()
            if indexed:
                log.info("added %d tasks stored by an earlier version to their tokens' indexes", indexed)
        except RedisError as exc:
            # Listing would miss some older tasks until a process completes it; the next start tries again.
            log.warning(
                "could not index the earlier tasks by token (%s); retried at the next start", type(exc).__name__
            )
        try:
            indexed = await runtime.store.index_ended()
            if indexed:
                log.info("added the ended ones of %d tasks stored by an earlier version to retention", indexed)
        except RedisError as exc:
            # Retention would keep some older tasks until a process completes it; the next start tries again.
            log.warning(
                "could not index the earlier tasks for retention (%s); retried at the next start", type(exc).__name__
            )
        return runtime

    async def close(self) -> None:
        await replication.stop_following(self.following)
        await self.feed.aclose()
        await self.dashscope.aclose()
        await self.redis.aclose()
        close = getattr(self.__dict__.get("storage"), "close", None)  # an object store's connection pool
        if close is not None:
            close()

    def queue(self, stream: str, group: str) -> JobQueue:
        return JobQueue(
            self.redis,
            stream,
            group,
            self.consumer,
            claim_idle=self.settings.claim_idle_seconds,
            max_attempts=self.settings.job_max_attempts,
        )

    async def run_workers(self, stop: asyncio.Event) -> None:
        """Submission, download, failure-reason, sweeper and callback loops until ``stop`` is set, each supervised: one
        that crashes is restarted, and ``supervisor.down()`` names it meanwhile."""
        settings = self.settings
        admission = Admission(self.redis, self.limits, settings.reserve_seconds)
        submitter = Submitter(
            self.store,
            self.dashscope,
            admission,
            self.reads,
            slot_lease_seconds=self.slot_lease_seconds,
            sweep_after_seconds=settings.sweep_after_seconds,
        )
        downloader = Downloader(
            self.store,
            self.dashscope,
            self.queue(keys.DOWNLOAD_JOBS, keys.DOWNLOAD_GROUP),
            self.reads,
            settings,
            storage=self.storage,
        )
        failures = FailureReader(
            self.store,
            self.dashscope,
            self.queue(keys.FAILURE_JOBS, keys.FAILURE_GROUP),
            self.reads,
            attempts=settings.download_attempts,
        )
        sweeper = Sweeper(
            self.store,
            self.dashscope,
            self.reads,
            self.consumer,
            after_seconds=settings.sweep_after_seconds,
            interval_seconds=settings.sweep_interval_seconds,
            slot_lease_seconds=self.slot_lease_seconds,
            retention=Retention(
                self.store,
                self.storage,
                task_seconds=settings.task_retention_seconds,
                video_seconds=settings.video_retention_seconds,
                dry_run=settings.retention_dry_run,
            ),
            removals=Removals(self.store, self.storage, retry_seconds=settings.sweep_interval_seconds),
            stuck_after_seconds=settings.claim_idle_seconds,
            max_requeues=settings.job_max_attempts,
        )
        notifier = callbacks.Notifier(
            self.store,
            await callbacks.secret(self.redis, settings.callback_secret),
            parse_schedule(settings.callback_schedule),
            concurrency=settings.callback_concurrency,
            allow_private=settings.callback_allow_private,
            per_destination=settings.callback_per_destination,
            deadline=settings.callback_timeout,
            transport=egress.PinnedTransport(allow_private=settings.callback_allow_private),
            max_errors=settings.job_max_attempts,
        )
        dispatcher = Dispatcher(self.redis, admission, submitter)
        try:
            await self.supervisor.run(
                {
                    "dispatcher": dispatcher.run,
                    "downloader": lambda stop: downloader.run(stop, settings.download_concurrency),
                    "failures": failures.run,
                    "sweeper": sweeper.run,
                    "notifier": notifier.run,
                },
                stop,
            )
        finally:
            await notifier.aclose()
