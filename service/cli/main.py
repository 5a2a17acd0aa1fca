"""``wanhook``: the command line of the contract."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import socket
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from ..config import Settings
from ..core.errors import CommandError, ConfigError
from ..domain.task import Status

DEFAULT_SERVER = "http://127.0.0.1:8000"


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds above 0")
    return seconds


def _port_number(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port (1-65535)")
    return int(value)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Exit statuses, the same for every command (docs/reference/cli.md, "Exit statuses").
EXIT_DONE = 0
EXIT_FAILED = 1  # the task ended badly (submit --wait), or there is no such task (status)
EXIT_USAGE = 2  # a wrong argument or setting: nothing was started
EXIT_UNREACHABLE = 3  # Redis, the wanhook server, or what it depends on, did not answer

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def setup_logging() -> None:
    from ..observability.logs import setup

    level = os.environ.get("WANHOOK_LOG_LEVEL") or "INFO"
    if level.lower() not in LOG_LEVELS:
        raise ConfigError(f"WANHOOK_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    form = os.environ.get("WANHOOK_LOG_FORMAT") or "json"
    if form not in ("json", "text"):
        raise ConfigError(f"WANHOOK_LOG_FORMAT must be json or text, got {form!r}")
    setup(level, form)


def check_port(port: int) -> None:
    # uvicorn, given a port out of range, hangs after starting the workers instead of failing.
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be from 1 to 65535, got {port}")


def check_listening(host: str, port: int) -> None:
    """The same bind uvicorn makes, tried first: a port in use (or a host that is not this machine's)
    is then one line here rather than uvicorn's log lines once the workers have started."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def check_videos_dir(settings: Settings) -> None:
    """Where the workers store videos: a directory that cannot be made would fail every download, one
    task after another, long after the start."""
    try:
        settings.videos_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"WANHOOK_DATA_DIR: cannot make {settings.videos_dir}: {exc.strerror or exc}") from None
    if not os.access(settings.videos_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"WANHOOK_DATA_DIR: cannot write in {settings.videos_dir}")


async def check_redis(settings: Settings) -> None:
    """Connect once and let go: serve's own connection is made by uvicorn's lifespan, where a failure
    would be a traceback in the log rather than one line and exit status 3."""
    from ..persistence import installation
    from ..persistence.connection import connect

    redis = await connect(settings)
    try:
        await installation.check(redis, settings)
    finally:
        await redis.aclose()


def serve(args: argparse.Namespace) -> int:
    from ..web import server
    from ..web.app import create_app

    settings = Settings.from_env()
    check_port(args.port)
    if not settings.api_tokens and not _is_loopback(args.host):
        raise ConfigError(
            f"refusing to serve the API unauthenticated on {args.host}: set WANHOOK_API_TOKENS or bind to 127.0.0.1"
        )
    webhook_checked = settings.eventbridge_token is not None or settings.eventbridge_verify == "signature"
    if not webhook_checked and not settings.eventbridge_allow_unauthenticated and not _is_loopback(args.host):
        # Anyone reaching an open webhook can post FAILED or SUCCEEDED for the tasks it knows of.
        raise ConfigError(
            f"refusing to serve the EventBridge webhook unauthenticated on {args.host}: "
            "set WANHOOK_EVENTBRIDGE_TOKEN (or WANHOOK_EVENTBRIDGE_VERIFY=signature), or "
            "WANHOOK_EVENTBRIDGE_ALLOW_UNAUTHENTICATED=1 if pushes are authenticated in front of wanhook"
        )
    settings.check_serving_limits()
    if not args.no_workers:
        settings.require_api_key(
            "serve runs the workers, which submit tasks with it (serve --no-workers leaves them to wanhook worker)"
        )
        check_videos_dir(settings)
    check_listening(args.host, args.port)
    asyncio.run(check_redis(settings))
    # Each connection is a file, as are the Redis connections, the videos being served and the logs.
    server.raise_descriptor_limit(settings.max_connections + settings.redis_max_connections + 256)
    app = create_app(settings, workers=not args.no_workers)
    # log_config=None: uvicorn's own lines (an application's traceback among them) go through wanhook's
    # handler and its redaction, not a handler of uvicorn's that would print secrets as they come.
    server.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        log_config=None,
        header_timeout=settings.header_timeout_seconds,
        max_connections=settings.max_connections,
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
    )
    return 0


async def _until_signalled(run: object) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(stop)  # type: ignore[operator]


def worker(args: argparse.Namespace) -> int:
    from ..runtime import Runtime

    settings = Settings.from_env()
    settings.require_api_key("the workers submit tasks with it")
    check_videos_dir(settings)

    async def run(stop: asyncio.Event) -> None:
        runtime = await Runtime.open(settings)
        try:
            await runtime.run_workers(stop)
        finally:
            await runtime.close()

    asyncio.run(_until_signalled(run))
    return 0


def installation_command(args: argparse.Namespace) -> int:
    """``installation show`` prints the recorded shared settings; ``installation record`` replaces them with
    this environment's (the way to change one on purpose, with every process stopped)."""
    from ..persistence import installation
    from ..persistence.connection import connect

    settings = Settings.from_env()

    async def run() -> dict[str, str]:
        redis = await connect(settings)
        try:
            if args.action == "record":
                previous = await installation.record(redis, settings)
                if previous:
                    print(f"replaced: {json.dumps(previous, sort_keys=True)}")
            return await installation.show(redis)
        finally:
            await redis.aclose()

    print(json.dumps(asyncio.run(run()), indent=2, sort_keys=True))
    return 0


class EndpointsUnreachable(CommandError):
    """Something the command needs from its start did not answer (exit status 3)."""


def check_endpoints_answer(endpoints: str, setting: str = "WANHOOK_ROCKETMQ_ENDPOINTS", timeout: float = 5.0) -> None:
    """One of the RocketMQ endpoints accepts a connection. The client would otherwise retry for ever,
    with the cause written only to its own log file."""
    errors = []
    for item in filter(None, (part.strip() for part in endpoints.split(";"))):
        host, _, port = item.removeprefix("http://").removeprefix("https://").rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
            return
        except OSError as exc:
            errors.append(f"{item}: {exc.strerror or type(exc).__name__}")
    raise EndpointsUnreachable(f"cannot reach the RocketMQ endpoint ({setting}): {'; '.join(errors)}")


def consume(args: argparse.Namespace) -> int:
    from wanhook.consumers.rocketmq import BrokerGone, ConsumerSettings, run_consumer

    settings = Settings.from_env()
    from wanhook.consumers.rocketmq4 import Consumer4Settings, protocol, run_consumer4

    try:
        if protocol(settings.rocketmq) == "4":
            check_endpoints_answer(Consumer4Settings.from_env(settings.rocketmq).namesrv, "WANHOOK_ROCKETMQ_NAMESRV")
            return run_consumer4(settings)
        check_endpoints_answer(ConsumerSettings.from_env(settings.rocketmq).endpoints)
        return run_consumer(settings)
    except BrokerGone as exc:  # gone for longer than the consumer waits: exit 3, for a restart
        raise EndpointsUnreachable(str(exc)) from None


# `wanhook submit --wait --timeout S` when the task had not ended in S seconds; the task itself goes on.
EXIT_TIMEOUT = 4


def submit(args: argparse.Namespace) -> int:
    import time

    from . import client

    body: dict = {"prompt": args.prompt}
    for name in ("model", "size", "resolution", "negative_prompt", "seed", "duration", "audio_url", "shot_type"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    images = {"img_url": args.image, "first_frame_url": args.first_frame, "last_frame_url": args.last_frame}
    if args.image is not None and (args.first_frame or args.last_frame):
        print("wanhook submit: --image (image-to-video) does not go with --first-frame/--last-frame", file=sys.stderr)
        return EXIT_USAGE
    if bool(args.first_frame) != bool(args.last_frame):
        print("wanhook submit: --first-frame and --last-frame go together", file=sys.stderr)
        return EXIT_USAGE
    if args.image is not None or args.first_frame:
        body["kind"] = "image-to-video" if args.image is not None else "first-and-last-frame"
    for field, given in images.items():
        if given is not None:
            try:
                body[field] = client.image_value(given)
            except client.ImageError as exc:
                print(f"wanhook submit: {exc}", file=sys.stderr)
                return EXIT_USAGE
    if args.callback_url:
        body["callback"] = {"url": args.callback_url}
    if args.timeout is not None and not args.wait:
        print("wanhook submit: --timeout goes with --wait", file=sys.stderr)
        return 2
    token = os.environ.get("WANHOOK_API_TOKEN")
    started = time.monotonic()
    task = client.submit(args.server, body, token)
    if not args.wait:
        print(json.dumps(task, indent=2))
        return 0
    # The id first, at once: whoever waits (or reads a log) can look the task up while it runs.
    print(f"task {task['id']}", flush=True)
    try:
        final = client.wait(
            args.server, task, token, timeout=args.timeout, plain=not sys.stdout.isatty(), started=started
        )
    except client.WaitTimeout as exc:
        print(f"wanhook submit: {exc} (--timeout); it goes on: wanhook status {task['id']}", file=sys.stderr)
        return EXIT_TIMEOUT
    if final.get("status") == Status.READY:
        print(final["video"]["path"], flush=True)
        return 0
    error = final.get("error") or {}
    print(
        f"task {final.get('id')} ended {final.get('status')}: {error.get('code', '')} {error.get('message', '')}",
        file=sys.stderr,
    )
    return 1


def status(args: argparse.Namespace) -> int:
    from rich.console import Console

    from . import client

    task = client.get(args.server, args.id, os.environ.get("WANHOOK_API_TOKEN"))
    if args.json:
        print(json.dumps(task, indent=2))
    else:
        Console().print(client.table(task))
    return 0


def dead_letters(args: argparse.Namespace) -> int:
    """``wanhook dead-letters list|replay``: through the API, with the operator token."""
    from . import client

    token = os.environ.get("WANHOOK_OPERATOR_TOKEN")
    if args.action == "list":
        answer = client.dead_letters(args.server, token, args.kind, args.limit)
        if args.json:
            print(json.dumps(answer, indent=2))
        for letter in [] if args.json else answer["dead_letters"]:
            print(
                f"{letter['id']}  task {letter['task_id']}  {letter['attempts']} attempts  {letter['at']}  "
                f"{letter['cause']}"
            )
        return 0
    for letter in args.ids:
        replayed = client.replay_dead_letter(args.server, letter, token)
        print(json.dumps(replayed) if args.json else f"{letter}: replayed (job {replayed['job']})")
    return 0


def delete(args: argparse.Namespace) -> int:
    from . import client

    answer = client.delete(args.server, args.id, os.environ.get("WANHOOK_API_TOKEN"))
    if args.json:
        print(json.dumps(answer, indent=2))
    elif answer.get("already_deleted"):
        print(f"{args.id}: already deleted")
    else:
        removed = [name.replace("_", " ") for name, value in answer.get("removed", {}).items() if value]
        print(f"{args.id}: deleted ({', '.join(removed)})")
    return 0


def emulator(args: argparse.Namespace) -> int:
    from wanhook.emulator.cli import run

    return run(args)


def demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.prompt, via=args.via, serve=args.serve)


def dev(args: argparse.Namespace) -> int:
    from .demo import run_dev

    return run_dev(args.port, args.emulator_port, args.render_seconds)


def _add_server(command: argparse.ArgumentParser, token: str = "WANHOOK_API_TOKEN") -> None:
    """The client commands' --server: where wanhook's HTTP API answers (and the variable of the token sent)."""
    command.add_argument(
        "--server",
        default=os.environ.get("WANHOOK_SERVER", DEFAULT_SERVER),
        help=f"wanhook's URL (default: $WANHOOK_SERVER or {DEFAULT_SERVER}); the bearer token comes from {token}",
    )


def parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    from ..domain.models import DEFAULT_MODEL, DEFAULT_MODELS

    try:
        installed = version("wanhook")
    except PackageNotFoundError:  # a checkout run in place, never installed: there is no version to tell
        installed = "unknown (not installed)"
    root = argparse.ArgumentParser(prog="wanhook", description="DashScope Wan text-to-video without polling.")
    root.add_argument("--version", action="version", version=f"%(prog)s {installed}")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    command = commands.add_parser(
        "serve",
        help="HTTP API and EventBridge webhook receiver (and the workers)",
        description="The HTTP API, the EventBridge webhook, the dashboard, and (unless --no-workers) the workers, in "
        "one process.",
    )
    command.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s); any address other than loopback needs WANHOOK_API_TOKENS "
        "and an authenticated webhook (see Security and limits)",
    )
    command.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    command.add_argument("--no-workers", action="store_true", help="run the workers apart (wanhook worker)")
    command.set_defaults(handler=serve)

    command = commands.add_parser(
        "worker",
        help="submission and download workers only",
        description="The workers alone: submission, download, callbacks and the sweeper, each restarted if it "
        "crashes. Run as many as needed on one Redis and one data directory.",
    )
    command.set_defaults(handler=worker)

    command = commands.add_parser(
        "consume",
        help="RocketMQ 5.x consumer of completion events",
        description="The RocketMQ consumer of completion events, configured by the WANHOOK_ROCKETMQ_* variables: "
        "5.x gRPC, or 4.x remoting with WANHOOK_ROCKETMQ_PROTOCOL=4 (which gives up the same way, counting failed "
        "checks for a broker; see RocketMQ 4.x). A receive that fails is tried again every second; its cause (the "
        "gRPC status and details, e.g. UNAVAILABLE: ... Connection refused) is logged at once, then at most every "
        "30 s with the number of failures in between, and a line says when receiving works again. After "
        "WANHOOK_ROCKETMQ_GIVE_UP_SECONDS (300) of nothing but failures it exits with status 3 and one line naming "
        "the last cause, so that the orchestrator restarts it; an invisible duration or await time the proxy would "
        "refuse is refused at start (status 2). On SIGTERM it exits within WANHOOK_ROCKETMQ_SHUTDOWN_SECONDS (10) "
        "plus the client's own shutdown, even while Redis hangs.",
    )
    command.set_defaults(handler=consume)

    command = commands.add_parser("submit", help="submit a task (and follow it with --wait)")
    command.add_argument("prompt", help="what the video shows (may be empty for --image and --first-frame)")
    command.add_argument(
        "--model",
        help=f"the Wan model (default: {DEFAULT_MODEL}, or the kind's: "
        f"{DEFAULT_MODELS['i2v']} with --image, {DEFAULT_MODELS['kf2v']} with --first-frame)",
    )
    command.add_argument(
        "--image",
        metavar="PATH_OR_URL",
        help="image-to-video: the first frame, a local file (checked, then sent as base64) or an http(s) URL "
        "(passed on)",
    )
    command.add_argument(
        "--first-frame",
        dest="first_frame",
        metavar="PATH_OR_URL",
        help="first-and-last-frame video: the first frame, a file or a URL (with --last-frame)",
    )
    command.add_argument(
        "--last-frame",
        dest="last_frame",
        metavar="PATH_OR_URL",
        help="first-and-last-frame video: the last frame, a file or a URL (with --first-frame)",
    )
    command.add_argument(
        "--resolution", help="480P, 720P or 1080P: the image kinds' tier, which take no --size (default: the model's)"
    )
    command.add_argument("--size", help="W*H, e.g. 832*480 (default: the model's)")
    command.add_argument("--negative-prompt", dest="negative_prompt", help="what the video should not show")
    command.add_argument("--seed", type=int, help="DashScope's random seed, for a repeatable video")
    command.add_argument("--duration", type=int, help="seconds of video (default: the model's)")
    command.add_argument("--audio-url", dest="audio_url", help="a wav or mp3 track the video follows (wan2.5, wan2.6)")
    command.add_argument(
        "--shot-type",
        dest="shot_type",
        choices=("single", "multi"),
        help="single or multi: one shot or a multi-shot narrative (wan2.6; default: DashScope's, single)",
    )
    command.add_argument(
        "--callback-url", help="POST the task's terminal states to this URL, signed (see Telling the submitter)"
    )
    command.add_argument(
        "--wait",
        action="store_true",
        help="follow the task live until it ends: the task id at once, then a live line on a terminal, or one line per "
        "state change (elapsed seconds, state, bytes while downloading) otherwise; the video's path last. "
        "Exit 0 ready, 1 failed/canceled/expired",
    )
    command.add_argument(
        "--timeout",
        type=_positive_seconds,
        metavar="SECONDS",
        help=f"with --wait: stop waiting after SECONDS and exit {EXIT_TIMEOUT} (the task goes on)",
    )
    _add_server(command)
    command.set_defaults(handler=submit)

    command = commands.add_parser("status", help="print a task")
    command.add_argument("id", help="the task's id")
    command.add_argument("--json", action="store_true", help="the task as JSON rather than a table")
    _add_server(command)
    command.set_defaults(handler=status)

    command = commands.add_parser(
        "delete",
        help="delete a task, its records and its video (canceling it first)",
        description="Deletes a task with everything kept for it (see DELETE /v1/tasks/{id} in the HTTP API), and "
        "prints what was removed. Exit 1 when there is no such task (or it is another token's).",
    )
    command.add_argument("id", help="the task's id")
    command.add_argument("--json", action="store_true", help="the answer as JSON")
    _add_server(command)
    command.set_defaults(handler=delete)

    command = commands.add_parser(
        "dead-letters", help="list or replay the jobs given up after their attempts ($WANHOOK_OPERATOR_TOKEN)"
    )
    letters = command.add_subparsers(dest="action", required=True, metavar="ACTION")
    action = letters.add_parser(
        "list",
        help="the dead letters, newest first",
        description="Lists the jobs given up after their attempts, newest first (see No job is tried for ever), "
        "through GET /v1/dead-letters with the bearer token of WANHOOK_OPERATOR_TOKEN.",
    )
    action.add_argument("--kind", choices=("download", "failure", "callback"), help="of one job kind only")
    action.add_argument("--limit", type=int, default=100, help="at most this many (1-1000, default 100)")
    action.add_argument("--json", action="store_true", help="the answer as JSON")
    _add_server(action, "WANHOOK_OPERATOR_TOKEN")
    action.set_defaults(handler=dead_letters)
    action = letters.add_parser(
        "replay",
        help="queue dead letters' jobs again (their tasks opened again)",
        description="Queues dead letters' jobs again (POST /v1/dead-letters/{id}/replay); a task a dead letter "
        "ended is opened again. A task ended otherwise since, or deleted, is not replayed (409).",
    )
    action.add_argument("ids", nargs="+", help="dead letter ids (<kind>:<entry id>, as listed)")
    action.add_argument("--json", action="store_true", help="each answer as JSON")
    _add_server(action, "WANHOOK_OPERATOR_TOKEN")
    action.set_defaults(handler=dead_letters)

    command = commands.add_parser(
        "installation", help="the settings every process on this Redis must share (storage, retention, data dir)"
    )
    actions = command.add_subparsers(dest="action", required=True, metavar="ACTION")
    action = actions.add_parser(
        "show",
        help="what Redis records",
        description="Prints the settings every process on this Redis must share, as recorded by the first process "
        "to start (see Settings every process must share).",
    )
    action.set_defaults(handler=installation_command)
    action = actions.add_parser(
        "record",
        help="replace the record with this environment's settings (every process stopped first)",
        description="Replaces that record with this environment's settings: the way to change the storage, "
        "retention or the data directory on purpose, with every process stopped. Prints the record it replaced "
        "and the new one.",
    )
    action.set_defaults(handler=installation_command)

    from wanhook.emulator.cli import add_arguments

    command = commands.add_parser(
        "emulator",
        help="local stand-in for DashScope, EventBridge and OSS",
        description="The local DashScope, EventBridge and OSS (see The emulator); python -m emulator takes the "
        "same options.",
    )
    add_arguments(command)
    command.set_defaults(handler=emulator)

    command = commands.add_parser("demo", help="the whole flow offline, in one process")
    command.add_argument(
        "prompt",
        nargs="?",
        default="a paper boat drifting on a calm lake at dawn",
        help="what the video shows (default: %(default)s)",
    )
    command.add_argument(
        "--via",
        choices=["webhook", "rocketmq"],
        default="webhook",
        help="how the completion event travels: EventBridge's HTTP push, or a RocketMQ topic read by the consumer "
        "(default: %(default)s)",
    )
    command.add_argument(
        "--serve", action="store_true", help="print the dashboard's URL and keep serving until interrupted"
    )
    command.set_defaults(handler=demo)

    command = commands.add_parser(
        "dev",
        help="the emulator and serve wired to each other in one process, until interrupted",
        description="Local development in one step: the emulator (DashScope, EventBridge, OSS) and wanhook serve with "
        "its workers, wired to each other, on their usual addresses; submit tasks from another terminal "
        "with `wanhook submit PROMPT --wait`.\n\n"
        "The webhook's token: dev and demo always check the push token, the one in WANHOOK_EVENTBRIDGE_TOKEN when "
        "it is set, else a random one made for the run (secrets.token_urlsafe), which only the emulator in the same "
        "process is given and sends on every push. So nothing else that can reach the port (another local "
        "program, a page's request sent without a browser's headers) can record an event: a push without the "
        "token is answered 401 invalid_token and changes nothing. The start line says where the token comes from, "
        "never what it is; to push by hand, set WANHOOK_EVENTBRIDGE_TOKEN and send it as "
        "x-eventbridge-signature-token.",
    )
    command.add_argument("--port", type=_port_number, default=8000, help="wanhook's port (default: %(default)s)")
    command.add_argument(
        "--emulator-port",
        type=_port_number,
        default=8090,
        help="the emulator's port, its DashScope API under /api/v1 (default: %(default)s)",
    )
    command.add_argument(
        "--render-seconds",
        type=_positive_seconds,
        default=20.0,
        help="how long the emulator renders a task (default: %(default)s)",
    )
    command.set_defaults(handler=dev)

    from . import eventbridge

    command = commands.add_parser("eventbridge", help="Alibaba Cloud EventBridge set-up")
    actions = command.add_subparsers(dest="action", required=True, metavar="ACTION")
    action = actions.add_parser(
        "setup",
        help="create or update the rule and target of deploy/eventbridge/",
        description="Creates or updates the rule and one target of deploy/eventbridge/ (see Deploying). Credentials "
        "come from ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET and, for temporary (STS) "
        "credentials, ALIBABA_CLOUD_SECURITY_TOKEN.",
    )
    eventbridge.add_arguments(action)
    action.set_defaults(handler=eventbridge.run)
    return root


def exit_status(exc: Exception, command: str) -> int | None:
    """The exit status for an error a user can cause (told in one line), None for a bug (a traceback)."""
    from ..persistence.connection import RedisUnreachable
    from .client import ClientError

    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    if isinstance(exc, (RedisUnreachable, EndpointsUnreachable)):
        return EXIT_UNREACHABLE
    if isinstance(exc, ClientError):
        status = getattr(exc, "status", None)
        if status is None or status in (502, 503, 504):  # no answer, or the server's Redis did not answer
            return EXIT_UNREACHABLE
        if status == 404 and command in ("status", "delete"):
            return EXIT_FAILED
        return EXIT_USAGE
    return None


def check_server(server: str) -> None:
    """The client commands' server: without this, a URL with no scheme was "cannot reach", exit 3."""
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--server (or WANHOOK_SERVER) must be an http:// or https:// URL, got {server!r}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        setup_logging()
        if isinstance(getattr(args, "server", None), str):
            check_server(args.server)
        return args.handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line, not a traceback
        status = exit_status(exc, args.command)
        if status is None:
            raise
        from ..observability.logs import redact

        print(f"wanhook {args.command}: {redact(str(exc))}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
