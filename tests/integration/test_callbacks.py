"""Telling the submitter without being asked: signed callbacks with retries, the live event stream."""

from __future__ import annotations

import json
import signal
import statistics
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from svix.webhooks import Webhook as SvixWebhook
from svix.webhooks import WebhookVerificationError

from ..conftest import Stack
from ..receiver import CallbackReceiver
from ..support import Process, wait_for

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def notifying(tmp_path: Path, redis_url: str, processes: list[Process]) -> Stack:
    stack = Stack(tmp_path, redis_url, processes)
    stack.env.update(
        WANHOOK_CALLBACK_SECRET=SECRET, WANHOOK_CALLBACK_ALLOW_PRIVATE="1", WANHOOK_CALLBACK_SCHEDULE="0,0.3,0.3"
    )
    return stack.start()


def verified(receiver: CallbackReceiver) -> list[dict]:
    """Every body received, checked by an independent implementation of Standard Webhooks (svix)."""
    verifier = SvixWebhook(SECRET)
    for item in receiver.received:
        verifier.verify(item.body, item.headers)  # raises on a bad signature or stale timestamp
    return [json.loads(item.body) for item in receiver.received]


def test_ready_callback_is_signed(notifying: Stack) -> None:
    with CallbackReceiver() as receiver:
        task = notifying.create("signed", callback={"url": receiver.url})
        notifying.wait_status(task["id"], "ready")
        wait_for(lambda: receiver.received, 30, what="the callback")
        (payload,) = verified(receiver)
        assert payload["type"] == "task.ready"
        assert payload["data"]["id"] == task["id"] and payload["data"]["status"] == "ready"
        assert payload["data"]["video"]["sha256"]
        datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00"))
        assert receiver.received[0].headers["webhook-id"] == f"msg_{task['id']}_ready"
        shown = notifying.task(task["id"])["callbacks"]
        assert [(d["event"], d["status"], d["attempts"]) for d in shown] == [("task.ready", "delivered", 1)]
        # Tampering is caught by the independent verifier.
        forged = dict(receiver.received[0].headers, **{"webhook-signature": "v1,AAAA"})
        with pytest.raises(WebhookVerificationError):
            SvixWebhook(SECRET).verify(receiver.received[0].body, forged)


def test_failing_receiver_gets_the_same_webhook_id_until_it_answers(notifying: Stack) -> None:
    with CallbackReceiver() as receiver:
        receiver.answers.extend([(500, {}), (503, {"Retry-After": "1"})])
        task = notifying.create("retried", callback={"url": receiver.url})
        notifying.wait_status(task["id"], "ready")
        (delivery,) = wait_for(
            lambda: [d for d in notifying.task(task["id"])["callbacks"] if d["status"] == "delivered"],
            30,
            what="the callback delivered",
        )
        assert delivery["attempts"] == 3 and delivery["last_outcome"] == "HTTP 200"
        assert [item.headers["webhook-id"] for item in receiver.received] == [f"msg_{task['id']}_ready"] * 3
        assert len({item.body for item in receiver.received}) == 1  # every retry carries the same bytes
        verified(receiver)
        # Retry-After: 1 was honoured over the 0.3 s schedule.
        assert receiver.received[2].at - receiver.received[1].at >= 0.95
        wait_for(lambda: notifying.redis.zcard("{wanhook}:callbacks:due") == 0, 10, what="nothing left to send")
        assert len(receiver.received) == 3


def test_every_requested_state_is_reported_once(notifying: Stack) -> None:
    with CallbackReceiver() as receiver:
        events = ["task.queued", "task.submitted", "task.downloading", "task.ready"]
        task = notifying.create("all of them", callback={"url": receiver.url, "events": events})
        notifying.wait_status(task["id"], "ready")
        wait_for(lambda: len(receiver.received) == 4, 30, what="four callbacks")
        assert sorted(payload["type"] for payload in verified(receiver)) == sorted(events)
        assert {d["status"] for d in notifying.task(task["id"])["callbacks"]} == {"delivered"}


def test_410_stops_and_dead_letters_are_replayed(notifying: Stack) -> None:
    with CallbackReceiver(default=500) as receiver:
        gone = notifying.create("gone", callback={"url": receiver.url})
        receiver.answers.append((410, {}))
        notifying.wait_status(gone["id"], "ready")
        wait_for(lambda: notifying.task(gone["id"])["callbacks"][0]["status"] == "gone", 30, what="410 to stop it")
        assert len(receiver.received) == 1

        dead = notifying.create("dead", callback={"url": receiver.url})
        notifying.wait_status(dead["id"], "ready")
        (delivery,) = wait_for(
            lambda: [d for d in notifying.task(dead["id"])["callbacks"] if d["status"] == "dead"],
            30,
            what="the delivery to be dead-lettered",
        )
        assert delivery["attempts"] == 3 and delivery["last_outcome"] == "HTTP 500"
        assert len(receiver.received) == 4

        receiver.default = 200
        replayed = notifying.http.post(f"/v1/tasks/{dead['id']}/callbacks/replay")
        assert replayed.status_code == 200 and replayed.json()["replayed"] == 1
        wait_for(lambda: notifying.task(dead["id"])["callbacks"][0]["status"] == "delivered", 30, what="the replay")
        assert len({item.headers["webhook-id"] for item in receiver.received[1:]}) == 1
        verified(receiver)
    no_callback = notifying.create("quiet")
    response = notifying.http.post(f"/v1/tasks/{no_callback['id']}/callbacks/replay")
    assert response.status_code == 409 and response.json()["error"]["code"] == "no_callback"


def read_events(response: httpx.Response, stop_after: int | None = None) -> list[tuple[str, str, dict]]:
    events, entry_id, name = [], "", ""
    for line in response.iter_lines():
        if line.startswith("id: "):
            entry_id = line[4:]
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((entry_id, name, json.loads(line[6:])))
            if stop_after and len(events) >= stop_after:
                break
    return events


def test_event_stream_resumes_without_gaps(notifying: Stack) -> None:
    notifying.emulator.configure(render_seconds=2)
    task = notifying.create("stream with a break")
    url = f"{notifying.url}/v1/tasks/{task['id']}/events"
    with httpx.stream("GET", url, timeout=60) as response:
        first = read_events(response, stop_after=1)  # the current state, then the connection drops
    notifying.wait_status(task["id"], "ready")
    with httpx.stream("GET", url, headers={"Last-Event-ID": first[0][0]}, timeout=60) as response:
        rest = read_events(response)
    states = [data["status"] for _, name, data in first + rest if name != "task.progress"]
    every = ["queued", "submitted", "downloading", "ready"]
    assert states == every[every.index(states[0]) :] and len(states) >= 3  # nothing missed across the break
    assert rest[-1][2]["video"]["sha256"]
    with httpx.stream("GET", url, timeout=60) as response:  # a finished task: its state, then the end
        assert [name for _, name, _ in read_events(response)] == ["task.ready"]


def test_a_finished_task_sheds_its_change_stream_and_still_streams_its_end(
    tmp_path: Path, redis_url: str, processes: list[Process]
) -> None:
    stack = Stack(tmp_path, redis_url, processes)
    stack.env.update(WANHOOK_CHANGES_RETENTION_SECONDS="5")
    stack.start()
    task = stack.create("a short memory")
    url = f"{stack.url}/v1/tasks/{task['id']}/events"
    with httpx.stream("GET", url, timeout=60) as response:
        followed = read_events(response)
    assert followed[-1][1] == "task.ready"
    changes, hash_key = "{wanhook}:changes:" + task["id"], "{wanhook}:task:" + task["id"]
    assert 0 < stack.redis.pttl(changes) <= 5000
    # What only the way to ready needed is gone; what the API answers with stays.
    gone = ("video_url", "dl_etag", "dl_total", "dl_bytes", "submit_attempt_at")
    assert stack.redis.hmget(hash_key, *gone) == [None] * len(gone)
    wait_for(lambda: not stack.redis.exists(changes), 30, 0.1, what="the change stream to expire")
    ready = stack.task(task["id"])
    assert ready["status"] == "ready" and ready["video"]["sha256"] and ready["dashscope"]["task_id"]
    with httpx.stream("GET", url, timeout=60) as response:
        assert [(name, data["status"]) for _, name, data in read_events(response)] == [("task.ready", "ready")]
    with httpx.stream("GET", url, headers={"Last-Event-ID": followed[0][0]}, timeout=60) as response:
        assert [(name, data["video"]["sha256"]) for _, name, data in read_events(response)] == [
            ("task.ready", ready["video"]["sha256"])
        ]


def test_both_channels_report_ready_and_how_soon(notifying: Stack) -> None:
    """Measures (and prints) how long a submitter waits to hear of a change, by both channels."""
    delays_callback, delays_stream = [], []
    with CallbackReceiver() as receiver:
        for n in range(8):
            task = notifying.create(f"timed {n}", callback={"url": receiver.url, "events": ["task.ready"]})
            with httpx.stream("GET", f"{notifying.url}/v1/tasks/{task['id']}/events", timeout=60) as response:
                for _, name, data in read_events(response):
                    if name == "task.ready":
                        delays_stream.append(time.time() - _epoch(data["updated_at"]))
        wait_for(lambda: len(receiver.received) == 8, 30, what="eight callbacks")
        for item in receiver.received:
            body = json.loads(item.body)
            changed = notifying.task(body["data"]["id"])["updated_at"]
            delays_callback.append(item.at - _epoch(changed))
    for name, delays in (("callback", delays_callback), ("event stream", delays_stream)):
        print(
            f"\nstate change to {name}: median {statistics.median(delays) * 1000:.1f} ms, "
            f"max {max(delays) * 1000:.1f} ms over {len(delays)}"
        )
    assert max(delays_callback) < 5 and max(delays_stream) < 5


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_a_stopping_server_ends_its_event_streams(notifying: Stack) -> None:
    # A stream follows a task for minutes; a server asked to stop must not wait for it (the client
    # resumes elsewhere with Last-Event-ID).
    notifying.emulator.configure(render_seconds=600)
    task = notifying.create("still rendering when the server stops")
    notifying.wait_status(task["id"], "submitted")
    with httpx.stream("GET", f"{notifying.url}/v1/tasks/{task['id']}/events", timeout=60) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))  # the current state
        server = notifying.server
        server.terminate()
        assert server.proc is not None
        # Long before the render ends, and cleanly (uvicorn re-raises the SIGTERM once it has shut down).
        assert server.proc.wait(30) in (0, -signal.SIGTERM)
        assert not [line for line in lines if line.startswith("data: ")]  # it ended, with no made-up event
