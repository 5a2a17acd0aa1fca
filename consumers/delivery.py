"""What to do with one message from a queue, whatever the queue's client library.

A transport decodes a message into its body and delivery count, calls ``settle`` and acknowledges
the message when it answers ``ACK``. That is the whole seam: a RocketMQ 4.x (remoting) adapter, or
any other queue, needs only those two steps.
"""

from __future__ import annotations

import enum
import logging

from redis.exceptions import RedisError

from service import constants as keys
from service.events import InvalidEvent
from service.receiver import receive
from service.store import TaskStore

log = logging.getLogger("wanhook.consumer")


class Decision(enum.Enum):
    ACK = "ack"  # recorded (or parked for good): the queue may forget it
    RETRY = "retry"  # not recorded: let the queue deliver it again


async def park(store: TaskStore, transport: str, message_id: str, attempt: int, reason: str, body: bytes) -> None:
    """Keep a message wanhook gives up on, with the reason, in the dead-letter stream."""
    await store.redis.xadd(keys.DEAD_LETTERS, {
        "transport": transport, "message_id": message_id, "attempt": attempt, "reason": reason, "body": body,
    }, maxlen=keys.EVENT_LOG_MAXLEN, approximate=True)
    await store.count("messages_dead_lettered")


async def settle(store: TaskStore, transport: str, message_id: str, body: bytes, attempt: int,
                 max_deliveries: int) -> Decision:
    try:
        outcome, event = await receive(store, body)
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
            log.warning("message %s (delivery %d) not recorded: %s; it will be redelivered", message_id,
                        attempt, reason)
            return Decision.RETRY
        try:
            await park(store, transport, message_id, attempt, f"gave up after {attempt} deliveries: {reason}", body)
        except RedisError:
            return Decision.RETRY
        log.error("message %s parked after %d deliveries: %s", message_id, attempt, reason)
        return Decision.ACK
