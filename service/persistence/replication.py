"""Acknowledged means replicated: the writes wanhook answers for wait for replicas (and AOFs) first.

With ``WANHOOK_REDIS_WAIT_REPLICAS`` (or ``WANHOOK_REDIS_WAIT_AOF``) set, the writes that a sender is
told are safe — a completion event (EventBridge's 2xx, RocketMQ's acknowledgement), a created task (202),
the DashScope task id a create returned, a message parked before it is acknowledged — run as one
pipeline of ``EVALSHA`` (or the write) then ``WAIT`` (and ``WAITAOF``) on one connection: WAIT counts the
replicas that have this connection's last write, so it must follow the write on the connection that made
it, and redis-py's pool hands out a connection per command. When too few replicas (or AOFs) confirm
within ``WANHOOK_REDIS_WAIT_TIMEOUT_SECONDS``, ``NotReplicated`` is raised: the web layer answers 503 and
the consumer does not acknowledge, so the sender retries; every one of these writes is idempotent, so the
retry is harmless (a message parked again is listed twice among the dead letters). On a Cluster the
write and the waits are sent once, on one connection, to the node serving wanhook's slot (``on_slot_node``).
WAITAOF needs Redis 7.2: ``check_server`` refuses an older one at start (exit 2).

The setting defaults to 1 for a Sentinel or Cluster URL (config.py); ``warn_if_short`` logs at start when
it is 0 there, since a failover then loses what no replica had.

``follow_primary`` keeps a Sentinel-monitored client on the current primary: every
FOLLOW_INTERVAL_SECONDS it asks the sentinels for the master's address and, when it changed, closes every
connection to the old one (in use too), so that a primary cut off from its replicas but still reachable
stops taking writes within one interval of the sentinels' promotion.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import (
    AskError,
    ClusterDownError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..config import Durability
from ..core.errors import Unavailable
from .keys import REPLICATION_BARRIER

log = logging.getLogger("wanhook.replication")

# How often a Sentinel client asks which server is the master: the margin on top of Sentinel's own
# failover time before wanhook writes to a promoted replica.
FOLLOW_INTERVAL_SECONDS = 0.5
WAITAOF_VERSION = (7, 2)
# A write refused for want of replicas: a replica reconnecting, or a failover, takes seconds.
RETRY_AFTER_SECONDS = 2


class NotReplicated(Unavailable, RedisError):
    """The write was made on the primary, but too few replicas (or AOFs) confirmed it in time: 503 with
    Retry-After. A Redis error too, so that what treats Redis as unavailable (no acknowledgement, a retry)
    does so."""

    def __init__(self, message: str) -> None:
        super().__init__(
            "not_replicated",
            f"the write did not reach enough Redis replicas: {message}; retry later",
            retry_after=RETRY_AFTER_SECONDS,
        )


class Replicated:
    """A registered Lua script (redis-py's ``AsyncScript``) whose call also waits for ``durability``;
    called like the script itself (``keys=``, ``args=``)."""

    def __init__(self, redis: Redis, script: Any, durability: Durability) -> None:
        self.redis = redis
        self.script = script
        self.durability = durability

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        replies = await (
            self._on_cluster(keys, args) if isinstance(self.redis, RedisCluster) else self._on_server(keys, args)
        )
        return self._confirmed(replies)

    def _waits(self, pipe: Any, **options: Any) -> None:
        add_waits(pipe, self.durability, **options)

    async def _on_server(self, keys: Sequence[Any], args: Sequence[Any]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            # The pipeline loads the script should the server not know it (a promoted replica may not).
            await self.script(keys=keys, args=args, client=pipe)
            self._waits(pipe)
            return list(await pipe.execute())

    async def _on_cluster(self, keys: Sequence[Any], args: Sequence[Any]) -> list[Any]:
        """EVAL rather than EVALSHA: nothing would load the script on a promoted replica (Redis caches an
        EVAL's script all the same)."""
        commands: list[tuple[Any, ...]] = [("EVAL", self.script.script, len(keys), *keys, *args)]
        self._waits(CommandList(commands))
        return await on_slot_node(self.redis, keys[0], commands)

    def _confirmed(self, replies: list[Any]) -> Any:
        confirm(self.durability, replies[1:])
        return replies[0]


async def write_replicated(redis: Redis, durability: Durability, key: str, command: Sequence[Any]) -> None:
    """``command`` (a write to ``key``), then the waits for ``durability``, on one connection as for a
    script (see ``Replicated``): raises ``NotReplicated`` when too few replicas confirm. For a plain write
    wanhook answers for, such as a message parked before it is acknowledged."""
    if isinstance(redis, RedisCluster):
        commands: list[tuple[Any, ...]] = [tuple(command)]
        add_waits(CommandList(commands), durability)
        replies = await on_slot_node(redis, key, commands)
    else:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.execute_command(*command)
            add_waits(pipe, durability)
            replies = list(await pipe.execute())
    confirm(durability, replies[1:])


# What a Cluster answers when the slot's node is gone or no longer serves it: the client must learn the
# topology again before the next write goes to the right node.
_TOPOLOGY_ERRORS = (RedisConnectionError, RedisTimeoutError, AskError, ClusterDownError, TryAgainError)


async def on_slot_node(redis: Any, key: str, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Each reply of ``commands`` (a write, then ``add_waits``' commands), sent once, in one write on one
    connection, to the primary that serves ``key``'s slot; the first error reply is raised.

    Not through redis-py's cluster pipeline, whose retries made a WAIT confirm what no replica had: a
    pipeline whose connection broke part way (the primary killed during the WAIT) sends again only the
    commands left unanswered, and a WAIT sent again is no longer bound to the node of the write (a single
    target node is not kept for a retry): keyless, it goes to every primary and their counts are summed,
    each on a connection that has written nothing, which every replica has already acknowledged. The
    event was then answered 2xx, though only the dead primary had it. Sent once, a failure fails the whole
    write (503, and the sender retries it all), and no redirection is followed (a write moved to another
    node would leave the waits counting for the first)."""
    from redis.asyncio.cluster import PipelineCommand

    cluster: RedisCluster = redis
    await cluster.initialize()  # a client's first command learns the topology; after that, at once
    node = cluster.get_node_from_key(key)
    if node is None:
        raise ClusterDownError(f"no node serves the slot of {key}")
    queued = [PipelineCommand(position, *command) for position, command in enumerate(commands)]
    try:
        await node.execute_pipeline(queued)
    except (RedisError, OSError):
        await _learn_topology(cluster, key)
        raise
    replies = [command.result for command in queued]
    errors = [reply for reply in replies if isinstance(reply, Exception)]
    if errors:
        if any(isinstance(error, _TOPOLOGY_ERRORS) for error in errors):
            await _learn_topology(cluster, key)
        raise errors[0]
    return replies


async def _learn_topology(cluster: RedisCluster, key: str) -> None:
    """After a failure on the slot's node: one read of ``key``'s slot through the client's own command path,
    which follows a MOVED and, on a node that is gone, refreshes the topology (within its retries), so that
    the next write goes to the node that now serves the slot. Its own failure changes nothing: the write
    has failed already."""
    with contextlib.suppress(RedisError, RedisClusterException, OSError):
        await cluster.exists(key)


class CommandList:
    """What ``add_waits`` queues the waits on when they are sent by hand (``on_slot_node``, the group commit's
    exchange): the commands as tuples, appended to ``commands``."""

    def __init__(self, commands: list[tuple[Any, ...]]) -> None:
        self.commands = commands

    def set(self, name: str, value: str) -> None:
        self.commands.append(("SET", name, value))

    def execute_command(self, *args: Any) -> None:
        self.commands.append(args)


def add_waits(pipe: Any, wanted: Durability, **options: Any) -> None:
    """Queue on ``pipe``, after the writes it is to cover, the barrier and the waits ``wanted`` asks for
    (their replies are what ``confirm`` reads)."""
    # WAIT (and WAITAOF) count the replicas that have the replication offset of this connection's last
    # command (on newer Redis versions, of its last write). A script that wrote nothing (an event already
    # recorded, a create already answered) may repeat a write made on another connection, unreplicated:
    # one write of our own makes the wait cover everything the primary had, whatever the version.
    pipe.set(REPLICATION_BARRIER, "1")
    if wanted.replicas:
        pipe.execute_command("WAIT", wanted.replicas, wanted.timeout_ms, **options)
    if wanted.aofs:
        pipe.execute_command("WAITAOF", 1, wanted.aofs - 1, wanted.timeout_ms, **options)


def confirm(wanted: Durability, replies: list[Any]) -> None:
    """Raises ``NotReplicated`` unless the replies of ``add_waits``' commands (the barrier's first) show
    ``wanted`` reached; a reply that is an error (from a pipeline run without raising) is raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    confirmations = replies[1:]  # replies[0]: the barrier's SET
    problem = None
    if wanted.replicas:
        replicas = int(confirmations.pop(0))
        if replicas < wanted.replicas:
            problem = (
                f"{replicas} of {wanted.replicas} replica(s) confirmed the write within "
                f"{wanted.timeout_seconds:g}s (WANHOOK_REDIS_WAIT_REPLICAS)"
            )
    if wanted.aofs and problem is None:
        local, remote = (int(n) for n in confirmations.pop(0))
        if local + remote < wanted.aofs:
            problem = (
                f"{local + remote} of {wanted.aofs} AOF(s) fsynced the write within "
                f"{wanted.timeout_seconds:g}s (WANHOOK_REDIS_WAIT_AOF)"
            )
    if problem is not None:
        log.warning("write not acknowledged: %s", problem)
        raise NotReplicated(problem)


def check_server(durability: Durability, version: tuple[int, ...]) -> str | None:
    """Why this server cannot give ``durability`` (None when it can): a setting to fix before starting."""
    if durability.aofs and version < WAITAOF_VERSION:
        return f"WANHOOK_REDIS_WAIT_AOF needs Redis 7.2 or newer (WAITAOF); this one is {'.'.join(map(str, version))}"
    return None


async def warn_if_short(redis: Redis, durability: Durability) -> None:
    """Warnings at start: when the primary has fewer replicas than every write will wait for (each such
    write would answer 503 until they connect), and when a highly available Redis is told not to wait
    (``WANHOOK_REDIS_WAIT_REPLICAS=0``): a failover then loses acknowledged events."""
    if not durability.replicas and (isinstance(redis, RedisCluster) or sentinel_pool(redis) is not None):
        log.warning(
            "WANHOOK_REDIS_WAIT_REPLICAS is 0 on a %s: events, creates and parked messages are acknowledged "
            "before a replica has them, and a failover can lose them (see docs/operations.md, Highly available Redis)",
            "Redis Cluster" if isinstance(redis, RedisCluster) else "Sentinel-monitored Redis",
        )
    if not durability.replicas or not isinstance(redis, Redis):  # a Cluster's nodes answer each for itself
        return
    try:
        info = await redis.info("replication")
    except RedisError:
        return
    connected = int(info.get("connected_slaves", 0))
    if connected < durability.replicas:
        log.warning(
            "WANHOOK_REDIS_WAIT_REPLICAS is %d but the primary has %d replica(s) connected: events and "
            "creates are refused (503) until enough connect",
            durability.replicas,
            connected,
        )


def sentinel_pool(redis: Redis) -> SentinelConnectionPool | None:
    pool = getattr(redis, "connection_pool", None)
    return pool if isinstance(pool, SentinelConnectionPool) and pool.is_master else None


async def follow_primary(
    redis: Redis, interval: float = FOLLOW_INTERVAL_SECONDS, others: Callable[[], Iterable[Redis]] = tuple
) -> None:
    """Until cancelled: move ``redis``'s connections, and those of the clients ``others`` returns (the change
    feed's, each with a pool of its own), to the master the sentinels name, within ``interval`` of their
    naming a new one. Does nothing for a client that is not Sentinel's."""
    pool = sentinel_pool(redis)
    if pool is None:
        return
    current = pool.master_address
    while True:
        try:
            address = await pool.sentinel_manager.discover_master(pool.service_name)
        except RedisError:
            # No master known right now (a failover under way) or no sentinel answered: the
            # connections stay where they are; WAIT (or min-replicas-to-write) keeps their writes from
            # being acknowledged meanwhile.
            address = None
        if address is not None and address != current:
            if current is not None:
                log.warning("Redis primary moved from %s:%s to %s:%s; reconnecting", *current, *address)
            current = address
            for client_pool in [pool, *filter(None, map(sentinel_pool, others()))]:
                client_pool.master_address = address
                # In use too: a command on its way to a demoted primary fails (a 503, a redelivery, a
                # stream's read again) rather than being answered by a server about to lose it. Each
                # connection reconnects to the new master.
                await client_pool.disconnect(inuse_connections=True)
        await asyncio.sleep(interval)


def start_following(redis: Redis, others: Callable[[], Iterable[Redis]] = tuple) -> asyncio.Task[None] | None:
    if sentinel_pool(redis) is None:
        return None
    return asyncio.create_task(follow_primary(redis, others=others), name="follow-primary")


async def stop_following(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
