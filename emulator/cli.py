"""`wanhook emulator` and `python -m emulator`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from .config import EmulatorConfig
from .eventbridge import RocketMQTarget

# Where `wanhook serve` takes EventBridge's pushes when started with its defaults (127.0.0.1:8000): the
# emulator pushes there unless told otherwise, so that the two side by side need no wiring.
DEFAULT_WEBHOOK_URL = "http://127.0.0.1:8000/v1/events/dashscope"
# Any key does for the emulator; serve needs one set all the same.
LOCAL_API_KEY = "sk-local"
# The push token's variable: serve's own name for it, so that one export gives both sides the same token.
TOKEN_VARIABLE = "WANHOOK_EVENTBRIDGE_TOKEN"


def port_number(text: str) -> int:
    """A TCP port, 1-65535: anything else is a usage error (exit 2), not a failure to listen."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 1 to 65535, got {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=port_number, default=8090, help="port to listen on (default: %(default)s)")
    parser.add_argument(
        "--render-seconds", type=float, default=20.0, help="how long a task runs (default: %(default)s)"
    )
    parser.add_argument(
        "--list-time-zone",
        type=float,
        default=8.0,
        help="offset from UTC, in hours, in which the task list reads start_time/end_time (DashScope's documentation "
        "names no zone; default: %(default)s)",
    )
    # One HTTP target or none, as an EventBridge rule has it here.
    pushes = parser.add_mutually_exclusive_group()
    pushes.add_argument(
        "--webhook-url",
        help="push completion events to this EventBridge HTTP target (default: wanhook serve's own address, "
        f"{DEFAULT_WEBHOOK_URL}, unless --rocketmq or --no-webhook)",
    )
    pushes.add_argument(
        "--no-webhook", action="store_true", help="push no events over HTTP (they are still readable as tasks)"
    )
    parser.add_argument(
        "--webhook-token",
        default=None,
        help="sent as the x-eventbridge-signature-token header on every push, as the rule's token; serve checks it "
        f"against its WANHOOK_EVENTBRIDGE_TOKEN (default: ${TOKEN_VARIABLE}, the same variable, which keeps the token "
        "out of the process list; never printed)",
    )
    parser.add_argument(
        "--webhook-body",
        choices=("original", "data"),
        default="original",
        help="push the whole CloudEvent or only its data (default: %(default)s)",
    )
    parser.add_argument(
        "--rocketmq", action="store_true", help="also run a RocketMQ 5 (gRPC) stand-in that receives the events"
    )
    parser.add_argument("--rocketmq-port", type=port_number, default=8081, help="its port (default: %(default)s)")
    parser.add_argument("--rocketmq-topic", default="dashscope-events", help="its topic (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_serve(args))
    except Exception as exc:  # one clear line, as every wanhook command reports errors
        print(f"wanhook emulator: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emulator", description="A local stand-in for DashScope, EventBridge and OSS."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


def webhook_url(args: argparse.Namespace) -> str | None:
    """The HTTP target: the one named, else serve's default address, unless told to push elsewhere or nowhere."""
    if args.no_webhook:
        return None
    if args.webhook_url:
        return args.webhook_url
    return None if args.rocketmq else DEFAULT_WEBHOOK_URL


def push_token(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> str | None:
    """The token every push carries: --webhook-token, else $WANHOOK_EVENTBRIDGE_TOKEN, else none."""
    env = os.environ if env is None else env
    return args.webhook_token or env.get(TOKEN_VARIABLE) or None


def serve_env(api_base_url: str, webhook: str | None, token: str | None) -> str:
    """The lines a `wanhook serve` next to this emulator needs: its environment, and its address when not the
    default one. The token is named, never printed: these lines end up in terminals' scrollback and logs."""
    env = {
        "DASHSCOPE_HTTP_BASE_URL": api_base_url,
        "DASHSCOPE_API_KEY": LOCAL_API_KEY,
        # serve downloads videos only from hosts it is told to trust; the emulator's is loopback.
        "WANHOOK_VIDEO_HOSTS": urlsplit(api_base_url).hostname or "127.0.0.1",
    }
    lines = ["  export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())]
    if token:
        lines.append(f"  # and {TOKEN_VARIABLE} set to the emulator's push token (not printed)")
    command = "  wanhook serve"
    if webhook:
        parts = urlsplit(webhook)
        if parts.hostname not in (None, "127.0.0.1") or parts.path != "/v1/events/dashscope":
            command += "  # listening where the events go: " + webhook
        elif (parts.port or 80) != 8000:
            command += f" --port {parts.port or 80}"
    lines.append(command)
    return "\n".join(lines)


async def _answers(url: str) -> bool:
    """Whether anything answers HTTP at ``url``; any status counts (serve answers a GET there with 405)."""
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            await client.get(url)
    except httpx.HTTPError:
        return False
    return True


async def _watch_target(url: str) -> None:
    """Says once whether the target answers; if not, says so again when it starts to."""
    if await _answers(url):
        return
    print(
        f"wanhook emulator: warning: nothing answers at {url} yet. Start wanhook serve there (as above) "
        "before tasks end: an event that finds nobody is retried three times, 10-20 s apart, then dropped.",
        file=sys.stderr,
        flush=True,
    )
    while not await _answers(url):
        await asyncio.sleep(1.0)  # a local server starting up; nothing else to wait on
    print(f"wanhook emulator: {url} answers now; events go there.", file=sys.stderr, flush=True)


async def _serve(args: argparse.Namespace) -> int:
    url = webhook_url(args)
    token = push_token(args)
    targets = [{"url": url, "token": token, "body": args.webhook_body}] if url else []
    config = EmulatorConfig(render_seconds=args.render_seconds, webhook_targets=targets)
    config.update({"list_time_zone": args.list_time_zone})  # checked as the knob is
    from .server import Emulator  # needs the `emulator` extra (PyAV)

    emulator = Emulator(config)
    double: Any = None
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        if args.rocketmq:
            # Imported only when asked for: it pulls in gRPC and the RocketMQ protocol.
            from .rocketmq import RocketMQDouble

            double = RocketMQDouble(host=args.host, port=args.rocketmq_port)
            double.start()
            emulator.add_target(RocketMQTarget(double, args.rocketmq_topic))
        try:
            await emulator.start(args.host, args.port)
        except OSError as exc:
            raise RuntimeError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
        where = f"emulator listening on {emulator.base_url} (DashScope API {emulator.api_base_url}"
        if double is not None:
            where += f"; RocketMQ {args.host}:{double.port}, topic {args.rocketmq_topic}"
        print(where + ")", flush=True)
        if url:
            print(f"completion events go to {url}" + (", with the push token" if token else ""), flush=True)
        print(
            "for wanhook serve, in another terminal:\n" + serve_env(emulator.api_base_url, url, token),
            flush=True,
        )
        if double is not None:
            print(
                "and for wanhook consume, in a third terminal in the same directory, with that environment too:\n"
                f"  export WANHOOK_ROCKETMQ_ENDPOINTS={double.endpoints} "
                f"WANHOOK_ROCKETMQ_TOPIC={args.rocketmq_topic} WANHOOK_ROCKETMQ_GROUP=wanhook\n"
                "  wanhook consume",
                flush=True,
            )
        watcher = asyncio.create_task(_watch_target(url)) if url else None
        if url is None and double is None:
            print(
                "wanhook emulator: warning: no event target (--no-webhook): tasks end without a completion "
                "event, and wanhook serve learns of them only from its sweeper.",
                file=sys.stderr,
                flush=True,
            )
        await stopping.wait()
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    finally:
        await emulator.stop()
        if double is not None:
            double.stop()
    return 0
