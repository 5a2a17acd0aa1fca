"""``wanhook consume`` over the RocketMQ 4.x remoting protocol (``WANHOOK_ROCKETMQ_PROTOCOL=4``).

The design's client, ``rocketmq-client-python`` 2.0.0: a ctypes wrapper around the native ``librocketmq``,
with a ``PushConsumer`` on the NameServer. Its package is also named ``rocketmq``, as the 5.x client's is,
so it is loaded from a folder of its own (``WANHOOK_ROCKETMQ_CLIENT4_DIR``) under the name ``rocketmq4``
(it imports itself only relatively); its ``ffi`` module loads the ``librocketmq.so`` lying beside it.

The library calls back from its own threads, one message at a time; each call waits until the message is
settled on the asyncio loop (``delivery.settle``) and answers ``CONSUME_SUCCESS`` only once it is recorded
(or parked), ``RECONSUME_LATER`` otherwise: the broker then redelivers it through the group's retry topic.

The library retries a NameServer or broker that is gone for ever and tells its caller nothing, so the
process asks itself (``remoting.broker_unreachable``) and gives up as the 5.x consumer does: after
``WANHOOK_ROCKETMQ_GIVE_UP_SECONDS`` without a broker it exits with status 3, for the orchestrator.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import importlib
import importlib.util
import logging
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from wanhook.service.config import Settings
from wanhook.service.core import pools
from wanhook.service.core.errors import ConfigError
from wanhook.service.persistence.store import TaskStore

from . import remoting
from .delivery import Decision, run_until_signal, settle
from .rocketmq import RETRY_SECONDS, BrokerGone, FailureLog, check_endpoints, trust_data_form

log = logging.getLogger("wanhook.consumer")

TRANSPORT = "rocketmq4"
PROTOCOLS = ("5", "4")
# The WANHOOK_ROCKETMQ_* settings only the 4.x path reads (it shares topic, group, keys, tag, deliveries and
# shutdown time with the 5.x path).
SETTINGS = ("protocol", "namesrv", "client4_dir")
MODULE = "rocketmq4"
DEFAULT_CLIENT_DIR = Path.home() / ".cache" / "wanhook" / "rocketmq4" / MODULE
# librocketmq's CMessageTrace: OPEN = 0. With message trace closed (the consumer's default), the 2.1
# library's ShutdownPushConsumer dereferences the trace producer it never made and crashes the process
# (SIGSEGV in DefaultMQPushConsumerImpl::shutdownMessageTraceInnerProducer, seen against Apache RocketMQ
# 5.5.0); opened, shutdown is clean. rocketmq-client-python 2.0.0 has no wrapper for this call.
MESSAGE_TRACE_OPEN = 0
# librocketmq gives a message back asking the broker for at most 16 retries, and the broker takes that over the
# group's retryMaxTimes (DefaultMQPushConsumerImpl::getMaxReconsumeTimes returns 16 when unset; the C API has no
# setter): a 17th delivery that fails sends the message to %DLQ%<group>, unseen. wanhook must park it by then.
MAX_DELIVERIES = 17
# How often the process checks that a broker serves the topic (a route query and a TCP connection): as often
# as the 5.x consumer tries a receive again, which its failure line says.
CHECK_SECONDS = RETRY_SECONDS


def protocol(values: Mapping[str, str]) -> str:
    """``WANHOOK_ROCKETMQ_PROTOCOL``: 5 (gRPC through the Proxy, the default) or 4 (remoting)."""
    chosen = values.get("protocol", "5").strip()
    if chosen not in PROTOCOLS:
        raise ConfigError(f"WANHOOK_ROCKETMQ_PROTOCOL must be 5 or 4, got {chosen!r}")
    return chosen


@dataclass(frozen=True)
class Consumer4Settings:
    namesrv: str
    topic: str
    group: str
    access_key: str = ""
    secret_key: str = ""
    tag: str = "*"
    max_deliveries: int = 16
    # The library's consume threads: messages settled at once (each thread waits for its message to be
    # recorded). Its own default is the number of cores, at most 8: on a small machine a distant Redis's round
    # trips would come one or two at a time.
    batch: int = 16
    shutdown_seconds: int = 10
    # No broker for the topic this long without a break: exit (status 3) so that the orchestrator restarts us.
    give_up_seconds: int = 300
    client_dir: Path = DEFAULT_CLIENT_DIR
    trust_data_form: bool = False  # as ConsumerSettings.trust_data_form

    @classmethod
    def from_env(cls, values: Mapping[str, str]) -> Consumer4Settings:
        missing = [name for name in ("namesrv", "topic", "group") if not values.get(name)]
        if missing:
            raise ConfigError(
                "with WANHOOK_ROCKETMQ_PROTOCOL=4 set "
                + ", ".join(f"WANHOOK_ROCKETMQ_{name.upper()}" for name in missing)
            )
        try:
            check_endpoints(values["namesrv"])
        except ConfigError:
            raise ConfigError(
                f"WANHOOK_ROCKETMQ_NAMESRV must be host:port, several separated by ';', got {values['namesrv']!r}"
            ) from None
        numbers = {}
        for name in ("max_deliveries", "batch", "shutdown_seconds", "give_up_seconds"):
            raw = values.get(name)
            if raw:
                if not raw.strip().isdigit() or int(raw) < 1:
                    raise ConfigError(f"WANHOOK_ROCKETMQ_{name.upper()} must be a whole number above 0, got {raw!r}")
                numbers[name] = int(raw)
        deliveries = numbers.get("max_deliveries", cls.max_deliveries)
        if deliveries > MAX_DELIVERIES:
            raise ConfigError(
                f"with WANHOOK_ROCKETMQ_PROTOCOL=4, WANHOOK_ROCKETMQ_MAX_DELIVERIES must be at most {MAX_DELIVERIES}, "
                f"got {deliveries}: the 4.x client asks the broker for 16 retries at most, whatever the group "
                f"allows, and a message failing more often would go to %DLQ%<group> unseen"
            )
        client_dir = Path(values.get("client4_dir") or DEFAULT_CLIENT_DIR)
        for needed in ("__init__.py", "client.py", "librocketmq.so"):
            if not (client_dir / needed).is_file():
                raise ConfigError(
                    f"WANHOOK_ROCKETMQ_CLIENT4_DIR ({client_dir}) holds no {needed}: it must be the folder of "
                    f"rocketmq-client-python 2.0.0's package with librocketmq.so beside it (make rocketmq4)"
                )
        return cls(
            namesrv=values["namesrv"],
            topic=values["topic"],
            group=values["group"],
            access_key=values.get("access_key", ""),
            secret_key=values.get("secret_key", ""),
            tag=values.get("tag", "*"),
            client_dir=client_dir,
            trust_data_form=trust_data_form(values),
            **numbers,
        )

    def __repr__(self) -> str:  # never the secret key
        return f"Consumer4Settings(namesrv={self.namesrv!r}, topic={self.topic!r}, group={self.group!r})"


def load_client(client_dir: Path) -> ModuleType:
    """``rocketmq-client-python``'s ``client`` module, its package imported as ``rocketmq4`` from
    ``client_dir``; the 5.x client keeps the name ``rocketmq``."""
    if MODULE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            MODULE, client_dir / "__init__.py", submodule_search_locations=[str(client_dir)]
        )
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot load the RocketMQ 4.x client from {client_dir}")
        package = importlib.util.module_from_spec(spec)
        sys.modules[MODULE] = package
        try:
            spec.loader.exec_module(package)
        except BaseException:
            del sys.modules[MODULE]
            raise
    return importlib.import_module(f"{MODULE}.client")


class Consumer4:
    def __init__(self, store: TaskStore, settings: Consumer4Settings) -> None:
        self.store = store
        self.settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._stopped_at = 0.0

    def _start_client(self) -> Any:
        mq = load_client(self.settings.client_dir)
        client = mq.PushConsumer(self.settings.group)
        trace = mq.dll.SetPushConsumerMessageTrace
        trace.argtypes, trace.restype = [ctypes.c_void_p, ctypes.c_int], ctypes.c_int
        mq.ffi_check(trace(client._handle, MESSAGE_TRACE_OPEN))
        client.set_thread_count(self.settings.batch)
        client.set_name_server_address(self.settings.namesrv)
        if self.settings.access_key:
            client.set_session_credentials(self.settings.access_key, self.settings.secret_key, "ALIYUN")
        client.subscribe(self.settings.topic, self._on_message(mq.ConsumeStatus), self.settings.tag)
        client.start()
        return client

    def _on_message(self, status: Any) -> Any:
        def on_message(message: Any) -> Any:
            return status.CONSUME_SUCCESS if self._consume(message) is Decision.ACK else status.RECONSUME_LATER

        return on_message

    def _consume(self, message: Any) -> Decision:
        """In the library's thread: settle on the loop and wait. Once stopping, a message not settled within
        ``shutdown_seconds`` is left for redelivery rather than hold the shutdown on a hung Redis."""
        assert self._loop is not None
        if self._stopping.is_set():
            return Decision.RETRY
        future = asyncio.run_coroutine_threadsafe(
            settle(
                self.store,
                TRANSPORT,
                str(message.id),
                bytes(message.body or b""),
                int(message.reconsume_times) + 1,
                self.settings.max_deliveries,
                data_form_trusted=self.settings.trust_data_form,
            ),
            self._loop,
        )
        while True:
            try:
                return future.result(timeout=0.5)
            except concurrent.futures.TimeoutError:
                if self._stopping.is_set() and time.monotonic() - self._stopped_at > self.settings.shutdown_seconds:
                    future.cancel()
                    return Decision.RETRY
            except Exception as exc:
                log.warning("message %s not settled: %s: %s", message.id, type(exc).__name__, exc)
                return Decision.RETRY

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        client = await pools.BROKER.run(self._start_client)
        log.info(
            "consuming %s as group %s from NameServer %s (RocketMQ 4.x remoting)",
            self.settings.topic,
            self.settings.group,
            self.settings.namesrv,
        )
        try:
            await self._watch(stop)
        finally:
            self._stopped_at = time.monotonic()
            self._stopping.set()
            # The loop keeps running meanwhile: callbacks in flight finish (or give up) on it.
            await pools.BROKER.run(client.shutdown)
            log.info("RocketMQ 4.x consumer stopped")

    async def _watch(self, stop: asyncio.Event) -> None:
        """Until ``stop``: check that a broker serves the topic; raise BrokerGone after ``give_up_seconds``
        of nothing but failed checks. The cause is logged at once, then at most every 30 s."""
        what = f"the check for a broker of {self.settings.topic} through NameServer {self.settings.namesrv}"
        failures = FailureLog(what)
        while not stop.is_set():
            cause = await pools.BROKER.run(remoting.broker_unreachable, self.settings.namesrv, self.settings.topic)
            if cause is None:
                failures.succeeded()
            else:
                failures.failed(cause)
                if failures.failing_for() >= self.settings.give_up_seconds:
                    raise BrokerGone(
                        f"no RocketMQ broker for {self.settings.topic} through NameServer {self.settings.namesrv} "
                        f"for {self.settings.give_up_seconds} s (WANHOOK_ROCKETMQ_GIVE_UP_SECONDS); last cause: "
                        f"{cause}; exiting so that the process is restarted"
                    )
            try:
                await asyncio.wait_for(stop.wait(), CHECK_SECONDS)
            except TimeoutError:
                pass


def run_consumer4(settings: Settings) -> int:
    """The ``wanhook consume`` process with ``WANHOOK_ROCKETMQ_PROTOCOL=4``: until SIGTERM or SIGINT."""
    consumer_settings = Consumer4Settings.from_env(settings.rocketmq)
    return run_until_signal(settings, lambda store, stop: Consumer4(store, consumer_settings).run(stop))
