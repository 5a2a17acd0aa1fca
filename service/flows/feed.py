"""One reader of the task change streams per process, fanning their entries out to every open event stream.

An event stream (``GET /v1/tasks/{id}/events``, ``GET /v1/stream``) used to wait in its own blocking
``XREAD``, on a Redis connection of its own for as long as it stayed open: a thousand open streams took
the whole pool, and the webhook then answered 503. Here a stream is a ``Subscription``: an in-memory,
bounded queue. The ``ChangeFeed`` reads the change streams (``{wanhook}:changes:<task id>``) of all the
tasks followed in this process with one blocking ``XREAD`` over all their keys, on a connection of its
own, and hands each entry to the subscriptions following that task. All keys share the ``{wanhook}``
hash tag, so the one read over many keys is valid on a Redis Cluster too.

A read blocked in Redis does not see a task followed after it started. Following one appends an entry
to the reader's wake-up stream (``{wanhook}:feed:<process>:<n>``), which the read also waits on: it
returns at once and the next read includes the new task. One wake-up is enough for every task followed
while the same read is blocked, and none is needed to follow a task that read already covers.

Past ``KEYS_PER_READER`` followed tasks another reader (and connection) takes the next ones, so that a
change to one task costs Redis a read over a bounded number of keys, and a reader with nothing left to
follow stops. The connections the feed uses are therefore one per ``KEYS_PER_READER`` followed tasks,
whatever the number of streams.

Each task has one read position in its reader; subscriptions have their own position per task and
skip what they have already had. A subscription that follows a task from an earlier position than the
reader's moves the reader back there, and the others skip the entries read twice. A read's entries go
to the subscriptions whose position is at or past where that read started (for the whole of what the
read returned is the continuation of such a position); one further behind gets them from the next read,
which starts from its position, so nobody gets a later entry before an earlier one, or misses one.

Every stream shows a change with its task as stored: the streams following a task share one read of it
per change (``snapshot``), so a task followed by a thousand streams costs one read, not a thousand.

A subscription whose queue is full (its client reads slower than its tasks change) is dropped: its
stream ends and the client reconnects (resuming with Last-Event-ID), instead of this process holding
an ever-growing backlog for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.typing import KeyT, StreamIdT

from ..core.errors import Interrupted, TooManyStreams
from ..domain.task import as_text
from ..persistence import keys

log = logging.getLogger("wanhook.feed")

KEYS_PER_READER = 1000
BLOCK_MS = 10_000  # a backstop: wake-ups normally end a read that must change
COUNT = 100  # entries per key and read; more follow at the next read
# Changes a subscription may have waiting before it is dropped. Its stream takes them all at each turn,
# so they pile up only while its client does not read (uvicorn then stops the stream's writes).
QUEUE_CAPACITY = 256
RETRY_SECONDS = (0.1, 0.5, 1.0, 2.0, 5.0)
STOP_SECONDS = 2.0  # how long a stop waits for the readers to end before cancelling them
WAKE_TTL_MS = 24 * 3600 * 1000  # the wake-up stream of a process that died without removing it

SNAPSHOTS = 256  # tasks read for recent changes, shared by the streams that show them
StreamId = tuple[int, int]
T = TypeVar("T")


def parse_id(value: str) -> StreamId:
    milliseconds, _, sequence = value.partition("-")
    return int(milliseconds), int(sequence or 0)


@dataclass(frozen=True)
class Change:
    """One entry of a task's change stream."""

    task_id: str
    entry_id: str
    fields: dict[str, str]


class Ended(Interrupted):
    """The subscription was dropped (its queue filled up before its stream took the changes) or the
    feed has closed: its stream should end, and its client reconnect."""


class Subscription:
    """What one open event stream receives: the changes of the tasks it follows, in order per task."""

    def __init__(self, feed: ChangeFeed, owner: str, capacity: int) -> None:
        self._feed = feed
        self.owner = owner
        self._capacity = capacity
        self._pending: deque[Change] = deque()
        self._ready = asyncio.Event()
        self.positions: dict[str, StreamId] = {}  # per followed task: the last entry received
        self.dropped = False
        self.closed = False

    async def next(self, timeout: float) -> list[Change]:
        """The changes received since the last call, waiting up to ``timeout`` seconds for one ([] then)."""
        if not self._pending and not self.closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
        if self.closed:
            raise Ended
        changes = list(self._pending)
        self._pending.clear()
        self._ready.clear()
        return changes

    async def follow(self, positions: dict[str, str]) -> None:
        """Receive the changes of these tasks after the given stream ids."""
        await self._feed.follow(self, positions)

    def unfollow(self, task_id: str) -> None:
        self._feed.unfollow(self, task_id)

    def close(self) -> None:
        """Stop receiving; the stream's slot is free again. Safe to call more than once."""
        if not self.closed:
            self.closed = True
            self._ready.set()  # a stream waiting for changes learns at once
            self._feed.release(self)

    def deliver(self, task_id: str, entries: list[tuple[str, StreamId, dict[str, str]]], start: StreamId) -> None:
        """Entries a read returned from after ``start`` (all of them, up to its count)."""
        position = self.positions.get(task_id)
        if position is None or position < start:
            return  # not followed, or behind this read: the next one starts from its position
        for entry_id, order, fields in entries:
            if order <= self.positions[task_id]:
                continue  # had it already (another follower moved the reader back)
            if len(self._pending) >= self._capacity:
                self.dropped = True
                self._pending.clear()
                self._ready.set()
                self.close()
                return
            self.positions[task_id] = order
            self._pending.append(Change(task_id, entry_id, fields))
            self._ready.set()


class _Reader:
    """One blocking XREAD loop, on its own connection, over the change streams of up to KEYS_PER_READER tasks."""

    def __init__(self, feed: ChangeFeed, name: str) -> None:
        self.feed = feed
        self.positions: dict[str, StreamId] = {}  # per task: where its next read starts
        self.issued: dict[str, StreamId] = {}  # per task: where the read in progress (or the last one) started
        self.wake_key = keys.FEED_WAKE + name
        self.wake_after = "0-0"  # the key is new: this process's name is unique
        self.reading = False
        self.wake_sent = False
        self.stopping = False
        self.task = asyncio.create_task(self._run(), name=f"feed-{name}")
        feed.tasks.add(self.task)
        feed.running.add(self)
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.feed.tasks.discard(task)
        self.feed.running.discard(self)

    def covers(self, task_id: str, order: StreamId) -> bool:
        """Whether the read in progress already serves a follower of ``task_id`` from ``order``."""
        start = self.issued.get(task_id)
        return not self.reading or (start is not None and start <= order)

    async def wake(self) -> None:
        """End the read in progress so that the next one includes what changed (once per read)."""
        if not self.reading or self.wake_sent:
            return
        self.wake_sent = True
        try:
            async with self.feed.waker.pipeline(transaction=False) as pipe:
                pipe.xadd(self.wake_key, {"w": "1"}, maxlen=1, approximate=False)
                pipe.pexpire(self.wake_key, WAKE_TTL_MS)
                await pipe.execute()
        except RedisError as exc:
            # The read ends by itself within BLOCK_MS: the new task is only late, never missed.
            self.wake_sent = False
            log.warning("could not wake the change feed (%s)", type(exc).__name__)

    async def _run(self) -> None:
        redis: Redis | None = None
        failures = 0
        try:
            while not (self.stopping and not self.positions):
                try:
                    if redis is None:
                        redis = await self.feed.open_client()
                    await self._read(redis)
                    failures = 0
                except Exception as exc:
                    # The streams stay open meanwhile (their keep-alives go on); the read resumes from the
                    # same positions, so nothing is missed.
                    delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                    failures += 1
                    if isinstance(exc, RedisError):
                        log.warning(
                            "the change feed could not read from Redis (%s); again in %ss", type(exc).__name__, delay
                        )
                    else:
                        log.exception("the change feed's reader failed; again in %ss", delay)
                    self.reading = False
                    await asyncio.sleep(delay)
        finally:
            self.reading = False
            if redis is not None:
                # Bounded: a stop does not wait on a Redis that is gone.
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    async with asyncio.timeout(1.0):
                        await redis.delete(self.wake_key)
                await redis.aclose()

    async def _read(self, redis: Redis) -> None:
        issued = self.issued = dict(self.positions)
        streams: dict[KeyT, StreamIdT] = {
            keys.TASK_CHANGES + task_id: f"{ms}-{seq}" for task_id, (ms, seq) in issued.items()
        }
        streams[self.wake_key] = self.wake_after
        self.reading, self.wake_sent = True, False
        try:
            # RESP2 (the protocol wanhook speaks) answers [[stream, [(id, fields), ...]], ...], or None.
            reply = cast(list[Any] | None, await redis.xread(streams, block=BLOCK_MS, count=COUNT))
        finally:
            self.reading = False
        for key, entries in reply or ():
            name = as_text(key)
            if name == self.wake_key:
                self.wake_after = as_text(entries[-1][0])
                continue
            task_id = name.removeprefix(keys.TASK_CHANGES)
            decoded = [
                (as_text(entry_id), parse_id(as_text(entry_id)), {as_text(k): as_text(v) for k, v in fields.items()})
                for entry_id, fields in entries
            ]
            if task_id in self.positions and self.positions[task_id] == issued[task_id]:
                # Unless a subscription moved the position back meanwhile: then the next read goes from there.
                self.positions[task_id] = decoded[-1][1]
            self.feed.dispatch(task_id, decoded, issued[task_id])


class ChangeFeed:
    """The readers of this process and the subscriptions they serve, within the stream caps."""

    def __init__(
        self,
        open_client: Callable[[], Awaitable[Redis]],
        waker: Redis,
        name: str,
        *,
        max_streams: int,
        max_streams_per_token: int | None,
        capacity: int = QUEUE_CAPACITY,
        keys_per_reader: int = KEYS_PER_READER,
    ) -> None:
        self.open_client = open_client  # a client with a connection of its own, for one reader
        self.waker = waker  # the shared client: wake-ups are short writes
        self.name = name
        self.max_streams = max_streams
        self.max_streams_per_token = max_streams_per_token
        self.capacity = capacity
        self.keys_per_reader = keys_per_reader
        self.subscriptions: set[Subscription] = set()
        self.per_owner: Counter[str] = Counter()
        self.followers: dict[str, set[Subscription]] = {}
        self.readers: dict[str, _Reader] = {}  # per followed task, the reader that reads it
        self._all_readers: list[_Reader] = []  # the readers new tasks may go to, the first one first
        self.running: set[_Reader] = set()  # every reader whose loop runs, stopping ones included
        self.tasks: set[asyncio.Future[None]] = set()  # their loops, and wake-ups under way
        self._made = 0
        self._snapshots: OrderedDict[tuple[str, str], asyncio.Future[Any]] = OrderedDict()

    async def snapshot(self, task_id: str, entry_id: str, fetch: Callable[[str], Awaitable[T]]) -> T:
        """``fetch(task_id)`` once the change ``entry_id`` has been read, shared by every stream showing it."""
        key = (task_id, entry_id)
        future = self._snapshots.get(key)
        if future is None:
            future = asyncio.ensure_future(fetch(task_id))
            self._snapshots[key] = future
            if len(self._snapshots) > SNAPSHOTS:
                self._snapshots.popitem(last=False)

            def forget_failure(done: asyncio.Future[Any]) -> None:
                # A failed read is not kept: the next stream reads again (each waiter sees the error).
                if (done.cancelled() or done.exception() is not None) and self._snapshots.get(key) is done:
                    del self._snapshots[key]

            future.add_done_callback(forget_failure)
        # Shielded: a stream that goes away mid-read does not cancel the read the others wait for.
        return await asyncio.shield(future)

    def subscribe(self, owner: str) -> Subscription:
        """A new stream's subscription, or ``TooManyStreams`` past a cap."""
        limit = self.max_streams_per_token
        if limit is not None and self.per_owner[owner] >= limit:
            raise TooManyStreams(True, limit)
        if len(self.subscriptions) >= self.max_streams:
            raise TooManyStreams(False, self.max_streams)
        subscription = Subscription(self, owner, self.capacity)
        self.subscriptions.add(subscription)
        self.per_owner[owner] += 1
        return subscription

    def release(self, subscription: Subscription) -> None:
        if subscription in self.subscriptions:
            self.subscriptions.discard(subscription)
            self.per_owner[subscription.owner] -= 1
            if self.per_owner[subscription.owner] <= 0:
                del self.per_owner[subscription.owner]
        for task_id in list(subscription.positions):
            self.unfollow(subscription, task_id)

    async def follow(self, subscription: Subscription, positions: dict[str, str]) -> None:
        if subscription.closed:
            return
        woken: set[_Reader] = set()
        for task_id, after in positions.items():
            order = parse_id(after)
            reader = self.readers.get(task_id) or self._place(task_id, order)
            subscription.positions[task_id] = order
            self.followers.setdefault(task_id, set()).add(subscription)
            if order < reader.positions[task_id]:
                reader.positions[task_id] = order
            if not reader.covers(task_id, order):
                # A task new to the read in progress, or followed from before where it started.
                woken.add(reader)
        for reader in woken:
            await reader.wake()

    def unfollow(self, subscription: Subscription, task_id: str) -> None:
        subscription.positions.pop(task_id, None)
        followers = self.followers.get(task_id)
        if followers is None:
            return
        followers.discard(subscription)
        if followers:
            return
        del self.followers[task_id]
        reader = self.readers.pop(task_id)
        # No wake-up: the blocked read may keep the key until it returns; entries found for it then
        # have no follower and are dropped.
        reader.positions.pop(task_id, None)
        if not reader.positions and reader is not self._all_readers[0]:
            # An extra reader with nothing left: it ends at its next wake-up (or block timeout).
            reader.stopping = True
            self._all_readers.remove(reader)
            wake = asyncio.ensure_future(reader.wake())
            self.tasks.add(wake)
            wake.add_done_callback(self.tasks.discard)

    def dispatch(self, task_id: str, entries: list[tuple[str, StreamId, dict[str, str]]], start: StreamId) -> None:
        for subscription in list(self.followers.get(task_id, ())):
            subscription.deliver(task_id, entries, start)

    def _place(self, task_id: str, order: StreamId) -> _Reader:
        reader = next((r for r in self._all_readers if len(r.positions) < self.keys_per_reader), None)
        if reader is None:
            self._made += 1
            reader = _Reader(self, f"{self.name}:{self._made}")
            self._all_readers.append(reader)
        reader.positions[task_id] = order
        self.readers[task_id] = reader
        return reader

    @property
    def connections(self) -> int:
        """Redis connections the feed holds (one per running reader)."""
        return len(self._all_readers)

    async def aclose(self) -> None:
        for subscription in list(self.subscriptions):
            subscription.close()
        self._all_readers.clear()
        readers = list(self.running)
        for reader in readers:
            reader.stopping = True
            reader.positions.clear()
        # Readers are woken to stop rather than cancelled: redis-py completes a command cancelled just as
        # it starts, so a cancelled read could hold the stop for its whole block.
        await asyncio.gather(*(reader.wake() for reader in readers), return_exceptions=True)
        tasks = list(self.tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=STOP_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
