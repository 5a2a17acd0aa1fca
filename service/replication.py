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
waits go to the node serving wanhook's slot, in the same pipeline (see ``Replicated._on_cluster``).
WAITAOF needs Redis 7.2: ``check_server`` refuses an older one at start (exit 2).

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
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import RedisError

from .errors import Unavailable
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


@dataclass(frozen=True)
class Durability:
    """What a write must reach before wanhook answers for it. ``aofs`` counts AOFs fsynced, the
    primary's first: 1 is the primary's own, 2 the primary's and one replica's, and so on."""

    replicas: int = 0
    aofs: int = 0
    timeout_seconds: float = 1.0

    @property
    def off(self) -> bool:
        return self.replicas == 0 and self.aofs == 0

    @property
    def timeout_ms(self) -> int:
        return max(1, round(self.timeout_seconds * 1000))


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
        """On a Cluster the pipeline sends each node's commands on one connection of its own: the waits
        are sent to the node that serves the keys' slot. EVAL rather than EVALSHA, since a cluster
        pipeline does not load scripts (Redis caches an EVAL's script all the same). No redirection is
        followed: a script moved to another node would leave the waits counting for the first one."""
        cluster: Any = self.redis
        node = cluster.get_node_from_key(keys[0])
        async with cluster.pipeline() as pipe:
            pipe.eval(self.script.script, len(keys), *keys, *args)
            self._waits(pipe, target_nodes=node)
            return list(await pipe.execute(allow_redirections=False))

    def _confirmed(self, replies: list[Any]) -> Any:
        confirm(self.durability, replies[1:])
        return replies[0]


async def write_replicated(redis: Redis, durability: Durability, key: str, write: Callable[[Any], None]) -> None:
    """The one command ``write`` queues on a pipeline (a write to ``key``), then the waits for ``durability``,
    on one connection as for a script (see ``Replicated``): raises ``NotReplicated`` when too few replicas
    confirm. For a plain write wanhook answers for, such as a message parked before it is acknowledged."""
    if isinstance(redis, RedisCluster):
        cluster: Any = redis
        async with cluster.pipeline() as pipe:
            write(pipe)
            add_waits(pipe, durability, target_nodes=cluster.get_node_from_key(key))
            replies = list(await pipe.execute(allow_redirections=False))
    else:
        async with redis.pipeline(transaction=False) as pipe:
            write(pipe)
            add_waits(pipe, durability)
            replies = list(await pipe.execute())
    confirm(durability, replies[1:])


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
    """A warning at start when the primary has fewer replicas than every write will wait for: each such
    write would answer 503 until they connect."""
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
