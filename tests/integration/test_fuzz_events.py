"""Generated completion events against the receiver: whatever arrives, no 5xx, the contract's error
shape for what is refused, and a consistent Redis afterwards.

The events are valid ones, mutated ones (fields dropped, retyped or added), the ``$.data`` form, other
products' events, duplicates, huge and deeply nested bodies, ids with colons and braces, lone
surrogates and bytes that are not UTF-8. Generation is derandomized and keeps no example database, so
every run sends the same requests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from wanhook.service.core.errors import InvalidEvent
from wanhook.service.domain import events
from wanhook.service.domain.events import SOURCE, STATUSES, TYPE
from wanhook.service.domain.task import Outcome

from ..conftest import TOKEN, Stack
from ..invariants import assert_consistent
from ..support import Process, wait_for

UNIQUE_KEY = "apikey:v1:aigc:video-generation:video-synthesis:wan2.2-t2v-plus"
OTHER_PRODUCT = "apikey:v1:audio:asr:transcription:paraformer-8k-v1"
EVENT_LIMIT = 256 * 1024
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)

# Text as it comes: any code point, lone surrogates included now and then (JSON can escape them).
texts = st.one_of(
    st.text(max_size=24),
    st.text(st.characters(codec=None), max_size=8),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2).map(lambda s: f"id-{s}"),
)
# Ids as DashScope and EventBridge make them, and as a key builder would fear them.
odd_ids = st.one_of(
    st.uuids().map(str),
    st.from_regex(r"[a-z0-9:{}\-*?\[\]]{1,40}", fullmatch=True),
    texts.filter(bool),
)
junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
statuses = st.one_of(st.sampled_from(sorted(STATUSES)), st.sampled_from(["succeeded", "DONE", ""]), junk)
# Never a fetchable address off this machine: loopback's discard port, or a host the test set-up refuses.
video_urls = st.sampled_from(
    [
        "http://127.0.0.1:9/video.mp4",
        "https://dashscope-result-bj.oss-cn-beijing.aliyuncs.com/1d/ab/video.mp4?Expires=1&Signature=x",
        "",
        "not a url",
    ]
)


def data_of(task_ids: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The CloudEvent's ``data``, as the spec shows it, with optional parts present or not."""
    output = st.fixed_dictionaries(
        {},
        optional={
            "video_url": video_urls | junk,
            "code": texts | junk,
            "message": texts | junk,
            "task_status": statuses,
        },
    )
    return st.fixed_dictionaries(
        {"task_id": task_ids, "task_status": statuses},
        optional={
            "user_api_unique_key": st.sampled_from([UNIQUE_KEY, OTHER_PRODUCT, ""]) | texts,
            "request_id": texts,
            "end_time": st.just("2025-01-25 09:45:16.969") | texts,
            "code": texts | junk,
            "message": texts | junk,
            "contain_result": st.booleans() | junk,
            "output_result": st.fixed_dictionaries({}, optional={"output": output | junk}) | output | junk,
        },
    )


def valid_data(task_ids: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Well-formed ``data`` of a Wan video task, in any status."""
    return st.fixed_dictionaries(
        {
            "task_id": task_ids,
            "task_status": st.sampled_from(sorted(STATUSES)),
            "user_api_unique_key": st.just(UNIQUE_KEY),
            "request_id": st.uuids().map(str),
            "end_time": st.just("2025-01-25 09:45:16.969"),
        },
        optional={
            "code": texts,
            "message": texts,
            "contain_result": st.booleans(),
            "output_result": st.fixed_dictionaries({"video_url": video_urls}),
        },
    )


def cloud_events(
    task_ids: st.SearchStrategy[Any],
    data: st.SearchStrategy[dict[str, Any]] | None = None,
) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "specversion": st.just("1.0"),
            "id": odd_ids,
            "source": st.sampled_from([SOURCE, SOURCE, "acs.oss"]) | texts,
            "type": st.sampled_from([TYPE, TYPE, "oss:ObjectCreated:PutObject"]) | texts,
            "data": data if data is not None else data_of(task_ids),
        },
        optional={
            "time": st.just("2023-1-25T01:45:16.969Z") | texts,
            "aliyunaccountid": texts,
            "datacontenttype": st.just("application/json;charset=utf-8"),
        },
    )


@st.composite
def mutated(draw: st.DrawFn, documents: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A document with a few fields dropped, given a value of the wrong type, or added."""
    document = draw(documents)
    for _ in range(draw(st.integers(1, 3))):
        data = document.get("data")
        target = data if isinstance(data, dict) and draw(st.booleans()) else document
        names = sorted(target)
        action = draw(st.sampled_from(["drop", "retype", "add"]))
        if action == "drop" and names:
            del target[draw(st.sampled_from(names))]
        elif action == "retype" and names:
            target[draw(st.sampled_from(names))] = draw(junk)
        else:
            target[draw(st.text(max_size=10))] = draw(junk)
    return document


def encode(document: Any) -> bytes:
    # ensure_ascii: a lone surrogate becomes a \\udXXX escape, which is valid JSON text.
    return json.dumps(document).encode()


def spliced(document: dict[str, Any], raw: bytes) -> bytes:
    """The document with ``raw`` bytes (not UTF-8) inside its id string."""
    return encode({**document, "id": "\x00SPLICE\x00"}).replace(b"\\u0000SPLICE\\u0000", raw)


def nested(depth: int, inside_data: bool) -> bytes:
    deep = b"[" * depth + b"]" * depth
    if not inside_data:
        return deep
    return (
        b'{"specversion": "1.0", "id": "deep", "source": "acs.dashscope", "type": "'
        + TYPE.encode()
        + b'", "data": {"task_id": "deep", "task_status": "FAILED", "code": '
        + deep
        + b"}}"
    )


def bodies(task_ids: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    whole = cloud_events(task_ids)
    return st.one_of(
        cloud_events(task_ids, valid_data(task_ids)).map(lambda doc: encode({**doc, "source": SOURCE, "type": TYPE})),
        valid_data(task_ids).map(encode),
        whole.map(encode),
        mutated(whole).map(encode),
        data_of(task_ids).map(encode),  # Body $.data
        mutated(data_of(task_ids)).map(encode),
        junk.map(encode),  # JSON, but not an object or not an event
        st.binary(max_size=64),
        st.builds(spliced, whole, st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80abc", b"\xf0\x28"])),
        st.builds(nested, st.sampled_from([50, 900, 5_000, 100_000]), st.booleans()),
        st.builds(
            lambda doc, size: encode({**doc, "padding": "x" * size}),
            whole,
            st.sampled_from([100_000, EVENT_LIMIT - 2_000, EVENT_LIMIT + 1, 400_000]),
        ),
        st.builds(lambda doc, size: encode({**doc, "id": "i" * size}), whole, st.sampled_from([10_000, 200_000])),
    )


def assert_error_shape(response: httpx.Response) -> None:
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) <= {"code", "message", "field"} and {"code", "message"} <= set(error), error
    assert isinstance(error["code"], str) and error["code"], error
    assert isinstance(error["message"], str) and error["message"], error


def test_parse_raises_nothing_but_invalid_event() -> None:
    @settings(FUZZ, max_examples=1000)
    @given(body=bodies(st.sampled_from(["ds-1", "ds-2"]) | odd_ids | junk))
    def check(body: bytes) -> None:
        try:
            event = events.parse(body)
        except InvalidEvent as exc:
            assert exc.code in ("invalid_json", "invalid_event")
            assert isinstance(exc.message, str) and exc.message
            return
        assert event.source and event.id and isinstance(event.type, str)
        if not event.foreign:
            assert event.task_id and event.task_status in STATUSES
        # What parse returns is recorded as is: Redis takes its text as UTF-8.
        for value in (
            event.source,
            event.id,
            event.type,
            event.task_id,
            event.task_status,
            event.model,
            event.video_url,
            event.code,
            event.message,
        ):
            if value is not None:
                value.encode()

    check()


def test_generated_events_never_crash_the_receiver_or_corrupt_state(
    tmp_path: Path, redis_url: str, processes: list[Process]
) -> None:
    stack = Stack(tmp_path, redis_url, processes)
    # Downloads that generated events start (of tasks still rendering, or from URLs nobody serves) give up
    # after one retry, so that they end within the test.
    stack.env.update(WANHOOK_DOWNLOAD_ATTEMPTS="2")
    stack.start()
    stack.emulator.configure(render_seconds=600)  # the tasks stay at DashScope: only generated events move them
    created = [stack.create(f"fuzzed {n}")["id"] for n in range(3)]
    submitted = [stack.wait_status(task_id, "submitted", timeout=30) for task_id in created[:2]]
    known = [task["dashscope"]["task_id"] for task in submitted]
    outcomes = {outcome.value for outcome in Outcome}
    seen: dict[int | str, int] = {}  # answers by status code, and 200s by outcome

    def event(task_id: str, status: Any, **fields: Any) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": f"evt-{task_id}-{status}",
            "source": SOURCE,
            "type": TYPE,
            "data": {"task_id": task_id, "task_status": status, "user_api_unique_key": UNIQUE_KEY},
            **fields,
        }

    json_type = "application/json"

    # Each kind of answer at least once, whatever the generator draws.
    @example(encode(event(known[0], "SUCCEEDED")), json_type)
    @example(encode(event(known[1], "FAILED")["data"]), None)  # Body $.data
    @example(encode(event("{wanhook}:task:x", "SUCCEEDED", id="{wanhook}:seen:a:b:{c}")), json_type)
    @example(encode(event("ds-unknown", "SUCCEEDED", padding="x" * EVENT_LIMIT)), json_type)
    @example(encode(event(known[0], "SUCCEEDED")), "text/plain")
    @example(encode(event("\ud800", "SUCCEEDED")), json_type)
    @example(spliced(event("ds-unknown", "FAILED"), b"\xed\xa0\x80"), json_type)
    @example(nested(100_000, False), json_type)
    @example(nested(900, True), json_type)
    @example(encode(event("ds-unknown", ["SUCCEEDED"])), json_type)
    @example(encode(event(known[1], "RUNNING")), json_type)  # not an end: stale
    @settings(FUZZ, max_examples=200)
    @given(
        body=bodies(st.sampled_from(known) | odd_ids),
        content_type=st.sampled_from(
            [json_type, "application/json; charset=utf-8", "application/cloudevents+json", None, "text/plain"]
        ),
    )
    def check(body: bytes, content_type: str | None) -> None:
        headers = {"x-eventbridge-signature-token": TOKEN}
        if content_type is not None:
            headers["content-type"] = content_type
        response = stack.http.post("/v1/events/dashscope", content=body, headers=headers)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code in (200, 400, 413, 415), (response.status_code, response.text[:300], body[:300])
        if response.status_code != 200:
            assert_error_shape(response)
        else:
            answer = response.json()
            assert answer["outcome"] in outcomes and isinstance(answer["event_id"], str) and answer["event_id"]
            seen[answer["outcome"]] = seen.get(answer["outcome"], 0) + 1
            # At-least-once delivery: the same push again changes nothing.
            again = stack.http.post("/v1/events/dashscope", content=body, headers=headers)
            assert again.status_code == 200, again.text[:500]
            assert again.json() == {"outcome": "duplicate", "event_id": answer["event_id"]}
        assert_consistent(stack.redis)

    check()
    # Every kind of answer was reached, so the test covers what it is meant to.
    assert {200, 400, 413, 415, "applied", "unknown_task", "ignored", "stale"} <= set(seen), seen
    assert stack.server.alive
    assert stack.http.get("/healthz").status_code == 200
    # Whatever the generated events did to the known tasks, each ends somewhere or is still in flight,
    # and the state stays consistent while the workers finish what the events started.
    wait_for(
        lambda: all(stack.task(task_id)["status"] != "downloading" for task_id in created),
        30,
        what="downloads started by generated events to end",
    )
    assert_consistent(stack.redis)
