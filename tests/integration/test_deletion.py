"""DELETE /v1/tasks/{id} and `wanhook delete`: a task and everything kept for it go, in every state.

Real processes throughout: the emulator stands in for DashScope, a wanhook server with its workers.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx

from ..conftest import Stack
from ..support import Process, wait_for, wanhook

MODEL = "wan2.2-t2v-plus"


def start(tmp_path: Path, redis_url: str, processes: list[Process], **env: str) -> Stack:
    stack = Stack(tmp_path, redis_url, processes)
    stack.env.update(env)
    return stack.start()


def keys_of(stack: Stack, task_id: str) -> list[str]:
    """Every key that names the task, and every index entry that holds it."""
    found = [key for key in stack.redis.scan_iter("{wanhook}:*") if task_id in key]
    for key in stack.redis.scan_iter("{wanhook}:*"):
        kind = stack.redis.type(key)
        if kind == "zset" and any(task_id in member for member in stack.redis.zrange(key, 0, -1)):
            found.append(f"{key} (member)")
        elif kind == "list" and task_id in stack.redis.lrange(key, 0, -1):
            found.append(f"{key} (item)")
    # The tombstone is meant to stay (a day); a submission rate window holds the task while the window
    # lasts, as every sent task does: it counts DashScope's submissions, not wanhook's tasks.
    return [key for key in found if not key.startswith(("{wanhook}:deleted:", "{wanhook}:rate:submit:"))]


def event(ds_id: str, status: str = "SUCCEEDED", event_id: str = "late") -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "acs.dashscope",
        "type": "dashscope:System:AsyncTaskFinish",
        "data": {"task_id": ds_id, "task_status": status},
    }


def emulator_tasks(stack: Stack) -> dict[str, dict[str, Any]]:
    tasks = httpx.get(stack.emulator.url + "/_emulator/tasks", timeout=30).json()["tasks"]
    return {task["prompt"]: task for task in tasks}


def test_delete_in_each_state(tmp_path: Path, redis_url: str, processes: list[Process]) -> None:
    # wanhook allows 2 at once while the emulator runs 1: the second waits PENDING at DashScope.
    stack = start(tmp_path, redis_url, processes, WANHOOK_LIMITS=f"{MODEL}=5/2", WANHOOK_CALLBACK_ALLOW_PRIVATE="1")
    ready = stack.wait_status(stack.create("ready", callback={"url": "http://127.0.0.1:9/hook"})["id"], "ready")
    video = Path(ready["video"]["path"])
    assert video.exists()
    stack.emulator.configure(render_seconds=8, limits={MODEL: {"rps": 5, "running": 1}})
    running = stack.create("running")
    pending = stack.create("pending")
    queued = stack.create("queued")
    stack.wait_status(running["id"], "submitted")
    stack.wait_status(pending["id"], "submitted")

    # Queued: it leaves its queue, and never reaches DashScope.
    answer = stack.http.delete(f"/v1/tasks/{queued['id']}")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["deleted"] is True and body["already_deleted"] is False
    assert body["removed"]["from_queue"] is True and body["removed"]["task"] is True
    assert body["removed"]["change_stream"] is True and body["removed"]["index_entries"] == 5
    assert stack.http.get(f"/v1/tasks/{queued['id']}").status_code == 404
    assert keys_of(stack, queued["id"]) == []

    # Pending at DashScope: canceled there first, then deleted.
    answer = stack.http.delete(f"/v1/tasks/{pending['id']}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["removed"]["canceled_at_dashscope"] is True
    assert emulator_tasks(stack)["pending"]["status"] == "CANCELED"
    assert keys_of(stack, pending["id"]) == []

    # Running at DashScope: it can no longer be canceled, so it is not deleted; nothing changes.
    late = stack.http.delete(f"/v1/tasks/{running['id']}")
    assert late.status_code == 409 and late.json()["error"]["code"] == "too_late"
    assert "PENDING" in late.json()["error"]["message"]
    assert stack.task(running["id"])["status"] == "submitted"

    # Ready: the task, its deliveries and its video go.
    answer = stack.http.delete(f"/v1/tasks/{ready['id']}")
    assert answer.status_code == 200, answer.text
    removed = answer.json()["removed"]
    assert removed["video"] is True and removed["callback_deliveries"] == 1 and removed["task"] is True
    assert not video.exists()
    assert stack.http.get(f"/v1/tasks/{ready['id']}/video").status_code == 404
    assert ready["id"] not in {task["id"] for task in stack.http.get("/v1/tasks").json()["tasks"]}
    ds_id = ready["dashscope"]["task_id"]
    assert keys_of(stack, ready["id"]) == []
    # Its DashScope task's mapping stays a day, so that a late event finds the task gone, not unknown.
    assert 0 < stack.redis.ttl(f"{{wanhook}}:ds:{ds_id}") <= 24 * 3600

    # Deleting twice is harmless, and says so.
    again = stack.http.delete(f"/v1/tasks/{ready['id']}")
    assert again.status_code == 200 and again.json()["already_deleted"] is True

    # A completion event for the deleted task is acknowledged and ignored: nothing comes back.
    pushed = stack.push(event(ds_id, event_id="after-deletion"))
    assert pushed.status_code == 200 and pushed.json()["outcome"] == "stale"
    assert stack.http.get(f"/v1/tasks/{ready['id']}").status_code == 404
    assert keys_of(stack, ready["id"]) == []
    assert not list(stack.redis.scan_iter("{wanhook}:early:*"))

    # The running one, once ended, is deleted too; the counters say what happened.
    stack.wait_status(running["id"], "ready", timeout=60)
    assert stack.http.delete(f"/v1/tasks/{running['id']}").status_code == 200
    assert stack.redis.zcard("{wanhook}:slots:" + MODEL) == 0
    assert stack.redis.hget("{wanhook}:counters", "tasks_deleted") == "4"
    assert "\nwanhook_tasks_deleted_total 4.0\n" in stack.http.get("/metrics").text


def test_only_the_owner_deletes(tmp_path: Path, redis_url: str, processes: list[Process]) -> None:
    stack = start(tmp_path, redis_url, processes, WANHOOK_API_TOKENS="alpha,beta")
    alpha = httpx.Client(base_url=stack.url, headers={"Authorization": "Bearer alpha"}, timeout=30)
    beta = httpx.Client(base_url=stack.url, headers={"Authorization": "Bearer beta"}, timeout=30)
    task = alpha.post("/v1/tasks", json={"prompt": "mine", "size": "832*480"}).json()
    wait_for(lambda: alpha.get(f"/v1/tasks/{task['id']}").json()["status"] == "ready", 60, what="ready")
    refused = beta.delete(f"/v1/tasks/{task['id']}")
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "task_not_found"
    assert alpha.get(f"/v1/tasks/{task['id']}").status_code == 200
    assert httpx.delete(f"{stack.url}/v1/tasks/{task['id']}").status_code == 401
    assert alpha.delete(f"/v1/tasks/{task['id']}").status_code == 200
    # Another token learns nothing from the tombstone either.
    assert beta.delete(f"/v1/tasks/{task['id']}").status_code == 404
    assert alpha.delete(f"/v1/tasks/{task['id']}").json()["already_deleted"] is True


def test_a_deleted_idempotency_key_creates_anew(stack: Stack) -> None:
    headers = {"Idempotency-Key": "order-7"}
    body = {"prompt": "once", "size": "832*480"}
    first = stack.http.post("/v1/tasks", json=body, headers=headers).json()
    stack.wait_status(first["id"], "ready")
    assert stack.http.delete(f"/v1/tasks/{first['id']}").status_code == 200
    second = stack.http.post("/v1/tasks", json=body, headers=headers)
    assert second.status_code == 202 and second.json()["id"] != first["id"]


def test_cli_delete(stack: Stack) -> None:
    task = stack.wait_status(stack.create("by the command line")["id"], "ready")
    command = [*wanhook("delete", task["id"]), "--server", stack.url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "deleted" in done.stdout and task["id"] in done.stdout
    assert stack.http.get(f"/v1/tasks/{task['id']}").status_code == 404
    missing = subprocess.run(
        [*wanhook("delete", "nope"), "--server", stack.url], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 1 and "task_not_found" in missing.stderr


def test_a_task_deleted_while_its_create_is_in_flight_is_canceled_at_dashscope(
    tmp_path: Path, redis_url: str, processes: list[Process]
) -> None:
    # wanhook allows 2 at once while the emulator runs 1: the second waits PENDING at DashScope.
    stack = start(tmp_path, redis_url, processes, WANHOOK_LIMITS=f"{MODEL}=5/2")
    stack.emulator.configure(render_seconds=30, limits={MODEL: {"rps": 5, "running": 1}})
    stack.wait_status(stack.create("holds the running slot")["id"], "submitted")
    stack.emulator.configure(create_answer_delay_seconds=3)
    task = stack.create("deleted before its create answers")
    # The create has landed at DashScope; wanhook has not heard back yet.
    wait_for(lambda: "deleted before its create answers" in emulator_tasks(stack), 10, what="the create to land")
    assert stack.task(task["id"])["status"] == "queued"
    answer = stack.http.delete(f"/v1/tasks/{task['id']}")
    assert answer.status_code == 200 and answer.json()["removed"]["from_queue"] is True
    # The late answer finds the tombstone: the DashScope task is canceled, not left running unseen.
    wait_for(
        lambda: emulator_tasks(stack)["deleted before its create answers"]["status"] == "CANCELED",
        20,
        what="the DashScope task to be canceled",
    )
    wait_for(
        lambda: stack.redis.hget("{wanhook}:counters", "events_stale") == "1", 20, what="its CANCELED event, stale"
    )
    assert stack.http.get(f"/v1/tasks/{task['id']}").status_code == 404
    assert keys_of(stack, task["id"]) == []
    assert not list(stack.redis.scan_iter("{wanhook}:early:*"))
    assert not stack.redis.hlen("{wanhook}:orphans")
