"""Tokens kept apart and bounded: each lists from its own index, its queued-task limit holds under
parallel creates, an Idempotency-Key names one request, and no URL's password reaches the logs."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from wanhook.service.core.redact import redact_url
from wanhook.service.observability.logs import redact
from wanhook.service.persistence import keys
from wanhook.service.persistence.store import TaskStore

from ..conftest import Stack
from ..invariants import assert_consistent
from ..receiver import CallbackReceiver
from ..support import Process, RedisServer, Wanhook, wait_for

MODEL = "wan2.2-t2v-plus"


def digest(token: str) -> str:
    """The owner of a token's tasks, as the API computes it."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def client(stack: Stack, token: str) -> httpx.Client:
    return httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def create(http: httpx.Client, prompt: str, **headers: str) -> httpx.Response:
    return http.post("/v1/tasks", json={"prompt": prompt, "size": "832*480"}, headers=headers)


def listed(http: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """Every task the token sees, page by page; checks that each page is full but the last."""
    tasks: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = http.get("/v1/tasks", params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        tasks += page["tasks"]
        cursor = page["next_cursor"]
        if cursor is None:
            return tasks
        assert len(page["tasks"]) == int(params.get("limit", 20))


def start(tmp_path: Path, redis_url: str, processes: list[Process], **env: str) -> Stack:
    stack = Stack(tmp_path, redis_url, processes)
    stack.env.update(WANHOOK_LIMITS=f"{MODEL}=20/1", WANHOOK_RATE_LIMIT="10000", **env)
    return stack.start()


def hold_the_only_slot(stack: Stack, http: httpx.Client) -> dict[str, Any]:
    """A task that renders for ten minutes in the model's one slot: whatever is created next stays queued."""
    stack.emulator.configure(render_seconds=600)
    task = create(http, "holds the slot").json()
    wait_for(
        lambda: http.get(f"/v1/tasks/{task['id']}").json()["status"] == "submitted", 30, what="the slot to be taken"
    )
    return task


def test_a_token_lists_its_own_tasks_from_its_own_index(
    tmp_path: Path, redis_url: str, processes: list[Process]
) -> None:
    stack = start(tmp_path, redis_url, processes, WANHOOK_API_TOKENS="alpha,beta")
    alpha, beta = client(stack, "alpha"), client(stack, "beta")
    ready = [create(beta, f"beta ready {n}").json()["id"] for n in range(3)]
    for task_id in ready:
        wait_for(
            lambda task_id=task_id: beta.get(f"/v1/tasks/{task_id}").json()["status"] == "ready",
            60,
            what="beta's first tasks to be ready",
        )
    hold_the_only_slot(stack, alpha)
    crowd = [create(alpha, f"alpha {n}") for n in range(30)]
    assert {r.status_code for r in crowd} == {202}
    waiting = create(beta, "beta waits").json()["id"]
    canceled = create(beta, "beta cancels").json()["id"]
    assert beta.post(f"/v1/tasks/{canceled}/cancel").json()["status"] == "canceled"

    # Newest first, across every status, in pages of two.
    mine = listed(beta, limit=2)
    assert [t["id"] for t in mine] == [canceled, waiting, *reversed(ready)]
    assert [t["status"] for t in mine] == ["canceled", "queued", "ready", "ready", "ready"]
    assert [t["id"] for t in listed(beta, status="ready", limit=2)] == list(reversed(ready))
    assert [t["id"] for t in listed(beta, status="queued")] == [waiting]
    assert [t["id"] for t in listed(beta, status="canceled")] == [canceled]
    assert listed(beta, status="submitted") == []
    assert len(listed(alpha, status="queued", limit=7)) == 30
    assert len(listed(alpha, limit=100)) == 31

    # The cost of a page: beta's five tasks are all its listing reads, though alpha's 31 are newer.
    stack.redis.config_resetstat()
    assert len(beta.get("/v1/tasks", params={"limit": 5}).json()["tasks"]) == 5
    stats = stack.redis.info("commandstats")
    assert stats.get("cmdstat_hgetall", {}).get("calls", 0) <= 5 + 1  # one more: a worker may read a task
    assert stats["cmdstat_zrevrangebylex"]["calls"] == 1
    assert stack.redis.zcard(keys.owner_tasks(digest("beta"))) == 5
    assert stack.redis.zcard(keys.owner_tasks(digest("alpha"), "queued")) == 30
    assert_consistent(stack.redis)


def test_tasks_stored_before_the_token_indexes_are_listed_after_an_upgrade(
    tmp_path: Path, redis_url: str, processes: list[Process]
) -> None:
    stack = start(tmp_path, redis_url, processes, WANHOOK_API_TOKENS="alpha,beta")
    alpha, beta = client(stack, "alpha"), client(stack, "beta")
    done = create(beta, "beta ready").json()["id"]
    wait_for(lambda: beta.get(f"/v1/tasks/{done}").json()["status"] == "ready", 60, what="beta's task")
    hold_the_only_slot(stack, alpha)
    waiting = create(beta, "beta waits").json()["id"]
    # As an earlier version left them: the tasks and their global indexes, no index per token.
    stack.server.stop()
    for key in stack.redis.scan_iter(match=keys.OWNER + "*"):
        stack.redis.delete(key)
    stack.redis.delete(keys.OWNER_INDEX_READY)

    stack.serve(stack.port)
    assert stack.redis.get(keys.OWNER_INDEX_READY) == "1"
    assert [(t["id"], t["status"]) for t in listed(beta)] == [(waiting, "queued"), (done, "ready")]
    assert [t["id"] for t in listed(beta, status="queued")] == [waiting]
    assert len(listed(alpha)) == 1
    assert_consistent(stack.redis)
    assert beta.post(f"/v1/tasks/{waiting}/cancel").status_code == 200  # indexed tasks move on as any other
    assert [t["id"] for t in listed(beta, status="canceled")] == [waiting]
    assert listed(beta, status="queued") == []
    assert_consistent(stack.redis)


async def test_indexing_runs_in_batches_and_keeps_changes_made_meanwhile(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    store = TaskStore(redis)
    try:
        ids = [await store.create({"model": MODEL, "prompt": f"p{n}", "owner": f"{n % 3:016x}"}) for n in range(25)]
        for owner in range(3):
            for key in (keys.owner_tasks(f"{owner:016x}"), keys.owner_tasks(f"{owner:016x}", "queued")):
                await redis.delete(key)
        # One task moves on before indexing: it enters its token's indexes by that change.
        assert await store.transition(ids[0], "canceled")
        assert await store.index_owners(batch=7) == 25
        assert await store.index_owners(batch=7) == 0  # once per installation
        for owner in range(3):
            mine = {n for n in range(25) if n % 3 == owner}
            members = await redis.zrange(keys.owner_tasks(f"{owner:016x}"), 0, -1)
            assert {m.decode().split(":")[1] for m in members} == {ids[n] for n in mine}
        canceled = await redis.zrange(keys.owner_tasks(f"{0:016x}", "canceled"), 0, -1)
        assert [m.decode().split(":")[1] for m in canceled] == [ids[0]]
        assert await redis.zcard(keys.owner_tasks(f"{0:016x}", "queued")) == 8
    finally:
        await redis.aclose()
    import redis as sync_redis

    assert_consistent(sync_redis.Redis.from_url(redis_url, decode_responses=True))


def test_parallel_creates_stop_at_the_queued_limit(tmp_path: Path, redis_url: str, processes: list[Process]) -> None:
    stack = start(tmp_path, redis_url, processes, WANHOOK_API_TOKENS="busy", WANHOOK_MAX_QUEUED_PER_TOKEN="10")
    busy = client(stack, "busy")
    hold_the_only_slot(stack, busy)
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda n: create(busy, f"parallel {n}"), range(50)))
    statuses = [r.status_code for r in answers]
    assert statuses.count(202) == 10 and statuses.count(429) == 40, statuses
    assert {r.json()["error"]["code"] for r in answers if r.status_code == 429} == {"too_many_queued"}
    assert all(r.headers["retry-after"] for r in answers if r.status_code == 429)
    assert stack.redis.llen(keys.QUEUE + MODEL + ":" + digest("busy")) == 10
    assert stack.redis.zcard(keys.TASKS_ALL) == 11  # the refused ones left nothing behind
    assert_consistent(stack.redis)


def test_an_idempotency_key_names_one_request(tmp_path: Path, redis_url: str, processes: list[Process]) -> None:
    stack = start(tmp_path, redis_url, processes, WANHOOK_API_TOKENS="alpha,beta", WANHOOK_MAX_QUEUED_PER_TOKEN="1")
    alpha, beta = client(stack, "alpha"), client(stack, "beta")
    hold_the_only_slot(stack, alpha)
    body = {"prompt": "once only", "size": "832*480", "metadata": {"order": "42"}}
    first = alpha.post("/v1/tasks", json=body, headers={"Idempotency-Key": "order-42"})
    assert first.status_code == 202
    # The queue is full now; a retry of the same request still gets its task, not 429.
    again = alpha.post("/v1/tasks", json=body, headers={"Idempotency-Key": "order-42"})
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    # The same request written otherwise: keys in another order, the default model spelled out.
    respelled = alpha.post(
        "/v1/tasks",
        headers={"Idempotency-Key": "order-42", "Content-Type": "application/json"},
        content=b'{"metadata": {"order": "42"}, "model": "wan2.2-t2v-plus", "size": "832*480", "prompt": "once only"}',
    )
    assert respelled.status_code == 202 and respelled.json()["id"] == first.json()["id"]
    created = stack.redis.hget(keys.COUNTERS, "tasks_created")

    for changed in ({**body, "prompt": "twice?"}, {**body, "metadata": {"order": "43"}}, {**body, "seed": 7}):
        reused = alpha.post("/v1/tasks", json=changed, headers={"Idempotency-Key": "order-42"})
        assert reused.status_code == 422, reused.text
        error = reused.json()["error"]
        assert error["code"] == "idempotency_key_reused" and first.json()["id"] in error["message"]
        assert set(reused.json()) == {"error"}
    assert stack.redis.hget(keys.COUNTERS, "tasks_created") == created
    assert stack.redis.zcard(keys.TASKS_ALL) == 2
    assert alpha.get(f"/v1/tasks/{first.json()['id']}").json()["prompt"] == "once only"

    # Keys are per token: beta's "order-42" is its own.
    other = beta.post("/v1/tasks", json={**body, "prompt": "beta's"}, headers={"Idempotency-Key": "order-42"})
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]
    # A key kept from before digests were stored answers its task whatever the body, as it did then.
    stack.redis.hdel(keys.TASK + first.json()["id"], "request_digest")
    old = alpha.post("/v1/tasks", json={**body, "prompt": "anything"}, headers={"Idempotency-Key": "order-42"})
    assert old.status_code == 202 and old.json()["id"] == first.json()["id"]
    assert_consistent(stack.redis)


def test_callback_passwords_stay_out_of_the_log(tmp_path: Path, redis_url: str, processes: list[Process]) -> None:
    stack = start(tmp_path, redis_url, processes, WANHOOK_CALLBACK_ALLOW_PRIVATE="1", WANHOOK_CALLBACK_SCHEDULE="0,0.3")
    secret = "s3cret-Pa55word"
    with CallbackReceiver() as receiver:
        url = receiver.url.replace("http://", f"http://alice:{secret}@")
        task = stack.create("with a password in its callback", callback={"url": url})
        stack.wait_status(task["id"], "ready")
        wait_for(lambda: len(receiver.received) >= 1, 30, what="the callback")
        assert receiver.received[0].headers["authorization"].startswith("Basic ")  # the userinfo was used
    wait_for(
        lambda: [d["status"] for d in stack.task(task["id"])["callbacks"]] == ["delivered"],
        10,
        what="the delivery to be recorded",
    )
    log = stack.server.log()
    assert secret not in log and "alice" not in log
    assert "http://<redacted>@127.0.0.1" in log


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("to https://user:pass@host/a?Signature=x", "to https://<redacted>@host/a?<redacted>"),
        ("redis://:hunter2@10.0.0.5:6379/0 refused", "redis://<redacted>@10.0.0.5:6379/0 refused"),
        (
            "rediss+sentinel://:pw/with/slashes@h1:26379,h2:26379/main",
            "rediss+sentinel://<redacted>@h1:26379,h2:26379/main",
        ),
        ("https://host/path ok", "https://host/path ok"),
    ],
)
def test_userinfo_is_redacted_from_every_log_line(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_redact_url_drops_userinfo() -> None:
    assert redact_url("https://user:pass@host:8443/hook?token=1") == "https://<redacted>@host:8443/hook?<redacted>"
    assert redact_url("redis://:hunter2@127.0.0.1:6379/0") == "redis://<redacted>@127.0.0.1:6379/0"
    assert redact_url("https://host/hook") == "https://host/hook"


def test_the_redis_password_stays_out_of_the_log(tmp_path: Path, processes: list[Process]) -> None:
    password = "hunter2-redis-Pa55"
    server = RedisServer(tmp_path / "redis")
    server.args += ["--requirepass", password]
    server.url = f"redis://:{password}@127.0.0.1:{server.port}/0"
    processes.append(server.start())
    stack = Stack(tmp_path, server.url, processes).start()
    stack.wait_status(stack.create("behind a password")["id"], "ready")
    # A wrong password: serve cannot start, and says why in one line without writing the password it was given.
    wrong = Wanhook(tmp_path, {**stack.env, "WANHOOK_REDIS_URL": f"redis://:not-{password}@127.0.0.1:{server.port}/0"})
    processes.append(wrong.launch())
    assert wrong.proc is not None and wrong.proc.wait(30) == 2  # a setting to fix, not an unreachable Redis
    for log in (stack.server.log(), wrong.log()):
        assert password not in log
    failure = wrong.log().strip().splitlines()
    assert len(failure) == 1 and failure[0].startswith("wanhook serve: WANHOOK_REDIS_URL: ")
    assert "refused the credentials" in failure[0] and "Traceback" not in wrong.log()
