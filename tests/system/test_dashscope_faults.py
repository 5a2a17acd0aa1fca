"""DashScope misbehaving: 5xx answers, hangs past wanhook's timeout, and bodies that are not its JSON.

Creates are retried with backoff and never duplicated; the read after the completion event is retried
within WANHOOK_DOWNLOAD_ATTEMPTS and then fails the task with a clear error. No task is left behind in
``queued`` or ``downloading``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import Stack
from ..invariants import assert_consistent
from ..support import Process, wait_for

# WANHOOK_DASHSCOPE_TIMEOUT: short, so that a hang costs little test time, yet far above what a healthy
# answer takes on a busy machine.
TIMEOUT = 3.0
HANG = TIMEOUT + 5.0  # how long a hanging DashScope holds a request
ATTEMPTS = 5  # WANHOOK_DOWNLOAD_ATTEMPTS
HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
    "</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
SERVER_ERROR = {"status": 500, "code": "InternalError", "message": "An internal error has occured"}
GARBAGE = {"status": 200, "body": "\x00\x01<<not json", "content_type": "application/json"}
WRONG_SHAPE = {"status": 200, "body": '{"output": ["not", "an", "object"]}', "content_type": "application/json"}


@pytest.fixture
def faulty(tmp_path: Path, redis_url: str, processes: list[Process]) -> Stack:
    stack = Stack(tmp_path, redis_url, processes)
    stack.env.update(WANHOOK_DASHSCOPE_TIMEOUT=str(TIMEOUT), WANHOOK_DOWNLOAD_ATTEMPTS=str(ATTEMPTS))
    return stack.start()


def counter(stack: Stack, name: str) -> int:
    return int(stack.redis.hget("{wanhook}:counters", name) or 0)


def emulator_tasks(stack: Stack) -> list[dict[str, Any]]:
    return httpx.get(stack.emulator.url + "/_emulator/tasks", timeout=30).json()["tasks"]


def warnings_about(stack: Stack, task_id: str) -> list[str]:
    """The server's warning lines that name the task (the log is one JSON object a line)."""
    found = []
    for line in stack.server.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("level") == "warning" and task_id in line:
            found.append(str(record.get("message")))
    return found


def reads_of(stack: Stack, task: dict[str, Any]) -> int:
    return int(stack.emulator.stats()["reads_by_task"].get(task["dashscope"]["task_id"], 0))


def assert_download_settled(stack: Stack) -> None:
    """No download job left, pending or not: nothing will read or fetch for the task again."""
    assert stack.redis.xlen("{wanhook}:jobs:download") == 0
    assert stack.redis.xpending("{wanhook}:jobs:download", "downloaders")["pending"] == 0


# Creates


def test_create_server_errors_keep_the_task_queued_with_backoff(faulty: Stack) -> None:
    faulty.emulator.configure(create_errors=[SERVER_ERROR] * 3)
    started = time.monotonic()
    task_id = faulty.create("patience through 500s")["id"]
    wait_for(lambda: faulty.emulator.stats()["creates"] >= 2, 30, what="a second create")
    status, creates = faulty.task(task_id)["status"], faulty.emulator.stats()["creates"]
    assert status == "queued" or creates == 4, (status, creates)
    task = faulty.wait_status(task_id, "ready", timeout=60)
    elapsed = time.monotonic() - started
    # One create per injected error and one that went through: no hot loop, and no duplicate. (Were a
    # healthy call to time out on a slow machine, the list check would adopt its task: still 4.)
    assert faulty.emulator.stats()["creates"] == 4
    assert len(emulator_tasks(faulty)) == 1
    assert counter(faulty, "submissions_retried") >= 3
    # The model paused between the attempts: at least 0.5 + 1 + 2 s (the jittered doubling backoff).
    assert elapsed >= 3.5
    assert task["error"] is None and task["video"]
    assert sum("InternalError" in message for message in warnings_about(faulty, task_id)) == 3
    assert_consistent(faulty.redis)


def test_create_answers_that_are_not_json_are_retried_with_a_clear_error(faulty: Stack) -> None:
    faulty.emulator.configure(create_errors=[{"status": 502, "body": HTML_502}, GARBAGE, WRONG_SHAPE])
    task_id = faulty.create("through a broken proxy")["id"]
    task = faulty.wait_status(task_id, "ready", timeout=60)
    assert faulty.emulator.stats()["creates"] == 4
    assert [t["task_id"] for t in emulator_tasks(faulty)] == [task["dashscope"]["task_id"]]
    assert counter(faulty, "submissions_retried") >= 3
    # Before each retry, DashScope's list was checked for a create that landed after all.
    assert faulty.emulator.stats()["lists"] >= 3
    messages = warnings_about(faulty, task_id)
    assert sum("InvalidResponse" in message for message in messages) == 3, messages
    assert any("502" in message and "not JSON" in message for message in messages), messages
    assert_consistent(faulty.redis)


def test_create_that_landed_with_a_garbled_answer_is_adopted(faulty: Stack) -> None:
    faulty.emulator.configure(create_errors=[{**GARBAGE, "land": True}])
    task = faulty.wait_status(faulty.create("landed, answer garbled")["id"], "ready", timeout=60)
    assert faulty.emulator.stats()["creates"] == 1
    assert [t["task_id"] for t in emulator_tasks(faulty)] == [task["dashscope"]["task_id"]]
    assert counter(faulty, "submissions_adopted") == 1
    assert_consistent(faulty.redis)


@pytest.mark.parametrize("landed", [True, False], ids=["landed", "lost"])
def test_hanging_create_times_out_then_the_list_decides(faulty: Stack, landed: bool) -> None:
    # Landed: the task exists and its answer comes after wanhook gave up. Lost: a gateway timeout later.
    hang = {"delay_seconds": HANG} if landed else {"delay_seconds": HANG, "status": 504, "code": "GatewayTimeout"}
    faulty.emulator.configure(create_errors=[hang])
    task_id = faulty.create(f"hanging create, {'landed' if landed else 'lost'}")["id"]
    task = faulty.wait_status(task_id, "ready", timeout=60)
    assert faulty.emulator.stats()["creates"] == (1 if landed else 2)
    assert [t["task_id"] for t in emulator_tasks(faulty)] == [task["dashscope"]["task_id"]]  # never two
    assert counter(faulty, "submissions_adopted") == (1 if landed else 0)
    assert faulty.emulator.stats()["lists"] >= 1
    if not landed:
        assert any("Timeout" in message for message in warnings_about(faulty, task_id))
    assert_consistent(faulty.redis)


# The read after the completion event


def test_failing_reads_are_retried_and_the_task_ends_ready(faulty: Stack) -> None:
    faulty.emulator.configure(read_errors=[SERVER_ERROR, {"status": 502, "body": HTML_502}, {"delay_seconds": HANG}])
    task_id = faulty.create("read through 500, 502 and a hang")["id"]
    task = faulty.wait_status(task_id, "ready", timeout=60)
    assert task["error"] is None and task["video"]
    # Three failed and one answered; a fifth only if a healthy read timed out on a very slow machine.
    assert 4 <= reads_of(faulty, task) <= ATTEMPTS
    assert counter(faulty, "download_retries") == reads_of(faulty, task) - 1
    assert_download_settled(faulty)
    assert_consistent(faulty.redis)


def test_reads_failing_every_attempt_fail_the_task_with_a_clear_error(faulty: Stack) -> None:
    faults = [GARBAGE, WRONG_SHAPE, SERVER_ERROR] * 3  # more than the attempts allow
    faulty.emulator.configure(read_errors=faults)
    task_id = faulty.create("reads answer garbage")["id"]
    task = faulty.wait_status(task_id, timeout=60)
    assert task["status"] == "failed"
    assert task["error"]["code"] == "DownloadFailed"
    assert f"after {ATTEMPTS} attempts" in task["error"]["message"]
    assert "reading the DashScope task" in task["error"]["message"]
    assert reads_of(faulty, task) == ATTEMPTS
    assert_download_settled(faulty)
    left = httpx.get(faulty.emulator.url + "/_emulator/config", timeout=10).json()["read_errors"]
    assert len(left) == len(faults) - ATTEMPTS
    assert_consistent(faulty.redis)
