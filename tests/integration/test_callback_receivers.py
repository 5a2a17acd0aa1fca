"""Callback receivers that misbehave cost wanhook a bounded amount, and only their own deliveries."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Self

from redis.asyncio import Redis

from wanhook.service.flows.callbacks import Notifier
from wanhook.service.persistence.store import TaskStore

from ..conftest import Stack
from ..receiver import CallbackReceiver
from ..support import Process, free_port, wait_for

EVERY = ["task.queued", "task.submitted", "task.downloading", "task.ready"]
DEADLINE = 2.0  # WANHOOK_CALLBACK_TIMEOUT here
PER_DESTINATION = 2


class Hostile(Process):
    """A receiver from tests/hostile_receiver.py, in a process of its own."""

    def __init__(self, log_dir: Path, mode: str) -> None:
        self.mode = mode
        self.port = free_port()
        super().__init__(
            f"receiver-{mode}-{self.port}",
            [sys.executable, "-m", "tests.hostile_receiver", mode, str(self.port)],
            log_dir,
        )
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def wait_ready(self) -> Self:
        wait_for(lambda: "listening" in self.log(), 15, what=f"the {self.mode} receiver")
        return self

    def requests(self) -> list[tuple[str, int]]:
        """(webhook id, requests being answered then) for each request read so far."""
        return [(match[1], int(match[2])) for match in re.finditer(r"^request (\S+) open=(\d+)$", self.log(), re.M)]

    def sent(self) -> list[int]:
        """Bytes of answer sent on each connection that has ended."""
        return [int(match[1]) for match in re.finditer(r"^closed \S+ sent=(\d+)$", self.log(), re.M)]


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)[1]) / 1024  # type: ignore[index]


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_hostile_receivers_cost_a_bounded_amount_and_delay_nobody_else(
    tmp_path: Path, redis_url: str, processes: list[Process]
) -> None:
    endless, headers, drip, drip_body = (
        Hostile(tmp_path, mode) for mode in ("endless", "endless-headers", "drip", "drip-body")
    )
    for receiver in (endless, headers, drip, drip_body):
        processes.append(receiver.launch())
    stack = Stack(tmp_path, redis_url, processes)
    stack.env.update(
        WANHOOK_CALLBACK_ALLOW_PRIVATE="1",
        WANHOOK_CALLBACK_SCHEDULE="0,1,1",
        WANHOOK_CALLBACK_TIMEOUT=str(DEADLINE),
        WANHOOK_CALLBACK_PER_DESTINATION=str(PER_DESTINATION),
    )
    stack.start()
    for receiver in (endless, headers, drip, drip_body):
        receiver.wait_ready()
    server = stack.server.proc
    assert server is not None
    baseline = peak_rss_mb(server.pid)

    with CallbackReceiver() as good:
        # Every state of three tasks for each hostile receiver: 12 deliveries each, more than their
        # destinations take at once, all due before the well-behaved receiver's.
        hostile = {
            receiver: [
                stack.create(f"{receiver.mode} {n}", callback={"url": receiver.url, "events": EVERY}) for n in range(3)
            ]
            for receiver in (endless, headers, drip, drip_body)
        }
        started = time.monotonic()
        polite = [stack.create(f"polite {n}", callback={"url": good.url}) for n in range(6)]
        wait_for(lambda: len(good.received) == len(polite), 30, what="the well-behaved receiver's callbacks")
        took = time.monotonic() - started
        ready_at = {task["id"]: _epoch(stack.task(task["id"])["updated_at"]) for task in polite}
        latencies = [
            item.at - ready_at[item.headers["webhook-id"].removeprefix("msg_").removesuffix("_ready")]
            for item in good.received
        ]
        for task in polite:
            shown = stack.task(task["id"])["callbacks"]
            assert [(d["status"], d["attempts"]) for d in shown] == [("delivered", 1)]

        # The endless body: answered 200, so delivered, once each, whatever followed the headers.
        endless_ids = {
            f"msg_{task['id']}_{event.removeprefix('task.')}" for task in hostile[endless] for event in EVERY
        }

        def endless_done() -> bool:
            shown = [d for task in hostile[endless] for d in stack.task(task["id"])["callbacks"]]
            return len(shown) == len(endless_ids) and all(d["status"] == "delivered" for d in shown)

        wait_for(endless_done, 60, 0.2, what="every endless-body delivery settled")
        assert sorted(webhook_id for webhook_id, _ in endless.requests()) == sorted(endless_ids)
        for task in hostile[endless]:
            shown = stack.task(task["id"])["callbacks"]
            assert {(d["last_outcome"], d["attempts"]) for d in shown} == {("HTTP 200", 1)}
        wait_for(lambda: len(endless.sent()) == len(endless_ids), 10, what="the endless receiver to see every hang-up")

        # Headers without end: refused by the HTTP parser at its limit, each attempt, until the last.
        def headers_dead() -> list[dict]:
            shown = [d for task in hostile[headers] for d in stack.task(task["id"])["callbacks"]]
            return shown if len(shown) == len(endless_ids) and all(d["status"] == "dead" for d in shown) else []

        for delivery in wait_for(headers_dead, 60, 0.2, what="every endless-headers delivery dead-lettered"):
            assert delivery["last_outcome"] == "connection error: RemoteProtocolError" and delivery["attempts"] == 3
        peak = peak_rss_mb(server.pid)

        # The dripping ones: cut off at the deadline, recorded as timeouts, retried on the schedule.
        for receiver in (drip, drip_body):

            def timed_out(receiver: Hostile = receiver) -> list[dict]:
                shown = [d for task in hostile[receiver] for d in stack.task(task["id"])["callbacks"]]
                timeouts = [d for d in shown if d.get("last_outcome") == "timeout"]
                return timeouts if len(timeouts) >= 2 * PER_DESTINATION else []

            for delivery in wait_for(timed_out, 30, 0.2, what=f"{receiver.mode} deliveries to time out"):
                assert (
                    delivery["status"] == "pending"
                    and delivery["next_attempt_at"]
                    or delivery["status"] == "dead"
                    and delivery["attempts"] == 3
                )
            # Never more at once than the per-destination cap.
            assert max(open_then for _, open_then in receiver.requests()) <= PER_DESTINATION
            assert all(sent < 64 for sent in receiver.sent())  # neither answer got anywhere near its end

    print(
        f"\nwell-behaved receiver: {len(polite)} tasks created after the hostile ones, all called back within "
        f"{took:.1f} s (their renders included), at most {max(latencies) * 1000:.0f} ms after ready;\n"
        f"serve peak RSS {baseline:.0f} MB at start, "
        f"{peak:.0f} MB after {len(endless_ids)} endless bodies (at most {max(endless.sent()) >> 10} KiB of one "
        f"sent before wanhook hung up) and {3 * len(endless_ids)} endless headers"
    )
    # Far below a dripped answer's length (about 40 s), and independent of it.
    assert max(latencies) < 5.0
    assert peak < 300


def test_an_attempt_cut_short_by_a_stop_is_given_back_at_once(
    tmp_path: Path, redis_url: str, processes: list[Process]
) -> None:
    drip = Hostile(tmp_path, "drip")
    processes.append(drip.launch())
    stack = Stack(tmp_path, redis_url, processes)
    # A deadline far beyond the test: the attempt is still in flight when serve is asked to stop.
    stack.env.update(WANHOOK_CALLBACK_ALLOW_PRIVATE="1", WANHOOK_CALLBACK_TIMEOUT="30")
    stack.start()
    drip.wait_ready()
    task = stack.create("stopped mid-answer", callback={"url": drip.url, "events": ["task.queued"]})
    webhook_id = f"msg_{task['id']}_queued"
    wait_for(lambda: drip.requests(), 15, what="the first attempt")
    server = stack.server
    assert server.proc is not None
    stopping = time.monotonic()
    server.terminate()
    server.proc.wait(15)
    stopped_in = time.monotonic() - stopping
    # Not leased for minutes to a process that is gone: due now, for any sender; not counted as an attempt.
    seconds, micros = stack.redis.time()
    assert stack.redis.zscore("{wanhook}:callbacks:due", webhook_id) <= seconds * 1000 + micros // 1000
    delivery = json.loads(stack.redis.hget("{wanhook}:deliveries:" + task["id"], webhook_id))
    assert delivery["status"] == "pending" and delivery["attempts"] == 0
    again = stack.serve()
    wait_for(lambda: len(drip.requests()) >= 2, 15, what="the delivery sent again by the next process")
    assert [webhook_id for webhook_id, _ in drip.requests()] == [webhook_id] * 2
    again.terminate()
    print(f"\nserve stopped {stopped_in:.2f} s after SIGTERM with a callback attempt in flight")
    assert stopped_in < 10


def test_an_attempt_outliving_its_lease_is_not_sent_again_by_its_own_process(
    tmp_path: Path, redis_url: str, processes: list[Process]
) -> None:
    """The lease ends mid-attempt (shortened here to a second): the sender claims the delivery again
    as it falls due, and must not start it a second time while the first attempt runs."""
    drip = Hostile(tmp_path, "drip")
    processes.append(drip.launch())
    stack = Stack(tmp_path, redis_url, processes)
    stack.env.update(WANHOOK_CALLBACK_ALLOW_PRIVATE="1")
    stack.start("--no-workers")  # the task's delivery is written, and only the sender below sends it
    drip.wait_ready()
    task = stack.create("leased for a second", callback={"url": drip.url, "events": ["task.queued"]})
    webhook_id = f"msg_{task['id']}_queued"

    async def send() -> dict:
        redis = Redis.from_url(redis_url)
        notifier = Notifier(
            TaskStore(redis), "whsec_" + "A" * 32, schedule=(0.0, 60.0), allow_private=True, deadline=3.0
        )
        notifier.lease_ms = 1000
        stop = asyncio.Event()
        running = asyncio.create_task(notifier.run(stop))
        leased_until = set()  # each claim moves the delivery's due time to the end of its lease
        deadline = time.monotonic() + 15
        try:
            while time.monotonic() < deadline:
                delivery = json.loads(await redis.hget("{wanhook}:deliveries:" + task["id"], webhook_id))
                if delivery["attempts"]:
                    break
                leased_until.add(await redis.zscore("{wanhook}:callbacks:due", webhook_id))
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await running
            await notifier.aclose()
            await redis.aclose()
        assert len(leased_until - {0}) >= 2, "the delivery was not claimed again during the attempt"
        return delivery

    delivery = asyncio.run(send())
    assert delivery["last_outcome"] == "timeout" and delivery["attempts"] == 1
    wait_for(lambda: drip.sent(), 10, what="the receiver to see the hang-up")
    assert [webhook_id for webhook_id, _ in drip.requests()] == [webhook_id]
