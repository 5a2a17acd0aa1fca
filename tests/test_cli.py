"""The ``wanhook`` command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import av
import pytest

from .conftest import Stack
from .support import ROOT, wanhook


def run(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 120,
        ) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("WANHOOK_", "DASHSCOPE_"))}
    return subprocess.run(wanhook(*args), cwd=cwd, env={**environment, "PYTHONPATH": str(ROOT), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("via", ["webhook", "rocketmq"])
def test_demo_stores_a_playable_video(tmp_path: Path, via: str) -> None:
    result = run("demo", "a kite over green hills", "--via", via, cwd=tmp_path,
                 env={"WANHOOK_DEMO_RENDER_SECONDS": "0.5"})
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.parent == (tmp_path / "wanhook-data" / "videos").resolve()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.frames == 150 and stream.average_rate == 30
    # The embedded Redis kept its state on disk, under the data directory.
    assert list((tmp_path / "wanhook-data" / "redis").rglob("*.aof*"))
    assert "ready" in result.stderr


def test_submit_wait_and_status(stack: Stack) -> None:
    result = run("submit", "a heron standing in the reeds", "--size", "832*480", "--wait", "--server", stack.url)
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path.exists() and path.suffix == ".mp4"
    task_id = path.stem
    status = run("status", task_id, "--json", "--server", stack.url)
    assert status.returncode == 0
    assert json.loads(status.stdout)["status"] == "ready"
    table = run("status", task_id, "--server", stack.url)
    assert "ready" in table.stdout and task_id in table.stdout


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
    for command in ("serve", "worker", "consume", "submit", "status", "emulator", "demo"):
        result = run(command, "--help")
        assert result.returncode == 0 and "usage: wanhook" in result.stdout
