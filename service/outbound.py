"""Where wanhook may send requests: never, by accident or by a crafted URL, into its own network.

A video URL or a callback URL is resolved before each request, and refused when any address it
resolves to is loopback, private, link-local (cloud metadata lives there), or otherwise not global.
The exceptions are the contract's explicit opt-ins: a host named literally in ``WANHOOK_VIDEO_HOSTS``
(not by a pattern) for videos, and ``WANHOOK_CALLBACK_ALLOW_PRIVATE=1`` for callbacks. Redirects are
never followed, so a public host cannot bounce a request inward.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit


class DestinationRefused(Exception):
    """The URL points somewhere wanhook must not send requests."""


def _not_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


async def check(url: str, *, explicit_hosts: Iterable[str] = (), allow_private: bool = False) -> None:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise DestinationRefused("only http and https URLs with a host are allowed")
    if allow_private or host in {name.lower() for name in explicit_hosts if "*" not in name}:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DestinationRefused(f"{host} does not resolve ({exc.strerror})") from None
    refused = sorted({info[4][0] for info in infos if _not_public(info[4][0])})
    if refused:
        raise DestinationRefused(f"{host} resolves to a non-public address ({', '.join(refused)})")
