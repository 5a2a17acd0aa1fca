"""What a wanhook process holds while it runs: settings, Redis, the store, DashScope, the workers."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid

from redis.asyncio import Redis

from . import constants as keys
from .config import Settings
from .connection import connect
from .dashscope import DashScopeClient
from .download import Downloader
from .jobs import JobQueue
from .store import TaskStore
from .submission import Submitter


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Runtime:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.store = TaskStore(redis)
        self.dashscope = DashScopeClient(settings.api_key, settings.dashscope_base_url,
                                         timeout=settings.dashscope_timeout)
        self.consumer = consumer_name()

    @classmethod
    async def open(cls, settings: Settings) -> Runtime:
        return cls(settings, await connect(settings))

    async def close(self) -> None:
        await self.dashscope.aclose()
        await self.redis.aclose()

    def queue(self, stream: str, group: str) -> JobQueue:
        return JobQueue(self.redis, stream, group, self.consumer, claim_idle=self.settings.claim_idle_seconds)

    async def run_workers(self, stop: asyncio.Event) -> None:
        """Submission and download workers until ``stop`` is set."""
        submitter = Submitter(self.store, self.dashscope, self.queue(keys.SUBMIT_JOBS, keys.SUBMIT_GROUP))
        downloader = Downloader(self.store, self.dashscope, self.queue(keys.DOWNLOAD_JOBS, keys.DOWNLOAD_GROUP),
                                self.settings)
        try:
            await asyncio.gather(
                submitter.run(stop, self.settings.submit_concurrency),
                downloader.run(stop, self.settings.download_concurrency),
            )
        finally:
            await downloader.aclose()
