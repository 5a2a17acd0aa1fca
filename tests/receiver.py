"""A submitter's callback endpoint for tests: real uvicorn on loopback, answering from a script."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .support import free_port, wait_for


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


class CallbackReceiver:
    """Records every request; answers with the queued (status, headers) pairs, then ``default``."""

    def __init__(self, default: int = 200) -> None:
        self.default = default
        self.answers: deque[tuple[int, dict[str, str]]] = deque()
        self.received: list[Received] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def _hook(self, request: Request) -> Response:
        self.received.append(Received(dict(request.headers), await request.body(), time.time()))
        status, headers = self.answers.popleft() if self.answers else (self.default, {})
        return Response(status_code=status, headers=headers)

    def __enter__(self) -> CallbackReceiver:
        self.thread.start()
        wait_for(lambda: self.server.started, 10, what="the callback receiver")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
