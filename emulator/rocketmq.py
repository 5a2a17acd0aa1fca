"""A RocketMQ 5 test double: an in-process `apache.rocketmq.v2.MessagingService`.

It speaks enough of the gRPC protocol for Apache's Python client (`rocketmq-python-client`): its
`Producer`, `SimpleConsumer` and `PushConsumer` run against it unchanged. It stands in for an
ApsaraMQ for RocketMQ 5.x endpoint in tests and benchmarks; it is not a broker (one queue per topic,
nothing persisted, no ordering for FIFO groups, delayed messages are delivered at once).

Run alone with `python -m emulator.rocketmq --port 8081`.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import ipaddress
import signal
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from rocketmq.grpc_protocol import definition_pb2 as pb
from rocketmq.grpc_protocol import service_pb2 as rpc
from rocketmq.grpc_protocol import service_pb2_grpc

Code = pb.Code

MAX_BODY_SIZE = 4 * 1024 * 1024
RECEIVE_BATCH_SIZE = 32
# The bounds below are Apache RocketMQ 5.5.0's, its proxy and broker defaults (ProxyConfig, BrokerConfig,
# SubscriptionGroupConfig), each observed on the real broker by the same tests that run against this double
# (tests/system/test_rocketmq_double.py, parametrized over both).
# A ReceiveMessage asking for less is refused: 40011 ILLEGAL_INVISIBLE_TIME "the invisibleTime is too small.
# min is 10000" (proxy minInvisibleTimeMillsForRecv). ChangeInvisibleDuration has no such minimum.
MIN_INVISIBLE_FOR_RECEIVE = 10.0
# Receive and change alike: 40011 "the invisibleTime is too large. max is 43200000" (maxInvisibleTimeMills).
MAX_INVISIBLE = 43200.0
# A long poll shorter than this is lengthened to it, and a call whose deadline leaves less is refused with
# 40018 ILLEGAL_POLLING_TIME (grpcClientConsumerMinLongPollingTimeoutMillis); a longer one is cut to
# MAX_LONG_POLLING (grpcClientConsumerMaxLongPollingTimeoutMillis). The Python client's deadline is its
# await duration plus its 3 s request timeout, so await_duration=1 is refused and 3 waits 5 s.
MIN_LONG_POLLING = 5.0
MAX_LONG_POLLING = 20.0
# Used when a receive names none: the PushConsumer takes its long polling timeout from our settings
# and sends no invisible duration (it asks for auto-renewal, which the double does not do).
LONG_POLLING_TIMEOUT = 20.0
INVISIBLE_DURATION = 60.0  # proxy defaultInvisibleTimeMills
# A consumer group's retries before a message goes to its %DLQ% topic (SubscriptionGroupConfig.retryMaxTimes):
# a message is delivered at most retries + 1 times (observed: retryMaxTimes 2, deliveries 1, 2, 3, then
# the message is in %DLQ%group and no longer delivered).
DEFAULT_MAX_RETRIES = 16
# Answer a long poll this long before the client's own deadline, or it reports DEADLINE_EXCEEDED.
POLL_RESERVE = 0.2
# Every parked long poll and every telemetry stream holds one of these threads.
MAX_WORKERS = 128
ACCEPTED_TYPES = [
    pb.MessageType.NORMAL,
    pb.MessageType.FIFO,
    pb.MessageType.DELAY,
    pb.MessageType.TRANSACTION,
]

TagFilter = Callable[[str | None], bool]


@dataclass(eq=False)
class Record:
    topic: str
    message_id: str
    body: bytes
    tag: str | None = None
    keys: list[str] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)
    born_timestamp: float = field(default_factory=time.time)
    born_host: str = ""
    message_type: int = pb.MessageType.NORMAL
    message_group: str | None = None
    encoding: int = pb.Encoding.IDENTITY
    offset: int = -1
    store_timestamp: float = 0.0


@dataclass(eq=False)
class Lease:
    """One delivery of a record; its receipt handle is valid until acked, changed or expired."""

    record: Record
    attempt: int
    handle: str
    deadline: float  # time.monotonic()
    invisible: float


@dataclass(eq=False)
class Progress:
    """What one consumer group has taken from one topic."""

    group: str = ""
    max_retries: int = DEFAULT_MAX_RETRIES
    cursor: int = 0  # offset of the first record never delivered to the group
    leases: dict[str, Lease] = field(default_factory=dict)  # by receipt handle
    timers: list[tuple[float, str]] = field(default_factory=list)  # heap of (deadline, handle)
    expired: deque[Lease] = field(default_factory=deque)  # visible again, awaiting redelivery
    # Handles replaced by ChangeInvisibleDuration: the real proxy answers an ack with one of them OK, and
    # the ack does nothing (the message still comes back when the new handle's time runs out).
    superseded: set[str] = field(default_factory=set)


class Store:
    """Topics, per-group progress and counters, all behind one condition variable."""

    def __init__(self, auto_create: bool = True) -> None:
        self._cond = threading.Condition()
        # Without auto_create, as on the real broker, topics and groups exist only once made
        # (create_topic, create_group): the proxy refuses the others.
        self.auto_create = auto_create
        self._groups: dict[str, int] = {}  # made groups: their maximum retries
        self._topics: dict[str, list[Record]] = {}
        self._progress: dict[tuple[str, str], Progress] = {}  # by (group, topic)
        self._half: dict[str, Record] = {}  # transactional messages awaiting commit, by transaction id
        self._counts = dict.fromkeys(
            ("sent", "received", "acked", "redelivered", "changed_invisible", "dead_lettered", "superseded_acks"), 0
        )
        self._polling = 0
        self.closed = False

    def topic(self, name: str) -> None:
        with self._cond:
            self._topics.setdefault(name, [])

    def has_topic(self, name: str) -> bool:
        with self._cond:
            if self.auto_create:
                self._topics.setdefault(name, [])
            return name in self._topics

    def has_group(self, name: str) -> bool:
        with self._cond:
            return self.auto_create or name in self._groups

    def group(self, name: str, max_retries: int = DEFAULT_MAX_RETRIES) -> None:
        with self._cond:
            self._groups[name] = max_retries

    def add(self, record: Record) -> None:
        with self._cond:
            self._counts["sent"] += 1
            self._append(record)

    def hold(self, record: Record) -> str:
        transaction_id = uuid.uuid4().hex
        with self._cond:
            self._counts["sent"] += 1
            self._half[transaction_id] = record
        return transaction_id

    def end_transaction(self, transaction_id: str, commit: bool) -> bool:
        with self._cond:
            record = self._half.pop(transaction_id, None)
            if record is not None and commit:
                self._append(record)
            return record is not None

    def receive(
        self,
        group: str,
        topic: str,
        accepts: TagFilter,
        batch_size: int,
        invisible: float,
        poll: float,
        active: Callable[[], bool],
    ) -> list[Lease]:
        give_up = time.monotonic() + poll
        with self._cond:
            progress = self._group(group, topic)
            while True:
                leases = self._take(progress, topic, accepts, batch_size, invisible)
                now = time.monotonic()
                if leases or self.closed or not active() or now >= give_up:
                    return leases
                timeout = give_up - now
                if progress.timers:
                    # Nobody notifies when a lease runs out: wake up for it.
                    timeout = min(timeout, progress.timers[0][0] - now)
                self._polling += 1
                try:
                    self._cond.wait(max(timeout, 0.001))
                finally:
                    self._polling -= 1

    def ack(self, group: str, topic: str, handle: str, message_id: str) -> bool:
        with self._cond:
            lease = self._live_lease(group, topic, handle, message_id)
            if lease is None:
                progress = self._progress.get((group, topic))
                if progress is not None and handle in progress.superseded:
                    self._counts["superseded_acks"] += 1
                    return True  # answered OK, and nothing happens: see Progress.superseded
                return False
            self._counts["acked"] += 1
            return True

    def change_invisible(self, group: str, topic: str, handle: str, message_id: str, invisible: float) -> str | None:
        with self._cond:
            old = self._live_lease(group, topic, handle, message_id)
            if old is None:
                return None
            self._counts["changed_invisible"] += 1
            progress = self._group(group, topic)
            progress.superseded.add(handle)
            lease = self._lease(progress, old.record, old.attempt, invisible)
            # A shorter duration may end before a parked poll means to look again.
            self._cond.notify_all()
            return lease.handle

    def dead_letter(self, group: str, topic: str, handle: str, message_id: str) -> bool:
        with self._cond:
            lease = self._live_lease(group, topic, handle, message_id)
            if lease is None:
                return False
            self._counts["dead_lettered"] += 1
            self._append(dataclasses.replace(lease.record, topic=f"%DLQ%{group}"))
            return True

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def stats(self) -> dict[str, Any]:
        with self._cond:
            now = time.monotonic()
            groups: dict[str, dict[str, dict[str, int]]] = {name: {} for name in self._topics}
            for (group, name), progress in self._progress.items():
                self._expire(progress, now)
                groups[name][group] = {
                    "depth": len(progress.expired) + len(self._topics[name]) - progress.cursor,
                    "inflight": len(progress.leases),
                }
            topics = {
                name: {
                    "stored": len(self._topics[name]),
                    # A topic is as deep as its slowest group; a new group would start from its beginning.
                    "depth": max((g["depth"] for g in by_group.values()), default=len(self._topics[name])),
                    "inflight": sum(g["inflight"] for g in by_group.values()),
                    "groups": by_group,
                }
                for name, by_group in groups.items()
            }
            return {**self._counts, "polling": self._polling, "topics": topics}

    def _append(self, record: Record) -> None:
        records = self._topics.setdefault(record.topic, [])
        record.offset = len(records)
        record.store_timestamp = time.time()
        records.append(record)
        self._cond.notify_all()

    def _group(self, group: str, topic: str) -> Progress:
        self._topics.setdefault(topic, [])
        progress = self._progress.get((group, topic))
        if progress is None:
            progress = Progress(group=group, max_retries=self._groups.get(group, DEFAULT_MAX_RETRIES))
            self._progress[(group, topic)] = progress
        return progress

    def _take(
        self, progress: Progress, topic: str, accepts: TagFilter, batch_size: int, invisible: float
    ) -> list[Lease]:
        self._expire(progress, time.monotonic())
        leases: list[Lease] = []
        while progress.expired and len(leases) < batch_size:
            old = progress.expired.popleft()
            progress.superseded.discard(old.handle)
            if old.attempt > progress.max_retries:  # delivered retries + 1 times: to the group's %DLQ% topic
                self._counts["dead_lettered"] += 1
                self._append(dataclasses.replace(old.record, topic=f"%DLQ%{progress.group}"))
                continue
            leases.append(self._lease(progress, old.record, old.attempt + 1, invisible))
            self._counts["redelivered"] += 1
        records = self._topics[topic]
        while progress.cursor < len(records) and len(leases) < batch_size:
            record = records[progress.cursor]
            # Records the group's filter skips are consumed for that group, as on a broker.
            progress.cursor += 1
            if accepts(record.tag):
                leases.append(self._lease(progress, record, 1, invisible))
        self._counts["received"] += len(leases)
        return leases

    def _lease(self, progress: Progress, record: Record, attempt: int, invisible: float) -> Lease:
        lease = Lease(record, attempt, uuid.uuid4().hex, time.monotonic() + invisible, invisible)
        progress.leases[lease.handle] = lease
        heapq.heappush(progress.timers, (lease.deadline, lease.handle))
        return lease

    def _expire(self, progress: Progress, now: float) -> None:
        while progress.timers and progress.timers[0][0] <= now:
            _, handle = heapq.heappop(progress.timers)
            # Acked or changed leases left their timer behind: they are no longer in `leases`.
            lease = progress.leases.pop(handle, None)
            if lease is not None:
                progress.expired.append(lease)

    def _live_lease(self, group: str, topic: str, handle: str, message_id: str) -> Lease | None:
        """Pop the lease a handle names, if the handle is the newest one and has not expired."""
        progress = self._progress.get((group, topic))
        if progress is None:
            return None
        self._expire(progress, time.monotonic())
        lease = progress.leases.get(handle)
        if lease is None or (message_id and message_id != lease.record.message_id):
            return None
        return progress.leases.pop(handle)


class Servicer(service_pb2_grpc.MessagingServiceServicer):
    def __init__(self, store: Store, endpoints: pb.Endpoints, min_invisible: float = MIN_INVISIBLE_FOR_RECEIVE) -> None:
        self._store = store
        self._endpoints = endpoints
        self.min_invisible = min_invisible
        # Clients whose settings this server holds (by the x-mq-client-id header). The real proxy answers a
        # receive from any other client with an internal error, and a restarted proxy holds none: the
        # Python client 5.1.2 does not send its settings again after its telemetry stream broke.
        self._settled_clients: set[str] = set()

    def QueryRoute(self, request: rpc.QueryRouteRequest, context: grpc.ServicerContext) -> Any:
        if not self._store.has_topic(request.topic.name):
            return rpc.QueryRouteResponse(status=_topic_not_found(request.topic.name))
        queue = self._queue(request.topic, request.endpoints)
        return rpc.QueryRouteResponse(status=_status(Code.OK), message_queues=[queue])

    def QueryAssignment(self, request: rpc.QueryAssignmentRequest, context: grpc.ServicerContext) -> Any:
        if not self._store.has_topic(request.topic.name):
            return rpc.QueryAssignmentResponse(status=_topic_not_found(request.topic.name))
        assignment = pb.Assignment(message_queue=self._queue(request.topic, request.endpoints))
        return rpc.QueryAssignmentResponse(status=_status(Code.OK), assignments=[assignment])

    def Heartbeat(self, request: rpc.HeartbeatRequest, context: grpc.ServicerContext) -> Any:
        return rpc.HeartbeatResponse(status=_status(Code.OK))

    def NotifyClientTermination(
        self, request: rpc.NotifyClientTerminationRequest, context: grpc.ServicerContext
    ) -> Any:
        return rpc.NotifyClientTerminationResponse(status=_status(Code.OK))

    def Telemetry(self, request_iterator: Iterator[rpc.TelemetryCommand], context: grpc.ServicerContext) -> Any:
        # Clients block in startup() until their settings are answered; the stream then stays open.
        try:
            for command in request_iterator:
                if command.HasField("settings"):
                    group = command.settings.subscription.group.name
                    if command.settings.HasField("subscription") and not self._store.has_group(group):
                        # As the real proxy: the stream ends, and the client's receives then fail.
                        context.abort(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"process client telemetryCommand failed. group not found: {group}",
                        )
                    client_id = _client_id(context)
                    if client_id:
                        self._settled_clients.add(client_id)
                    yield rpc.TelemetryCommand(status=_status(Code.OK), settings=_settings(command.settings))
        except grpc.RpcError:
            pass  # the client went away

    def SendMessage(self, request: rpc.SendMessageRequest, context: grpc.ServicerContext) -> Any:
        entries = []
        for message in request.messages:
            record = _record(message)
            if not record.body:
                entries.append(rpc.SendResultEntry(status=_status(Code.MESSAGE_BODY_EMPTY)))
            elif len(record.body) > MAX_BODY_SIZE:
                entries.append(rpc.SendResultEntry(status=_status(Code.MESSAGE_BODY_TOO_LARGE)))
            elif record.message_type == pb.MessageType.TRANSACTION:
                transaction_id = self._store.hold(record)
                entries.append(
                    rpc.SendResultEntry(
                        status=_status(Code.OK), message_id=record.message_id, transaction_id=transaction_id
                    )
                )
            else:
                self._store.add(record)
                entries.append(
                    rpc.SendResultEntry(status=_status(Code.OK), message_id=record.message_id, offset=record.offset)
                )
        return rpc.SendMessageResponse(status=_overall(entries), entries=entries)

    def EndTransaction(self, request: rpc.EndTransactionRequest, context: grpc.ServicerContext) -> Any:
        commit = request.resolution == pb.TransactionResolution.COMMIT
        if self._store.end_transaction(request.transaction_id, commit):
            return rpc.EndTransactionResponse(status=_status(Code.OK))
        return rpc.EndTransactionResponse(status=_status(Code.INVALID_TRANSACTION_ID))

    def ReceiveMessage(self, request: rpc.ReceiveMessageRequest, context: grpc.ServicerContext) -> Any:
        accepts = _tag_filter(request.filter_expression)
        if accepts is None:
            yield rpc.ReceiveMessageResponse(status=_status(Code.UNSUPPORTED, "only TAG filters are supported"))
            return
        if not self._store.has_group(request.group.name):
            # The real proxy fails here with an internal error (its client settings are missing).
            yield rpc.ReceiveMessageResponse(
                status=_status(Code.INTERNAL_SERVER_ERROR, f"group not found: {request.group.name}")
            )
            return
        client_id = _client_id(context)
        if client_id and client_id not in self._settled_clients:
            yield rpc.ReceiveMessageResponse(
                status=_status(
                    Code.INTERNAL_SERVER_ERROR,
                    'Cannot invoke "apache.rocketmq.v2.Settings.getClientType()" because '
                    '"settings" is null. NullPointerException. (the proxy holds no settings of this client)',
                )
            )
            return
        poll = LONG_POLLING_TIMEOUT
        if request.HasField("long_polling_timeout"):
            poll = _seconds(request.long_polling_timeout)
        poll = min(max(poll, MIN_LONG_POLLING), MAX_LONG_POLLING)
        remaining = context.time_remaining()
        if remaining is not None:
            if remaining < MIN_LONG_POLLING:
                yield rpc.ReceiveMessageResponse(
                    status=_status(
                        Code.ILLEGAL_POLLING_TIME,
                        "The deadline time remaining is not enough for polling, please check network condition",
                    )
                )
                return
            poll = min(poll, remaining - POLL_RESERVE)
        invisible = INVISIBLE_DURATION
        if request.HasField("invisible_duration"):
            invisible = _seconds(request.invisible_duration)
        refused = _check_invisible(invisible, self.min_invisible)
        if refused is not None:
            yield rpc.ReceiveMessageResponse(status=refused)
            return
        # A cancelled call must not stay parked until its poll runs out.
        context.add_callback(self._store.wake)
        leases = self._store.receive(
            request.group.name,
            request.message_queue.topic.name,
            accepts,
            request.batch_size or RECEIVE_BATCH_SIZE,
            invisible,
            poll,
            context.is_active,
        )
        if not leases:
            yield rpc.ReceiveMessageResponse(status=_status(Code.MESSAGE_NOT_FOUND, "no new message"))
            return
        # The client reads the whole stream first, then looks for the status among the responses.
        yield rpc.ReceiveMessageResponse(status=_status(Code.OK))
        yield rpc.ReceiveMessageResponse(delivery_timestamp=_timestamp(time.time()))
        namespace = request.message_queue.topic.resource_namespace
        for lease in leases:
            yield rpc.ReceiveMessageResponse(message=_delivery(lease, namespace))

    def AckMessage(self, request: rpc.AckMessageRequest, context: grpc.ServicerContext) -> Any:
        entries = []
        for entry in request.entries:
            acked = self._store.ack(request.group.name, request.topic.name, entry.receipt_handle, entry.message_id)
            status = _status(Code.OK) if acked else _invalid_handle()
            entries.append(
                rpc.AckMessageResultEntry(
                    message_id=entry.message_id, receipt_handle=entry.receipt_handle, status=status
                )
            )
        return rpc.AckMessageResponse(status=_overall(entries), entries=entries)

    def ChangeInvisibleDuration(
        self, request: rpc.ChangeInvisibleDurationRequest, context: grpc.ServicerContext
    ) -> Any:
        refused = _check_invisible(_seconds(request.invisible_duration), 0.0)
        if refused is not None:
            return rpc.ChangeInvisibleDurationResponse(status=refused)
        handle = self._store.change_invisible(
            request.group.name,
            request.topic.name,
            request.receipt_handle,
            request.message_id,
            _seconds(request.invisible_duration),
        )
        if handle is None:
            return rpc.ChangeInvisibleDurationResponse(status=_invalid_handle())
        return rpc.ChangeInvisibleDurationResponse(status=_status(Code.OK), receipt_handle=handle)

    def ForwardMessageToDeadLetterQueue(
        self, request: rpc.ForwardMessageToDeadLetterQueueRequest, context: grpc.ServicerContext
    ) -> Any:
        if self._store.dead_letter(request.group.name, request.topic.name, request.receipt_handle, request.message_id):
            return rpc.ForwardMessageToDeadLetterQueueResponse(status=_status(Code.OK))
        return rpc.ForwardMessageToDeadLetterQueueResponse(status=_invalid_handle())

    def _queue(self, topic: pb.Resource, endpoints: pb.Endpoints) -> pb.MessageQueue:
        # Point clients back at the address they dialled: it works behind port mappings and 0.0.0.0.
        broker = pb.Broker(
            name="rocketmq-double", id=0, endpoints=endpoints if endpoints.addresses else self._endpoints
        )
        return pb.MessageQueue(
            topic=topic,
            id=0,
            permission=pb.Permission.READ_WRITE,
            broker=broker,
            accept_message_types=ACCEPTED_TYPES,
        )


class RocketMQDouble:
    """A RocketMQ 5 endpoint in this process: gRPC on `host:port`, served by a thread pool."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8081,
        *,
        min_invisible: float = MIN_INVISIBLE_FOR_RECEIVE,
        auto_create: bool = True,
    ) -> None:
        """``min_invisible``: the shortest invisible duration a receive may ask for, as the proxy's
        ``minInvisibleTimeMillsForRecv``. ``auto_create``: any topic and group exists (for the demo); without
        it only those made with ``create_topic`` and ``create_group``, as on the real broker."""
        self.host = host
        self.port = port  # 0 picks a free port; start() stores the one bound
        self.min_invisible = min_invisible
        self._store = Store(auto_create)
        self._server: grpc.Server | None = None
        self._workers: futures.ThreadPoolExecutor | None = None

    @property
    def endpoints(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        self._workers = futures.ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="rocketmq-double")
        server = grpc.server(
            self._workers,
            # gRPC sets SO_REUSEPORT by default: a second double on the same port would silently share it.
            options=[("grpc.so_reuseport", 0)],
        )
        self.port = server.add_insecure_port(f"{self.host}:{self.port}")
        servicer = Servicer(self._store, _endpoints(self.host, self.port), self.min_invisible)
        service_pb2_grpc.add_MessagingServiceServicer_to_server(servicer, server)
        self._store.closed = False  # a restarted double keeps its messages
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is None:
            return
        self._store.close()  # parked long polls answer at once
        self._server.stop(grace=0.5).wait()
        self._server = None
        if self._workers is not None:
            self._workers.shutdown(wait=False)

    def create_topic(self, name: str) -> None:
        self._store.topic(name)

    def create_group(self, name: str, max_retries: int = DEFAULT_MAX_RETRIES) -> None:
        """A consumer group; a message is delivered to it at most ``max_retries`` + 1 times, then moved to
        the topic ``%DLQ%<group>``, as the broker's retryMaxTimes does."""
        self._store.group(name, max_retries)

    def publish(
        self,
        topic: str,
        body: bytes,
        keys: list[str] | None = None,
        tag: str | None = None,
        properties: dict[str, str] | None = None,
    ) -> str:
        """Store a message as if a producer had sent it; return its message id."""
        record = Record(
            topic=topic,
            message_id=_message_id(),
            body=bytes(body),
            tag=tag,
            keys=list(keys or []),
            properties=dict(properties or {}),
            born_host=self.host,
        )
        self._store.add(record)
        return record.message_id

    def stats(self) -> dict[str, Any]:
        """Counters since the double was made; per topic and group, the backlog and un-acked deliveries.

        A topic's `depth` is the backlog of its slowest group, or all its messages before any group reads it.
        """
        return self._store.stats()


def _record(message: pb.Message) -> Record:
    props = message.system_properties
    born = props.born_timestamp.ToNanoseconds() / 1e9 if props.HasField("born_timestamp") else time.time()
    return Record(
        topic=message.topic.name,
        message_id=props.message_id or _message_id(),
        body=message.body,
        tag=props.tag or None,
        keys=list(props.keys),
        properties=dict(message.user_properties),
        born_timestamp=born,
        born_host=props.born_host,
        message_type=props.message_type or pb.MessageType.NORMAL,
        message_group=props.message_group if props.HasField("message_group") else None,
        encoding=props.body_encoding or pb.Encoding.IDENTITY,
    )


def _delivery(lease: Lease, namespace: str) -> pb.Message:
    record = lease.record
    props = pb.SystemProperties(
        message_id=record.message_id,
        keys=record.keys,
        # The client marks a message without a digest it knows as corrupted.
        body_digest=pb.Digest(type=pb.DigestType.CRC32, checksum=f"{zlib.crc32(record.body):08X}"),
        body_encoding=record.encoding,
        message_type=record.message_type,
        born_timestamp=_timestamp(record.born_timestamp),
        born_host=record.born_host,
        store_timestamp=_timestamp(record.store_timestamp),
        store_host="rocketmq-double",
        receipt_handle=lease.handle,
        queue_id=0,
        queue_offset=record.offset,
        invisible_duration=_duration(lease.invisible),
        delivery_attempt=lease.attempt,
    )
    if record.tag is not None:
        props.tag = record.tag
    if record.message_group is not None:
        props.message_group = record.message_group
    return pb.Message(
        topic=pb.Resource(name=record.topic, resource_namespace=namespace),
        user_properties=record.properties,
        system_properties=props,
        body=record.body,
    )


def _settings(asked: pb.Settings) -> pb.Settings:
    settings = pb.Settings(
        client_type=asked.client_type,
        access_point=asked.access_point,
        request_timeout=asked.request_timeout,
        # Metrics on would make the client export OpenTelemetry data to an endpoint we would have to name.
        metric=pb.Metric(on=False),
    )
    if asked.HasField("publishing"):
        settings.publishing.CopyFrom(asked.publishing)
        settings.publishing.max_body_size = MAX_BODY_SIZE
        settings.publishing.validate_message_type = True
        settings.backoff_policy.max_attempts = 3
        backoff = settings.backoff_policy.exponential_backoff
        backoff.initial.CopyFrom(_duration(0.01))
        backoff.max.CopyFrom(_duration(1))
        backoff.multiplier = 2
    elif asked.HasField("subscription"):
        subscription = settings.subscription
        subscription.CopyFrom(asked.subscription)
        subscription.fifo = False
        subscription.receive_batch_size = RECEIVE_BATCH_SIZE
        if not asked.subscription.HasField("long_polling_timeout"):
            subscription.long_polling_timeout.CopyFrom(_duration(LONG_POLLING_TIMEOUT))
        # A PushConsumer waits this long before a message its listener failed comes back.
        settings.backoff_policy.max_attempts = 16
        settings.backoff_policy.customized_backoff.next.append(_duration(1))
    return settings


def _tag_filter(expression: pb.FilterExpression) -> TagFilter | None:
    if expression.type == pb.FilterType.SQL:
        return None
    text = expression.expression.strip()
    if text in ("", "*"):
        return lambda tag: True
    tags = {tag.strip() for tag in text.split("||")}
    return lambda tag: tag in tags


def _overall(entries: list[Any]) -> pb.Status:
    # The client only reads the overall status, so a lone entry's failure must show there.
    codes = {entry.status.code for entry in entries}
    if len(codes) == 1:
        return entries[0].status
    return _status(Code.MULTIPLE_RESULTS if codes else Code.OK)


def _status(code: int, message: str = "") -> pb.Status:
    return pb.Status(code=code, message=message or Code.Name(code))


def _client_id(context: grpc.ServicerContext) -> str:
    return next((value for key, value in context.invocation_metadata() if key == "x-mq-client-id"), "")


def _topic_not_found(topic: str) -> pb.Status:
    return _status(Code.TOPIC_NOT_FOUND, f"CODE: 17  DESC: No topic route info in name server for the topic: {topic}")


def _check_invisible(seconds: float, minimum: float) -> pb.Status | None:
    if seconds < minimum:
        return _status(Code.ILLEGAL_INVISIBLE_TIME, f"the invisibleTime is too small. min is {int(minimum * 1000)}")
    if seconds > MAX_INVISIBLE:
        return _status(
            Code.ILLEGAL_INVISIBLE_TIME, f"the invisibleTime is too large. max is {int(MAX_INVISIBLE * 1000)}"
        )
    return None


def _invalid_handle() -> pb.Status:
    # The latest handle of a delivery is the only valid one, and only until its invisible time ends.
    return _status(Code.INVALID_RECEIPT_HANDLE, "receipt handle is stale, expired or unknown")


def _endpoints(host: str, port: int) -> pb.Endpoints:
    try:
        version = ipaddress.ip_address(host).version
        scheme = pb.AddressScheme.IPv4 if version == 4 else pb.AddressScheme.IPv6
    except ValueError:
        scheme = pb.AddressScheme.DOMAIN_NAME
    return pb.Endpoints(scheme=scheme, addresses=[pb.Address(host=host, port=port)])


def _message_id() -> str:
    # The client's own ids are 34 upper-case hex digits starting with the version "01".
    return f"01{uuid.uuid4().hex.upper()}"


def _seconds(duration: Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration


def _timestamp(seconds: float) -> Timestamp:
    timestamp = Timestamp()
    timestamp.FromNanoseconds(int(seconds * 1e9))
    return timestamp


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emulator.rocketmq", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    args = parser.parse_args(argv)

    double = RocketMQDouble(args.host, args.port)
    double.start()
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    print(f"rocketmq double listening on {double.endpoints}", flush=True)
    stopping.wait()
    double.stop()


if __name__ == "__main__":
    main()
