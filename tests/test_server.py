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
    instance = uvicorn.Server(server.config(app, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(instance.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(30):
            while not instance.started:
                await asyncio.sleep(0.01)
        port = sock.getsockname()[1]
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{port}/")
            assert answer.text == "ok"
            return [connection.transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                    for connection in instance.server_state.connections]
    finally:
        instance.should_exit = True
        await serving


def test_accepted_connections_do_not_wait_for_delayed_acks() -> None:
    # On asyncio's own loop, with a listening socket made as the emulator and the demo make theirs,
    # Nagle's algorithm stays on unless wanhook's protocol turns it off.
    app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])
    flags = asyncio.run(_accepted_nodelay(app))
    assert flags and all(flags)
