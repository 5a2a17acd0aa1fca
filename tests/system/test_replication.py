"""Acknowledged means replicated (service/persistence/replication.py), against real servers on loopback: a primary,
replicas and three Sentinels, each its own redis-server process.

With ``WANHOOK_REDIS_WAIT_REPLICAS=1`` no event that wanhook answered 2xx is missing from the primary
after a failover, whether the old primary was killed or cut off from its replicas and Sentinels (by
Redis ACLs: the replicas' and Sentinels' users are switched off on it, while wanhook's still works),
or a Cluster's primary was killed; every task reaches ready through each. With it off, the tests count
what each failover loses. The numbers printed (``-s``) are docs/operations.md's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from wanhook.service.config import ConfigError, Settings

from ..conftest import TOKEN
from ..support import Process, RedisServer, Wanhook, free_port, redis_binary, wait_for

PASSWORD = "replication-test-password"
# The users replicas and Sentinels connect as; switching them off on a primary cuts it from both.
PEER_USERS = ("replicator", "sentinel")
SERVICE = "wanhook"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
MODEL_KEY = "apikey:v1:group:video-synthesis:wan2.2-t2v-plus"


def event(event_id: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "acs.dashscope",
        "type": "dashscope:System:AsyncTaskFinish",
        "data": {"task_id": "ds-" + event_id, "task_status": "SUCCEEDED", "user_api_unique_key": MODEL_KEY},
    }


def seen_key(event_id: str) -> str:
    source = "acs.dashscope"
    return f"{{wanhook}}:seen:{len(source)}:{source}:{event_id}"


class DataNode(RedisServer):
    """A redis-server that may be a replica: stopped by asking again each second. A replica refuses a SIGTERM
    while it writes its first AOF after a sync (Redis 6.2: "Writing initial AOF, can't exit") and does not
    try again, so that one SIGTERM left it to be killed after the whole timeout."""

    def stop(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while self.alive and time.monotonic() < deadline:
            self.terminating = False
            self.terminate()
            assert self.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(1)
        self.kill()


class Node(DataNode):
    """A redis-server with the peers' users, replicating ``primary`` when given one."""

    def __init__(self, directory: Path, primary: int | None = None) -> None:
        super().__init__(directory)
        for user in PEER_USERS:
            self.args += ["--user", user, "on", f">{PASSWORD}", "~*", "&*", "+@all"]
        # The default user (wanhook's, the test's) needs a password too: a connection whose AUTH failed would
        # otherwise go on as the default user, and a switched-off Sentinel would still see the node up.
        self.args += [
            "--requirepass",
            PASSWORD,
            "--masteruser",
            "replicator",
            "--masterauth",
            PASSWORD,
            "--repl-timeout",
            "5",
        ]
        if primary is not None:
            self.args += ["--replicaof", "127.0.0.1", str(primary)]
        self.url = f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"
        self.client = redis.Redis(port=self.port, password=PASSWORD, decode_responses=True, socket_timeout=5)

    def role(self) -> str:
        return str(self.client.role()[0])

    def online_replicas(self) -> int:
        """Replicas past their first sync (WAIT counts no other; Redis 7 delays a diskless sync by 5 s)."""
        info = self.client.info("replication")
        return sum(
            1
            for name, value in info.items()
            if name.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
        )


class Sentinel(Process):
    def __init__(self, directory: Path, primary: int) -> None:
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / f"sentinel-{self.port}.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel auth-user {SERVICE} sentinel\nsentinel auth-pass {SERVICE} {PASSWORD}\n"
        )
        super().__init__(f"sentinel-{self.port}", [redis_binary(), str(config), "--sentinel"], directory)
        self.client = redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def master(self) -> tuple[str, int] | None:
        found = self.client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return (found[0], int(found[1])) if found else None


class HighlyAvailable:
    """A primary, ``replicas`` replicas and three Sentinels (quorum 2) watching them as "wanhook"."""

    def __init__(self, directory: Path, replicas: int, processes: list[Process]) -> None:
        self.directory = directory
        self.primary = Node(directory / "primary")
        self.replicas = [Node(directory / f"replica-{n}", self.primary.port) for n in range(replicas)]
        self.sentinels = [Sentinel(directory / "sentinels", self.primary.port) for _ in range(3)]
        self.processes = processes
        sentinels = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        self.url = f"redis+sentinel://:{PASSWORD}@{sentinels}/{SERVICE}"

    @property
    def nodes(self) -> list[Node]:
        return [self.primary, *self.replicas]

    def start(self) -> HighlyAvailable:
        for node in self.nodes:
            self.processes.append(node.launch())
        for node in self.nodes:
            node.wait_ready()
        wait_for(lambda: self.primary.online_replicas() == len(self.replicas), 30, what="the replicas to connect")
        for sentinel in self.sentinels:
            self.processes.append(sentinel.start())
        # Every Sentinel knows the replicas and the other Sentinels before a test fails anything over.
        wait_for(
            lambda: all(
                int(s.client.sentinel_master(SERVICE)["num-slaves"]) == len(self.replicas)
                and int(s.client.sentinel_master(SERVICE)["num-other-sentinels"]) == 2
                for s in self.sentinels
            ),
            30,
            what="the sentinels to know each other and the replicas",
        )
        return self

    def master_port(self) -> int | None:
        found = self.sentinels[0].master()
        return found[1] if found else None

    def promoted(self, old: int) -> int | None:
        """The port of the master a client finds when it asks the Sentinels as redis-py does (SENTINEL
        MASTERS, the first Sentinel whose master is up), once that is no longer ``old``. A Sentinel names
        the new master this way only at +switch-master, when the failover ends; GET-MASTER-ADDR-BY-NAME
        (``master_port``) names it earlier, as soon as the leader reconfigures the other replicas, which
        may take up to failover-timeout: clients cannot follow a promotion from that moment."""
        for sentinel in self.sentinels:
            state = sentinel.client.sentinel_master(SERVICE)
            if state["is_master"] and not state["is_sdown"] and not state["is_odown"]:
                port = int(state["port"])
                return port if port != old else None
        return None

    def node(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def cut_off(self, node: Node) -> None:
        """The replicas and Sentinels can no longer reach ``node``; wanhook (the default user) still can."""
        for user in PEER_USERS:
            node.client.acl_setuser(user, enabled=False, reset_passwords=False)
            node.client.client_kill_filter(user=user)

    def reconnect(self, node: Node) -> None:
        for user in PEER_USERS:
            node.client.acl_setuser(user, enabled=True)


@dataclass
class Pushes:
    """Events pushed one after another as EventBridge does: an event answered other than 2xx is pushed
    again until it gets one. Records when each answer came."""

    url: str
    acknowledged: list[str] = field(default_factory=list)
    refusals: list[tuple[float, int, str]] = field(default_factory=list)  # (when, status, error code)
    answers: list[tuple[float, bool]] = field(default_factory=list)  # (when, 2xx)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Pushes:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def finish(self) -> None:
        """Stop after the request in flight has its answer."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join(30)
            assert not self.thread.is_alive()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            event_id = uuid.uuid4().hex
            while not self.stop.is_set():
                try:
                    response = http.post(
                        "/v1/events/dashscope", json=event(event_id), headers={"x-eventbridge-signature-token": TOKEN}
                    )
                    status, code = response.status_code, (response.json().get("error") or {}).get("code", "")
                except httpx.HTTPError as exc:
                    status, code = 0, type(exc).__name__
                now = time.monotonic()
                self.answers.append((now, 200 <= status < 300))
                if 200 <= status < 300:
                    self.acknowledged.append(event_id)
                    event_id = uuid.uuid4().hex
                else:
                    assert status in (0, 503), (status, code)
                    self.refusals.append((now, status, code))
                    time.sleep(0.02)

    def acknowledged_since(self, moment: float) -> int:
        return sum(1 for when, ok in self.answers if ok and when > moment)

    def refused_window(self, since: float) -> float:
        """The longest time after ``since`` without a 2xx (refusals, and answers held up by the failover),
        from ``since`` itself to the first 2xx after it at least."""
        times = [since] + [when for when, ok in self.answers if ok and when > since]
        return max(later - earlier for earlier, later in zip(times, times[1:], strict=False)) if len(times) > 1 else 0.0


@pytest.fixture
def pushes_against() -> Iterator[Any]:
    started: list[Pushes] = []

    def start(url: str) -> Pushes:
        started.append(Pushes(url).start())
        return started[-1]

    yield start
    for pushes in started:
        pushes.stop.set()
        if pushes.thread is not None:
            pushes.thread.join(30)


def serve(tmp_path: Path, processes: list[Process], url: str, **env: str) -> Wanhook:
    process = Wanhook(
        tmp_path,
        {
            "WANHOOK_REDIS_URL": url,
            "WANHOOK_DATA_DIR": str(tmp_path / "data"),
            "WANHOOK_EVENTBRIDGE_TOKEN": TOKEN,
            "WANHOOK_LOG_LEVEL": "WARNING",
            **env,
        },
        "--no-workers",
    )
    processes.append(process.start())
    return process


def missing(client: redis.Redis, event_ids: list[str]) -> list[str]:
    pipe = client.pipeline(transaction=False)
    for event_id in event_ids:
        pipe.exists(seen_key(event_id))
    return [event_id for event_id, found in zip(event_ids, pipe.execute(), strict=True) if not found]


# --- Settings -----------------------------------------------------------------------------------------------------


def test_settings_default_to_waiting_for_nothing() -> None:
    durability = Settings.from_env({}).durability
    assert durability.off and durability.timeout_seconds == 1.0
    durability = Settings.from_env(
        {
            "WANHOOK_REDIS_URL": "redis+sentinel://127.0.0.1:26379/wanhook",
            "WANHOOK_REDIS_WAIT_REPLICAS": "2",
            "WANHOOK_REDIS_WAIT_AOF": "1",
            "WANHOOK_REDIS_WAIT_TIMEOUT_SECONDS": "0.25",
        }
    ).durability
    assert (durability.replicas, durability.aofs, durability.timeout_ms) == (2, 1, 250)
    with pytest.raises(ConfigError, match="embedded Redis has no replicas"):
        Settings.from_env({"WANHOOK_REDIS_WAIT_REPLICAS": "1"})
    for name, value in [
        ("WANHOOK_REDIS_WAIT_REPLICAS", "-1"),
        ("WANHOOK_REDIS_WAIT_AOF", "x"),
        ("WANHOOK_REDIS_WAIT_TIMEOUT_SECONDS", "0"),
        ("WANHOOK_REDIS_WAIT_TIMEOUT_SECONDS", "inf"),
    ]:
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: value})


def test_waitaof_on_a_server_without_it_stops_the_command(tmp_path: Path, redis_url: str) -> None:
    from ..integration.test_settings_check import assert_one_line, clean_env
    from ..support import wanhook

    version = redis.Redis.from_url(redis_url).info("server")["redis_version"]
    if tuple(int(part) for part in version.split(".")[:2]) >= (7, 2):
        pytest.skip(f"Redis {version} has WAITAOF")
    result = subprocess.run(
        wanhook("serve", "--no-workers"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(WANHOOK_REDIS_URL=redis_url, WANHOOK_REDIS_WAIT_AOF="1", WANHOOK_DATA_DIR=str(tmp_path / "data")),
    )
    assert_one_line(result, "serve", 2, "WANHOOK_REDIS_WAIT_AOF", "7.2")


# --- One primary, one replica -------------------------------------------------------------------------------------


def primary_and_replica(tmp_path: Path, processes: list[Process]) -> tuple[Node, Node]:
    """A primary and one replica following it, both started and the replica online."""
    primary = Node(tmp_path / "primary")
    processes.append(primary.start())
    replica = Node(tmp_path / "replica", primary.port)
    processes.append(replica.start())
    wait_for(lambda: primary.online_replicas() == 1, 30, what="the replica")
    return primary, replica


def test_an_event_is_acknowledged_only_once_a_replica_has_it(tmp_path: Path, processes: list[Process]) -> None:
    primary, replica = primary_and_replica(tmp_path, processes)
    server = serve(
        tmp_path, processes, primary.url, WANHOOK_REDIS_WAIT_REPLICAS="1", WANHOOK_REDIS_WAIT_TIMEOUT_SECONDS="0.3"
    )
    http = httpx.Client(base_url=server.url, timeout=10, headers={"x-eventbridge-signature-token": TOKEN})

    first = http.post("/v1/events/dashscope", json=event("first"))
    assert first.status_code == 200 and first.json()["outcome"] != "duplicate", first.text
    assert replica.client.exists(seen_key("first"))  # on the replica before the 2xx

    replica.kill()
    wait_for(lambda: primary.online_replicas() == 0, 30, what="the replica to go")
    started = time.monotonic()
    refused = http.post("/v1/events/dashscope", json=event("second"))
    assert time.monotonic() - started < 2  # the wait is bounded
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "not_replicated"
    assert "WANHOOK_REDIS_WAIT_REPLICAS" in refused.json()["error"]["message"]
    assert int(refused.headers["Retry-After"]) >= 1
    # A task create waits the same way (202 only once replicated).
    create = http.post("/v1/tasks", json={"prompt": "a fox", "size": "832*480"}, headers={"Idempotency-Key": "k1"})
    assert create.status_code == 503 and create.json()["error"]["code"] == "not_replicated", create.text

    processes.append(replica.start())
    wait_for(lambda: primary.online_replicas() == 1, 30, what="the replica back")
    # EventBridge pushes it again: recorded once (the first push wrote it on the primary), now acknowledged.
    again = wait_for(
        lambda: (r := http.post("/v1/events/dashscope", json=event("second"))).status_code == 200 and r,
        30,
        interval=0.2,
        what="the pushed-again event to be acknowledged",
    )
    assert again.json()["outcome"] == "duplicate"
    assert replica.client.exists(seen_key("second"))
    created = http.post("/v1/tasks", json={"prompt": "a fox", "size": "832*480"}, headers={"Idempotency-Key": "k1"})
    assert created.status_code == 202, created.text
    assert replica.client.exists("{wanhook}:task:" + created.json()["id"])


def test_a_repeated_create_waits_for_the_write_it_repeats(tmp_path: Path, processes: list[Process]) -> None:
    """A create repeated with its Idempotency-Key writes nothing, on another connection than the write it
    repeats: it is still answered only once a replica has that write. (Where WAIT counts a connection's own
    writes only, it would otherwise count a replica with this connection's older writes.) The replica is
    frozen (SIGSTOP) so that it acknowledges nothing meanwhile."""
    import signal

    from redis.asyncio import Redis

    from wanhook.service.config import Durability
    from wanhook.service.persistence.replication import NotReplicated
    from wanhook.service.persistence.store import TaskStore

    primary, replica = primary_and_replica(tmp_path, processes)
    fields = {"owner": "", "model": "wan2.2-t2v-plus", "prompt": "a fox", "status": "queued"}

    async def scenario() -> str:
        first, second = Redis.from_url(primary.url), Redis.from_url(primary.url)
        stores = [TaskStore(first), TaskStore(second)]
        for store in stores:
            store.require(Durability(replicas=1, timeout_seconds=0.3))
        await stores[1].create(fields, "earlier")  # the second connection's last write, replicated
        assert replica.proc is not None
        replica.proc.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(NotReplicated):
                await stores[0].create(fields, "repeated")
            with pytest.raises(NotReplicated):
                await stores[1].create(fields, "repeated")  # nothing written: the task is the first's
        finally:
            replica.proc.send_signal(signal.SIGCONT)
        task_id = await stores[1].create(fields, "repeated")
        await first.aclose()
        await second.aclose()
        return task_id

    task_id = asyncio.run(scenario())
    assert replica.client.exists("{wanhook}:task:" + task_id)


def test_the_recorded_dashscope_task_id_waits_for_a_replica(tmp_path: Path, processes: list[Process]) -> None:
    """The DashScope task id a create returned is recorded for good only once a replica has it: with the
    replica frozen, recording it raises NotReplicated (the submitter tries again); recorded again once the
    replica is back, it is on the replica."""
    import signal

    from redis.asyncio import Redis

    from wanhook.service.config import Durability
    from wanhook.service.persistence.replication import NotReplicated
    from wanhook.service.persistence.store import TaskStore

    primary, replica = primary_and_replica(tmp_path, processes)
    fields = {"owner": "", "model": "wan2.2-t2v-plus", "prompt": "a fox", "status": "queued"}

    async def scenario() -> str:
        client = Redis.from_url(primary.url)
        store = TaskStore(client)
        store.require(Durability(replicas=1, timeout_seconds=0.3))
        task_id = await store.create(fields, "recorded")

        async def record() -> str:
            return await store.mark_submitted(
                task_id, "ds-recorded", "PENDING", None, slot_lease_ms=600_000, sweep_after_ms=600_000
            )

        assert replica.proc is not None
        replica.proc.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(NotReplicated):
                await record()
        finally:
            replica.proc.send_signal(signal.SIGCONT)
        assert await record() == "same"  # written by the first call; answered now that a replica has it
        await client.aclose()
        return task_id

    task_id = asyncio.run(scenario())
    assert replica.client.hget("{wanhook}:task:" + task_id, "ds_task_id") == "ds-recorded"


def test_a_rocketmq_message_is_acknowledged_only_once_a_replica_has_its_event(
    tmp_path: Path, processes: list[Process]
) -> None:
    """What ``wanhook consume`` decides for a message (consumers/delivery.py): with the replica frozen, its
    event is not confirmed and the message is left for the queue to deliver again; so is one that would be
    parked (malformed, or at its last delivery), since the parked copy is not confirmed either. Delivered
    again once the replica is back, each is acknowledged, its event or parked copy on the replica."""
    import signal

    from redis.asyncio import Redis

    from wanhook.consumers.delivery import Decision, settle
    from wanhook.service.config import Durability
    from wanhook.service.persistence.store import TaskStore

    primary, replica = primary_and_replica(tmp_path, processes)
    messages = {
        "recorded": (json.dumps(event("queued")).encode(), 1),
        "last delivery": (json.dumps(event("last")).encode(), 16),
        "malformed": (b"not an event", 1),
    }

    async def scenario() -> tuple[dict[str, Decision], dict[str, Decision]]:
        client = Redis.from_url(primary.url)
        store = TaskStore(client)
        store.require(Durability(replicas=1, timeout_seconds=0.3))

        async def deliver() -> dict[str, Decision]:
            return {
                name: await settle(store, "rocketmq", name, body, attempt=attempt, max_deliveries=16)
                for name, (body, attempt) in messages.items()
            }

        assert replica.proc is not None
        replica.proc.send_signal(signal.SIGSTOP)
        try:
            first = await deliver()
        finally:
            replica.proc.send_signal(signal.SIGCONT)
        again = await deliver()
        await client.aclose()
        return first, again

    first, again = asyncio.run(scenario())
    assert first == dict.fromkeys(messages, Decision.RETRY)
    assert again == dict.fromkeys(messages, Decision.ACK)
    assert replica.client.exists(seen_key("queued")) and replica.client.exists(seen_key("last"))
    parked = [fields["message_id"] for _, fields in replica.client.xrange("{wanhook}:dead-letters")]
    assert "malformed" in parked


def test_the_cost_of_waiting_for_a_replica(tmp_path: Path, processes: list[Process]) -> None:
    """Webhook pushes per second, 8 at a time, with WANHOOK_REDIS_WAIT_REPLICAS 0 and 1 (one primary, one
    replica, loopback): docs/operations.md's numbers."""
    primary, replica = primary_and_replica(tmp_path, processes)
    rates = {}
    for wait in ("0", "1"):
        server = serve(tmp_path, processes, primary.url, WANHOOK_REDIS_WAIT_REPLICAS=wait)
        count, threads = 400, 8

        def push(
            offset: int, url: str = server.url, tag: str = wait, count: int = count, threads: int = threads
        ) -> None:
            with httpx.Client(base_url=url, timeout=10, headers={"x-eventbridge-signature-token": TOKEN}) as http:
                for n in range(offset, count, threads):
                    assert http.post("/v1/events/dashscope", json=event(f"cost-{tag}-{n}")).status_code == 200

        push(0)  # warm: connections, the script cache
        workers = [threading.Thread(target=push, args=(n,)) for n in range(threads)]
        started = time.monotonic()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        rates[wait] = count / (time.monotonic() - started)
        server.stop()
    latency = asyncio.run(recording_latency(primary.url))
    print(
        f"\npushes/s with WANHOOK_REDIS_WAIT_REPLICAS=0: {rates['0']:.0f}, =1: {rates['1']:.0f} "
        f"({100 * (1 - rates['1'] / rates['0']):.0f}% fewer); recording one event alone: "
        f"{latency[0] * 1e6:.0f} µs, {latency[1] * 1e6:.0f} µs waiting for the replica"
    )
    assert rates["1"] > 0.3 * rates["0"]  # a round trip more per event, not an order of magnitude
    assert latency[1] < latency[0] + 0.005


async def recording_latency(url: str, rounds: int = 20, block: int = 50) -> tuple[float, float]:
    """Seconds to record one event through TaskStore, one after another: without waiting, and with WAIT 1.
    Blocks of each alternate, and each figure is the median of its blocks' means, so that a shared machine's
    load, which comes and goes, weighs on both alike."""
    import statistics

    from redis.asyncio import Redis

    from wanhook.service.config import Durability
    from wanhook.service.domain.events import parse
    from wanhook.service.persistence.store import TaskStore

    client = Redis.from_url(url)
    stores = []
    for replicas in (0, 1):
        store = TaskStore(client)
        store.require(Durability(replicas=replicas))
        body = json.dumps(event(f"latency-{replicas}-warm")).encode()
        await store.ingest(parse(body), body)  # warm: the connection, the script cache
        stores.append(store)
    blocks: list[list[float]] = [[], []]
    for round_ in range(rounds):
        for replicas, store in enumerate(stores):
            bodies = [json.dumps(event(f"latency-{replicas}-{round_}-{n}")).encode() for n in range(block)]
            started = time.monotonic()
            for body in bodies:
                await store.ingest(parse(body), body)
            blocks[replicas].append((time.monotonic() - started) / block)
    await client.aclose()
    return statistics.median(blocks[0]), statistics.median(blocks[1])


# --- Failover: a primary, two replicas, three Sentinels -----------------------------------------------------------


def run_through(
    ha: HighlyAvailable, tmp_path: Path, processes: list[Process], pushes_against: Any, wait: str, failure: str
) -> tuple[Pushes, list[str], float, float]:
    """Pushes continue while the primary fails (``kill`` or ``partition``) and Sentinel promotes a replica.
    Returns the pushes, the acknowledged events missing on the new primary, the 503 window and Sentinel's
    own failover time (from the failure to the Sentinels naming the new primary)."""
    server = serve(
        tmp_path, processes, ha.url, WANHOOK_REDIS_WAIT_REPLICAS=wait, WANHOOK_REDIS_WAIT_TIMEOUT_SECONDS="0.5"
    )
    pushes = pushes_against(server.url)
    wait_for(lambda: len(pushes.acknowledged) >= 200, 30, what="pushes before the failure")
    old = ha.primary
    failed_at = time.monotonic()
    if failure == "kill":
        old.kill()
    else:
        ha.cut_off(old)
    new_port = wait_for(lambda: ha.promoted(old.port), 60, interval=0.02, what="Sentinel to promote a replica")
    promoted_at = time.monotonic()
    wait_for(lambda: ha.node(new_port).role() == "master", 30, what="the promoted replica to be master")
    wait_for(lambda: pushes.acknowledged_since(promoted_at) >= 100, 60, what="pushes acknowledged after the failover")
    if failure == "partition":
        # The partition heals: Sentinel turns the old primary into a replica of the new one, which
        # discards whatever it took while cut off.
        ha.reconnect(old)
        wait_for(
            lambda: old.role() == "slave" and old.client.info("replication")["master_link_status"] == "up",
            60,
            what="the old primary to rejoin as a replica",
        )
    pushes.finish()
    lost = missing(ha.node(new_port).client, list(pushes.acknowledged))
    return pushes, lost, pushes.refused_window(failed_at), promoted_at - failed_at


def test_clients_follow_a_promotion_away_from_a_primary_they_still_reach(
    tmp_path: Path, processes: list[Process]
) -> None:
    """A primary cut off from its replicas and Sentinels still answers wanhook; once the Sentinels promote a
    replica, the shared client and the change feed's clients talk to it within the follower's interval."""
    from wanhook.service.persistence.connection import connect
    from wanhook.service.persistence.replication import FOLLOW_INTERVAL_SECONDS, start_following, stop_following

    ha = HighlyAvailable(tmp_path / "redis", replicas=2, processes=processes).start()

    async def port_of(client: Any) -> int | None:
        try:
            return int((await client.info("server"))["tcp_port"])
        except redis.ConnectionError:
            # The follower closes the connections in use too: a probe on its way to the old primary when
            # the clients move fails, as any command then does (a 503, a redelivery); the next one reconnects.
            return None

    async def scenario() -> float:
        settings = Settings.from_env({"WANHOOK_REDIS_URL": ha.url})
        shared, feed = await connect(settings), await connect(settings, max_connections=1)
        follower = start_following(shared, lambda: [feed])
        try:
            assert await port_of(shared) == await port_of(feed) == ha.primary.port
            ha.cut_off(ha.primary)
            # From the moment a client asking the Sentinels can find the new master (+switch-master), not
            # from the earlier one GET-MASTER-ADDR-BY-NAME names it (see HighlyAvailable.promoted).
            new_port = await asyncio.to_thread(
                wait_for, lambda: ha.promoted(ha.primary.port), 60, 0.02, "Sentinel to promote a replica"
            )
            promoted = time.monotonic()
            while {await port_of(shared), await port_of(feed)} != {new_port}:
                assert time.monotonic() - promoted < FOLLOW_INTERVAL_SECONDS + 1.5, "still on the old primary"
                await asyncio.sleep(0.02)
            return time.monotonic() - promoted
        finally:
            await stop_following(follower)
            await shared.aclose()
            await feed.aclose()

    moved_after = asyncio.run(scenario())
    print(f"\nmoved to the new primary {moved_after:.2f}s after the Sentinels named it")


@pytest.mark.parametrize("failure", ["kill", "partition"])
def test_no_acknowledged_event_is_lost_in_a_failover(
    tmp_path: Path, processes: list[Process], pushes_against: Any, failure: str
) -> None:
    ha = HighlyAvailable(tmp_path / "redis", replicas=2, processes=processes).start()
    # WANHOOK_REDIS_WAIT_REPLICAS left unset: a Sentinel URL waits for one replica by default.
    pushes, lost, window, failover = run_through(ha, tmp_path, processes, pushes_against, "", failure)
    print(
        f"\n{failure}, WAIT by default (1): {len(pushes.acknowledged)} acknowledged, {len(lost)} lost, "
        f"{len(pushes.refusals)} refusals, 503 window {window:.1f}s, Sentinel failover {failover:.1f}s"
    )
    assert not lost, f"{len(lost)} acknowledged events missing on the new primary"
    assert pushes.refusals  # the failure was noticed: what could not be confirmed was refused, then pushed again
    # wanhook follows the promotion: refused no longer than Sentinel's failover plus a small margin (the
    # follower's 0.5 s poll, reconnecting, the 0.5 s wait, the pusher's pause).
    assert window < failover + 3.0, (window, failover)


@pytest.mark.parametrize("failure", ["kill", "partition"])
def test_what_a_failover_loses_without_waiting(
    tmp_path: Path, processes: list[Process], pushes_against: Any, failure: str
) -> None:
    """What WANHOOK_REDIS_WAIT_REPLICAS=1 prevents: a primary cut off from its replicas and Sentinels goes on
    acknowledging until wanhook follows the promotion, and those events are gone once it rejoins. A killed
    primary loses only what it had not yet sent to a replica: on loopback, usually nothing."""
    ha = HighlyAvailable(tmp_path / "redis", replicas=2, processes=processes).start()
    pushes, lost, window, failover = run_through(ha, tmp_path, processes, pushes_against, "0", failure)
    print(
        f"\n{failure}, WAIT 0: {len(pushes.acknowledged)} acknowledged, {len(lost)} lost, "
        f"{len(pushes.refusals)} refusals, 503 window {window:.1f}s, Sentinel failover {failover:.1f}s"
    )
    if failure == "partition":
        assert lost  # acknowledged, then discarded when the old primary resynchronised


def tasks_through(stack: Any, fail: Callable[[], None]) -> list[str]:
    """Five tasks created (202) before ``fail()`` and five after it, each created again on a 503 as a client
    would; returns their ids once every one of them is ready."""

    def create(n: int) -> str:
        def attempt() -> str | None:
            response = stack.http.post(
                "/v1/tasks",
                json={"prompt": f"fox {n}", "size": "832*480"},
                headers={"Idempotency-Key": f"failover-{n}"},
            )
            assert response.status_code in (202, 503), response.text
            return response.json()["id"] if response.status_code == 202 else None

        return wait_for(attempt, 60, interval=0.2, what=f"task {n} to be created")

    ids = [create(n) for n in range(5)]
    fail()
    ids += [create(n) for n in range(5, 10)]
    for task_id in ids:
        stack.wait_status(task_id, "ready", timeout=120)
    return ids


def waiting_stack(tmp_path: Path, url: str, processes: list[Process]) -> Any:
    from ..conftest import Stack

    stack = Stack(tmp_path, url, processes)
    # A submission cut short by the failure waits out its reservation before it is tried again: short here.
    stack.env.update(
        WANHOOK_REDIS_WAIT_REPLICAS="1", WANHOOK_REDIS_WAIT_TIMEOUT_SECONDS="0.5", WANHOOK_RESERVE_SECONDS="5"
    )
    stack.start()
    stack.emulator.configure(push_retry_delays=[0.5] * 60)
    return stack


@pytest.mark.parametrize("failure", ["kill", "partition"])
def test_tasks_reach_ready_through_a_failover(tmp_path: Path, processes: list[Process], failure: str) -> None:
    """Tasks created (202) before and while the primary is killed, or cut off from its replicas and Sentinels,
    all reach ready, and are ready on the new primary (after the cut-off one rejoined as its replica): their
    creates, the DashScope task ids and the completion events (pushed again by the emulator after a 503)
    were each confirmed by a replica before wanhook answered for them."""
    ha = HighlyAvailable(tmp_path / "redis", replicas=2, processes=processes).start()
    stack = waiting_stack(tmp_path, ha.url, processes)
    old = ha.primary
    ids = tasks_through(stack, old.kill if failure == "kill" else lambda: ha.cut_off(old))
    new_primary = ha.node(wait_for(lambda: (port := ha.master_port()) != old.port and port, 10, what="the new primary"))
    if failure == "partition":
        ha.reconnect(old)
        wait_for(
            lambda: old.role() == "slave" and old.client.info("replication")["master_link_status"] == "up",
            60,
            what="the old primary to rejoin as a replica",
        )

    def ready_on_the_primary() -> bool:
        # A status a reader saw before a replica confirmed it may be lost with the old primary; wanhook, told the
        # write was not replicated, writes it again: each task reaches ready on the primary that stays. Read
        # the primary afresh each time, should the Sentinels have moved it again meanwhile.
        primary = ha.node(ha.master_port() or new_primary.port)
        return all(primary.client.hget("{wanhook}:task:" + task_id, "status") == "ready" for task_id in ids)

    wait_for(ready_on_the_primary, 120, what="every task ready on the new primary")


# --- Failover on a Cluster: three primaries with two replicas each -----------------------------------------------


class ReplicatedCluster:
    def __init__(self, directory: Path, processes: list[Process], replicas: int = 2) -> None:
        from ..support import free_cluster_port

        self.replicas = replicas
        self.nodes: list[RedisServer] = []
        for _ in range(3 * (1 + replicas)):
            port = free_cluster_port()
            node = DataNode(directory / f"node-{port}", port)
            node.args += [
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "1000",
                "--cluster-config-file",
                str(directory / f"node-{port}" / "nodes.conf"),
            ]
            self.nodes.append(node)
        self.processes = processes

    def start(self) -> ReplicatedCluster:
        from ..support import redis_cli

        for node in self.nodes:
            self.processes.append(node.launch())
        for node in self.nodes:
            node.wait_ready()
        subprocess.run(
            [
                redis_cli(),
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_for(
            lambda: (
                all(self.client(node).cluster("info")["cluster_state"] == "ok" for node in self.nodes)
                and all(len(self.replicas_of(node)) == self.replicas for node in self.primaries())
            ),
            60,
            what=f"the cluster with {self.replicas} replica(s) a primary",
        )
        return self

    def client(self, node: RedisServer) -> redis.Redis:
        return redis.Redis(port=node.port, decode_responses=True, socket_timeout=5)

    def primaries(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.alive and self.client(node).role()[0] == "master"]

    def replicas_of(self, primary: RedisServer) -> list[Any]:
        return list(self.client(primary).role()[2])

    def serving_wanhook(self, via: RedisServer) -> int:
        """The port of the primary that serves the {wanhook} slot, as ``via`` sees it."""
        slot = self.client(via).cluster("keyslot", "{wanhook}")
        for start, end, primary, *_ in self.client(via).execute_command("CLUSTER", "SLOTS"):
            if int(start) <= int(slot) <= int(end):
                return int(primary[1])
        raise AssertionError("no node serves the {wanhook} slot")

    def witness(self) -> tuple[RedisServer, int]:
        """A node that does not serve the {wanhook} slot (wanhook's entry point, the test's witness), and
        the port of the primary that does."""
        serving = self.serving_wanhook(self.nodes[0])
        return next(node for node in self.nodes if node.port != serving), serving

    def node(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def kill(self, port: int) -> None:
        self.node(port).kill()


@pytest.mark.parametrize("wait", ["", "0"], ids=["default", "0"])
def test_no_acknowledged_event_is_lost_when_a_cluster_primary_dies(
    tmp_path: Path, processes: list[Process], pushes_against: Any, wait: str
) -> None:
    """With WANHOOK_REDIS_WAIT_REPLICAS unset (a Cluster URL waits for one replica by default) no acknowledged
    event is missing after the Cluster fails the primary of wanhook's slot over to a replica; with 0 the test
    counts what the replica had not received."""
    cluster = ReplicatedCluster(tmp_path / "cluster", processes).start()
    witness, old_port = cluster.witness()
    server = serve(
        tmp_path,
        processes,
        f"redis+cluster://127.0.0.1:{witness.port}",
        WANHOOK_REDIS_WAIT_REPLICAS=wait,
        WANHOOK_REDIS_WAIT_TIMEOUT_SECONDS="0.5",
    )
    pushes = pushes_against(server.url)
    wait_for(lambda: len(pushes.acknowledged) >= 200, 30, what="pushes before the failure")
    failed_at = time.monotonic()
    cluster.kill(old_port)
    new_port = wait_for(
        lambda: (port := cluster.serving_wanhook(witness)) != old_port and port,
        60,
        what="a replica to take over the {wanhook} slot",
    )
    promoted_at = time.monotonic()
    wait_for(lambda: pushes.acknowledged_since(promoted_at) >= 100, 60, what="pushes acknowledged after the failover")
    pushes.finish()
    lost = missing(redis.Redis(port=new_port, decode_responses=True), list(pushes.acknowledged))
    window = pushes.refused_window(failed_at)
    print(
        f"\ncluster kill, WAIT {wait or 'by default (1)'}: {len(pushes.acknowledged)} acknowledged, {len(lost)} lost, "
        f"{len(pushes.refusals)} refusals, 503 window {window:.1f}s, Cluster failover {promoted_at - failed_at:.1f}s"
    )
    if wait != "0":
        assert not lost, f"{len(lost)} acknowledged events missing on the new primary"
    assert window < promoted_at - failed_at + 3.0


def test_a_wait_cut_short_confirms_nothing_on_a_cluster(tmp_path: Path, processes: list[Process]) -> None:
    """What lost an acknowledged event when a Cluster primary died during the waits: the connection to the
    primary breaks while its WAIT is pending (here the replica is frozen with SIGSTOP, so WAIT blocks, and the
    connection is killed; in a failover, the primary dies). redis-py's cluster pipeline then sent the WAIT
    alone again, to every primary, on connections that had written nothing, and took their replicas' sum for
    a confirmation. Neither the event nor a parked message may be confirmed: the call fails (a 503, a
    message not acknowledged), and the next one goes through once the replica is back."""
    import signal

    from redis.asyncio.cluster import RedisCluster as AsyncCluster

    from wanhook.service.config import Durability
    from wanhook.service.domain.events import parse
    from wanhook.service.persistence.store import TaskStore

    cluster = ReplicatedCluster(tmp_path / "cluster", processes, replicas=1).start()
    witness, serving = cluster.witness()
    primary = cluster.client(cluster.node(serving))
    replica = cluster.node(int(cluster.replicas_of(cluster.node(serving))[0][1]))
    assert replica.proc is not None

    def cut_the_wait() -> None:
        waiting = wait_for(
            lambda: [c["id"] for c in primary.client_list() if c.get("cmd") == "wait"], 10, 0.01, "a blocked WAIT"
        )
        primary.client_kill_filter(_id=waiting[0])

    async def scenario() -> None:
        client = AsyncCluster(host="127.0.0.1", port=witness.port)
        await client.initialize()
        store = TaskStore(client)  # type: ignore[arg-type]
        store.require(Durability(replicas=1, timeout_seconds=10))
        body = json.dumps(event("cut-short")).encode()
        replica.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
        try:
            for write in (lambda: store.ingest(parse(body), body), lambda: store.dead_letter({"message_id": "cut"})):
                pending = asyncio.ensure_future(write())
                await asyncio.to_thread(cut_the_wait)
                started = time.monotonic()
                with pytest.raises(redis.RedisError):
                    await pending
                assert time.monotonic() - started < 5  # failed, not waited out
        finally:
            replica.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        # Delivered again, both are confirmed by the replica.
        await wait_for_async(lambda: store.ingest(parse(body), body), 30)
        await store.dead_letter({"message_id": "cut-short"})
        await client.aclose()

    asyncio.run(scenario())
    replica_client = cluster.client(replica)
    replica_client.readonly()
    assert replica_client.exists(seen_key("cut-short"))


async def wait_for_async(call: Callable[[], Any], timeout: float) -> Any:
    """``await call()`` until it does not raise a Redis error (a replica catching up), within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def test_tasks_reach_ready_when_a_cluster_primary_dies(tmp_path: Path, processes: list[Process]) -> None:
    """As through Sentinel's failover: tasks created before and while the primary of wanhook's slot is
    killed all reach ready, and are ready on the replica that took its place."""
    cluster = ReplicatedCluster(tmp_path / "cluster", processes).start()
    witness, old_port = cluster.witness()
    stack = waiting_stack(tmp_path, f"redis+cluster://127.0.0.1:{witness.port}", processes)
    ids = tasks_through(stack, lambda: cluster.kill(old_port))
    new_port = wait_for(
        lambda: (port := cluster.serving_wanhook(witness)) != old_port and port, 10, what="the new primary"
    )
    new_primary = redis.Redis(port=new_port, decode_responses=True)
    assert all(new_primary.hget("{wanhook}:task:" + task_id, "status") == "ready" for task_id in ids)


def test_a_parked_message_waits_for_a_replica_on_a_cluster(tmp_path: Path, processes: list[Process]) -> None:
    """On a Cluster the wait for a parked message goes to the node serving wanhook's slot, with the write: the
    entry is on a replica of it when ``dead_letter`` returns, and WAIT for more replicas than it has fails."""
    from redis.asyncio.cluster import RedisCluster as AsyncCluster

    from wanhook.service.config import Durability
    from wanhook.service.persistence.replication import NotReplicated
    from wanhook.service.persistence.store import TaskStore

    cluster = ReplicatedCluster(tmp_path / "cluster", processes).start()
    witness, serving = cluster.witness()

    async def scenario() -> None:
        client = AsyncCluster(host="127.0.0.1", port=witness.port)
        store = TaskStore(client)  # type: ignore[arg-type]
        store.require(Durability(replicas=2, timeout_seconds=0.3))
        await store.dead_letter({"message_id": "parked"})
        store.require(Durability(replicas=3, timeout_seconds=0.3))
        with pytest.raises(NotReplicated):
            await store.dead_letter({"message_id": "unconfirmed"})
        await client.aclose()

    asyncio.run(scenario())
    primary = next(node for node in cluster.nodes if node.port == serving)
    for _, port, _ in cluster.replicas_of(primary):
        replica = redis.Redis(port=int(port), decode_responses=True)
        replica.readonly()
        assert "parked" in [fields["message_id"] for _, fields in replica.xrange("{wanhook}:dead-letters")]
