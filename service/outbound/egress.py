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
import contextlib
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

import httpcore
import httpx

from ..core.errors import WanhookError
from ..domain.addresses import not_public

# Per client: enough for every download and callback in flight, few kept idle.
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


class DestinationRefused(WanhookError):
    """The URL points somewhere wanhook must not send requests."""


def literal_hosts(names: Iterable[str]) -> frozenset[str]:
    return frozenset(name.lower() for name in names if "*" not in name)


async def public_addresses(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to now, all of them public, or ``DestinationRefused``."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DestinationRefused(f"{host} does not resolve ({exc.strerror})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    refused = sorted(address for address in addresses if not_public(address))
    if refused:
        raise DestinationRefused(f"{host} resolves to a non-public address ({', '.join(refused)})")
    return addresses


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses checked as the connection is made."""

    def __init__(
        self,
        *,
        explicit_hosts: Iterable[str] = (),
        allow_private: bool = False,
        backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.explicit_hosts = literal_hosts(explicit_hosts)
        self.allow_private = allow_private
        self.backend = backend or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if self.allow_private or host.lower() in self.explicit_hosts:
            addresses = [host]
        else:
            addresses = await public_addresses(host, port)
        failure: Exception | None = None
        for address in addresses:
            try:
                stream = await self.backend.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            return stream
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused("Unix sockets are not a destination")

    async def sleep(self, seconds: float) -> None:
        await self.backend.sleep(seconds)


# httpcore's errors as httpx raises them, the most specific first: what a caller of an httpx client catches.
_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        mapped = next((theirs for ours, theirs in _ERRORS if isinstance(exc, ours)), None)
        if mapped is None:
            raise  # DestinationRefused, and anything that is not httpcore's, as it is
        raise mapped(str(exc)) from exc


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self.stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for chunk in self.stream:
                yield chunk

    async def aclose(self) -> None:
        close = getattr(self.stream, "aclose", None)
        if close is not None:
            with _as_httpx_errors():
                await close()


class PinnedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that connects only to addresses checked as it connects (``PinnedBackend``).

    Built on public API alone: httpcore's connection pool with the pinned network backend, behind httpx's
    transport interface. The name is resolved once, by the check, and the connection goes to that address;
    TLS still runs against the URL's host (SNI and certificate verification, by httpcore from the request's
    origin), and the Host header is the URL's, as httpx writes it. It uses no proxy, by design: a proxy
    resolves names itself, out of reach of the check.
    """

    def __init__(
        self,
        *,
        explicit_hosts: Iterable[str] = (),
        allow_private: bool = False,
        limits: httpx.Limits = LIMITS,
        ssl_context: ssl.SSLContext | None = None,
        backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.backend = PinnedBackend(explicit_hosts=explicit_hosts, allow_private=allow_private, backend=backend)
        self.pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=self.backend,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        url = httpcore.URL(
            scheme=request.url.raw_scheme, host=request.url.raw_host, port=request.url.port, target=request.url.raw_path
        )
        with _as_httpx_errors():
            answer = await self.pool.handle_async_request(
                httpcore.Request(
                    method=request.method,
                    url=url,
                    headers=request.headers.raw,
                    content=request.stream,
                    extensions=request.extensions,
                )
            )
        assert isinstance(answer.stream, AsyncIterable)
        return httpx.Response(
            status_code=answer.status, headers=answer.headers, stream=_Body(answer.stream), extensions=answer.extensions
        )

    async def aclose(self) -> None:
        await self.pool.aclose()


def client(
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    explicit_hosts: Iterable[str] = (),
    allow_private: bool = False,
    **options: Any,
) -> httpx.AsyncClient:
    """An httpx client that follows no redirects and connects only to public addresses (or the opt-ins).

    It connects directly: proxies from the environment (HTTPS_PROXY) would resolve names themselves,
    out of reach of the check. ``transport`` replaces the ``PinnedTransport`` (a test's
    ``httpx.MockTransport``); redirects are still not followed.
    """
    if transport is None:
        transport = PinnedTransport(explicit_hosts=explicit_hosts, allow_private=allow_private)
    return httpx.AsyncClient(transport=transport, follow_redirects=False, **options)
