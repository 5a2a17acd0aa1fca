"""The webhook against strangers: no open webhook by accident, and bounded records of what they send."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import httpx

from wanhook.service.persistence import audit

from ..conftest import TOKEN, Stack
from ..support import ROOT, Process, Wanhook, free_port, wanhook

EVENT = {
    "specversion": "1.0",
    "source": "acs.dashscope",
    "type": "dashscope:System:AsyncTaskFinish",
    "data": {
        "task_status": "FAILED",
        "user_api_unique_key": "apikey:v1:aigc:video-generation:video-synthesis:wan2.2-t2v-plus",
    },
}


def clean_env(**extra: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("WANHOOK_", "DASHSCOPE_"))}
    return {**environment, "PYTHONPATH": str(ROOT), **extra}


def test_serve_refuses_an_open_webhook_on_a_public_address(
    tmp_path: Path, redis_url: str, processes: list[Process]
) -> None:
    env = clean_env(
        WANHOOK_API_TOKENS="client-token", WANHOOK_REDIS_URL=redis_url, WANHOOK_DATA_DIR=str(tmp_path / "data")
    )
    refused = subprocess.run(
        wanhook("serve", "--host", "0.0.0.0", "--port", str(free_port())),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2, refused.stderr
    message = refused.stderr.strip().splitlines()
    assert len(message) == 1 and message[0].startswith("wanhook serve: refusing to serve the EventBridge webhook")
    assert "WANHOOK_EVENTBRIDGE_TOKEN" in message[0] and "WANHOOK_EVENTBRIDGE_ALLOW_UNAUTHENTICATED" in message[0]

    # The operator who says so gets an open webhook; so does one with a token or signature checks.
    for setting in (
        {"WANHOOK_EVENTBRIDGE_ALLOW_UNAUTHENTICATED": "1"},
        {"WANHOOK_EVENTBRIDGE_TOKEN": TOKEN},
        {"WANHOOK_EVENTBRIDGE_VERIFY": "signature"},
    ):
        server = Wanhook(tmp_path, {**env, **setting}, "--host", "0.0.0.0", "--no-workers")
        processes.append(server.launch())
        server.wait_ready()
        assert httpx.get(server.url + "/readyz", timeout=10).status_code == 200
        server.stop()


def test_unknown_task_events_leave_a_bounded_record(stack: Stack) -> None:
    # About 200 KiB, under EventBridge's 256 KiB; a message and an id far beyond anything DashScope sends.
    event = {
        **EVENT,
        "id": "evt-big",
        "data": {**EVENT["data"], "task_id": "ds-nobody-knows", "message": "m" * 20_000, "padding": "é" * 100_000},
    }
    body = json.dumps(event, ensure_ascii=False).encode()
    assert 190 * 1024 < len(body) < 256 * 1024
    answer = stack.http.post(
        "/v1/events/dashscope",
        content=body,
        headers={"x-eventbridge-signature-token": TOKEN, "content-type": "application/json"},
    )
    assert answer.status_code == 200 and answer.json()["outcome"] == "unknown_task"

    [(_, entry)] = stack.redis.xrevrange("{wanhook}:events", count=1)
    assert entry["outcome"] == "unknown_task" and entry["ds_task_id"] == "ds-nobody-knows"
    assert "body" not in entry
    assert entry["body_sha256"] == hashlib.sha256(body).hexdigest() and entry["body_bytes"] == str(len(body))
    prefix = entry["body_prefix"].encode()
    assert 500 <= len(prefix) <= 512 and body.startswith(prefix)  # cut at a character's edge
    # The early record keeps what applying the event would need, each part bounded.
    early = stack.redis.get("{wanhook}:early:ds-nobody-knows")
    assert early is not None and len(early) < 2048
    assert json.loads(early)["status"] == "FAILED"

    # Identifiers no DashScope event has: the deduplication key and the audit entry stay small, and a
    # redelivery is still a duplicate.
    strange = {
        **EVENT,
        "id": "i" * 50_000,
        "source": "acs.dashscope",
        "data": {**EVENT["data"], "task_id": "t" * 50_000},
    }
    assert stack.push(strange).json()["outcome"] == "unknown_task"
    assert stack.push(strange).json()["outcome"] == "duplicate"
    [(_, entry)] = stack.redis.xrevrange("{wanhook}:events", count=1)
    assert sum(len(key) + len(value) for key, value in entry.items()) < 2048
    assert all(len(key) < 600 for key in stack.redis.scan_iter("{wanhook}:seen:*"))
    assert not stack.redis.exists("{wanhook}:early:" + "t" * 50_000)


def test_events_of_known_tasks_keep_their_body(stack: Stack) -> None:
    task = stack.wait_status(stack.create("a lighthouse in fog")["id"], "ready")
    entries = stack.redis.xrange("{wanhook}:events")
    [entry] = [fields for _, fields in entries if fields["task"] == task["id"] and fields["outcome"] == "applied"]
    body = audit.decode_body(entry)
    assert body is not None
    # Kept deflated against the dictionary of DashScope's event: a quarter of its size.
    assert len(entry[audit.DEFLATED_1]) < len(body) / 3 and "body" not in entry
    assert json.loads(body)["data"]["task_id"] == task["dashscope"]["task_id"]
    assert entry["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_audit_entries_stay_under_their_documented_size(stack: Stack) -> None:
    from wanhook.service.persistence import keys

    # Every identifier far over its bound, and a large body: the entry still fits its share of the budget.
    event = {
        **EVENT,
        "id": "x" * 10_000,
        "source": "s" * 10_000,
        "type": "t" * 10_000,
        "data": {"task_id": "d" * 10_000, "task_status": "z" * 10_000, "padding": "p" * 200_000},
    }
    assert stack.push(event).json()["outcome"] == "ignored"
    [(_, entry)] = stack.redis.xrevrange("{wanhook}:events", count=1)
    size = sum(len(key.encode()) + len(value.encode()) for key, value in entry.items())
    assert size <= keys.EVENT_LOG_ENTRY_MAX_BYTES


def test_early_records_are_bounded_in_number(stack: Stack) -> None:
    """Events for ids no create claims keep at most EARLY_EVENTS_MAX early records, the newest: past the cap
    each one still is recorded and acknowledged, and Redis grows by its audit entry and deduplication key
    only. A real task's event that raced ahead of its create still applies (the newest is always kept)."""
    from wanhook.service.persistence import keys

    cap = keys.EARLY_EVENTS_MAX
    # As much as an early record keeps: a video URL of 4,000 characters, a message of 1,000.
    url = "https://videos.example/" + "v" * 3_977

    def event(number: int) -> dict[str, object]:
        data = {
            **EVENT["data"],
            "task_id": f"ds-stranger-{number:05}",
            "task_status": "SUCCEEDED",
            "message": "m" * 1_000,
            "contain_result": True,
            "output_result": {"video_url": url},
        }
        return {**EVENT, "id": f"evt-stranger-{number}", "data": data}

    def send(numbers: range) -> None:
        headers = {"x-eventbridge-signature-token": TOKEN}
        with httpx.Client(base_url=stack.http.base_url, headers=headers, timeout=30) as client:
            for number in numbers:
                answer = client.post("/v1/events/dashscope", json=event(number))
                assert answer.status_code == 200 and answer.json()["outcome"] == "unknown_task", answer.text

    def memory() -> int:
        return int(stack.redis.info("memory")["used_memory"])

    def early_records() -> int:
        return sum(1 for _ in stack.redis.scan_iter("{wanhook}:early:*", count=1000))

    send(range(cap))
    assert early_records() == cap
    filled = memory()
    send(range(cap, 3 * cap))
    grown = memory() - filled
    # The newest cap records are kept, the 2 * cap before them dropped (and counted).
    assert early_records() == cap and stack.redis.zcard(keys.EARLY_EVENTS) == cap
    assert not stack.redis.exists("{wanhook}:early:ds-stranger-00000")
    assert stack.redis.exists(f"{{wanhook}}:early:ds-stranger-{3 * cap - 1:05}")
    assert stack.redis.hget(keys.COUNTERS, "events_early_evicted") == str(2 * cap)
    # Each event past the cap costs its audit entry (about 1.6 KB) and its deduplication key, not the
    # 5 KB more of an early record of its own.
    per_event = grown / (2 * cap)
    print(f"\n{2 * cap} unknown-task events past the cap: Redis grew {grown} bytes ({per_event:.0f} per event)")
    assert per_event < 2_500, per_event
