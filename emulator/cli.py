"""`wanhook emulator` and `python -m emulator`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from .config import EmulatorConfig
from .eventbridge import RocketMQTarget


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8090, help="port to listen on (default: %(default)s)")
    parser.add_argument(
        "--render-seconds", type=float, default=20.0, help="how long a task runs (default: %(default)s)"
    )
    parser.add_argument(
        "--list-time-zone",
        type=float,
        default=8.0,
        help="offset from UTC, in hours, in which the task list reads start_time/end_time (default: %(default)s)",
    )
    parser.add_argument("--webhook-url", help="push completion events to this EventBridge HTTP target")
    parser.add_argument("--webhook-token", help="sent as the x-eventbridge-signature-token header")
    parser.add_argument(
        "--webhook-body",
        choices=("original", "data"),
        default="original",
        help="push the whole CloudEvent or only its data (default: %(default)s)",
    )
    parser.add_argument(
        "--rocketmq", action="store_true", help="also run a RocketMQ 5 (gRPC) stand-in that receives the events"
    )
    parser.add_argument("--rocketmq-port", type=int, default=8081, help="its port (default: %(default)s)")
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


async def _serve(args: argparse.Namespace) -> int:
    targets = [{"url": args.webhook_url, "token": args.webhook_token, "body": args.webhook_body}]
    config = EmulatorConfig(render_seconds=args.render_seconds, webhook_targets=targets if args.webhook_url else [])
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
        await stopping.wait()
    finally:
        await emulator.stop()
        if double is not None:
            double.stop()
    return 0
