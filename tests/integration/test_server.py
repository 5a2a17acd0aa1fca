"""The HTTP server wanhook and the emulator run on: uvicorn, with small answers sent at once."""

from __future__ import annotations

import asyncio
import socket

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from wanhook.service.web import server


async def _accepted_nodelay(app: Starlette) -> list[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = server.config(app, log_level="warning", lifespan="off")
    instance = uvicorn.Server(config)
    serving = asyncio.create_task(instance.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(30):
            while not instance.started:
                await asyncio.sleep(0.01)
        port = sock.getsockname()[1]
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{port}/")
            assert answer.text == "ok"
            return [
                connection.transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                for connection in config.http.keywords["open_connections"]
            ]  # as wanhook's protocol counts them
    finally:
        instance.should_exit = True
        await serving


def test_accepted_connections_do_not_wait_for_delayed_acks() -> None:
    # On asyncio's own loop, with a listening socket made as the emulator and the demo make theirs,
    # Nagle's algorithm stays on unless wanhook's protocol turns it off.
    app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])
    flags = asyncio.run(_accepted_nodelay(app))
    assert flags and all(flags)


def test_the_uvicorn_internals_wanhook_relies_on_are_there_in_the_range_it_allows() -> None:
    # server.py keeps two things on uvicorn's own httptools protocol, for uvicorn has no public hook for
    # them (docs/development.md, "uvicorn's internals"): the header deadline and the end of event streams at a stop.
    # Their behaviour is tested through real servers (test_streams' half-sent headers, test_callbacks'
    # stopping server); this says, before those, which names they need and which uvicorn releases were
    # checked to have them. A new uvicorn is let in by widening the bound once these and those pass.
    import inspect
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    from packaging.requirements import Requirement
    from uvicorn.protocols.http import httptools_impl

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    allowed = next(
        Requirement(text) for text in pyproject["project"]["dependencies"] if Requirement(text).name == "uvicorn"
    ).specifier
    assert any(spec.operator == "<" for spec in allowed), "uvicorn needs an upper bound: server.py uses its internals"
    assert version("uvicorn") in allowed
    protocol = httptools_impl.HttpToolsProtocol
    for hook in ("connection_made", "connection_lost", "on_message_begin", "on_headers_complete", "shutdown"):
        assert callable(getattr(protocol, hook, None)), hook
    assert "self.cycle" in inspect.getsource(protocol.__init__)
    assert "self.app = " in inspect.getsource(protocol.__init__)
    assert "app = self.app" in inspect.getsource(protocol.on_headers_complete)
    cycle = inspect.getsource(httptools_impl.RequestResponseCycle.__init__)
    for field in ("response_started", "response_complete", "chunked_encoding", "message_event", "disconnected"):
        assert f"self.{field}" in cycle, field
