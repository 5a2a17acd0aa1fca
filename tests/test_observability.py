"""What an operator sees: request ids, structured logs without secrets, Prometheus metrics."""

from __future__ import annotations

import json
import re

from .conftest import TOKEN, Stack
from .receiver import CallbackReceiver
from .support import wait_for


def test_request_id_is_echoed(stack: Stack) -> None:
    given = stack.http.get("/healthz", headers={"X-Request-ID": "trace-42"})
    assert given.headers["x-request-id"] == "trace-42"
    generated = stack.http.get("/v1/tasks/nope")
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    odd = stack.http.get("/healthz", headers={"X-Request-ID": "x" * 500})
    assert odd.headers["x-request-id"] != "x" * 500


def test_logs_are_json_with_ids_and_no_secrets(stack: Stack) -> None:
    stack.server.stop()
    stack.serve(stack.port, env={"WANHOOK_CALLBACK_ALLOW_PRIVATE": "1",
                                 "WANHOOK_CALLBACK_SECRET": "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ="})
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


def test_metrics(stack: Stack) -> None:
    stack.wait_status(stack.create("measured")["id"], "ready")
    stack.create("doomed [blocked]")
    stack.push({"specversion": "1.0", "id": "m-1", "source": "acs.oss", "type": "other", "data": {}})
    def metrics_once_failed() -> str | None:
        text = stack.http.get("/metrics").text
        return text if 'wanhook_tasks{status="failed"} 1' in text else None

    text = wait_for(metrics_once_failed, 30, what="the refused task in the metrics")
    for expected in ('wanhook_events_total{outcome="applied"} 1', 'wanhook_events_total{outcome="ignored"} 1',
                     'wanhook_transitions_total{to="ready"} 1', 'wanhook_downloads_total{outcome="completed"} 1',
                     'wanhook_dashscope_calls_total{endpoint="create",status="200"} 1',
                     'wanhook_dashscope_calls_total{endpoint="create",status="400"} 1',
                     'wanhook_dashscope_calls_total{endpoint="read",status="200"} 1',
                     'wanhook_download_seconds_bucket{le="+Inf"} 1', "wanhook_download_seconds_count 1",
                     'wanhook_tasks{status="ready"} 1', 'wanhook_tasks{status="failed"} 1',
                     'wanhook_queue_depth{queue="download"} 0', 'wanhook_oldest_queued_seconds{queue="submit"} 0'):
        assert expected in text, expected
    assert re.search(r"^wanhook_download_bytes_total \d+", text, re.M)
    types = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
    assert len({name for name, _ in types}) == len(types)  # each family declared once
