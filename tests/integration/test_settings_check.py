"""Misconfiguration stops a command before it starts anything: one line on stderr naming the setting,
exit status 2 (3 when Redis or the server does not answer), never a traceback, never a hang."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from wanhook.service.config import Settings
from wanhook.service.core.errors import ConfigError
from wanhook.service.persistence import keys

from ..support import ROOT, Process, Wanhook, free_port, wait_for, wanhook

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
ROCKETMQ = {
    "WANHOOK_ROCKETMQ_ENDPOINTS": "127.0.0.1:8081",
    "WANHOOK_ROCKETMQ_TOPIC": "dashscope-events",
    "WANHOOK_ROCKETMQ_GROUP": "wanhook",
}
KEY = {"DASHSCOPE_API_KEY": "sk-test-key"}
S3 = {"WANHOOK_STORAGE_URL": "s3://videos/wan", "WANHOOK_S3_ACCESS_KEY_ID": "id", "WANHOOK_S3_SECRET_ACCESS_KEY": "key"}


def clean_env(**extra: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("WANHOOK_", "DASHSCOPE_"))}
    return {**environment, "PYTHONPATH": str(ROOT), **extra}


def refused(tmp_path: Path, args: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess:
    # From a directory of its own: a command that started anything would leave its data directory there.
    return subprocess.run(
        wanhook(*args), cwd=tmp_path, env=clean_env(**env), capture_output=True, text=True, timeout=30
    )


def assert_one_line(result: subprocess.CompletedProcess, command: str, status: int, *words: str) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.returncode == status, result.stderr
    assert lines[0].startswith(f"wanhook {command}: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# (command line, environment, what the line names). Redis is left unset: a command that got past its
# checks would start the embedded one, and the test would see its data directory.
MISCONFIGURED = [
    (("serve",), {**KEY, "DASHSCOPE_HTTP_BASE_URL": "notaurl"}, "DASHSCOPE_HTTP_BASE_URL"),
    (("worker",), {**KEY, "DASHSCOPE_HTTP_BASE_URL": "ftp://dashscope.aliyuncs.com/api/v1"}, "DASHSCOPE_HTTP_BASE_URL"),
    (("serve",), {**KEY, "WANHOOK_LIMITS": "wan2.2-t2v-plus=0/0"}, "WANHOOK_LIMITS"),
    (("worker",), {**KEY, "WANHOOK_LIMITS": "wan2.2-t2v-plus=0/0"}, "WANHOOK_LIMITS"),
    (("worker",), {**KEY, "WANHOOK_LIMITS": "wan2.2-t2v-plus=-1/2"}, "WANHOOK_LIMITS"),
    (("serve",), {**KEY, "WANHOOK_LIMITS": "wan9-t2v=1/1"}, "WANHOOK_LIMITS"),
    (("serve",), {**KEY, "WANHOOK_CALLBACK_SCHEDULE": "0,5s,300"}, "WANHOOK_CALLBACK_SCHEDULE"),
    (("worker",), {**KEY, "WANHOOK_CALLBACK_SCHEDULE": "0,-5"}, "WANHOOK_CALLBACK_SCHEDULE"),
    (("serve", "--port", "99999"), KEY, "--port"),
    (("serve", "--port", "0"), KEY, "--port"),
    (("serve",), {}, "DASHSCOPE_API_KEY"),
    (("worker",), {}, "DASHSCOPE_API_KEY"),
    (("worker",), {**KEY, "WANHOOK_DOWNLOAD_CONCURRENCY": "abc"}, "WANHOOK_DOWNLOAD_CONCURRENCY"),
    (("worker",), {**KEY, "WANHOOK_DOWNLOAD_CONCURRENCY": "0"}, "WANHOOK_DOWNLOAD_CONCURRENCY"),
    (("serve",), {**KEY, "WANHOOK_DASHSCOPE_QPS": "2.5"}, "WANHOOK_DASHSCOPE_QPS"),
    (("serve",), {**KEY, "WANHOOK_SWEEP_AFTER_SECONDS": "0"}, "WANHOOK_SWEEP_AFTER_SECONDS"),
    (("worker",), {**KEY, "WANHOOK_CLAIM_IDLE_SECONDS": "nan"}, "WANHOOK_CLAIM_IDLE_SECONDS"),
    (("serve", "--no-workers"), {"WANHOOK_HEADER_TIMEOUT_SECONDS": "-1"}, "WANHOOK_HEADER_TIMEOUT_SECONDS"),
    (("serve",), {**KEY, "WANHOOK_CALLBACK_ALLOW_PRIVATE": "true"}, "WANHOOK_CALLBACK_ALLOW_PRIVATE"),
    (
        ("serve",),
        {**KEY, "WANHOOK_EVENTBRIDGE_ALLOW_UNAUTHENTICATED": "yes"},
        "WANHOOK_EVENTBRIDGE_ALLOW_UNAUTHENTICATED",
    ),
    (("worker",), {**KEY, "WANHOOK_REDIS_URL": "http://127.0.0.1:6379"}, "WANHOOK_REDIS_URL"),
    (("worker",), {**KEY, "WANHOOK_REDIS_URL": "redis://127.0.0.1:port/0"}, "WANHOOK_REDIS_URL"),
    (
        ("serve",),
        {**KEY, "WANHOOK_EVENTBRIDGE_URL": "wanhook.example.com/v1/events/dashscope"},
        "WANHOOK_EVENTBRIDGE_URL",
    ),
    (("worker",), {**KEY, "WANHOOK_VIDEO_HOSTS": ""}, "WANHOOK_VIDEO_HOSTS"),
    (("worker",), {**KEY, "WANHOOK_CALLBACK_SECRET": "whsec_"}, "WANHOOK_CALLBACK_SECRET"),
    (("serve",), {**KEY, "WANHOOK_LOG_LEVEL": "loud"}, "WANHOOK_LOG_LEVEL"),
    (("consume",), {**ROCKETMQ, "WANHOOK_ROCKETMQ_ENDPOINTS": "localhost"}, "WANHOOK_ROCKETMQ_ENDPOINTS"),
    (("consume",), {**ROCKETMQ, "WANHOOK_ROCKETMQ_BATCH": "0"}, "WANHOOK_ROCKETMQ_BATCH"),
    (("consume",), {**ROCKETMQ, "WANHOOK_ROCKETMQ_PROTOCOL": "3"}, "WANHOOK_ROCKETMQ_PROTOCOL"),
    (("consume",), {**ROCKETMQ, "WANHOOK_ROCKETMQ_PROTOCOL": "4"}, "WANHOOK_ROCKETMQ_NAMESRV"),
    (
        ("consume",),
        {**ROCKETMQ, "WANHOOK_ROCKETMQ_PROTOCOL": "4", "WANHOOK_ROCKETMQ_NAMESRV": "localhost"},
        "WANHOOK_ROCKETMQ_NAMESRV",
    ),
    (
        ("consume",),
        {
            **ROCKETMQ,
            "WANHOOK_ROCKETMQ_NAMESRV": "127.0.0.1:9876",
            "WANHOOK_ROCKETMQ_PROTOCOL": "4",
            "WANHOOK_ROCKETMQ_CLIENT4_DIR": "/nonexistent",
        },
        "WANHOOK_ROCKETMQ_CLIENT4_DIR",
    ),
    (
        ("consume",),
        {
            **ROCKETMQ,
            "WANHOOK_ROCKETMQ_NAMESRV": "127.0.0.1:9876",
            "WANHOOK_ROCKETMQ_PROTOCOL": "4",
            "WANHOOK_ROCKETMQ_MAX_DELIVERIES": "18",  # over what librocketmq lets the broker deliver
        },
        "WANHOOK_ROCKETMQ_MAX_DELIVERIES",
    ),
    (("consume",), {**ROCKETMQ, "WANHOOK_MAX_VIDEO_BYTES": "4GB"}, "WANHOOK_MAX_VIDEO_BYTES"),
    (("worker",), {**KEY, "WANHOOK_DATA_DIR": "/dev/null"}, "WANHOOK_DATA_DIR"),
    (("worker",), {**KEY, "WANHOOK_FILE_THREADS": "0"}, "WANHOOK_FILE_THREADS"),
    (("serve",), {**KEY, "WANHOOK_S3_THREADS": "many"}, "WANHOOK_S3_THREADS"),
    (("serve",), {**KEY, **S3, "WANHOOK_S3_REQUEST_TIMEOUT_SECONDS": "0"}, "WANHOOK_S3_REQUEST_TIMEOUT_SECONDS"),
    (("worker",), {**KEY, **S3, "WANHOOK_S3_UPLOAD_TIMEOUT_SECONDS": "inf"}, "WANHOOK_S3_UPLOAD_TIMEOUT_SECONDS"),
    (("serve", "--no-workers"), {"WANHOOK_DATA_DIR": "/dev/null/data"}, "WANHOOK_DATA_DIR"),
    (("demo",), {"WANHOOK_DEMO_RENDER_SECONDS": "abc"}, "WANHOOK_DEMO_RENDER_SECONDS"),
    (("serve",), {**KEY, "WANHOOK_REDIS_WAIT_REPLICAS": "-1"}, "WANHOOK_REDIS_WAIT_REPLICAS"),
    (("serve",), {**KEY, "WANHOOK_REDIS_WAIT_REPLICAS": "1"}, "WANHOOK_REDIS_URL"),  # the embedded Redis has none
    (("worker",), {**KEY, "WANHOOK_REDIS_WAIT_REPLICAS": "one"}, "WANHOOK_REDIS_WAIT_REPLICAS"),
    (("consume",), {**ROCKETMQ, "WANHOOK_REDIS_WAIT_AOF": "1.5"}, "WANHOOK_REDIS_WAIT_AOF"),
    (("serve",), {**KEY, "WANHOOK_REDIS_WAIT_TIMEOUT_SECONDS": "0"}, "WANHOOK_REDIS_WAIT_TIMEOUT_SECONDS"),
    (("worker",), {**KEY, "WANHOOK_STORAGE_URL": "https://bucket/videos"}, "WANHOOK_STORAGE_URL"),
    (("serve",), {**KEY, "WANHOOK_STORAGE_URL": "s3://Bad_Bucket/videos"}, "WANHOOK_STORAGE_URL"),
    (("serve",), {**KEY, "WANHOOK_STORAGE_URL": "s3://videos"}, "WANHOOK_S3_SECRET_ACCESS_KEY"),  # no credentials
    (("worker",), {**KEY, **S3, "WANHOOK_S3_ENDPOINT": "s3.oss-cn-hangzhou.aliyuncs.com"}, "WANHOOK_S3_ENDPOINT"),
    (("serve",), {**KEY, **S3, "WANHOOK_S3_SERVE": "proxy"}, "WANHOOK_S3_SERVE"),
    (("serve",), {**KEY, **S3, "WANHOOK_S3_PRESIGN_SECONDS": "0"}, "WANHOOK_S3_PRESIGN_SECONDS"),
    (("worker",), {**KEY, **S3, "WANHOOK_S3_ADDRESSING": "dns"}, "WANHOOK_S3_ADDRESSING"),
]


@pytest.mark.parametrize(
    ("args", "env", "named"),
    MISCONFIGURED,
    ids=[f"{args[0]}-{named}-{list(env.values())[-1] if env else 'unset'}" for args, env, named in MISCONFIGURED],
)
def test_a_bad_setting_is_one_line_and_exit_status_2(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], named: str
) -> None:
    result = refused(tmp_path, args, env)
    assert_one_line(result, args[0], 2, named)
    assert not (tmp_path / "wanhook-data").exists()  # nothing was started: not even the embedded Redis


def test_a_secret_in_a_refused_setting_is_not_repeated(tmp_path: Path) -> None:
    line = assert_one_line(
        refused(
            tmp_path,
            ("worker",),
            {**KEY, "WANHOOK_CALLBACK_SECRET": "whsec_s3cr3", "WANHOOK_REDIS_URL": UNREACHABLE_REDIS},
        ),
        "worker",
        2,
        "WANHOOK_CALLBACK_SECRET",
    )
    assert "s3cr3" not in line
    line = assert_one_line(
        refused(tmp_path, ("worker",), {**KEY, "WANHOOK_REDIS_URL": "redis://:hunter2@h:x/0"}),
        "worker",
        2,
        "WANHOOK_REDIS_URL",
    )
    assert "hunter2" not in line


@pytest.mark.parametrize(
    ("args", "url"),
    [
        (("serve",), UNREACHABLE_REDIS),
        (("serve", "--no-workers"), UNREACHABLE_REDIS),
        (("worker",), UNREACHABLE_REDIS),
        (("consume",), UNREACHABLE_REDIS),
        (("serve",), "redis+cluster://127.0.0.1:1"),
        (("worker",), "unix:///nonexistent/redis.sock"),
    ],
)
def test_unreachable_redis_is_one_line_and_exit_status_3(tmp_path: Path, args: tuple[str, ...], url: str) -> None:
    # consume and serve --no-workers submit nothing: they get this far without an API key.
    env = {
        "WANHOOK_REDIS_URL": url,
        "WANHOOK_DATA_DIR": str(tmp_path / "data"),
        **({} if args[0] == "consume" or len(args) > 1 else KEY),
    }
    with socket.socket() as broker:  # consume reaches its RocketMQ endpoint first: this one answers
        broker.bind(("127.0.0.1", 0))
        broker.listen()
        env.update(ROCKETMQ, WANHOOK_ROCKETMQ_ENDPOINTS=f"127.0.0.1:{broker.getsockname()[1]}")
        result = refused(tmp_path, args, env)
    assert_one_line(result, args[0], 3, f"cannot reach Redis at {url}", "WANHOOK_REDIS_URL")


def test_consume_with_an_unreachable_endpoint_is_one_line_and_exit_status_3(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{closed.getsockname()[1]}"
        result = refused(
            tmp_path,
            ("consume",),
            {**ROCKETMQ, "WANHOOK_ROCKETMQ_ENDPOINTS": endpoint, "WANHOOK_REDIS_URL": UNREACHABLE_REDIS},
        )
    assert_one_line(
        result, "consume", 3, "cannot reach the RocketMQ endpoint", "WANHOOK_ROCKETMQ_ENDPOINTS", endpoint, "refused"
    )


def test_serve_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = refused(tmp_path, ("serve", "--port", str(port)), {**KEY, "WANHOOK_REDIS_URL": UNREACHABLE_REDIS})
    assert_one_line(result, "serve", 2, f"cannot listen on 127.0.0.1:{port}")


def test_a_client_command_without_its_server_exits_3(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        server = f"http://127.0.0.1:{closed.getsockname()[1]}"
        result = refused(tmp_path, ("status", "some-task", "--server", server), {})
    assert_one_line(result, "status", 3, "cannot reach")


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("submit", "a prompt", "--server", "127.0.0.1:8000"), {}),
        (("status", "some-task"), {"WANHOOK_SERVER": "notaurl"}),
    ],
)
def test_a_client_command_refuses_a_server_that_is_not_a_url(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    assert_one_line(refused(tmp_path, args, env), args[0], 2, "--server (or WANHOOK_SERVER)")


def test_serve_without_workers_needs_no_api_key(tmp_path: Path, redis_url: str, processes: list[Process]) -> None:
    server = Wanhook(
        tmp_path, clean_env(WANHOOK_REDIS_URL=redis_url, WANHOOK_DATA_DIR=str(tmp_path / "data")), "--no-workers"
    )
    processes.append(server.launch())
    server.wait_ready()
    wait_for(lambda: httpx.get(server.url + "/readyz", timeout=5).status_code == 200, 15, what="readyz")


@pytest.mark.parametrize(
    "env",
    [
        {"WANHOOK_CALLBACK_SCHEDULE": "0,0.3,0.3"},
        {"WANHOOK_CALLBACK_SCHEDULE": "0"},
        {"WANHOOK_LIMITS": "wan2.2-t2v-plus=2/20, wan2.6-t2v=1/1"},
        {"WANHOOK_MIN_FREE_BYTES": "0"},
        {"WANHOOK_REDIS_URL": "redis+sentinel://:pw@a:26379,b:26380/mymaster/2"},
        {"WANHOOK_REDIS_URL": "rediss+cluster://node:7000"},
        {"WANHOOK_REDIS_URL": "unix:///run/redis.sock"},
        {"DASHSCOPE_HTTP_BASE_URL": "http://127.0.0.1:8080/api/v1/"},
        {"WANHOOK_CALLBACK_ALLOW_PRIVATE": "1"},
        {"WANHOOK_CALLBACK_SECRET": "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ="},
        {"WANHOOK_DOWNLOAD_CONCURRENCY": "1e1"},
    ],
)
def test_good_settings_are_taken(env: dict[str, str]) -> None:
    Settings.from_env(env)


def test_settings_parse_to_their_values() -> None:
    settings = Settings.from_env(
        {
            "DASHSCOPE_HTTP_BASE_URL": "http://127.0.0.1:8080/api/v1/",
            "WANHOOK_DOWNLOAD_CONCURRENCY": "8",
            "WANHOOK_CALLBACK_ALLOW_PRIVATE": "1",
            "WANHOOK_EVENTBRIDGE_ALLOW_UNAUTHENTICATED": "",
        }
    )
    assert settings.dashscope_base_url == "http://127.0.0.1:8080/api/v1"
    assert settings.download_concurrency == 8 and settings.callback_allow_private is True
    assert settings.eventbridge_allow_unauthenticated is False
    with pytest.raises(ConfigError, match="WANHOOK_RATE_LIMIT"):
        Settings.from_env({"WANHOOK_RATE_LIMIT": "inf"})


def test_a_port_out_of_range_is_a_usage_error_for_the_emulator(tmp_path: Path) -> None:
    # argparse's own usage error: its usage line, then the one naming the option; exit 2, no traceback.
    result = refused(tmp_path, ("emulator", "--port", "99999"), {})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--port: must be from 1 to 65535, got '99999'" in result.stderr.splitlines()[-1]


def test_a_process_whose_shared_settings_disagree_refuses_to_start(
    tmp_path: Path, redis_url: str, processes: list[Process]
) -> None:
    """The storage, retention and the data directory's role are the installation's (recorded in Redis by the
    first process): a second serve or worker on the same Redis with other values refuses, in one line."""
    from ..conftest import Stack

    stack = Stack(tmp_path, redis_url, processes).start()  # local storage, the default retention
    task = stack.wait_status(stack.create("a tidal pool")["id"], "ready")
    same = {**stack.env, "WANHOOK_EVENTBRIDGE_TOKEN": "t"}
    port = str(free_port())
    disagreeing = [
        (("serve", "--port", port), {**same, **S3}, "WANHOOK_STORAGE_URL"),
        (("worker",), {**same, **S3}, "WANHOOK_STORAGE_URL"),
        (
            ("serve", "--port", port),
            {**same, "WANHOOK_VIDEO_RETENTION_SECONDS": "60"},
            "WANHOOK_VIDEO_RETENTION_SECONDS",
        ),
        (("worker",), {**same, "WANHOOK_TASK_RETENTION_SECONDS": "0"}, "WANHOOK_TASK_RETENTION_SECONDS"),
        # With videos on disk, tasks name them by path: every process must see the same data directory.
        (("worker",), {**same, "WANHOOK_DATA_DIR": str(tmp_path / "elsewhere")}, "WANHOOK_DATA_DIR"),
    ]
    for args, env, setting in disagreeing:
        result = refused(tmp_path, args, env)
        line = assert_one_line(result, args[0], 2, setting, "wanhook installation record")
        assert "sk-test-key" not in line
    # Nothing was changed by the refused ones: the first process goes on as it was.
    assert stack.http.get(f"/v1/tasks/{task['id']}/video").status_code == 200
    shown = subprocess.run(
        wanhook("installation", "show"), env=clean_env(**stack.env), capture_output=True, text=True, timeout=30
    )
    assert shown.returncode == 0, shown.stderr
    assert '"storage": "local"' in shown.stdout

    # The video follows where the task records it: a task recorded in an object store, answered by a process
    # whose own storage is local, is a 503 naming the store (not 410, not the file of the same name).
    stack.redis.hset(keys.TASK + task["id"], "video_dir", "s3://videos/wan")
    answer = stack.http.get(f"/v1/tasks/{task['id']}/video")
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "object_store_not_configured"
    assert "s3://videos/wan/" in answer.json()["error"]["message"]
