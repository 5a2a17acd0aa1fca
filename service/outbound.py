"""Where wanhook may send requests: never, by accident or by a crafted URL, into its own network.

The clients made here (``client``) resolve a host as they connect, refuse it when any address it
resolves to is loopback, private, link-local (cloud metadata lives there), or otherwise not global,
and connect to the very address they checked: the name is not resolved a second time, so a DNS
server cannot answer a public address to the check and an inward one to the connection (DNS
rebinding). The exceptions are the contract's explicit opt-ins: a host
named literally in ``WANHOOK_VIDEO_HOSTS`` (not by a pattern) for videos, and
``WANHOOK_CALLBACK_ALLOW_PRIVATE=1`` for callbacks. Redirects are never followed, so a public host
cannot bounce a request inward.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx


class DestinationRefused(Exception):
    """The URL points somewhere wanhook must not send requests."""


def _not_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _literal_hosts(names: Iterable[str]) -> frozenset[str]:
    return frozenset(name.lower() for name in names if "*" not in name)


async def public_addresses(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to now, all of them public, or ``DestinationRefused``."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DestinationRefused(f"{host} does not resolve ({exc.strerror})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    refused = sorted(address for address in addresses if _not_public(address))
    if refused:
        raise DestinationRefused(f"{host} resolves to a non-public address ({', '.join(refused)})")
    return addresses


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses checked as the connection is made."""

    def __init__(self, *, explicit_hosts: Iterable[str] = (), allow_private: bool = False,
                 backend: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.explicit_hosts = _literal_hosts(explicit_hosts)
        self.allow_private = allow_private
        self.backend = backend or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        if self.allow_private or host.lower() in self.explicit_hosts:
            addresses = [host]
        else:
            addresses = await public_addresses(host, port)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self.backend.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused("Unix sockets are not a destination")

    async def sleep(self, seconds: float) -> None:
        await self.backend.sleep(seconds)


def client(*, explicit_hosts: Iterable[str] = (), allow_private: bool = False, **options: Any) -> httpx.AsyncClient:
    """An httpx client that follows no redirects and connects only to public addresses (or the opt-ins).

    It connects directly: proxies from the environment (HTTPS_PROXY) would resolve names themselves,
    out of reach of the check.
    """
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    transport = httpx.AsyncHTTPTransport(limits=limits)
    # httpx has no public way to give its transport a network backend; its connection pool takes one.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(), max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
        network_backend=PinnedBackend(explicit_hosts=explicit_hosts, allow_private=allow_private))
    return httpx.AsyncClient(transport=transport, follow_redirects=False, **options)
