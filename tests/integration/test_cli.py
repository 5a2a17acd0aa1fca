"""The ``wanhook`` command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

import av
import pytest

from ..conftest import Stack
from ..support import ROOT, wanhook


def run(
    *args: str,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("WANHOOK_", "DASHSCOPE_"))}
    return subprocess.run(
        wanhook(*args),
        cwd=cwd,
        env={**environment, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("via", ["webhook", "rocketmq"])
def test_demo_stores_a_playable_video(tmp_path: Path, via: str) -> None:
    result = run(
        "demo", "a kite over green hills", "--via", via, cwd=tmp_path, env={"WANHOOK_DEMO_RENDER_SECONDS": "0.5"}
    )
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.parent == (tmp_path / "wanhook-data" / "videos").resolve()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.frames == 150 and stream.average_rate == 30
    # The embedded Redis kept its state on disk, under the data directory.
    assert list((tmp_path / "wanhook-data" / "redis").rglob("*.aof*"))
    assert "ready" in result.stderr
    # The emulator's pushes carried the token made for this run (the webhook refuses any push without it).
    assert "the webhook's token made for this run" in " ".join(result.stderr.split())


def submit_wait_lines(stdout: str) -> tuple[str, list[tuple[float, str, str]], Path]:
    """`submit --wait` without a terminal: "task <id>", then "<seconds>s <state>[ details]" lines, then the path."""
    first, *middle, last = stdout.strip().splitlines()
    assert first.startswith("task "), stdout
    states = []
    for line in middle:
        seconds, status, *details = line.split(" ", 2)
        assert seconds.endswith("s"), line
        states.append((float(seconds[:-1]), status, " ".join(details)))
    return first.removeprefix("task "), states, Path(last)


def test_submit_wait_and_status(stack: Stack) -> None:
    # Slow enough a download that it reports progress on the way.
    stack.emulator.configure(video_pad_bytes=3_000_000, video_bytes_per_second=2_000_000)
    result = run("submit", "a heron standing in the reeds", "--size", "832*480", "--wait", "--server", stack.url)
    assert result.returncode == 0, result.stderr
    task_id, states, path = submit_wait_lines(result.stdout)
    assert path.exists() and path.suffix == ".mp4" and path.stem == task_id
    # Each state once, in order (progress lines repeat "downloading"), with the clock going forward. The
    # stream starts at the task's state when it connects, which may be past "submitted" already.
    statuses = [status for _, status, _ in states]
    changes = [status for i, status in enumerate(statuses) if i == 0 or statuses[i - 1] != status]
    assert changes in (["queued", "submitted", "downloading", "ready"], ["queued", "downloading", "ready"]), statuses
    assert states[-1][2] == f"{path.stat().st_size:,} bytes"
    seconds = [elapsed for elapsed, _, _ in states]
    assert seconds == sorted(seconds) and seconds[-1] > 1.0
    assert any(
        " / " in details and details.endswith("%)") for _, status, details in states if status == "downloading"
    ), states
    status = run("status", task_id, "--json", "--server", stack.url)
    assert status.returncode == 0
    assert json.loads(status.stdout)["status"] == "ready"
    table = run("status", task_id, "--server", stack.url)
    assert "ready" in table.stdout and task_id in table.stdout


def test_submit_wait_clock_ticks_on_a_terminal(stack: Stack) -> None:
    """On a terminal the live line's clock moves while nothing happens to the task (here: 3 s of rendering)."""
    stack.emulator.configure(render_seconds=3)
    leader, follower = pty.openpty()
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("WANHOOK_", "DASHSCOPE_"))}
    environment |= {"PYTHONPATH": str(ROOT), "TERM": "xterm", "COLUMNS": "160"}
    process = subprocess.Popen(
        wanhook("submit", "a lighthouse in fog", "--size", "832*480", "--wait", "--server", stack.url),
        cwd=ROOT,
        env=environment,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:  # until the process closes the terminal
            if not select.select([leader], [], [], deadline - time.monotonic())[0]:
                break
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every writer has gone
                break
            if not chunk:
                break
            screen += chunk
        assert process.wait(10) == 0, screen
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))
    clock = sorted({float(seconds) for seconds in re.findall(r"submitted\s+(\d+\.\d)s", text)})
    assert clock and clock[-1] - clock[0] >= 1.5, text
    assert text.strip().splitlines()[0].startswith("task ")
    assert text.strip().splitlines()[-1].endswith(".mp4")


def test_submit_wait_times_out(stack: Stack) -> None:
    stack.emulator.configure(render_seconds=30)
    result = run(
        "submit",
        "a glacier calving, slowly",
        "--size",
        "832*480",
        "--wait",
        "--timeout",
        "1",
        "--server",
        stack.url,
        timeout=30,
    )
    assert result.returncode == 4, result.stderr
    task_id = result.stdout.splitlines()[0].removeprefix("task ")
    # The task is at DashScope within the second, or still in line on a busy machine: the line names which.
    assert result.stderr.strip().splitlines()[-1] in {
        f"wanhook submit: task {task_id} still {status} after 1 s (--timeout); it goes on: wanhook status {task_id}"
        for status in ("queued", "submitted")
    }
    # Giving up the wait is not giving up the task.
    stack.wait_status(task_id, "submitted")
    usage = run("submit", "p", "--timeout", "1", "--server", stack.url)
    assert usage.returncode == 2 and "--timeout goes with --wait" in usage.stderr


def test_submit_wait_reports_failure(stack: Stack) -> None:
    result = run("submit", "doomed [fail]", "--size", "832*480", "--wait", "--server", stack.url)
    assert result.returncode == 1
    assert "failed" in result.stderr


def test_clear_errors(stack: Stack) -> None:
    unknown = run("status", "no-such-task", "--server", stack.url)
    assert unknown.returncode == 1  # no such task: not a usage error (2)
    assert unknown.stderr.strip().splitlines()[-1].startswith("wanhook status: HTTP 404 task_not_found")
    invalid = run("submit", "p", "--size", "7*7", "--server", stack.url)
    assert invalid.returncode == 2 and "size" in invalid.stderr
    unreachable = run("status", "x", "--server", "http://127.0.0.1:9")
    assert unreachable.returncode == 3 and "cannot reach" in unreachable.stderr
    exposed = run("serve", "--host", "0.0.0.0", "--port", "9")
    assert exposed.returncode == 2 and "WANHOOK_API_TOKENS" in exposed.stderr
    consume = run("consume")
    assert consume.returncode == 2 and "WANHOOK_ROCKETMQ_ENDPOINTS" in consume.stderr


def test_every_command_has_help() -> None:
    for command in ("serve", "worker", "consume", "submit", "status", "emulator", "demo", "dev"):
        result = run(command, "--help")
        assert result.returncode == 0 and "usage: wanhook" in result.stdout
