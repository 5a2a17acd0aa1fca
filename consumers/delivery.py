"""What to do with one message from a queue, whatever the queue's client library.

A transport decodes a message into its body and delivery count, calls ``settle`` and acknowledges
the message when it answers ``ACK``. That is the whole seam: a RocketMQ 4.x (remoting) adapter, or
any other queue, needs only those two steps.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import signal
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from wanhook.service.config import Settings
from wanhook.service.core.errors import InvalidEvent
from wanhook.service.ingress.receiver import receive
from wanhook.service.ingress.webhook import EVENT_BODY_LIMIT
from wanhook.service.persistence import keys, replication
from wanhook.service.persistence.store import TaskStore, utf8_prefix

log = logging.getLogger("wanhook.consumer")


class Decision(enum.Enum):
    ACK = "ack"  # recorded (or parked for good): the queue may forget it
    RETRY = "retry"  # not recorded: let the queue deliver it again


async def park(store: TaskStore, transport: str, message_id: str, attempt: int, reason: str, body: bytes) -> None:
    """Keep a message wanhook gives up on, with the reason, in the dead-letter stream.

    Bounded as the audit stream is: a body whole up to ``EVENT_LOG_BODY_MAX`` bytes, beyond that its
    sha256, size and first ``EVENT_LOG_PREFIX`` bytes (a topic takes messages of up to 4 MiB)."""
    entry: dict[FieldT, EncodableT] = {
        "transport": transport,
        "message_id": message_id[: keys.EVENT_LOG_FIELD_MAX],
        "attempt": attempt,
        "reason": reason[: keys.EVENT_LOG_FIELD_MAX * 4],
    }
    if len(body) <= keys.EVENT_LOG_BODY_MAX:
        entry["body"] = body
    else:
        entry.update(
            body_sha256=hashlib.sha256(body).hexdigest(),
            body_bytes=len(body),
            body_prefix=utf8_prefix(body, keys.EVENT_LOG_PREFIX),
        )
    await store.dead_letter(entry)
    await store.count("messages_dead_lettered")


async def settle(
    store: TaskStore,
    transport: str,
    message_id: str,
    body: bytes,
    attempt: int,
    max_deliveries: int,
    *,
    data_form_trusted: bool = False,
) -> Decision:
    """``data_form_trusted``: a message without a CloudEvent envelope is DashScope's (the operator says the
    EventBridge target's Body is ``$.data``); otherwise anyone who can publish to the topic could send one."""
    if len(body) > EVENT_BODY_LIMIT:
        # As the webhook refuses it: nothing larger is an event EventBridge sends (its own limit, 256 KiB).
        # Parked with its digest, size and first bytes (see park), never parsed or kept whole.
        try:
            await store.count("events_invalid")
            await park(
                store,
                transport,
                message_id,
                attempt,
                f"malformed: too_large: {len(body)} bytes, over the {EVENT_BODY_LIMIT} a completion event may have",
                body,
            )
        except RedisError:
            return Decision.RETRY
        log.warning("message %s is %d bytes, over %d; parked", message_id, len(body), EVENT_BODY_LIMIT)
        return Decision.ACK
    try:
        outcome, event = await receive(store, body, data_form_trusted=data_form_trusted)
        return Decision.ACK
    except InvalidEvent as exc:
        # Redelivering a malformed body would fail the same way forever: record it and let it go.
        try:
            await store.count("events_invalid")
            await park(store, transport, message_id, attempt, f"malformed: {exc.code}: {exc.message}", body)
        except RedisError:
            return Decision.RETRY
        log.warning("message %s is not a completion event (%s); parked", message_id, exc.code)
        return Decision.ACK
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        if attempt < max_deliveries:
            log.warning(
                "message %s (delivery %d) not recorded: %s; it will be redelivered", message_id, attempt, reason
            )
            return Decision.RETRY
        try:
            await park(store, transport, message_id, attempt, f"gave up after {attempt} deliveries: {reason}", body)
        except RedisError:
            return Decision.RETRY
        log.error("message %s parked after %d deliveries: %s", message_id, attempt, reason)
        return Decision.ACK


def run_until_signal(settings: Settings, consume: Callable[[TaskStore, asyncio.Event], Awaitable[None]]) -> int:
    """A ``wanhook consume`` process, whichever client: ``consume`` runs until SIGTERM or SIGINT sets its event."""
    from wanhook.service.persistence.connection import connect

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        redis = await connect(settings)
        store = TaskStore(redis)
        # A message is acknowledged once its event is recorded: on as many replicas as asked, and on the
        # current primary (a demoted one's connections are dropped).
        store.require(settings.durability)
        await replication.warn_if_short(redis, settings.durability)
        following = replication.start_following(redis)
        try:
            await consume(store, stop)
        finally:
            await replication.stop_following(following)
            await redis.aclose()

    asyncio.run(main())
    return 0
