"""The completion event parser (service/domain/events.py): both accepted forms, what is foreign, what is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from wanhook.service.domain.events import SOURCE, TYPE, InvalidEvent, parse

UNIQUE_KEY = "apikey:v1:aigc:video-generation:video-synthesis:wan2.2-t2v-plus"


def data(**extra: Any) -> dict[str, Any]:
    return {
        "task_id": "ds-1",
        "task_status": "SUCCEEDED",
        "user_api_unique_key": UNIQUE_KEY,
        "request_id": "r-1",
        "end_time": "2025-01-01 00:00:10.000",
        **extra,
    }


def cloudevent(payload: Any = None, **extra: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "ev-1",
        "source": SOURCE,
        "type": TYPE,
        "data": data() if payload is None else payload,
        **extra,
    }


def body(document: Any) -> bytes:
    return json.dumps(document).encode()


def test_a_whole_cloudevent() -> None:
    event = parse(body(cloudevent()))
    assert (event.source, event.id, event.type) == (SOURCE, "ev-1", TYPE)
    assert (event.task_id, event.task_status, event.model) == ("ds-1", "SUCCEEDED", "wan2.2-t2v-plus")
    assert not event.foreign
    assert event.video_url is None and event.code is None and event.message is None


def test_the_data_alone_gets_an_id_of_its_task_status_and_request() -> None:
    event = parse(body(data()))
    assert (event.source, event.type, event.task_id) == (SOURCE, TYPE, "ds-1")
    assert event.id.startswith("data-") and len(event.id) == len("data-") + 32
    # Redelivered, the same event: the same id. Another status of the task: another id.
    assert parse(body(data())).id == event.id
    assert parse(body(data(task_status="FAILED"))).id != event.id


def test_the_result_when_the_event_carries_it() -> None:
    result = {"output": {"task_id": "ds-1", "task_status": "SUCCEEDED", "video_url": "https://oss.test/v.mp4"}}
    event = parse(body(cloudevent(data(contain_result=True, output_result=result))))
    assert event.video_url == "https://oss.test/v.mp4"
    # The result's own shape without the "output" wrapper is read too.
    flat = parse(body(cloudevent(data(contain_result=True, output_result=result["output"]))))
    assert flat.video_url == "https://oss.test/v.mp4"
    # Without contain_result: true the result is not read.
    assert parse(body(cloudevent(data(output_result=result)))).video_url is None


def test_a_failure_code_and_message_from_the_result_or_the_data() -> None:
    result = {"output": {"code": "DataInspectionFailed", "message": "inappropriate"}}
    event = parse(body(cloudevent(data(task_status="FAILED", contain_result=True, output_result=result))))
    assert (event.code, event.message) == ("DataInspectionFailed", "inappropriate")
    event = parse(body(cloudevent(data(task_status="FAILED", code="InternalError.Algo", message=500))))
    assert (event.code, event.message) == ("InternalError.Algo", "500")
    # Neither an object nor a boolean is a code.
    event = parse(body(cloudevent(data(task_status="FAILED", code={"x": 1}, message=True))))
    assert (event.code, event.message) == (None, None)


@pytest.mark.parametrize(
    "document",
    [
        cloudevent(source="acs.oss"),
        cloudevent(type="oss:ObjectCreated:PutObject"),
        # Another DashScope product's task on the same rule.
        cloudevent(data(user_api_unique_key="apikey:v1:aigc:text-generation:generation:qwen-plus")),
    ],
)
def test_foreign_events_are_parsed_but_foreign(document: dict[str, Any]) -> None:
    assert parse(body(document)).foreign


def test_a_foreign_event_needs_no_task() -> None:
    event = parse(body(cloudevent({"bucket": "b"}, source="acs.oss")))
    assert event.foreign and (event.task_id, event.task_status) == ("", "")


def test_a_model_is_read_from_the_unique_key_only_when_there_is_one() -> None:
    assert parse(body(cloudevent(data(user_api_unique_key=None)))).model is None
    assert parse(body(cloudevent(data(user_api_unique_key="plain")))).model is None


@pytest.mark.parametrize(
    "raw,code",
    [
        (b"not json", "invalid_json"),
        (b"[" * 100_000, "invalid_json"),
        (b"[1, 2]", "invalid_event"),
        (body({"hello": "world"}), "invalid_event"),
        (body(cloudevent(["not", "an", "object"])), "invalid_event"),
        (body(cloudevent(id="")), "invalid_event"),
        (body(cloudevent(id=7)), "invalid_event"),
        (body(cloudevent(type=None)), "invalid_event"),
        (body(cloudevent(data(task_id=""))), "invalid_event"),
        (body(cloudevent(data(task_id=12))), "invalid_event"),
        (body(cloudevent(data(task_status="DONE"))), "invalid_event"),
        (body(data(task_status=None)), "invalid_event"),
        (b'{"task_id": "\\ud800", "task_status": "SUCCEEDED"}', "invalid_json"),  # documents.load: UTF-8 cannot hold it
    ],
)
def test_refused(raw: bytes, code: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse(raw)
    assert caught.value.code == code
    assert caught.value.message
