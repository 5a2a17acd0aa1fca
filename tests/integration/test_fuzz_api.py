"""Schemathesis against a live ``wanhook serve``, from the OpenAPI document it serves.

Every operation gets generated requests, valid and invalid: none may get a 5xx, every status must be
one the document names, and every answer must match the document's schema (so every error has the
contract's shape). Generation is derandomized and keeps no example database: each run sends the same
requests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from wanhook.service.domain.models import MODELS

from ..conftest import TOKEN, Stack
from ..invariants import assert_consistent
from ..support import Process

EXAMPLES = 60  # per operation and mode
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=EXAMPLES,
    print_blob=False,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def api(tmp_path: Path, redis_url: str, processes: list[Process]) -> Iterator[Stack]:
    stack = Stack(tmp_path, redis_url, processes)
    # The fuzzer sends faster than a client may (429 is documented, and would hide the rest).
    stack.env.update(WANHOOK_RATE_LIMIT="100000")
    stack.start()
    # Tasks the fuzzer creates stay PENDING at DashScope: nothing renders, nothing ends on its own.
    stack.emulator.configure(limits={model: {"rps": 100, "running": 0} for model in MODELS})
    yield stack
    stack.http.close()
    stack.redis.close()


def canceled_task(stack: Stack) -> str:
    """A task in a terminal state: its event stream ends at once, so the fuzzer can follow it."""
    task_id = stack.create("a task for the fuzzer")["id"]
    response = stack.http.post(f"/v1/tasks/{task_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "canceled", response.text
    return task_id


def negatable(operation: APIOperation) -> bool:
    """Whether a request to the operation can break its schema: a body, or a parameter that is required or
    constrained (a path's task id, like an optional free-form header, is any string)."""
    return bool(operation.body) or any(
        parameter.location.value != "path" and (parameter.is_required or parameter.raw_schema != {"type": "string"})
        for parameter in operation.iter_parameters()
    )


def fuzz(
    base_url: str, session: requests.Session, operation: APIOperation, mode: GenerationMode, existing: str
) -> None:
    """Generated requests to one operation; a path's task id is now and then a task that exists."""
    strategies = [operation.as_strategy(generation_mode=mode)]
    if any(parameter.name == "task_id" for parameter in operation.path_parameters):
        strategies.append(operation.as_strategy(generation_mode=mode, path_parameters={"task_id": existing}))
    # Invalid requests must be refused, too.
    checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS

    @FUZZ
    @given(case=st.one_of(strategies))
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(
            base_url=base_url,
            session=session,
            headers={"x-eventbridge-signature-token": TOKEN},
            checks=checks,
            timeout=30,
        )

    check()


def test_openapi_document_describes_every_answer(api: Stack) -> None:
    schema = schemathesis.openapi.from_url(api.url + "/openapi.json", timeout=10)
    existing = canceled_task(api)
    session = requests.Session()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]

    for operation in operations:
        fuzz(api.url, session, operation, GenerationMode.POSITIVE, existing)
        if negatable(operation):
            fuzz(api.url, session, operation, GenerationMode.NEGATIVE, existing)
    assert api.server.alive
    assert api.http.get("/readyz").status_code == 200
    assert_consistent(api.redis)


def test_deep_or_unencodable_json_bodies_are_refused_not_crashed(api: Stack) -> None:
    # Beyond what a schema-driven generator makes: JSON nested past the parser's depth, and a lone
    # surrogate, which JSON can escape but UTF-8 (and so Redis) cannot hold.
    headers = {"content-type": "application/json"}
    for body in (
        b"[" * 100_000 + b"]" * 100_000,
        b'{"prompt": ' + b"[" * 30_000 + b"]" * 30_000 + b"}",
        b'{"prompt": "\\ud800 fox"}',
        b'{"prompt": "fox", "metadata": {"\\udfff": "x"}}',
        b'{"prompt": "fox", "negative_prompt": "\\ud83d"}',
    ):
        response = api.http.post("/v1/tasks", content=body, headers=headers)
        assert response.status_code in (400, 413, 422), (body[:60], response.status_code, response.text[:300])
        error = response.json()["error"]
        assert error["code"] and error["message"]
    listed = httpx.get(api.url + "/v1/tasks", timeout=10).json()["tasks"]
    assert all("\\ud800" not in json.dumps(task) for task in listed)


def test_event_stream_resume_ids_are_checked_and_never_wait_past_the_end(api: Stack) -> None:
    task_id = canceled_task(api)
    url = f"/v1/tasks/{task_id}/events"

    def events(last_event_id: str) -> list[str]:
        with api.http.stream("GET", url, headers={"Last-Event-ID": last_event_id}, timeout=10) as response:
            assert response.status_code == 200
            return [line.removeprefix("event: ") for line in response.iter_lines() if line.startswith("event: ")]

    for bad in (":", "abc", "1-2-3", "-1", "1" * 30, "1-"):
        response = api.http.get(url, headers={"Last-Event-ID": bad})
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_last_event_id", bad
    for bad in ("x", "١٢٣"):  # not even ASCII digits
        assert api.http.get(url, params={"last_event_id": bad}).status_code == 400, bad
    everything = events("0-0")
    assert everything[0] == "task.queued" and everything[-1] == "task.canceled"
    last = api.redis.xrevrange("{wanhook}:changes:" + task_id, count=1)[0][0]
    # After the end of a finished task, or past it: the final state once more, and the stream ends.
    assert events(last) == ["task.canceled"]
    assert events("99999999999999-0") == ["task.canceled"]
