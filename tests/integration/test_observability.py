"""What an operator sees: request ids, structured logs without secrets, Prometheus metrics."""

from __future__ import annotations

import json
import re

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from wanhook.service.domain.models import MODELS
from wanhook.service.domain.task import STATUSES
from wanhook.service.observability import metrics

from ..conftest import TOKEN, Stack
from ..receiver import CallbackReceiver
from ..support import ROOT, free_port, wait_for


def test_request_id_is_echoed(stack: Stack) -> None:
    given = stack.http.get("/healthz", headers={"X-Request-ID": "trace-42"})
    assert given.headers["x-request-id"] == "trace-42"
    generated = stack.http.get("/v1/tasks/nope")
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    odd = stack.http.get("/healthz", headers={"X-Request-ID": "x" * 500})
    assert odd.headers["x-request-id"] != "x" * 500


def test_logs_are_json_with_ids_and_no_secrets(stack: Stack) -> None:
    stack.server.stop()
    stack.serve(
        stack.port,
        env={"WANHOOK_CALLBACK_ALLOW_PRIVATE": "1", "WANHOOK_CALLBACK_SECRET": "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ="},
    )
    with CallbackReceiver() as receiver:
        task = stack.create("logged", callback={"url": receiver.url})
        stack.wait_status(task["id"], "ready")
        wait_for(lambda: receiver.received, 30, what="the callback")
    stack.server.stop()  # flush and close its log
    lines = [json.loads(line) for line in stack.processes[-1].log().splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    event_lines = [line for line in lines if line["logger"] == "wanhook.events"]
    assert event_lines and all(line.get("request_id") and line.get("event_id") for line in event_lines)
    assert any(line.get("task_id") == task["id"] for line in event_lines)
    download_lines = [line for line in lines if line["logger"] == "wanhook.download"]
    assert download_lines and all(line.get("task_id") == task["id"] for line in download_lines)
    text = stack.processes[-1].log()
    for secret in ("Signature=", "Expires=", "sk-test-key", TOKEN, "c2VjcmV0LXNlY3JldC1zZWNyZXQ="):
        assert secret not in text, secret
    assert "?<redacted>" in text  # the signed URL was logged, without its query string


def scrape(http: httpx.Client) -> dict[str, Metric]:
    """/metrics as Prometheus reads it: parsed by prometheus-client's own parser, by family."""
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = list(text_string_to_metric_families(response.text))
    assert len({family.name for family in families}) == len(families)  # each family declared once
    # Every family has HELP and TYPE lines (the parser calls a family without TYPE "unknown").
    assert all(family.documentation and family.type != "unknown" for family in families), [
        family.name for family in families if not family.documentation or family.type == "unknown"
    ]
    return {family.name: family for family in families}


def value(families: dict[str, Metric], sample: str, **labels: str) -> float:
    found = [s.value for family in families.values() for s in family.samples if s.name == sample and s.labels == labels]
    assert len(found) == 1, (sample, labels, found)
    return found[0]


def buckets(families: dict[str, Metric]) -> list[tuple[str, float]]:
    return [
        (s.labels["le"], s.value) for s in families["wanhook_download_seconds"].samples if s.name.endswith("_bucket")
    ]


def counters(families: dict[str, Metric]) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in families.values()
        if family.type in ("counter", "histogram")
        for s in family.samples
    }


BOUNDS = [*(floatToGoString(bound) for bound in metrics.DOWNLOAD_BUCKETS), "+Inf"]


def test_metrics(stack: Stack) -> None:
    task = stack.wait_status(stack.create("measured")["id"], "ready")
    stack.create("doomed [blocked]")
    stack.push({"specversion": "1.0", "id": "m-1", "source": "acs.oss", "type": "other", "data": {}})

    def once_failed() -> dict[str, Metric] | None:
        found = scrape(stack.http)
        return found if value(found, "wanhook_tasks", status="failed") == 1 else None

    families = wait_for(once_failed, 30, what="the refused task in the metrics")
    for sample, labels, expected in (
        ("wanhook_events_total", {"outcome": "applied"}, 1),
        ("wanhook_events_total", {"outcome": "ignored"}, 1),
        ("wanhook_events_total", {"outcome": "duplicate"}, 0),
        ("wanhook_transitions_total", {"to": "ready"}, 1),
        ("wanhook_downloads_total", {"outcome": "completed"}, 1),
        ("wanhook_downloads_total", {"outcome": "failed"}, 0),
        ("wanhook_dashscope_calls_total", {"endpoint": "create", "status": "200"}, 1),
        ("wanhook_dashscope_calls_total", {"endpoint": "create", "status": "400"}, 1),
        ("wanhook_dashscope_calls_total", {"endpoint": "read", "status": "200"}, 1),
        ("wanhook_download_seconds_count", {}, 1),
        ("wanhook_tasks", {"status": "ready"}, 1),
        ("wanhook_tasks", {"status": "failed"}, 1),
        ("wanhook_queue_depth", {"queue": "download"}, 0),
        ("wanhook_oldest_queued_seconds", {"queue": "submit"}, 0),
        # Exact: the bytes stored, to the byte.
        ("wanhook_download_bytes_total", {}, task["video"]["bytes"]),
    ):
        assert value(families, sample, **labels) == expected, (sample, labels)
    # The buckets in the order of their bounds, cumulative, the last one the count.
    counted = buckets(families)
    assert [bound for bound, _ in counted] == BOUNDS
    assert all(a <= b for (_, a), (_, b) in zip(counted, counted[1:], strict=False)) and counted[-1][1] == 1
    assert 0 < value(families, "wanhook_download_seconds_sum") <= 60


def test_metrics_are_all_there_from_the_start(stack: Stack) -> None:
    families = scrape(stack.http)
    # Every counter the code keeps, at zero before anything happened: each known series, HELP and TYPE.
    for name, counter in metrics.COUNTERS.items():
        family = families[f"wanhook_{name}"]
        assert (family.type, family.documentation) == ("counter", counter.help)
        for known in counter.known:
            assert value(families, f"wanhook_{name}_total", **dict(zip(counter.labels, known, strict=True))) == 0
    assert families["wanhook_download_seconds"].type == "histogram"
    assert buckets(families) == [(bound, 0) for bound in BOUNDS]
    assert value(families, "wanhook_download_seconds_count") == value(families, "wanhook_download_seconds_sum") == 0
    assert families["wanhook_tasks"].type == "gauge"
    for status in STATUSES:
        assert value(families, "wanhook_tasks", status=status) == 0
    for model in MODELS:
        assert value(families, "wanhook_dashscope_slots_in_use", model=model) == 0
    for queue in ("download", "callbacks"):
        assert value(families, "wanhook_queue_depth", queue=queue) == 0
    for queue in ("submit", "download"):
        assert value(families, "wanhook_oldest_queued_seconds", queue=queue) == 0


def test_metrics_are_exact_and_the_same_from_every_process(stack: Stack) -> None:
    # Totals past six significant digits (a 4.65 MB video) and up to 2**53, each exact to the unit.
    stack.redis.hincrby("{wanhook}:counters", "download_bytes", 4_650_491)
    stack.redis.hincrby("{wanhook}:counters", "dashscope_reads_sweeper", 2**53 - 1)
    # A counter kept by a newer wanhook sharing the Redis (a rolling upgrade) is shown, not dropped.
    stack.redis.hincrby("{wanhook}:counters", "widgets_made|kind=round", 3)
    families = scrape(stack.http)
    assert value(families, "wanhook_download_bytes_total") == 4_650_491
    assert value(families, "wanhook_dashscope_reads_sweeper_total") == 2**53 - 1
    assert value(families, "wanhook_widgets_made_total", kind="round") == 3
    assert families["wanhook_widgets_made"].type == "counter"

    # Another process reports the same totals: the counters are the Redis's, not the process's.
    other = stack.serve(free_port())
    with httpx.Client(base_url=f"http://127.0.0.1:{other.port}", timeout=30) as http:
        assert counters(scrape(http)) == counters(families)


def test_every_counter_the_code_keeps_is_described() -> None:
    """The code's counter names (store.count(...) and the HINCRBYs of its Lua scripts) against the families
    /metrics describes and shows at zero from the start."""
    found: list[tuple[str, bool]] = []  # (name, built at run time from a fixed start and values?)
    for path in [
        *(ROOT / "service").rglob("*.py"),
        *(ROOT / "service").rglob("*.lua"),
        *(ROOT / "consumers").rglob("*.py"),
    ]:
        text = path.read_text()
        for formatted, name in re.findall(r'store\.count\((f?)"([^"]*)"', text):
            found.append((name, bool(formatted) and "{" in name))
        # The scripts (service/persistence/lua) name the counters' hash by its Lua local, COUNTERS (scripts.KEY_NAMES,
        # or the KEYS entry SETTLE_CALLBACK binds to that name).
        counted = re.findall(r"HINCRBY', COUNTERS, '([^']*)'( \.\.)?", text)
        # Every Lua call on the hash is one of those: a counter named otherwise would go unchecked.
        assert len(counted) == text.count("', COUNTERS,"), f"{path}: a counter the pattern does not read"
        for name, joined in counted:
            found.append((name, bool(joined)))
    assert len(found) >= 20, found
    for name, built in found:
        if built:  # label values known only at run time: the family and its label names must fit
            family, labels = metrics.series(name.split("{")[0].split("|")[0])
            names = set(re.findall(r"\|(\w+)=", name)) or set(labels)
        else:
            family, labels = metrics.series(name)
        assert family in metrics.COUNTERS, f"{name!r} is counted but not in service/observability/metrics.py COUNTERS"
        counter = metrics.COUNTERS[family]
        if built:
            assert names == set(counter.labels), name
        else:
            assert tuple(labels.get(label, "") for label in counter.labels) in counter.known, (
                f"{name!r} is counted but not shown at zero from the start (COUNTERS[{family!r}].known)"
            )
