"""``wanhook consume``: completion events from an ApsaraMQ for RocketMQ 5.x topic.

Apache's ``rocketmq-python-client`` (gRPC) with a ``SimpleConsumer``: receive a batch, settle each
message through the same path as the webhook, acknowledge only what is recorded. An unacknowledged
message comes back after its invisible duration; a slow one has its invisibility extended while it
is being worked on. The client's calls block, so they run in threads beside the asyncio loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from wanhook.service.config import Settings
from wanhook.service.core import pools
from wanhook.service.core.errors import ConfigError, Unavailable
from wanhook.service.persistence.store import TaskStore

from .delivery import Decision, run_until_signal, settle

log = logging.getLogger("wanhook.consumer")

TRANSPORT = "rocketmq5"
# A receive that failed is tried again after this long.
RETRY_SECONDS = 1.0
# One failure that keeps recurring (an endpoint down for hours) is logged at most this often, with the count
# of repeats in between: a line a second would bury every other line of the process.
FAILURE_LOG_SECONDS = 30.0
# What the RocketMQ 5.x proxy accepts (Apache RocketMQ 5.5.0 defaults, which ApsaraMQ keeps): a receive asking
# for an invisible duration under 10 s or over 12 h is refused (ILLEGAL_INVISIBLE_TIME), and one whose
# deadline (the await duration plus the client's 3 s request timeout) is under the proxy's 5 s minimum poll is
# refused too (ILLEGAL_POLLING_TIME). Checked at start: otherwise every receive fails, for ever.
MIN_INVISIBLE_SECONDS, MAX_INVISIBLE_SECONDS = 10, 43_200
MIN_AWAIT_SECONDS = 3
# The proxy answers a receive from a client whose settings it does not hold with this (an internal error, its
# text a NullPointerException). It happens for a moment after start, before the proxy has taken the settings
# the client sent, and for good after the broker restarted: the client (rocketmq-python-client 5.1.2) does
# not send its settings again. Seen this many times in a row, the client is replaced with a new one.
SETTINGS_UNKNOWN = '"settings" is null'
SETTINGS_UNKNOWN_RESTART = 3
# The name the RocketMQ client logs under, to a file of its own and nowhere else.
CLIENT_LOGGER = "rocketmq-python-client"
_GRPC_TEXT = re.compile(r'status = StatusCode\.(\w+)\s+details = "([^"]*)"')


def _short(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: its cause or context, and exceptions passed as its arguments."""
    seen: list[BaseException] = []
    pending = [exc]
    while pending and len(seen) < 16:
        current = pending.pop(0)
        if any(current is known for known in seen):
            continue
        seen.append(current)
        inner = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
        pending.extend([inner] if inner is not None else [])
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
    return seen


def _grpc_status(exc: BaseException) -> str | None:
    """``CODE: details`` of a gRPC error in ``exc``'s chain, or written out in its text."""
    for error in _chain(exc):
        code, details = getattr(error, "code", None), getattr(error, "details", None)
        if callable(code) and callable(details):  # grpc.RpcError, grpc.aio.AioRpcError
            try:
                return _short(f"{code().name}: {details()}")
            except Exception:  # a call without its status yet: look on
                continue
        found = _GRPC_TEXT.search(str(error))
        if found:
            return _short(f"{found.group(1)}: {found.group(2)}")
    return None


def describe(exc: BaseException) -> str:
    """What went wrong, in one short line: a gRPC status and its details when the error carries one
    (``UNAVAILABLE: ... Connection refused``), else the innermost exception's type and message."""
    status = _grpc_status(exc)
    if status:
        return status
    innermost = _chain(exc)[-1]
    text = str(innermost)
    return _short(f"{type(innermost).__name__}: {text}" if text else type(innermost).__name__)


class ClientErrors(logging.Handler):
    """The errors the RocketMQ client logs, kept for wanhook's own line.

    When a route query fails, the client logs the gRPC error to its own file and raises a bare
    ``Exception("failed to fetch topic:... route.")`` without it; the cause (connection refused, an
    unknown topic, a refused credential) is only in that log record. Errors are gathered from
    ``clear()`` on, so that a failure is explained by what the client logged while it happened.
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.statuses: list[str] = []  # gRPC statuses, the most telling
        self.messages: list[str] = []  # anything else

    def emit(self, record: logging.LogRecord) -> None:
        try:
            error = record.exc_info[1] if record.exc_info else None
            message = record.getMessage()
            status = _grpc_status(error) if error is not None else None
            status = status or _grpc_status(Exception(message))
        except Exception:  # a log record must never break the client's thread
            return
        kept = self.statuses if status else self.messages
        if len(kept) < 32:  # the first few say what happened; a flood says no more
            kept.append(status or _short(message))

    def clear(self) -> None:
        self.statuses, self.messages = [], []

    def best(self, besides: str) -> str | None:
        """The first gRPC status logged, else the first error that says more than ``besides``."""
        if self.statuses:
            return self.statuses[0]
        return next((message for message in self.messages if besides not in message), None)


class FailureLog:
    """Logs a recurring failure at once, then at most once per ``interval`` with the number of failures
    not logged meanwhile. The limit holds whatever the cause: a cause whose text changes from one failure
    to the next must not bring back a line a second. It also keeps the clock both consumers give up by:
    ``failing_for``, the seconds since the first of the failures with no success between them."""

    def __init__(
        self, what: str, interval: float = FAILURE_LOG_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.what = what
        self.interval = interval
        self.clock = clock
        self.logged_at: float | None = None
        self.unlogged = 0
        self.failures = 0
        self.failing_since: float | None = None

    def failed(self, cause: str) -> None:
        now = self.clock()
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = now
        if self.logged_at is not None and now - self.logged_at < self.interval:
            self.unlogged += 1
            return
        repeats = f"; {self.unlogged} more failures since the last line" if self.unlogged else ""
        log.warning(
            "%s failed (%s); retrying every %g s, logging this at most every %g s%s",
            self.what,
            cause,
            RETRY_SECONDS,
            self.interval,
            repeats,
        )
        self.logged_at, self.unlogged = now, 0

    def succeeded(self) -> None:
        if self.failures:
            log.info("%s works again after %d failures", self.what, self.failures)
        # The time of the last failure line stays: the client sometimes answers a receive with nothing while
        # its endpoint is still down, and that must not let the next failure log a line of its own at once.
        self.failures = 0
        self.failing_since = None

    def failing_for(self) -> float:
        """Seconds since the first failure of the current run of them; 0 after a success."""
        return 0.0 if self.failing_since is None else self.clock() - self.failing_since


class BrokerGone(Unavailable):
    """Receiving failed for WANHOOK_ROCKETMQ_GIVE_UP_SECONDS without a break (``wanhook consume`` exits 3)."""

    def __init__(self, message: str) -> None:
        super().__init__("rocketmq_unavailable", message)


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
    # Receiving failing this long without a break: exit (status 3) so that the orchestrator restarts us.
    give_up_seconds: int = 300
    # On SIGTERM, the batch in hand gets this long to be recorded (Redis may hang); what is not recorded
    # by then is not acknowledged, and comes back after its invisible duration.
    shutdown_seconds: int = 10
    # A message without a CloudEvent envelope is DashScope's only when the operator says the EventBridge
    # target's Body is $.data (WANHOOK_ROCKETMQ_TRUST_DATA_FORM=1): anyone who can publish could send one.
    trust_data_form: bool = False

    @classmethod
    def from_env(cls, values: Mapping[str, str]) -> ConsumerSettings:
        """From the ``WANHOOK_ROCKETMQ_*`` variables (lower-cased, prefix removed)."""
        missing = [name for name in ("endpoints", "topic", "group") if not values.get(name)]
        if missing:
            raise ConfigError("set " + ", ".join(f"WANHOOK_ROCKETMQ_{name.upper()}" for name in missing))
        check_endpoints(values["endpoints"])
        numbers = {}
        for name in (
            "invisible_seconds",
            "max_deliveries",
            "batch",
            "await_seconds",
            "give_up_seconds",
            "shutdown_seconds",
        ):
            raw = values.get(name)
            if raw:
                # Zero would mean a message redelivered at once, never delivered, or never received.
                if not raw.strip().isdigit() or int(raw) < 1:
                    raise ConfigError(f"WANHOOK_ROCKETMQ_{name.upper()} must be a whole number above 0, got {raw!r}")
                numbers[name] = int(raw)
        invisible = numbers.get("invisible_seconds", cls.invisible_seconds)
        if not MIN_INVISIBLE_SECONDS <= invisible <= MAX_INVISIBLE_SECONDS:
            raise ConfigError(
                f"WANHOOK_ROCKETMQ_INVISIBLE_SECONDS must be {MIN_INVISIBLE_SECONDS} to "
                f"{MAX_INVISIBLE_SECONDS}: the RocketMQ 5.x proxy refuses a receive asking for "
                f"{invisible} s (ILLEGAL_INVISIBLE_TIME)"
            )
        if numbers.get("await_seconds", cls.await_seconds) < MIN_AWAIT_SECONDS:
            raise ConfigError(
                f"WANHOOK_ROCKETMQ_AWAIT_SECONDS must be at least {MIN_AWAIT_SECONDS}: the RocketMQ "
                f"5.x proxy polls at least 5 s and refuses a receive whose deadline (the await "
                f"plus the client's 3 s) is shorter (ILLEGAL_POLLING_TIME)"
            )
        return cls(
            endpoints=values["endpoints"],
            topic=values["topic"],
            group=values["group"],
            access_key=values.get("access_key", ""),
            secret_key=values.get("secret_key", ""),
            namespace=values.get("namespace", ""),
            tag=values.get("tag", "*"),
            trust_data_form=trust_data_form(values),
            **numbers,
        )

    def __repr__(self) -> str:  # never the secret key
        return f"ConsumerSettings(endpoints={self.endpoints!r}, topic={self.topic!r}, group={self.group!r})"


def trust_data_form(values: Mapping[str, str]) -> bool:
    """WANHOOK_ROCKETMQ_TRUST_DATA_FORM: ``1`` or ``0`` (unset or empty: 0), anything else refused."""
    raw = values.get("trust_data_form") or "0"
    if raw not in ("0", "1"):
        raise ConfigError(f"WANHOOK_ROCKETMQ_TRUST_DATA_FORM must be 0 or 1, got {raw!r}")
    return raw == "1"


def check_endpoints(endpoints: str) -> None:
    """``host:port[;host:port...]`` as the client reads it. The client logs a value it cannot read to its
    own log file and goes on with no endpoint at all; here it is refused in one line instead."""
    for item in endpoints.split(";"):
        address = item.strip().removeprefix("http://").removeprefix("https://")
        host, _, port = address.rpartition(":")
        if item and not (host and port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(
                f"WANHOOK_ROCKETMQ_ENDPOINTS must be host:port, several separated by ';', got {endpoints!r}"
            )


class Consumer:
    def __init__(self, store: TaskStore, settings: ConsumerSettings) -> None:
        self.store = store
        self.settings = settings
        self._client: Any = None
        self._client_errors = ClientErrors()

    def _start_client(self) -> Any:
        from rocketmq import ClientConfiguration, Credentials, FilterExpression, SimpleConsumer

        # After the import: the client configures its logger when imported, dropping handlers set before.
        client_log = logging.getLogger(CLIENT_LOGGER)
        if self._client_errors not in client_log.handlers:
            client_log.addHandler(self._client_errors)
        config = ClientConfiguration(
            self.settings.endpoints,
            Credentials(self.settings.access_key, self.settings.secret_key),
            namespace=self.settings.namespace,
        )
        client = SimpleConsumer(
            config,
            self.settings.group,
            {self.settings.topic: FilterExpression(self.settings.tag)},
            await_duration=self.settings.await_seconds,
        )
        client.startup()
        return client

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in hand is settled before returning."""
        self._client = await pools.BROKER.run(self._start_client)
        log.info("consuming %s as group %s from %s", self.settings.topic, self.settings.group, self.settings.endpoints)
        failures = FailureLog(f"receive from {self.settings.endpoints}")
        unknown = 0
        try:
            while not stop.is_set():
                self._client_errors.clear()
                receiving = asyncio.ensure_future(
                    pools.BROKER.run(self._client.receive, self.settings.batch, self.settings.invisible_seconds)
                )
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                try:
                    messages = await receiving  # a receive in flight is finished, never dropped
                except Exception as exc:
                    cause = self._cause(exc)
                    failures.failed(cause)
                    unknown = unknown + 1 if SETTINGS_UNKNOWN in cause else 0
                    if unknown >= SETTINGS_UNKNOWN_RESTART:
                        unknown = 0
                        await self._restart_client()
                    if failures.failing_for() >= self.settings.give_up_seconds:
                        raise BrokerGone(
                            f"no RocketMQ broker at {self.settings.endpoints} for "
                            f"{self.settings.give_up_seconds} s (WANHOOK_ROCKETMQ_GIVE_UP_SECONDS); last cause: "
                            f"{cause}; exiting so that the process is restarted"
                        ) from None
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                failures.succeeded()
                if messages:
                    await self._settle_within_shutdown(messages, stop)
        finally:
            await pools.BROKER.run(self._client.shutdown)
            logging.getLogger(CLIENT_LOGGER).removeHandler(self._client_errors)

    async def _restart_client(self) -> None:
        log.warning("the broker does not know this client's settings (it restarted?); starting a new client")
        old, self._client = self._client, None
        try:
            await pools.BROKER.run(old.shutdown)
        except Exception as exc:
            log.warning("shutdown of the old client failed: %s", describe(exc))
        try:
            self._client = await pools.BROKER.run(self._start_client)
        except Exception as exc:
            log.warning("a new client did not start: %s", describe(exc))
            self._client = old  # its receives fail, and a new client is tried again after as many failures

    def _cause(self, exc: Exception) -> str:
        """What ``exc`` says; when it is the client's bare exception, which carries no cause, followed by
        the cause the client logged while the receive failed."""
        own = describe(exc)
        if _grpc_status(exc) is not None:
            return own
        logged = self._client_errors.best(besides=str(exc))
        return f"{own.rstrip('.')}: {logged}" if logged else own

    async def _settle_within_shutdown(self, messages: list[Any], stop: asyncio.Event) -> None:
        """Settle a batch; once ``stop`` is set, give it ``shutdown_seconds`` more, then leave the rest
        unacknowledged (it comes back after its invisible duration) rather than wait on a hung Redis."""
        settling = asyncio.ensure_future(self._settle_batch(messages))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({settling, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not settling.done():
            done, _ = await asyncio.wait({settling}, timeout=self.settings.shutdown_seconds)
            if not done:
                settling.cancel()
                log.warning(
                    "stopping: %d messages not recorded within %d s (WANHOOK_ROCKETMQ_SHUTDOWN_SECONDS) "
                    "are left unacknowledged; they come back after their invisible duration",
                    len(messages),
                    self.settings.shutdown_seconds,
                )
                await asyncio.gather(settling, return_exceptions=True)
                return
        await settling

    async def _settle_batch(self, messages: list[Any]) -> None:
        pending = {id(message): message for message in messages}
        keeper = asyncio.create_task(self._keep_invisible(pending))
        try:
            await asyncio.gather(*(self._settle(message, pending) for message in messages))
        finally:
            keeper.cancel()

    async def _settle(self, message: Any, pending: dict[int, Any]) -> None:
        decision = await settle(
            self.store,
            TRANSPORT,
            str(message.message_id),
            bytes(message.body or b""),
            int(message.delivery_attempt or 1),
            self.settings.max_deliveries,
            data_form_trusted=self.settings.trust_data_form,
        )
        pending.pop(id(message), None)
        if decision is Decision.ACK:
            try:
                await pools.BROKER.run(self._client.ack, message)
            except Exception as exc:
                # Redelivered later; settling it again is harmless (the event is deduplicated).
                log.warning("ack of message %s failed: %s", message.message_id, describe(exc))

    async def _keep_invisible(self, pending: dict[int, Any]) -> None:
        """Extend the invisibility of messages still being worked on, so they are not redelivered meanwhile."""
        while pending:
            await asyncio.sleep(self.settings.invisible_seconds / 2)
            for message in list(pending.values()):
                try:
                    await pools.BROKER.run(
                        self._client.change_invisible_duration, message, self.settings.invisible_seconds
                    )
                except Exception as exc:
                    log.warning("could not extend message %s: %s", message.message_id, describe(exc))


def run_consumer(settings: Settings) -> int:
    """The ``wanhook consume`` process: until SIGTERM or SIGINT."""
    consumer_settings = ConsumerSettings.from_env(settings.rocketmq)
    return run_until_signal(settings, lambda store, stop: Consumer(store, consumer_settings).run(stop))
