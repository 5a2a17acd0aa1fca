"""Group commit (service/persistence/group_commit.py) against a real Redis: concurrent script calls share one pipeline,
each answered with its own reply or its own error, waits included."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from wanhook.service.config import Durability
from wanhook.service.domain.events import parse
from wanhook.service.persistence import keys, scripts
from wanhook.service.persistence.group_commit import GroupCommit
from wanhook.service.persistence.replication import NotReplicated
from wanhook.service.persistence.store import TaskStore

# A script of one argument, and its batch form (as scripts.INGEST and scripts.INGEST_BATCH): fails for the
# argument "fail", writes and echoes anything else.
ECHO = """
if ARGV[1] == 'fail' then return redis.error_reply('ERR refused ' .. ARGV[1]) end
redis.call('RPUSH', KEYS[1], ARGV[1])
return ARGV[1]
"""
ECHO_BATCH = """
local replies = {}
for n, value in ipairs(ARGV) do
  if value == 'fail' then
    replies[n] = {err = 'ERR refused ' .. value}
  else
    redis.call('RPUSH', KEYS[1], value)
    replies[n] = value
  end
end
return replies
"""


def echo(client: Redis, durability: Durability | None = None, max_batch: int = 64) -> GroupCommit:
    return GroupCommit(
        client, client.register_script(ECHO), client.register_script(ECHO_BATCH), 1, durability, max_batch
    )


async def calls(commit: GroupCommit, values: list[str]) -> list[Any]:
    return await asyncio.gather(*(commit(keys=keys.ROUTE, args=[v]) for v in values), return_exceptions=True)


async def test_concurrent_calls_share_a_pipeline_and_keep_their_own_answers(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    commit = echo(client, max_batch=16)
    await client.script_load(ECHO_BATCH)
    values = [f"v{n}" for n in range(40)]
    values[7] = values[23] = "fail"
    replies = await calls(commit, values)
    for value, reply in zip(values, replies, strict=True):
        if value == "fail":
            assert isinstance(reply, ResponseError) and "refused fail" in str(reply)
        else:
            assert reply == value.encode()
    # 40 calls made in one loop step: batches of at most 16, so three round trips.
    assert commit.pipelines == 3
    # Each ran once (two batches are sent side by side, on two connections: their order is Redis').
    recorded = await client.lrange(keys.ROUTE[0], 0, -1)
    assert sorted(recorded) == sorted(v.encode() for v in values if v != "fail")
    await client.aclose()


async def test_a_server_that_lost_the_script_gets_it_again(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    commit = echo(client)
    assert await calls(commit, ["a"]) == [b"a"]
    await client.script_flush()  # as after a restart, or on a promoted replica
    replies = await calls(commit, ["b", "fail", "c"])
    assert replies[0] == b"b" and isinstance(replies[1], ResponseError) and replies[2] == b"c"
    # NOSCRIPT ran nothing: each script ran once, after the reload.
    assert await client.lrange(keys.ROUTE[0], 0, -1) == [b"a", b"b", b"c"]
    await client.aclose()


async def test_one_wait_covers_the_batch_and_a_shortfall_fails_every_write_of_it(redis_url: str) -> None:
    """No replica: WAIT 1 answers 0, so no write of the batch is confirmed; a script that failed keeps its error."""
    client = Redis.from_url(redis_url)
    commit = echo(client, Durability(replicas=1, timeout_seconds=0.05))
    await client.script_load(ECHO_BATCH)  # loaded here: this test may be the first of its Redis to run it
    replies = await calls(commit, ["a", "fail", "b"])
    assert isinstance(replies[0], NotReplicated) and isinstance(replies[2], NotReplicated)
    assert isinstance(replies[1], ResponseError) and not isinstance(replies[1], NotReplicated)
    assert commit.pipelines == 1  # the scripts, the barrier and one WAIT: one round trip
    await client.aclose()


def event(event_id: str, ds_task: str) -> bytes:
    return (
        f'{{"specversion":"1.0","id":"{event_id}","source":"acs.dashscope","type":"dashscope:System:AsyncTaskFinish",'
        f'"data":{{"task_id":"{ds_task}","task_status":"SUCCEEDED"}}}}'
    ).encode()


async def test_events_recorded_together_are_each_recorded_once_and_fail_alone(redis_url: str) -> None:
    """Through TaskStore and the batch ingest script: a batch holding the same event twice records it once
    (the second is a duplicate); an event whose script fails (its DashScope task's key of the wrong type)
    gets its own error, and the others of its batch are recorded."""
    client = Redis.from_url(redis_url)
    store = TaskStore(client)
    await client.script_load(scripts.INGEST_BATCH)
    await client.hset(keys.DASHSCOPE_TASK + "ds-bad", "not", "a string")
    bodies = [event("e-1", "ds-1"), event("e-2", "ds-bad"), event("e-3", "ds-3"), event("e-1", "ds-1")]
    results = await asyncio.gather(*(store.ingest(parse(body), body) for body in bodies), return_exceptions=True)
    assert isinstance(results[1], ResponseError) and "WRONGTYPE" in str(results[1])
    assert [result[0].value for result in results if isinstance(result, tuple)] == [
        "unknown_task",
        "unknown_task",
        "duplicate",
    ]
    assert await client.xlen(keys.EVENT_LOG) == 3
    assert store._ingest.pipelines == 1
    await client.aclose()
