"""A real Apache RocketMQ 5.x for tests and benchmarks: a NameServer and a Proxy in local mode (the broker
runs inside the proxy's process), both Java processes started from Maven Central's artifacts.

The artifacts are resolved once with Maven into a cache outside the repository
(``$WANHOOK_ROCKETMQ_CACHE``, default ``~/.cache/wanhook/rocketmq``); each broker gets a fresh folder for
its configuration, store and logs. Topics and consumer groups are created with the admin client the
artifacts ship (``deploy/rocketmq/Admin.java``): the proxy answers a route query for an unknown topic with
TOPIC_NOT_FOUND and a consumer of an unknown group with "group not found", auto-creation or not.

By hand: ``python -m tests.rocketmq_broker`` (or ``make rocketmq``) starts one and prints its endpoints.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

from .support import free_port as _free_port

ROOT = Path(__file__).resolve().parent.parent
# The newest 5.x whose NameServer, Proxy and tools all resolve from Maven Central and run on Java 17
# (5.5.1 exists only for some modules: rocketmq-proxy 5.5.1 is not published).
VERSION = "5.5.0"
ARTIFACTS = ("rocketmq-namesrv", "rocketmq-proxy", "rocketmq-tools")
CACHE = Path(os.environ.get("WANHOOK_ROCKETMQ_CACHE") or Path.home() / ".cache" / "wanhook" / "rocketmq")
ADMIN = ROOT / "deploy" / "rocketmq" / "Admin.java"
CLUSTER = "DefaultCluster"
# A 2-core shared machine: small heaps, the serial collector, and no time spent on optimising JIT tiers.
JAVA_OPTIONS = [
    "-Xms64m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:MaxDirectMemorySize=256m",
    "-Djava.net.preferIPv4Stack=true",
]
NAMESRV_HEAP = "-Xmx128m"
PROXY_HEAP = "-Xmx384m"
ADMIN_HEAP = "-Xmx128m"
START_TIMEOUT = 90.0


def missing() -> str | None:
    """Why a real broker cannot run here (no Java, no Maven), or None."""
    absent = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if absent:
        return (
            f"no real RocketMQ broker: {' and '.join(absent)} not found "
            f"(install Debian's default-jdk-headless and maven)"
        )
    return None


def _pom() -> str:
    dependencies = "".join(
        f"<dependency><groupId>org.apache.rocketmq</groupId><artifactId>{artifact}</artifactId>"
        f"<version>{VERSION}</version></dependency>"
        for artifact in ARTIFACTS
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>local.wanhook</groupId><artifactId>rocketmq-runtime</artifactId><version>1</version>"
        f"<packaging>pom</packaging><dependencies>{dependencies}</dependencies></project>\n"
    )


def resolve(cache: Path = CACHE) -> Path:
    """The folder of jars for ``VERSION``, resolved with Maven on first use (about 100 MB)."""
    home = cache / VERSION
    lib = home / "lib"
    if (home / "resolved").exists():
        return lib
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs resolving at once share one download
        if (home / "resolved").exists():
            return lib
        (home / "pom.xml").write_text(_pom())
        staging = home / "lib.partial"
        shutil.rmtree(staging, ignore_errors=True)
        command = [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(home / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            raise RuntimeError(f"could not resolve RocketMQ {VERSION} with Maven: {' | '.join(tail)}")
        shutil.rmtree(lib, ignore_errors=True)
        staging.rename(lib)
        (home / "resolved").write_text(VERSION + "\n")
    return lib


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _broker_port() -> int:
    """A port P with P-2 (the broker's "fast" remoting server) and P+1 (its HA service) free as well."""
    for _ in range(100):
        port = _free_port()
        if port > 1026 and all(_port_free(other) for other in (port - 2, port + 1)):
            return port
    raise RuntimeError("no free port for the broker")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class RealBroker:
    """NameServer + Proxy (local mode), each a Java process of its own session, stopped by its pid."""

    def __init__(self, directory: Path, lib: Path | None = None, *, min_invisible_ms: int | None = None) -> None:
        self.directory = directory
        self.lib = lib or resolve()
        self.namesrv_port = _free_port()
        self.broker_port = _broker_port()
        self.grpc_port = _free_port()
        self.remoting_port = _free_port()
        self.min_invisible_ms = min_invisible_ms
        self.namesrv: subprocess.Popen | None = None
        self.proxy: subprocess.Popen | None = None
        self.start_seconds = 0.0  # how long the last start took, until the gRPC endpoint answered
        self._write_config()

    @property
    def endpoints(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def namesrv_addr(self) -> str:
        return f"127.0.0.1:{self.namesrv_port}"

    @property
    def broker_addr(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    def _write_config(self) -> None:
        home, store = self.directory / "home", self.directory / "store"
        home.mkdir(parents=True, exist_ok=True)
        store.mkdir(parents=True, exist_ok=True)
        (self.directory / "namesrv.properties").write_text(f"listenPort={self.namesrv_port}\n")
        broker = {
            "brokerClusterName": CLUSTER,
            "brokerName": "broker-a",
            "brokerId": 0,
            "listenPort": self.broker_port,
            "namesrvAddr": self.namesrv_addr,
            "brokerIP1": "127.0.0.1",
            "storePathRootDir": store,
            "storePathCommitLog": store / "commitlog",
            # Small files: the defaults (1 GiB commit log, 6 MB consume queues) are allocated up front.
            "mappedFileSizeCommitLog": 64 * 1024 * 1024,
            "mappedFileSizeConsumeQueue": 300_000,
            "transientStorePoolEnable": "false",
            "warmMapedFileEnable": "false",
            # A shared disk that is 90% full must not make the broker refuse writes or delete files.
            "diskMaxUsedSpaceRatio": 99,
            "diskSpaceWarningLevelRatio": 0.99,
            "diskSpaceCleanForciblyRatio": 0.99,
            # Topics and groups are made with the admin tool, as on a managed instance.
            "autoCreateTopicEnable": "false",
            "autoCreateSubscriptionGroup": "false",
            "enablePropertyFilter": "true",
        }
        (self.directory / "broker.properties").write_text("".join(f"{k}={v}\n" for k, v in broker.items()))
        proxy = {
            "rocketMQClusterName": CLUSTER,
            "proxyMode": "local",
            "namesrvAddr": self.namesrv_addr,
            "grpcServerPort": self.grpc_port,
            "remotingListenPort": self.remoting_port,
            "enableACL": False,
        }
        if self.min_invisible_ms is not None:
            proxy["minInvisibleTimeMillsForRecv"] = self.min_invisible_ms
        (self.directory / "proxy.json").write_text(json.dumps(proxy))

    def _java(self, heap: str, main: str, *args: str) -> list[str]:
        return [
            "java",
            heap,
            *JAVA_OPTIONS,
            f"-Drocketmq.home.dir={self.directory / 'home'}",
            f"-Duser.home={self.directory / 'home'}",
            "-cp",
            str(self.lib / "*"),
            main,
            *args,
        ]

    def _launch(self, name: str, command: list[str]) -> subprocess.Popen:
        with open(self.directory / f"{name}.out", "ab") as out:
            return subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, cwd=self.directory, start_new_session=True
            )

    def start(self) -> Self:
        started = time.monotonic()
        self.namesrv = self._launch(
            "namesrv",
            self._java(
                NAMESRV_HEAP,
                "org.apache.rocketmq.namesrv.NamesrvStartup",
                "-c",
                str(self.directory / "namesrv.properties"),
            ),
        )
        try:
            self.start_proxy(started)
        except BaseException:
            self.stop()  # a start that failed leaves no Java process behind: nobody else would stop it
            raise
        return self

    def start_proxy(self, started: float | None = None) -> None:
        """The broker and its proxy; after ``stop_proxy`` it comes back on the same ports and store."""
        started = time.monotonic() if started is None else started
        self.proxy = self._launch(
            "proxy",
            self._java(
                PROXY_HEAP,
                "org.apache.rocketmq.proxy.ProxyStartup",
                "-pm",
                "local",
                "-bc",
                str(self.directory / "broker.properties"),
                "-pc",
                str(self.directory / "proxy.json"),
            ),
        )
        deadline = started + START_TIMEOUT
        while not (
            _answers(self.grpc_port) and _answers(self.namesrv_port) and "startup successfully" in self.log("proxy")
        ):
            for name, process in (("namesrv", self.namesrv), ("proxy", self.proxy)):
                if process is not None and process.poll() is not None:
                    raise RuntimeError(f"RocketMQ {name} exited with {process.returncode}: {self.log(name)[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"RocketMQ did not answer on {self.endpoints} within {START_TIMEOUT:.0f}s")
            time.sleep(0.1)
        self.start_seconds = time.monotonic() - started

    def log(self, name: str) -> str:
        path = self.directory / f"{name}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def admin(self, *commands: str) -> str:
        """Run ``deploy/rocketmq/Admin.java`` commands in one JVM; its output."""
        command = [
            "java",
            ADMIN_HEAP,
            *JAVA_OPTIONS,
            "-cp",
            str(self.lib / "*"),
            str(ADMIN),
            self.namesrv_addr,
            self.broker_addr,
            *commands,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.directory)
        if done.returncode != 0:
            raise RuntimeError(f"admin {' '.join(commands)} failed: {done.stderr.strip()[-1000:]}")
        return done.stdout

    def create(self, topics: tuple[str, ...] = (), groups: dict[str, int] | None = None) -> None:
        """Topics (normal messages) and consumer groups with their maximum retries."""
        commands = [arg for topic in topics for arg in ("topic", topic)]
        commands += [arg for group, retries in (groups or {}).items() for arg in ("group", group, str(retries))]
        if commands:
            self.admin(*commands)

    def stored(self, *topics: str) -> dict[str, int]:
        """How many messages each topic holds (e.g. ``%DLQ%group``, ``%RETRY%group``)."""
        output = self.admin(*[arg for topic in topics for arg in ("offsets", topic)])
        counts = {}
        for line in output.splitlines():
            word, topic, count = line.split(" ")
            if word == "offsets":
                counts[topic] = int(count)
        return counts

    def connections(self, group: str) -> int:
        """How many clients of ``group`` the broker holds (4.x remoting consumers; not the proxy's gRPC ones)."""
        output = self.admin("connections", group)
        ((_, _, count),) = [line.split(" ") for line in output.splitlines() if line.startswith("connections ")]
        return int(count)

    @staticmethod
    def _stop(process: subprocess.Popen | None, timeout: float = 30.0) -> None:
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # the broker flushes and unregisters on its shutdown hook
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def stop_proxy(self) -> None:
        self._stop(self.proxy)
        self.proxy = None

    def stop(self) -> None:
        self.stop_proxy()
        self._stop(self.namesrv)
        self.namesrv = None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.rocketmq_broker",
        description=f"Run Apache RocketMQ {VERSION} (NameServer + local-mode Proxy).",
    )
    parser.add_argument("--topic", action="append", default=[], help="a topic to create (repeatable)")
    parser.add_argument(
        "--group",
        action="append",
        default=[],
        help="a consumer group to create, NAME or NAME:MAX_RETRIES (repeatable; default 16)",
    )
    parser.add_argument(
        "--dir", type=Path, help="folder for configuration, store and logs (default: a new temporary one)"
    )
    options = parser.parse_args(argv)
    reason = missing()
    if reason:
        sys.exit(reason)
    directory = options.dir or Path(tempfile.mkdtemp(prefix="wanhook-rocketmq-"))
    directory.mkdir(parents=True, exist_ok=True)
    broker = RealBroker(directory.resolve())
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        broker.start()
        groups = {}
        for item in options.group:
            name, _, retries = item.partition(":")
            groups[name] = int(retries or 16)
        broker.create(tuple(options.topic), groups)
        print(
            f"RocketMQ {VERSION} up in {broker.start_seconds:.1f}s: gRPC endpoints {broker.endpoints}, "
            f"NameServer {broker.namesrv_addr}, broker {broker.broker_addr}; files in {directory}",
            flush=True,
        )
        print("Ctrl-C to stop.", flush=True)
        while not stop:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
