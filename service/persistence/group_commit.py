"""Group commit for the ingest script: the events that arrive together go to Redis together.

Each call of a script through redis-py costs a round trip and some tens of microseconds of Python (packing
the command, reading its reply). Under load many events want the ingest script at once: ``GroupCommit``
queues each call and, at the end of the event loop's current step, sends the queued ones as one call of a
batch script (``scripts.INGEST_BATCH``: the ingest script's own body, run once per event, each in its own
``pcall``), followed, when a ``Durability`` is required, by one replication barrier and ``WAIT``/``WAITAOF``
in the same pipeline: they cover every write of the batch, since all of them precede the barrier on the
one connection. Every caller gets its own event's reply or its own error, and only once the whole pipeline
(the waits included) has been answered: a call returns exactly what the script alone would have.

At most ``MAX_IN_FLIGHT`` batches are on their way at once; what arrives meanwhile waits for the next
one, so batches grow with the load instead of the round trips (a lone event, at low load, is sent at the
end of the loop step it arrived in). A batch holds at most ``max_batch`` events, which bounds how long
Redis runs one script.

On a Redis Cluster the calls are not grouped: each goes to the single-event script as before (through
``Replicated`` when waiting), since the waits must reach the node that ran the script.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from ..config import Durability
from .replication import CommandList, Replicated, add_waits, confirm

# Small batches, several on their way: a burst of events is split, so Redis starts on its first part
# while the loop still reads the rest, and answers come back in a stream rather than all at once, when
# each waiting sender is already idle. Measured (bench/README.md, "The batch's size"): with wrk's 32
# connections, 16 a batch and 4 in flight recorded 9,900-10,100 events/s, against 8,200-8,700 with 64 and
# 2, 8,600-9,300 with 64 and 4, and 9,400-9,800 with 8 a batch. 4 connections of the client's pool at most.
MAX_BATCH = 16
MAX_IN_FLIGHT = 4

_Call = tuple[Sequence[Any], "asyncio.Future[Any]"]


class GroupCommit:
    """Called like the single-event script (``keys=``, ``args=``). ``script`` and ``batch`` are redis-py's
    registered scripts: ``batch`` takes ``argc`` arguments per call, one call after another, and answers
    a list with each call's reply (or error)."""

    def __init__(
        self,
        redis: Redis,
        script: Any,
        batch: Any,
        argc: int,
        durability: Durability | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.redis = redis
        self.script = script
        self.batch = batch
        self.argc = argc
        self.durability = durability or Durability()
        self.max_batch = max_batch
        self.keys: Sequence[Any] | None = None  # every call's keys (the route: all of wanhook's keys hash alike)
        self.pipelines = 0  # round trips made (a NOSCRIPT reload makes two): what tests read
        self._pending: list[_Call] = []
        self._scheduled = False
        self._in_flight: set[asyncio.Task[None]] = set()  # held, so that a batch under way is not collected
        self._single: Any = script if self.durability.off else Replicated(redis, script, self.durability)
        self._cluster = isinstance(redis, RedisCluster)  # once: RedisCluster is a Protocol, slow to test

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        if self._cluster:
            return await self._single(keys=keys, args=args)
        if len(args) != self.argc or (self.keys is not None and list(keys) != list(self.keys)):
            raise ValueError(f"a grouped call takes the same keys and {self.argc} arguments")
        self.keys = keys
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((args, done))
        self._schedule()
        # Not shielded: a caller that goes away (its connection dropped) only stops waiting; its event is
        # still recorded with the batch, as it would have been had it been sent alone.
        return await done

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending and len(self._in_flight) < MAX_IN_FLIGHT:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            task = asyncio.ensure_future(self._send(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self._pending:
            self._schedule()

    async def _send(self, batch: list[_Call]) -> None:
        try:
            replies = await self._run([args for args, _ in batch])
        except BaseException as exc:  # the connection, the waits: every call of the batch failed alike
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, done), reply in zip(batch, replies, strict=True):
            if done.done():  # its caller went away
                continue
            if isinstance(reply, Exception):
                done.set_exception(reply)
            else:
                done.set_result(reply)

    async def _run(self, calls: list[Sequence[Any]]) -> list[Any]:
        """Each call's reply (its exception for one that failed), once the waits confirmed them all."""
        try:
            return await self._pipeline(calls)
        except NoScriptError:
            # A server that does not know the script (restarted, or a replica promoted): NOSCRIPT ran
            # nothing, so the batch runs again once the script is loaded, waits included.
            self.batch.sha = await self.redis.script_load(self.batch.script)
            return await self._pipeline(calls)

    async def _pipeline(self, calls: list[Sequence[Any]]) -> list[Any]:
        keys = list(self.keys or ())
        flat = [arg for args in calls for arg in args]
        commands: list[tuple[Any, ...]] = [("EVALSHA", self.batch.sha, len(keys), *keys, *flat)]
        if not self.durability.off:
            add_waits(CommandList(commands), self.durability)
        self.pipelines += 1
        replies = await self._exchange(commands)
        if isinstance(replies[0], Exception):  # the script did not run (NOSCRIPT, OOM, a read-only replica)
            raise replies[0]
        results = list(replies[0])
        if len(replies) > 1:
            try:
                confirm(self.durability, replies[1:])
            except Exception as exc:  # too few replicas (NotReplicated), or a wait refused
                # No write of the batch is confirmed; an event that failed keeps its own error.
                return [result if isinstance(result, Exception) else exc for result in results]
        return results

    async def _exchange(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """``commands`` sent in one write on one connection of the client's pool, and their replies read
        (an error reply in place): what redis-py's pipeline does, without its per-command cost in Python
        (hiredis packs the commands), and with the client's own retries of a broken connection."""
        packed = [hiredis.pack_command(command) for command in commands]
        pool: Any = self.redis.connection_pool
        connection = await pool.get_connection()
        try:
            replies: list[Any] = await connection.retry.call_with_retry(
                lambda: self._on(connection, packed), lambda _error: connection.disconnect()
            )
            return replies
        finally:
            await pool.release(connection)

    @staticmethod
    async def _on(connection: Any, packed: list[bytes]) -> list[Any]:
        try:
            await connection.send_packed_command(packed)
            replies: list[Any] = []
            for _ in packed:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:
                    replies.append(exc)
            return replies
        except BaseException:
            # Replies may be left unread on it: the connection is not handed to anyone else as it is.
            await connection.disconnect()
            raise
