"""The emulator as one object: build it from a config, serve it inside the running event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .app import build_app
from .config import EmulatorConfig
from .eventbridge import EventBus, Target
from .oss import Bucket
from .stats import Stats
from .tasks import Task, Tasks
from .video import VideoStore


class _NoDelayProtocol(HttpToolsProtocol):
    """uvicorn's protocol with Nagle's algorithm off on every connection.

    uvicorn writes a response's head and body separately; with Nagle on, the body waits for the peer's
    delayed ACK of the head (up to 40 ms on Linux). asyncio turns Nagle off only on sockets whose protocol
    number says TCP, and the listening socket below is made with ``socket.socket()`` (to learn its port
    before serving), whose connections say 0. DashScope's own reads have no such tail.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # not TCP: nothing to turn off
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


class _Server(uvicorn.Server):
    # The host program owns the signals: an emulator embedded in a demo must not take Ctrl-C for itself.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Emulator:
    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.stats = Stats()
        self.videos = VideoStore(self.config.cache_dir)
        self.bus = EventBus(self.config, self.stats)
        self.bucket = Bucket()
        # Temporary storage (rules, UPLOAD): oss:// key -> (model, bytes, expiry in epoch seconds).
        self.uploads: dict[str, tuple[str, bytes, float]] = {}
        self.tasks = Tasks(self.config, self.stats, self.videos, self.bus, self._sign)
        self.app = build_app(self)
        self.base_url = self.config.public_base_url or ""
        self._server: _Server | None = None
        self._serving: asyncio.Task[None] | None = None

    @property
    def api_base_url(self) -> str:
        return f"{self.base_url}/api/v1"

    def add_target(self, target: Target) -> None:
        self.bus.extra_targets.append(target)

    def reset_stats(self) -> None:
        self.stats.clear()
        self.stats.max_running_seen.update(self.tasks.running_now())

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Returns once the server is listening; port 0 picks a free one."""
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        port = sock.getsockname()[1]
        if not self.config.public_base_url:
            self.base_url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        config = uvicorn.Config(
            self.app, http=_NoDelayProtocol, log_level="warning", lifespan="off", timeout_graceful_shutdown=2
        )
        self._server = _Server(config)
        self._serving = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._serving.done():
                self._serving.result()
                raise RuntimeError("the emulator's server stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        await self.tasks.close()
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            await self._serving
        await self.bus.aclose()
        self.videos.close()

    def _sign(self, task: Task) -> str:
        return self.bucket.url(self.base_url, f"{task.id}.mp4", self.config.url_ttl_seconds)
