"""3. Against polling: the official SDK's ``VideoSynthesis.call`` and wanhook, on the same renders.

Workload: N prompts, each rendering for a time drawn from 1-5 minutes (the emulator draws it from the
prompt, so both clients get the same render for the same prompt), every time divided by a constant
FACTOR to fit in seconds. Each prompt is sent once through the SDK (one thread each, ``call`` =
create + wait) and once through wanhook (POST /v1/tasks, then its SSE stream), all at once.

The SDK's clock is divided by the same FACTOR (its sleeps only), so its read schedule has the same
shape against the shrunk render as against a real one: the reads per task are those of real 1-5
minute renders, and its delay past each task's end, multiplied back by FACTOR, is the real delay.
wanhook's delay is a push, which does not scale with the render, and is quoted as measured.

"Knows": the SDK's ``call`` returns; wanhook's client receives ``task.downloading`` on its SSE stream
(the completion event has been recorded and the download started). Both against the emulator's end
time of the task. Reads per task are the emulator's count of reads of each DashScope task.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from tests.support import Emulator, RedisServer, Wanhook, wait_for

from .common import (
    MODEL,
    SIZE,
    Context,
    Result,
    emulator_tasks,
    env_for,
    figure,
    median,
    prerender,
    running,
    tasks_in,
    webhook_target,
)

QPS = 20  # the account's DashScope queries per second
RENDER_MINUTES = (1.0, 5.0)
READS_GOAL = 1.0
KNOWN = ("task.downloading", "task.ready", "task.failed", "task.expired", "task.canceled")


class ScaledClock:
    """Stands in for the ``time`` module inside the SDK's wait loop: sleeps shrink by ``factor``.

    A read between two sleeps takes real time, which in the shrunk schedule would count ``factor``
    times over; it is taken off the next sleep, so one period is (interval + one round trip) / factor.
    The clock notes, per thread, when the last sleep ended: the final read starts right then, so the
    part of the delay due to the schedule (which scales) can be told from the read itself (which does not).
    """

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self._woke = threading.local()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        spent = time.time() - getattr(self._woke, "at", time.time())
        time.sleep(max(0.0, seconds / self.factor - spent * (1 - 1 / self.factor)))
        self._woke.at = time.time()

    def woke(self) -> float | None:
        return getattr(self._woke, "at", None)

    def restart(self) -> None:
        """Forget this thread's last wake-up (a pool thread may have waited for another task before)."""
        self._woke.__dict__.clear()


@dataclass
class Waited:
    ds_id: str
    started: float
    known: float
    woke: float | None = None  # SDK only: when its last sleep ended


def bench_polling(ctx: Context) -> Result:
    count, factor = (3, 600.0) if ctx.smoke else (20, 30.0)
    low, high = (m * 60 / factor for m in RENDER_MINUTES)
    ctx.log(
        f"polling vs push: {count} prompts, each through the SDK and through wanhook at once; renders "
        f"{RENDER_MINUTES[0]:.0f}-{RENDER_MINUTES[1]:.0f} min / {factor:.0f} = {low:.1f}-{high:.1f} s"
    )
    prompts = [f"polling benchmark {n}" for n in range(count)]
    redis = RedisServer(ctx.tmp / "redis").start()
    emulator = Emulator(ctx.tmp, "--render-seconds", "0").start()
    with running(redis, emulator) as processes:
        server = Wanhook(ctx.tmp, env_for(redis, ctx.tmp, emulator, WANHOOK_LIMITS=f"{MODEL}=1000/1000")).start()
        processes.append(server)
        # Neither client is held back by DashScope's quotas here: the subject is how each learns of the end.
        emulator.configure(enforce_limits=False)
        prerender(emulator, prompts)
        emulator.configure(render_seconds=low, render_seconds_max=high, webhook_targets=webhook_target(server.url))
        httpx.post(emulator.url + "/_emulator/reset", timeout=10)
        sdk, pushed = run_both(emulator, server.url, prompts, factor)
        client = httpx.Client(base_url=server.url, timeout=30)
        wait_for(lambda: tasks_in(client, "ready") == count, 60, 0.2, what="wanhook's videos")
        reads = emulator.stats()["reads_by_task"]
        ends = {t["task_id"]: t["end_time"] for t in emulator_tasks(emulator)}
    return _figures(ctx, sdk, pushed, reads, ends, factor)


def run_both(
    emulator: Emulator, server_url: str, prompts: list[str], factor: float
) -> tuple[list[Waited], list[Waited]]:
    import dashscope
    from dashscope.client import base_api

    clock = ScaledClock(factor)
    # The SDK's wait loop sleeps through its module's name ``time``: replacing that name in this process
    # shrinks its schedule and nothing else. Both are put back afterwards.
    saved = dashscope.base_http_api_url, base_api.time
    dashscope.base_http_api_url, base_api.time = emulator.api, clock  # type: ignore[assignment]
    try:
        with ThreadPoolExecutor(max_workers=2 * len(prompts)) as pool:
            sdk = [pool.submit(sdk_wait, prompt, clock) for prompt in prompts]
            pushed = [pool.submit(wanhook_wait, server_url, prompt) for prompt in prompts]
            return [f.result() for f in sdk], [f.result() for f in pushed]
    finally:
        dashscope.base_http_api_url, base_api.time = saved


def sdk_wait(prompt: str, clock: ScaledClock) -> Waited:
    from dashscope import VideoSynthesis

    clock.restart()
    started = time.time()
    response = VideoSynthesis.call(model=MODEL, prompt=prompt, size=SIZE, api_key="sk-bench")
    known = time.time()
    if response.status_code != 200 or response.output.task_status != "SUCCEEDED":
        raise AssertionError(f"SDK call ended {response.status_code} {response.code}: {response.message}")
    return Waited(response.output.task_id, started, known, clock.woke())


def wanhook_wait(server_url: str, prompt: str) -> Waited:
    client = httpx.Client(base_url=server_url, timeout=httpx.Timeout(60.0, connect=10.0))
    started = time.time()
    task = client.post("/v1/tasks", json={"prompt": prompt, "size": SIZE}).json()
    known = 0.0
    with client.stream("GET", f"/v1/tasks/{task['id']}/events") as events:
        for line in events.iter_lines():
            if line.startswith("event:") and line.partition(":")[2].strip() in KNOWN:
                known = time.time()
                break
    ds_id = client.get(f"/v1/tasks/{task['id']}").json()["dashscope"]["task_id"]
    return Waited(ds_id, started, known)


def sdk_delay(waited: Waited, end: float, factor: float) -> float:
    """The SDK's delay past the task's end, in real seconds: the schedule's part scaled back, the read's not."""
    if waited.woke is None or waited.woke <= end:
        return waited.known - end
    return (waited.woke - end) * factor + (waited.known - waited.woke)


def _figures(
    ctx: Context, sdk: list[Waited], pushed: list[Waited], reads: dict[str, int], ends: dict[str, float], factor: float
) -> Result:
    sdk_ms = [sdk_delay(w, ends[w.ds_id], factor) * 1000 for w in sdk]
    push_ms = [(w.known - ends[w.ds_id]) * 1000 for w in pushed]
    sdk_reads = [reads.get(w.ds_id, 0) for w in sdk]
    push_reads = [reads.get(w.ds_id, 0) for w in pushed]
    # Per waiting task, the SDK reads this often (real time: its whole wait scaled back).
    sdk_waiting = sum((w.known - w.started) * factor for w in sdk)
    sdk_rate = sum(sdk_reads) / sdk_waiting
    exhausting = QPS / sdk_rate
    life = sum((ends[w.ds_id] - w.started) * factor for w in pushed) / len(pushed)
    push_per_task = sum(push_reads) / len(push_reads)
    push_rate = exhausting * push_per_task / life  # reads/s of that many tasks in flight through wanhook
    ctx.samples["time to know a task ended: official SDK (polling)"] = sdk_ms
    ctx.samples["time to know a task ended: wanhook (push)"] = push_ms
    ctx.log(
        f"  time to know: SDK median {median(sdk_ms):,.0f} ms, max {max(sdk_ms):,.0f} ms; wanhook median "
        f"{median(push_ms):.1f} ms, max {max(push_ms):.1f} ms"
    )
    ctx.log(
        f"  DashScope reads per task: SDK {sum(sdk_reads) / len(sdk):.1f} (min {min(sdk_reads)}, max "
        f"{max(sdk_reads)}), wanhook {push_per_task:.2f}"
    )
    ctx.log(
        f"  SDK: {sdk_rate:.3f} reads/s per waiting task -> {exhausting:.0f} waits exhaust {QPS} QPS; wanhook "
        f"with {exhausting:.0f} tasks of {life:.0f} s in flight: {push_rate:.2f} reads/s"
    )
    return {
        "time_to_know_p50_ms": figure(
            "time from a task's end to the client knowing, median (1-5 min renders)",
            median(push_ms),
            "ms",
            median(sdk_ms),
            "official SDK polling (VideoSynthesis.call)",
            higher_is_better=False,
        ),
        "time_to_know_max_ms": figure(
            f"time from a task's end to the client knowing, max of {len(push_ms)}",
            max(push_ms),
            "ms",
            max(sdk_ms),
            "official SDK polling",
            higher_is_better=False,
        ),
        "dashscope_reads_per_task": figure(
            "DashScope reads per task (1-5 min renders)",
            push_per_task,
            "reads",
            sum(sdk_reads) / len(sdk),
            "official SDK polling",
            higher_is_better=False,
            goal=f"<= {READS_GOAL:.0f}",
            met=max(push_reads) <= READS_GOAL,
        ),
        "dashscope_reads_per_s_at_sdk_limit": figure(
            f"DashScope reads/s with {exhausting:.0f} tasks in flight (where SDK waits exhaust {QPS} QPS)",
            push_rate,
            "reads/s",
            QPS,
            "official SDK polling",
            higher_is_better=False,
        ),
    }
