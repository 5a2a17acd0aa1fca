from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

# The RocketMQ suite's brokers (the double, a real RocketMQ 5.x), for any test module.
from .rocketmq_backends import broker, client4_dir, real_broker  # noqa: F401
from .support import Emulator, Process, RedisServer, Wanhook, free_port, sync_client, wait_for

TOKEN = "eb-token-for-tests"
TERMINAL = {"ready", "failed", "canceled", "expired"}


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report


@pytest.fixture(autouse=True, scope="session")
def _writable_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    # The RocketMQ client writes its logs under $HOME.
    os.environ["HOME"] = str(tmp_path_factory.mktemp("home"))


@pytest.fixture
def processes(request: pytest.FixtureRequest) -> Iterator[list[Process]]:
    """Processes a test starts; stopped at the end, their logs printed when the test failed."""
    started: list[Process] = []
    yield started
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    # wanhook's processes and the emulator shut down side by side; Redis, which they use until they
    # are gone, after them.
    for process in reversed(started):
        if isinstance(process, (Wanhook, Emulator)):
            process.terminate()
    for process in reversed(started):
        process.stop()
        if failed:
            print(f"\n----- {process.name} -----\n{process.log()[-6000:]}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


class Stack:
    """The emulator and a wanhook server (with its workers) wired to each other, on loopback."""

    def __init__(
        self, tmp_path: Path, redis_url: str, processes: list[Process], *emulator_args: str, webhook: bool = True
    ) -> None:
        self.tmp_path = tmp_path
        self.redis_url = redis_url
        self.processes = processes
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.webhook = self.url + "/v1/events/dashscope"
        self.data_dir = tmp_path / "data"
        pushes = ("--webhook-url", self.webhook, "--webhook-token", TOKEN) if webhook else ()
        self.emulator = Emulator(tmp_path, "--render-seconds", "0.3", *pushes, *emulator_args)
        self.env = {
            "WANHOOK_REDIS_URL": redis_url,
            "DASHSCOPE_HTTP_BASE_URL": self.emulator.api,
            "DASHSCOPE_API_KEY": "sk-test-key",
            "WANHOOK_DATA_DIR": str(self.data_dir),
            "WANHOOK_VIDEO_HOSTS": "127.0.0.1",
            "WANHOOK_EVENTBRIDGE_TOKEN": TOKEN,
            "WANHOOK_CLAIM_IDLE_SECONDS": "2",
            "WANHOOK_LOG_LEVEL": "INFO",
        }
        self.http = httpx.Client(base_url=self.url, timeout=30)
        self.redis = sync_client(redis_url, decode_responses=True)

    def start(self, *extra: str) -> Stack:
        # Both start up side by side: neither needs the other until the first task.
        self.processes.append(self.emulator.launch())
        self.server = self.serve(self.port, *extra, wait=False)
        self.emulator.wait_ready()
        self.server.wait_ready()
        return self

    def serve(
        self, port: int | None = None, *extra: str, env: dict[str, str] | None = None, wait: bool = True
    ) -> Wanhook:
        process = Wanhook(self.tmp_path, {**self.env, **(env or {})}, *extra, port=port)
        self.processes.append(process.launch())
        return process.wait_ready() if wait else process

    def worker(self, name: str = "worker", env: dict[str, str] | None = None) -> Wanhook:
        process = Wanhook(self.tmp_path, {**self.env, **(env or {})}, name="worker", port=free_port())
        process.name = name
        self.processes.append(process.start())
        return process

    def consume(self, endpoints: str, topic: str, name: str = "consume", **settings: str) -> Wanhook:
        """A ``wanhook consume`` process of the consumer group "wanhook"."""
        env = {
            "WANHOOK_ROCKETMQ_ENDPOINTS": endpoints,
            "WANHOOK_ROCKETMQ_TOPIC": topic,
            "WANHOOK_ROCKETMQ_GROUP": "wanhook",
            # The shortest the real proxy allows: a receive may not ask for an invisible duration under
            # 10 s, and a long poll is at least 5 s (await + the client's 3 s request timeout).
            "WANHOOK_ROCKETMQ_INVISIBLE_SECONDS": "10",
            "WANHOOK_ROCKETMQ_AWAIT_SECONDS": "3",
            **{f"WANHOOK_ROCKETMQ_{key.upper()}": value for key, value in settings.items()},
        }
        process = Wanhook(self.tmp_path, {**self.env, **env}, name="consume", port=free_port())
        process.name = f"{name}-{process.port}"
        self.processes.append(process.start())
        return process

    def create(self, prompt: str = "a red fox in fresh snow", **body: Any) -> dict[str, Any]:
        response = self.http.post("/v1/tasks", json={"prompt": prompt, "size": "832*480", **body})
        assert response.status_code == 202, response.text
        return response.json()

    def task(self, task_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/tasks/{task_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_status(self, task_id: str, *statuses: str, timeout: float = 60.0) -> dict[str, Any]:
        wanted = set(statuses) or TERMINAL

        def check() -> dict[str, Any] | None:
            task = self.task(task_id)
            if task["status"] in wanted:
                return task
            assert task["status"] not in TERMINAL, f"task ended {task['status']}: {task.get('error')}"
            return None

        return wait_for(check, timeout, interval=0.1, what=f"task {task_id} to be {'/'.join(sorted(wanted))}")

    def push(self, event: dict[str, Any], token: str = TOKEN) -> httpx.Response:
        return self.http.post("/v1/events/dashscope", json=event, headers={"x-eventbridge-signature-token": token})


@pytest.fixture
def stack(tmp_path: Path, redis_url: str, processes: list[Process]) -> Iterator[Stack]:
    stack = Stack(tmp_path, redis_url, processes).start()
    yield stack
    stack.http.close()
    stack.redis.close()
