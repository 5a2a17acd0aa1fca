"""/metrics: the counters kept in Redis (shared by every process) and gauges read now, in Prometheus's
text format as prometheus-client writes it.

Every process counts into one Redis hash, so any process reports the fleet's totals. A counter named
``family|label=value|...`` in that hash is one labelled series of ``family``; a few older flat names
(``events_applied``) are one labelled family each (see ``FLAT``).

Redis is read with redis.asyncio in the request (``snapshot``), and the library then renders that
snapshot through a collector of our own (``SnapshotCollector``): the library calls collectors
synchronously, and a Redis call made there would block the event loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import product
from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from ..domain.models import MODELS
from ..domain.task import STATUSES, Outcome, Status, as_text
from ..persistence import keys
from ..persistence.store import TaskStore

PREFIX = "wanhook_"
# The format generate_latest writes. Spelled out: newer versions of the library name a later format
# in CONTENT_TYPE_LATEST, while generate_latest keeps writing this one.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DOWNLOAD_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
HISTOGRAM = "download_seconds"


@dataclass(frozen=True)
class Counter:
    """A counter family: its help text, label names, and the label values known in advance, each of which
    is shown at zero until it first counts (so that rate() and alerts see it from the start)."""

    help: str
    labels: tuple[str, ...] = ()
    known: tuple[tuple[str, ...], ...] = field(default=((),))


def _one(*values: str) -> tuple[tuple[str, ...], ...]:
    return tuple((value,) for value in values)


# Every counter the code keeps (store.count(...) and the HINCRBYs of service/persistence/lua), by family name.
# tests/integration/test_observability.py checks the code for names missing here.
COUNTERS: dict[str, Counter] = {
    "events": Counter(
        "Completion events received, by what became of them (invalid: refused as malformed; early_applied: "
        "an event kept aside as unknown_task, applied once its create call returned; early_evicted: an "
        "early record dropped, the oldest, to keep a newer one within the cap)",
        ("outcome",),
        _one(*(outcome.value for outcome in Outcome), "invalid", "early_applied", "early_evicted"),
    ),
    "transitions": Counter(
        "Task state changes made by submission, download and cancel, by the state entered (a change a "
        "completion event makes is counted in wanhook_events_total)",
        ("to",),
        _one(*(status for status in STATUSES if status != Status.QUEUED)),
    ),
    "tasks_created": Counter("Tasks created (POST /v1/tasks)"),
    "tasks_deleted": Counter("Tasks deleted by their submitter (DELETE /v1/tasks/{id}), with their videos"),
    "retention_deleted": Counter(
        "What the retention sweep removed once past its time (task: an ended task and all kept for it; video: "
        "a stored video, its task kept)",
        ("what",),
        _one("task", "video"),
    ),
    "downloads": Counter(
        "Downloads by outcome (completed; failed; expired: the video URL expired first; deferred_disk_full and "
        "resumed_disk_room: a wait for disk space begun and ended)",
        ("outcome",),
        _one("completed", "failed", "expired", "deferred_disk_full", "resumed_disk_room"),
    ),
    "download_bytes": Counter("Bytes of the videos downloaded and stored"),
    "download_transfers_completed": Counter("Whole videos fetched and put in place"),
    "download_orphans_removed": Counter(
        "Videos stored after their task had ended or gone (a FAILED event or a deletion during the download), removed"
    ),
    "download_retries": Counter("Download attempts that failed with a transient error and were tried again"),
    "upload_retries": Counter("Uploads of a stored video to the object store that failed and were tried again"),
    "object_removals": Counter(
        "Removals of a deleted task's video from the object store that failed at once and were left owed "
        "(deferred), and owed ones done later by the sweeper (late)",
        ("outcome",),
        _one("deferred", "late"),
    ),
    "callback_attempts": Counter(
        "Callback deliveries by outcome (delivered, retried, gone: the receiver answered 410, dead: out of attempts)",
        ("outcome",),
        _one("delivered", "retried", "gone", "dead"),
    ),
    "dashscope_calls": Counter(
        "Calls to DashScope's task API by endpoint and HTTP status (or timeout, connection_error); other "
        "statuses appear when first answered",
        ("endpoint", "status"),
        tuple(product(("create", "read", "list", "cancel"), ("200", "timeout", "connection_error"))),
    ),
    "dashscope_reads_download": Counter("DashScope task reads made by downloads (for the video URL)"),
    "dashscope_reads_sweeper": Counter(
        "DashScope task reads made by the sweeper (tasks whose completion event is overdue)"
    ),
    "dashscope_lists_lost_create": Counter("DashScope task list pages read to find a create whose answer was lost"),
    "dashscope_reads_failure": Counter("DashScope task reads made for a failed task's code and message"),
    "failures_recorded": Counter("Failed tasks recorded with their reason after a FAILED event without one"),
    "failure_read_retries": Counter("Reads of a failed task's reason that failed transiently and were tried again"),
    "submissions_retried": Counter("Create calls that failed with a retryable error, their task put back in the queue"),
    "submissions_adopted": Counter("Create calls whose task was found by listing DashScope's tasks"),
    "submissions_orphaned": Counter("Late creates left running at DashScope after their task ended here"),
    "sweeper_recovered": Counter("Tasks moved on by the sweeper's read after no completion event came"),
    "slots_recovered": Counter(
        "DashScope slots taken back after their lease ran out (the holder died, or the events were lost)"
    ),
    "job_failures": Counter(
        "Job attempts whose handler raised (each one an attempt of WANHOOK_JOB_MAX_ATTEMPTS), by job kind",
        ("kind",),
        _one("download", "failure"),
    ),
    "jobs_dead_lettered": Counter(
        "Jobs given up after their attempts, written to their kind's dead letters (their tasks failed)",
        ("kind",),
        _one("download", "failure", "callback"),
    ),
    "jobs_replayed": Counter(
        "Dead letters queued again by an operator", ("kind",), _one("download", "failure", "callback")
    ),
    "jobs_requeued_by_sweeper": Counter("Download jobs queued again by the sweeper for a downloading task without one"),
    "messages_dead_lettered": Counter("Queue messages set aside as dead letters (malformed, or delivered too often)"),
    "streams_refused": Counter(
        "Event streams refused over a cap, per token or per process", ("cap",), _one("token", "process")
    ),
}
# Older flat counter names that are one labelled family each: prefix -> (family, label).
FLAT = {
    "events_": ("events", "outcome"),
    "transitions_": ("transitions", "to"),
    "callbacks_": ("callback_attempts", "outcome"),
    "downloads_": ("downloads", "outcome"),
}
UNKNOWN_HELP = "A counter this version of wanhook does not describe (kept by another version sharing the Redis)"


def series(name: str) -> tuple[str, dict[str, str]]:
    """The family and labels of one field of the counters hash."""
    family, *labels = name.split("|")
    if not labels:
        for prefix, (grouped, label) in FLAT.items():
            if family.startswith(prefix):
                return grouped, {label: family.removeprefix(prefix)}
    return family, dict(label.split("=", 1) for label in labels if "=" in label)


async def observe_download(store: TaskStore, seconds: float) -> None:
    # One MULTI, so that a scrape never sees some buckets counted and not the others.
    async with store.redis.pipeline(transaction=True) as pipe:
        for bound in (*DOWNLOAD_BUCKETS, math.inf):
            if seconds <= bound:
                pipe.hincrby(keys.COUNTERS, f"{HISTOGRAM}_bucket|le={floatToGoString(bound)}", 1)
        pipe.hincrbyfloat(keys.COUNTERS, f"{HISTOGRAM}_sum", seconds)
        await pipe.execute()


@dataclass
class Snapshot:
    """Everything /metrics shows, read from Redis at one moment."""

    counters: dict[str, float]  # the counters hash as it is
    tasks: dict[str, int]  # tasks per status
    queue_depth: dict[str, int]
    oldest_queued_seconds: dict[str, float]
    slots_in_use: dict[str, int]


def _number(value: Any) -> float:
    text = as_text(value)
    # Counters are whole numbers (HINCRBY); only the histogram's sum is a float (HINCRBYFLOAT).
    return int(text) if text.lstrip("-").isdigit() else float(text)


async def snapshot(store: TaskStore) -> Snapshot:
    """One round trip: the counters, and what the gauges are computed from."""
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.COUNTERS)
        for status in STATUSES:
            pipe.zcard(keys.TASKS_BY_STATUS + status)
        pipe.zrange(keys.TASKS_BY_STATUS + Status.QUEUED, 0, 0)
        pipe.xlen(keys.DOWNLOAD_JOBS)
        pipe.xrange(keys.DOWNLOAD_JOBS, count=1)
        pipe.xlen(keys.FAILURE_JOBS)
        pipe.zcard(keys.CALLBACKS_DUE)
        for model in MODELS:
            pipe.zcard(keys.SLOTS + model)
        raw, *rest = await pipe.execute()
    now_ms = time.time() * 1000
    statuses, rest = rest[: len(STATUSES)], rest[len(STATUSES) :]
    oldest_queued, downloads, oldest_download, failures, callbacks_due, *slots = rest
    # A queued task's member is "<created ms>:<id>"; a stream id is "<ms>-<seq>".
    queued_age = (now_ms - int(as_text(oldest_queued[0]).split(":")[0])) / 1000 if oldest_queued else 0.0
    download_age = (now_ms - int(as_text(oldest_download[0][0]).split("-")[0])) / 1000 if oldest_download else 0.0
    return Snapshot(
        counters={as_text(name): _number(value) for name, value in raw.items()},
        tasks=dict(zip(STATUSES, statuses, strict=True)),
        queue_depth={"download": downloads, "failure_reasons": failures, "callbacks": callbacks_due},
        oldest_queued_seconds={"submit": max(queued_age, 0.0), "download": max(download_age, 0.0)},
        slots_in_use=dict(zip(MODELS, slots, strict=True)),
    )


class SnapshotCollector(Collector):
    """Yields the metric families of one snapshot; it reads nothing itself."""

    def __init__(self, taken: Snapshot) -> None:
        self.taken = taken

    def collect(self) -> Iterator[Metric]:
        # family -> label values -> value; the known series first, at zero.
        values: dict[str, dict[tuple[str, ...], float]] = {
            family: dict.fromkeys(counter.known, 0) for family, counter in COUNTERS.items()
        }
        unknown: dict[str, list[tuple[dict[str, str], float]]] = {}
        buckets: dict[float, float] = {}
        histogram_sum = 0.0
        for name, value in sorted(self.taken.counters.items()):
            family, labels = series(name)
            if family == f"{HISTOGRAM}_bucket" and "le" in labels:
                buckets[float(labels["le"])] = value
            elif family == f"{HISTOGRAM}_sum":
                histogram_sum = value
            elif family in COUNTERS:
                key = tuple(labels.get(label, "") for label in COUNTERS[family].labels)
                values[family][key] = values[family].get(key, 0) + value
            else:
                unknown.setdefault(family, []).append((labels, value))

        for family, counter in COUNTERS.items():
            metric = CounterMetricFamily(PREFIX + family, counter.help, labels=counter.labels)
            for label_values, value in values[family].items():
                metric.add_metric(label_values, value)
            yield metric

        # Buckets are cumulative as counted (observe_download counts every bucket a duration fits in),
        # shown in the order of their bounds; a bound no longer in DOWNLOAD_BUCKETS is left out.
        histogram = HistogramMetricFamily(
            PREFIX + HISTOGRAM, "Time to download and store a video, in seconds", labels=()
        )
        histogram.add_metric(
            (),
            [(floatToGoString(bound), buckets.get(bound, 0)) for bound in (*DOWNLOAD_BUCKETS, math.inf)],
            sum_value=histogram_sum,
        )
        yield histogram

        yield self._gauge("tasks", "Tasks per state, for the whole installation", "status", self.taken.tasks)
        yield self._gauge(
            "queue_depth",
            "Download jobs not yet acknowledged (waiting or in progress), and callback deliveries due",
            "queue",
            self.taken.queue_depth,
        )
        yield self._gauge(
            "oldest_queued_seconds",
            "Age of the oldest task waiting for DashScope's quota (submit) "
            "and of the oldest download job (download); 0 when none",
            "queue",
            self.taken.oldest_queued_seconds,
        )
        yield self._gauge(
            "dashscope_slots_in_use", "DashScope running-task slots held per model", "model", self.taken.slots_in_use
        )

        for family, found in sorted(unknown.items()):
            names = sorted({label for labels, _ in found for label in labels})
            metric = CounterMetricFamily(PREFIX + family, UNKNOWN_HELP, labels=names)
            for labels, value in found:
                metric.add_metric([labels.get(label, "") for label in names], value)
            yield metric

    @staticmethod
    def _gauge(name: str, help: str, label: str, values: Mapping[str, float]) -> GaugeMetricFamily:
        metric = GaugeMetricFamily(PREFIX + name, help, labels=[label])
        for value_label, value in values.items():
            metric.add_metric([value_label], value)
        return metric


def exposition(taken: Snapshot) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(taken))
    return generate_latest(registry)


async def render(store: TaskStore) -> str:
    return exposition(await snapshot(store)).decode()
