"""7. RocketMQ: events/s through one and two ``wanhook consume`` processes against a real Apache RocketMQ 5.x
(NameServer + local-mode Proxy, see tests/rocketmq_broker.py), and a consumer's RSS; for each protocol: 5.x
gRPC through the proxy, and 4.x remoting through the NameServer (``WANHOOK_ROCKETMQ_PROTOCOL=4``, skipped with
a line where the 4.x client library cannot be had).

Workload: a consumer starts, records one warm-up event (its idle RSS is the RSS baseline) and stops. N
completion events (for tasks wanhook does not know, so each is recorded in the audit stream and
acknowledged, with no download behind it) are then published with Apache's Python producer, and 1 (or 2,
in the same group) consumers drain them. The rate is taken from the audit stream's own entry times, first
to last of the N, so process start-up and publishing are not counted. The baseline of two consumers is one;
that of one 4.x consumer is one 5.x consumer.
Skipped, with a line saying so, where Java or Maven is missing, and in --smoke runs (the broker takes ~10 s to start;
tests/system/test_rocketmq.py runs the consumer against it).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import redis

from tests.rocketmq_broker import RealBroker, missing
from tests.support import Process, RedisServer, Wanhook, wait_for
from wanhook.service.persistence import keys

from .common import Context, Result, env_for, figure, running

GROUP = "wanhook"


def _event(n: int) -> bytes:
    return json.dumps(
        {
            "datacontenttype": "application/json;charset=utf-8",
            "specversion": "1.0",
            "id": f"bench-{n}",
            "source": "acs.dashscope",
            "type": "dashscope:System:AsyncTaskFinish",
            "time": "2026-11-25T01:45:16.969Z",
            "aliyunregionid": "cn-beijing",
            "data": {
                "task_id": f"bench-ds-{n}",
                "task_status": "SUCCEEDED",
                "contain_result": False,
                "user_api_unique_key": "apikey:v1:aigc:video-generation:video-synthesis:wan2.2-t2v-plus",
                "region": "cn-beijing",
            },
        }
    ).encode()


def _publish(endpoints: str, topic: str, count: int, start: int = 0) -> None:
    import rocketmq as mq

    producer = mq.Producer(mq.ClientConfiguration(endpoints, mq.Credentials()), (topic,))
    producer.startup()
    try:
        for n in range(start, start + count):
            message = mq.Message()
            message.topic = topic
            message.body = _event(n)
            message.tag = "AsyncTaskFinish"
            message.keys = f"bench-ds-{n}"
            producer.send(message)
    finally:
        producer.shutdown()


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _drain(
    ctx: Context,
    broker: RealBroker,
    store: RedisServer,
    processes: list[Process],
    count: int,
    protocol: dict[str, str],
    label: str,
) -> tuple[dict[int, float], tuple[int, int]]:
    """Events/s through 1 and 2 consumers speaking ``protocol`` (its settings), and (peak, idle) RSS in KiB."""
    memory = redis.Redis.from_url(store.url)
    rates: dict[int, float] = {}
    rss: tuple[int, int] = (0, 0)
    for consumers in (1, 2):
        memory.flushall()
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        broker.create((topic,), {GROUP: 16})
        settings = {
            "WANHOOK_ROCKETMQ_ENDPOINTS": broker.endpoints,
            "WANHOOK_ROCKETMQ_TOPIC": topic,
            "WANHOOK_ROCKETMQ_GROUP": GROUP,
            "WANHOOK_ROCKETMQ_BATCH": "32",  # 5.x: messages received at once; 4.x: the library's consume threads
            "WANHOOK_ROCKETMQ_AWAIT_SECONDS": "5",
            "WANHOOK_ROCKETMQ_INVISIBLE_SECONDS": "30",
        }
        env = env_for(store, ctx.tmp, **(settings | protocol))
        warm = Wanhook(ctx.tmp, env, name="consume")
        warm.name = f"consume{label}-warm-{consumers}"
        processes.append(warm.launch())
        _publish(broker.endpoints, topic, 1)
        wait_for(lambda: memory.xlen(keys.EVENT_LOG) >= 1, 120, 0.1, what="the warm-up event")
        idle = _rss_kib(warm.proc.pid, "VmRSS") if warm.proc else 0
        warm.stop()
        _publish(broker.endpoints, topic, count, start=1)
        started = []
        for n in range(consumers):
            process = Wanhook(ctx.tmp, env, name="consume")
            process.name = f"consume{label}-{consumers}-{n}"
            processes.append(process.launch())
            started.append(process)
        wait_for(lambda: memory.xlen(keys.EVENT_LOG) >= count + 1, 300, 0.2, what=f"{count} events recorded")
        ((first, _),) = memory.xrange(keys.EVENT_LOG, count=2)[1:]
        ((last, _),) = memory.xrevrange(keys.EVENT_LOG, count=1)
        seconds = (int(last.split(b"-")[0]) - int(first.split(b"-")[0])) / 1000
        rates[consumers] = (count - 1) / max(seconds, 0.001)
        if consumers == 1 and started[0].proc:
            rss = (_rss_kib(started[0].proc.pid, "VmHWM"), idle)
        ctx.log(f"  {consumers} consumer(s){label}: {rates[consumers]:,.0f} events/s")
        for process in started:
            process.stop()
    return rates, rss


def _client4(ctx: Context) -> Path | None:
    """The 4.x client's folder (tests/rocketmq4_client.py), or None with one line saying why not."""
    from tests.rocketmq4_client import obtain

    try:
        return obtain()
    except Exception as exc:
        ctx.log(f"rocketmq: 4.x skipped: no RocketMQ 4.x client library ({type(exc).__name__}: {exc})")
        return None


def bench_rocketmq(ctx: Context) -> Result:
    reason = missing()
    if reason:
        ctx.log(f"rocketmq: skipped: {reason}")
        return {}
    if ctx.smoke:
        ctx.log(
            "rocketmq: skipped in --smoke (tests/system/test_rocketmq.py runs the consumer against the real broker)"
        )
        return {}
    count = 2000
    ctx.log(f"rocketmq: {count} events through 1 and 2 consumers against a real RocketMQ, 5.x gRPC and 4.x remoting")
    client4 = _client4(ctx)
    store = RedisServer(ctx.tmp / "redis").start()
    broker = RealBroker(ctx.tmp / "rocketmq")
    broker.start()
    ctx.log(f"  RocketMQ started in {broker.start_seconds:.1f} s")
    try:
        with running(store) as processes:
            rates, rss = _drain(ctx, broker, store, processes, count, {}, "")
            if client4 is not None:
                protocol4 = {
                    "WANHOOK_ROCKETMQ_PROTOCOL": "4",
                    "WANHOOK_ROCKETMQ_NAMESRV": broker.namesrv_addr,
                    "WANHOOK_ROCKETMQ_CLIENT4_DIR": str(client4),
                }
                rates4, rss4 = _drain(ctx, broker, store, processes, count, protocol4, " (4.x)")
    finally:
        broker.stop()
    results = {
        "rocketmq_events_per_second_one_consumer": figure(
            "RocketMQ (real 5.5.0 broker) to the audit stream, events/s, one consumer",
            rates[1],
            "events/s",
            rates[1],
            "itself (the reference for two)",
        ),
        "rocketmq_events_per_second_two_consumers": figure(
            "the same, two consumers in one group", rates[2], "events/s", rates[1], "one consumer, same run"
        ),
        "rocketmq_consumer_peak_rss": figure(
            f"consumer peak RSS while draining {count} events",
            rss[0] / 1024,
            "MiB",
            rss[1] / 1024,
            "a consumer idle after one event",
            higher_is_better=False,
        ),
    }
    if client4 is None:
        return results
    return results | {
        "rocketmq4_events_per_second_one_consumer": figure(
            "the same through 4.x remoting (librocketmq), one consumer",
            rates4[1],
            "events/s",
            rates[1],
            "one 5.x consumer, same run",
        ),
        "rocketmq4_events_per_second_two_consumers": figure(
            "4.x remoting, two consumers in one group", rates4[2], "events/s", rates4[1], "one 4.x consumer, same run"
        ),
        "rocketmq4_consumer_peak_rss": figure(
            f"4.x consumer peak RSS while draining {count} events",
            rss4[0] / 1024,
            "MiB",
            rss4[1] / 1024,
            "a 4.x consumer idle after one event",
            higher_is_better=False,
        ),
    }
