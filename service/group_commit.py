"""Group commit for one Lua script: the calls made while the event loop runs one step go to Redis together.

Each call of a script through redis-py costs a round trip and a few tens of microseconds of Python around
it. Under load many pushes want the ingest script at once: ``GroupCommit`` queues each call, and at the
end of the loop's current step (``call_soon``), or as soon as ``max_batch`` are queued, sends them all as
one pipeline (not a transaction: each script is atomic by itself, and one failing must not undo the
others), followed by one replication barrier and ``WAIT``/``WAITAOF`` when a ``Durability`` is required,
which covers every write of the batch since they all precede it on the one connection. Every caller is
answered with its own script's reply or its own error, and only once the whole pipeline (the waits
included) has been answered: a call returns exactly what calling the script alone would have, only
sooner under load. A lone call is sent at the end of the step it was made in, costing nothing measurable.

On a Redis Cluster the calls are not grouped: each goes to the script as before (``Replicated`` when
waiting), since a cluster pipeline sends the script whole and follows no redirection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError

from .replication import Durability, Replicated, add_waits, confirm

# Enough to share one round trip among every push of a busy loop step; few enough that a reply list
# stays small and the first caller of a batch does not wait behind hundreds of others.
MAX_BATCH = 64

_Call = tuple[Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class GroupCommit:
    """Called like a registered script (``keys=``, ``args=``); ``script`` is redis-py's ``AsyncScript``."""

    def __init__(
        self, redis: Redis, script: Any, durability: Durability | None = None, max_batch: int = MAX_BATCH
    ) -> None:
        self.redis = redis
        self.script = script
        self.durability = durability or Durability()
        self.max_batch = max_batch
        self._pending: list[_Call] = []
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()  # held, so that a batch under way is not collected
        self.pipelines = 0  # round trips made (a NOSCRIPT reload makes two): what tests read
        self._single: Any = Replicated(redis, script, self.durability) if not self.durability.off else script

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        if isinstance(self.redis, RedisCluster):
            return await self._single(keys=keys, args=args)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        self._pending.append((keys, args, done))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        # Not shielded: a caller that goes away (its connection dropped) only stops waiting; its script
        # still runs with the batch, as it would have had it been sent alone.
        return await done

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            replies = await self._run([(keys, args) for keys, args, _ in batch])
        except BaseException as exc:  # the connection, the waits: every call of the batch failed alike
            for _, _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, done), reply in zip(batch, replies, strict=True):
            if done.done():  # its caller went away
                continue
            if isinstance(reply, Exception):
                done.set_exception(reply)
            else:
                done.set_result(reply)

    async def _run(self, calls: list[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        """The scripts' replies (an exception in place of a failed one's), once the waits confirmed them all."""
        replies = await self._pipeline(calls)
        missing = [n for n, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            # A server that does not know the script (restarted, or a replica promoted): load it once and
            # run again only the calls that did not run (NOSCRIPT runs nothing), waits again included.
            self.script.sha = await self.redis.script_load(self.script.script)
            again = await self._pipeline([calls[n] for n in missing])
            for n, reply in zip(missing, again, strict=True):
                replies[n] = reply
        return replies

    async def _pipeline(self, calls: list[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        durability = self.durability
        self.pipelines += 1
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.execute_command("EVALSHA", self.script.sha, len(keys), *keys, *args)
            if not durability.off:
                add_waits(pipe, durability)
            replies = list(await pipe.execute(raise_on_error=False))
        scripts, waits = replies[: len(calls)], replies[len(calls) :]
        if waits:
            try:
                confirm(durability, waits)
            except Exception as exc:  # too few replicas (NotReplicated), or a wait refused
                # Every write of the batch is unconfirmed; a script that failed keeps its own error.
                return [reply if isinstance(reply, Exception) else exc for reply in scripts]
        return scripts
