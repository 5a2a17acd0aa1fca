"""Where a push's time goes: ``wanhook serve --no-workers`` sampled by py-spy under the saturating load of the
ingest benchmark, and Redis' own account of the ingest script (INFO commandstats, SLOWLOG).

python -m bench.profile_ingest [--seconds 10] [--tasks 20000] [--out DIR]

Needs py-spy (``.venv/bin/python -m pip install py-spy``). Prints the share of the samples spent in each part
of the hot path (parsing, the token check, middleware, logging, redis-py, ...) and Redis' microseconds per
script call; leaves py-spy's raw stacks in DIR for a closer look (``py-spy`` can render them as a flame graph).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import redis

from tests.support import RedisServer, Wanhook

from .common import env_for, seed_submitted
from .load import highest_rate

# The parts of the hot path, each recognised by the frames it runs in. A sample is charged to the innermost
# frame that names a part (so time in redis-py under the push route is redis-py's, not the route's).
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("Lua script call (redis-py: packing, sending, parsing the reply)", ("redis/", "hiredis")),
    ("group commit (batching the script calls)", ("service/persistence/group_commit.py",)),
    ("JSON parsing and validation (events.parse)", ("ingress/events.py", "json/")),
    ("logging", ("logging/", "service/observability/logs.py")),
    ("signature / token check", ("ingress/signature.py", "check_token", "hmac")),
    ("store.ingest (arguments, digest)", ("service/persistence/store.py",)),
    ("request body read", ("read_body", "starlette/requests.py")),
    ("JSON answer", ("starlette/responses.py", "error_response")),
    ("routing and middleware (Starlette)", ("starlette/", "RequestIds")),
    ("wanhook's push route and ingress", ("service/web/", "service/ingress/")),
    ("HTTP parsing and writing (uvicorn, httptools)", ("uvicorn/", "httptools")),
]


def classify(stack: str) -> str:
    frames = stack.split(";")
    # What runs under the event loop's own frame is a callback: a request, a reply; the frames above it
    # (uvicorn's start-up) are in every sample. Frames of asyncio itself are charged to whoever called them.
    loop = max((n for n, frame in enumerate(frames) if "asyncio/runners.py" in frame), default=-1)
    for frame in reversed(frames[loop + 1 :]):
        if "asyncio/" in frame:
            continue
        for name, markers in PARTS:
            if any(marker in frame for marker in markers):
                return name
    return "event loop (uvloop's C code: polling, socket I/O, idle)"


def summarise(raw: Path) -> list[tuple[str, float]]:
    """py-spy's raw (collapsed) stacks, as the share of the samples each part takes."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        counts[classify(stack)] += int(count)
    total = sum(counts.values()) or 1
    return [(name, 100.0 * n / total) for name, n in counts.most_common()]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used (Linux): what a shared machine does not inflate."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    tmp = Path(tempfile.mkdtemp(prefix="wanhook-profile-"))
    out = args.out or tmp
    out.mkdir(parents=True, exist_ok=True)
    store = RedisServer(tmp / "redis").start()
    server = None
    try:
        asyncio.run(seed_submitted(store.url, args.tasks))
        client = redis.Redis.from_url(store.url)
        server = Wanhook(tmp, env_for(store, tmp / "serve"), "--no-workers").start()
        assert server.proc is not None and store.proc is not None
        client.config_resetstat()
        client.slowlog_reset()
        client.config_set("slowlog-log-slower-than", "0")
        client.config_set("slowlog-max-len", "1000")
        raw = out / "pyspy.txt"
        spy = subprocess.Popen(
            [pyspy, "record", "-f", "raw", "-r", "250", "-d", str(round(args.seconds)), "-o", str(raw)]
            + ["--pid", str(server.proc.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # py-spy attached
        pids = [server.proc.pid, store.proc.pid]
        before = [cpu_seconds(pid) for pid in pids]
        load = highest_rate(server.url, args.seconds - 1.5, 32, args.tasks)  # as the benchmark drives it
        used = [(cpu_seconds(pid) - was) * 1e6 / max(1, load.answered) for pid, was in zip(pids, before, strict=True)]
        spy.wait()
        stats = client.info("commandstats")
        slow = client.slowlog_get(1000)
        client.close()
    finally:
        if server is not None:
            server.stop()
        store.stop()
    print(f"load ({load.tool}): {load.rate:,.0f} events/s, p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms")
    print(f"CPU per event: wanhook serve {used[0]:.0f} µs, Redis {used[1]:.0f} µs; share of serve's busy samples:")
    for name, share in summarise(raw):
        print(f"  {share:5.1f}%  {name}")
    for command in ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_hincrby", "cmdstat_set", "cmdstat_wait"):
        if command in stats:
            entry = stats[command]
            print(f"  redis {command[8:]}: {entry['calls']} calls, {entry['usec_per_call']:.1f} us per call")
    durations = sorted(entry["duration"] for entry in slow if entry["command"].split()[0].lower() == b"evalsha")
    if durations:
        print(f"  SLOWLOG evalsha: median {durations[len(durations) // 2]} us of {len(durations)} kept")
    print(f"  raw stacks: {raw}")


if __name__ == "__main__":
    main()
