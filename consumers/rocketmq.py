"""``wanhook consume``: completion events from an ApsaraMQ for RocketMQ 5.x topic.

Apache's ``rocketmq-python-client`` (gRPC) with a ``SimpleConsumer``: receive a batch, settle each
message through the same path as the webhook, acknowledge only what is recorded. An unacknowledged
message comes back after its invisible duration; a slow one has its invisibility extended while it
is being worked on. The client's calls block, so they run in threads beside the asyncio loop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.config import ConfigError, Settings
from service.store import TaskStore

from .delivery import Decision, settle

log = logging.getLogger("wanhook.consumer")

TRANSPORT = "rocketmq5"


@dataclass(frozen=True)
class ConsumerSettings:
    endpoints: str
    topic: str
    group: str
    access_key: str = ""
    secret_key: str = ""
    namespace: str = ""
    tag: str = "*"
    invisible_seconds: int = 60
    max_deliveries: int = 16
    batch: int = 16
    await_seconds: int = 10

    @classmethod
    def from_env(cls, values: Mapping[str, str]) -> ConsumerSettings:
        """From the ``WANHOOK_ROCKETMQ_*`` variables (lower-cased, prefix removed)."""
        missing = [name for name in ("endpoints", "topic", "group") if not values.get(name)]
        if missing:
            raise ConfigError("set " + ", ".join(f"WANHOOK_ROCKETMQ_{name.upper()}" for name in missing))
        check_endpoints(values["endpoints"])
        numbers = {}
        for name in ("invisible_seconds", "max_deliveries", "batch", "await_seconds"):
            raw = values.get(name)
            if raw:
                # Zero would mean a message redelivered at once, never delivered, or never received.
                if not raw.strip().isdigit() or int(raw) < 1:
                    raise ConfigError(f"WANHOOK_ROCKETMQ_{name.upper()} must be a whole number above 0, got {raw!r}")
                numbers[name] = int(raw)
        return cls(endpoints=values["endpoints"], topic=values["topic"], group=values["group"],
                   access_key=values.get("access_key", ""), secret_key=values.get("secret_key", ""),
                   namespace=values.get("namespace", ""), tag=values.get("tag", "*"), **numbers)

    def __repr__(self) -> str:  # never the secret key
        return f"ConsumerSettings(endpoints={self.endpoints!r}, topic={self.topic!r}, group={self.group!r})"


def check_endpoints(endpoints: str) -> None:
    """``host:port[;host:port...]`` as the client reads it. The client logs a value it cannot read to its
    own log file and goes on with no endpoint at all; here it is refused in one line instead."""
    for item in endpoints.split(";"):
        address = item.strip().removeprefix("http://").removeprefix("https://")
        host, _, port = address.rpartition(":")
        if item and not (host and port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(f"WANHOOK_ROCKETMQ_ENDPOINTS must be host:port, several separated by ';', "
                              f"got {endpoints!r}")


class Consumer:
    def __init__(self, store: TaskStore, settings: ConsumerSettings) -> None:
        self.store = store
        self.settings = settings
        self._client: Any = None

    def _start_client(self) -> Any:
        from rocketmq import ClientConfiguration, Credentials, FilterExpression, SimpleConsumer

        config = ClientConfiguration(self.settings.endpoints,
                                     Credentials(self.settings.access_key, self.settings.secret_key),
                                     namespace=self.settings.namespace)
        client = SimpleConsumer(config, self.settings.group,
                                {self.settings.topic: FilterExpression(self.settings.tag)},
                                await_duration=self.settings.await_seconds)
        client.startup()
        return client

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in hand is settled before returning."""
        self._client = await asyncio.to_thread(self._start_client)
        log.info("consuming %s as group %s from %s", self.settings.topic, self.settings.group,
                 self.settings.endpoints)
        try:
            while not stop.is_set():
                receiving = asyncio.ensure_future(asyncio.to_thread(
                    self._client.receive, self.settings.batch, self.settings.invisible_seconds))
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                try:
                    messages = await receiving  # a receive in flight is finished, never dropped
                except Exception as exc:
                    log.warning("receive failed (%s); retrying", type(exc).__name__)
                    await asyncio.sleep(1.0)
                    continue
                if messages:
                    await self._settle_batch(messages)
        finally:
            await asyncio.to_thread(self._client.shutdown)

    async def _settle_batch(self, messages: list[Any]) -> None:
        pending = {id(message): message for message in messages}
        keeper = asyncio.create_task(self._keep_invisible(pending))
        try:
            await asyncio.gather(*(self._settle(message, pending) for message in messages))
        finally:
            keeper.cancel()

    async def _settle(self, message: Any, pending: dict[int, Any]) -> None:
        decision = await settle(self.store, TRANSPORT, str(message.message_id), bytes(message.body or b""),
                                int(message.delivery_attempt or 1), self.settings.max_deliveries)
        pending.pop(id(message), None)
        if decision is Decision.ACK:
            try:
                await asyncio.to_thread(self._client.ack, message)
            except Exception as exc:
                # Redelivered later; settling it again is harmless (the event is deduplicated).
                log.warning("ack of message %s failed: %s", message.message_id, type(exc).__name__)

    async def _keep_invisible(self, pending: dict[int, Any]) -> None:
        """Extend the invisibility of messages still being worked on, so they are not redelivered meanwhile."""
        while pending:
            await asyncio.sleep(self.settings.invisible_seconds / 2)
            for message in list(pending.values()):
                try:
                    await asyncio.to_thread(self._client.change_invisible_duration, message,
                                            self.settings.invisible_seconds)
                except Exception as exc:
                    log.warning("could not extend message %s: %s", message.message_id, type(exc).__name__)


def run_consumer(settings: Settings) -> int:
    """The ``wanhook consume`` process: until SIGTERM or SIGINT."""
    from service.connection import connect

    consumer_settings = ConsumerSettings.from_env(settings.rocketmq)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        redis = await connect(settings)
        try:
            await Consumer(TaskStore(redis), consumer_settings).run(stop)
        finally:
            await redis.aclose()

    asyncio.run(main())
    return 0
