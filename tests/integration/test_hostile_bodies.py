"""Hostile request bodies against a real serve on loopback: forms and JSON near the cap and past its shape's
limits, bodies that drip or never come, and one caller holding every large body's slot. Each is refused with
its own 4xx (or 503 with Retry-After), changes nothing, and leaves the webhook answering meanwhile."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from wanhook.service.persistence import keys

from ..conftest import TOKEN, Stack
from ..support import wait_for
from .test_deletion import event
from .test_kinds import cat, data_url  # noqa: F401 (cat: a fixture)

BOUNDARY = b"hostile"
FORM_TYPE = "multipart/form-data; boundary=hostile"


def form(parts: list[tuple[bytes, bytes]]) -> bytes:
    """A multipart body of (part head, part body) pairs."""
    out = bytearray()
    for head, body in parts:
        out += b"--" + BOUNDARY + b"\r\n" + head + b"\r\n\r\n" + body + b"\r\n"
    return bytes(out + b"--" + BOUNDARY + b"--\r\n")


def field(name: str) -> bytes:
    return b'Content-Disposition: form-data; name="' + name.encode() + b'"'


def error_of(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return str(error["message"])


class PushProbe:
    """Pushes an event for an unknown task every 50 ms on its own thread, keeping the slowest answer's time."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.latencies: list[float] = []
        self.statuses: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.stack.url, timeout=30) as client:
            n = 0
            while not self._stop.is_set():
                n += 1
                started = time.monotonic()
                response = client.post(
                    "/v1/events/dashscope",
                    json=event(f"ds-probe-{n}", "FAILED", event_id=f"probe-{n}"),
                    headers={"x-eventbridge-signature-token": TOKEN},
                )
                self.latencies.append(time.monotonic() - started)
                self.statuses.add(response.status_code)
                self._stop.wait(0.05)

    def __enter__(self) -> PushProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        if exc[0] is None:
            assert self.statuses == {200}, self.statuses


def test_forms_past_their_limits_are_refused_without_stalling_the_webhook(stack: Stack) -> None:
    """27 MiB of tiny parts (the email parser took 20-45 s of the loop for them), too many part headers, a part
    header too long, a text field too large: each 400 or 413 naming the problem, no task, and pushes answered
    meanwhile."""
    part = len(form([(field("f1000000"), b"x")])) - len(form([]))
    tiny = form([(field(f"f{n}"), b"x") for n in range(26 * 1024 * 1024 // part)])
    assert 25 << 20 < len(tiny) < 27 << 20
    many_headers = form([(field("prompt") + b"".join(b"\r\nX-%d: 1" % n for n in range(9)), b"a fox")])
    long_header = form([(field("prompt") + b"\r\nX-Long: " + b"a" * 5000, b"a fox")])
    big_field = form([(field("prompt"), b"a" * (64 * 1024 + 1))])
    with PushProbe(stack) as probe:
        for _ in range(3):
            message = error_of(
                stack.http.post("/v1/tasks", content=tiny, headers={"content-type": FORM_TYPE}, timeout=60),
                400,
                "invalid_form",
            )
            assert "more than 32 parts" in message
        for body in (many_headers, long_header):
            response = stack.http.post("/v1/tasks", content=body, headers={"content-type": FORM_TYPE})
            error_of(response, 400, "invalid_form")
        error_of(
            stack.http.post("/v1/tasks", content=big_field, headers={"content-type": FORM_TYPE}), 413, "body_too_large"
        )
    assert stack.http.get("/v1/tasks").json()["tasks"] == []
    worst = max(probe.latencies)
    print(
        f"\nworst webhook answer while the forms were refused: {worst * 1000:.0f} ms over {len(probe.latencies)} pushes"
    )
    assert len(probe.latencies) >= 3 and worst < 5, worst  # stalls of 20-45 s before


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        # Near the 27 MiB cap, an image field's name in it: read as a large image create.
        (b'{"first_frame_url": "x", "metadata": [' + b"{}," * (8 << 20) + b"{}]}", "objects and arrays"),
        (b'{"first_frame_url": "x", "metadata": [' + b"1," * (12 << 20) + b"1]}", "commas"),
        (b'{"prompt": "a fox", "metadata": ' + b"[" * 40 + b"]" * 40 + b"}", "deeper than 32"),
        (b'{"first_frame_url": "x", "metadata": {' + b",".join(b'"k%d": 1' % n for n in range(10_001)) + b"}}", "keys"),
    ],
    ids=["containers", "commas", "depth", "members"],
)
def test_json_past_its_shape_is_400(stack: Stack, body: bytes, problem: str) -> None:
    response = stack.http.post("/v1/tasks", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert problem in error_of(response, 400, "invalid_json")
    assert stack.http.get("/v1/tasks").json()["tasks"] == []


async def _drip(port: int, head: bytes, body: bytes, every: float) -> bytes:
    """Send ``head`` and then ``body`` a byte every ``every`` seconds; what serve answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    answer = asyncio.ensure_future(reader.read())
    try:
        for byte in body:
            if answer.done():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.wait([answer], timeout=every)
        return await asyncio.wait_for(answer, 30)
    finally:
        writer.close()


def request_head(path: str, length: int, content_type: str = "application/json", **headers: str) -> bytes:
    lines = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n{lines}\r\n"
    ).encode()


def test_a_body_that_drips_or_never_comes_gets_408(stack: Stack) -> None:
    """Under WANHOOK_BODY_MIN_RATE over the window, a create's or a push's body is answered 408 body_timeout
    (the connection closed), whether it drips or never starts; nothing is recorded."""
    guarded = stack.serve(
        None, "--no-workers", env={"WANHOOK_BODY_MIN_RATE": "1000", "WANHOOK_BODY_RATE_WINDOW_SECONDS": "1"}
    )
    task = json.dumps({"prompt": "a fox", "size": "832*480"}).encode()
    push = json.dumps(event("ds-dripped", "FAILED", event_id="dripped")).encode()
    recorded = stack.redis.xlen(keys.EVENT_LOG)

    async def scenario() -> list[bytes]:
        return list(
            await asyncio.gather(
                _drip(guarded.port, request_head("/v1/tasks", len(task)), task, 0.2),
                _drip(guarded.port, request_head("/v1/tasks", len(task)), b"", 0),
                _drip(
                    guarded.port,
                    request_head("/v1/events/dashscope", len(push), x_eventbridge_signature_token=TOKEN),
                    push,
                    0.2,
                ),
                _drip(
                    guarded.port, request_head("/v1/tasks", 3 << 20, "multipart/form-data; boundary=b"), b"--b\r\n", 0.2
                ),
            )
        )

    started = time.monotonic()
    for answer in asyncio.run(scenario()):
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer[:200]
        assert json.loads(body)["error"]["code"] == "body_timeout"
    assert time.monotonic() - started < 20
    assert stack.http.get("/v1/tasks").json()["tasks"] == []
    assert stack.redis.xlen(keys.EVENT_LOG) == recorded


async def _answer_while_sending(port: int, head: bytes) -> bytes:
    """Send ``head`` and 1 MiB of its body at once (more than serve reads before it answers), then read the
    answer to its end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + b"{" + b" " * (1 << 20))
        await asyncio.wait_for(writer.drain(), 10)
        return await asyncio.wait_for(reader.read(), 10)  # to the end: a reset would raise here
    finally:
        writer.close()


def test_an_answer_given_while_the_body_still_comes_is_read_whole(stack: Stack) -> None:
    """An answer that closes the connection while the client's body is still unread reaches the client whole,
    then the connection's end; never a reset that takes the answer with it (RFC 9112 §9.6). uvicorn's close
    (after a client's Connection: close, as after wanhook's 408) and wanhook's own (a 413) go the same way."""
    for connection in ("close", "keep-alive"):
        answer = asyncio.run(
            _answer_while_sending(stack.port, request_head("/v1/tasks", 64 << 20, connection=connection))
        )
        top, _, body = answer.partition(b"\r\n\r\n")
        assert top.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"\r\nconnection: close" in top.lower(), top  # told: no next request is sent on it
        assert json.loads(body)["error"]["code"] == "body_too_large"


def test_one_caller_cannot_hold_every_large_body_slot(stack: Stack) -> None:
    """With two large-body slots, a caller holds at most one: its second large body waits and is answered 503
    busy with Retry-After, while another caller's large create goes through the slot left."""
    guarded = stack.serve(
        None,
        "--no-workers",
        env={
            "WANHOOK_API_TOKENS": "tenant-a,tenant-b",
            "WANHOOK_LARGE_BODIES": "2",
            "WANHOOK_BODY_MIN_RATE": "1",
            "WANHOOK_BODY_RATE_WINDOW_SECONDS": "60",
        },
    )
    held = socket.create_connection(("127.0.0.1", guarded.port))
    try:
        # Tenant A's large body, a few bytes of it sent: it holds a slot while it comes.
        held.sendall(request_head("/v1/tasks", 1 << 20, authorization="Bearer tenant-a") + b'{"prompt": ')

        def large(token: str) -> httpx.Response:
            body = json.dumps({"prompt": "a fox", "first_frame_url": "x" * (200 << 10)})
            return httpx.post(
                f"{guarded.url}/v1/tasks",
                content=body,
                headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
                timeout=30,
            )

        deadline = time.monotonic() + 30
        second = large("tenant-a")
        while second.status_code != 503 and time.monotonic() < deadline:  # until the first is surely held
            second = large("tenant-a")
        error_of(second, 503, "busy")
        assert second.headers["retry-after"] == "5"
        other = large("tenant-b")
        assert other.status_code == 422 and other.json()["error"]["field"] == "first_frame_url", other.text
    finally:
        held.close()


def test_a_large_image_create_is_parsed_off_the_loop(stack: Stack, cat: Path) -> None:  # noqa: F811
    """A create of 27 MiB (two images as data URLs, each just under 10 MiB, padded) is parsed and checked in the
    parse process: pushes keep their answers meanwhile, and the task is made as from a small body."""
    image = cat.read_bytes()
    padded = data_url(image + b"\0" * (9 * 1024 * 1024 - len(image)), "image/jpeg")
    body = json.dumps({"kind": "kf2v", "resolution": "480P", "first_frame_url": padded, "last_frame_url": padded})
    ids = set()
    with PushProbe(stack) as probe:
        for _ in range(3):
            response = stack.http.post(
                "/v1/tasks",
                content=body,
                headers={"content-type": "application/json", "idempotency-key": "large"},
                timeout=60,
            )
            assert response.status_code == 202, response.text
            ids.add(response.json()["id"])
    assert len(ids) == 1  # the retries answered by the first task
    worst = max(probe.latencies)
    print(f"\nworst webhook answer while 27 MiB creates were parsed: {worst * 1000:.0f} ms over {len(probe.latencies)}")
    assert worst < 5, worst


def _chunked(body: bytes) -> object:
    """``body`` as an iterator: httpx sends it chunked, with no Content-Length (a large body by its head)."""
    return iter([body[: len(body) // 2], body[len(body) // 2 :]])


# Over INLINE_MAX in all, so that the form is read under a slot and parsed in the parse process.
PAD = [(field("prompt"), b"a fox " * 10_000), (field("negative_prompt"), b"rain " * 4_000)]
IMAGE_PART = b"Content-Disposition: form-data; name=\"first_frame_url\"; filename*=UTF-8''%E7%8C%AB.jpg"
MALFORMED = {
    # A form's integer that str.isdigit() takes and int() does not.
    "superscript duration": (form([(field("duration"), "²".encode()), *PAD[:1]]), FORM_TYPE, 422, "invalid_field"),
    "double minus seed, parsed off the loop": (form([(field("seed"), b"--5"), *PAD]), FORM_TYPE, 422, "invalid_field"),
    "boundary over 256 bytes": (
        form([(field("prompt"), b"a fox")]).replace(BOUNDARY, b"b" * 300),
        "multipart/form-data; boundary=" + "b" * 300,
        400,
        "invalid_form",
    ),
    "a part without Content-Disposition": (form([(b"Content-Type: text/plain", b"x")]), FORM_TYPE, 400, "invalid_form"),
    "duplicate boundaries": (b"--hostile\r\n" + form([(field("prompt"), b"a fox")]), FORM_TYPE, 400, "invalid_form"),
    "a file named only by filename*": (
        form([(field("prompt"), b"a fox"), (IMAGE_PART + b"\r\nContent-Type: image/jpeg", b"\xff\xd8\xff\xe0")]),
        FORM_TYPE,
        422,
        "invalid_field",
    ),
    # JSON's own decoder takes UTF-8's encoding of a lone surrogate ("surrogatepass"), and UTF-16 hides the
    # escape from a search for b"\\u": neither is text Redis can hold.
    "a lone surrogate in UTF-8": (b'{"prompt": "a \xed\xa0\x80 fox"}', "application/json", 400, "invalid_json"),
    "an escaped lone surrogate in UTF-16": (
        '{"prompt": "a \\ud800 fox"}'.encode("utf-16"),
        "application/json",
        400,
        "invalid_json",
    ),
    "latin-1 declared": (b'{"prompt": "caf\xe9"}', "application/json; charset=latin-1", 400, "invalid_json"),
}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_malformed_bodies_are_answered_4xx_never_500(stack: Stack, chunked: bool) -> None:
    """Broken forms, odd integers, odd charsets and lone surrogates, sent with a length or chunked (read under a
    slot, parsed in the parse process when large): each its own 4xx naming the problem, and no task."""
    wrong = {}
    for name, (body, content_type, status, code) in MALFORMED.items():
        content = _chunked(body) if chunked else body
        try:
            # A connection of its own each: a 500 closes the connection it came on.
            response = httpx.post(
                f"{stack.url}/v1/tasks",
                content=content,  # type: ignore[arg-type]
                headers={"content-type": content_type},
                timeout=30,
            )
        except httpx.HTTPError as exc:  # a 500 in the middle of a body's upload resets the connection
            wrong[name] = repr(exc)
            continue
        if response.status_code != status or response.json().get("error", {}).get("code") != code:
            wrong[name] = f"{response.status_code} {response.text[:200]}"
    assert wrong == {}
    assert stack.http.get("/v1/tasks").json()["tasks"] == []


def test_a_push_with_a_lone_surrogate_is_400(stack: Stack) -> None:
    """A push whose UTF-8 encodes a lone surrogate (which JSON's decoder lets through) is refused, not a 500."""
    body = json.dumps(event("ds-surrogate", "FAILED", event_id="surrogate-\udc00"), ensure_ascii=False)
    response = stack.http.post(
        "/v1/events/dashscope",
        content=body.encode("utf-8", "surrogatepass"),
        headers={"content-type": "application/json", "x-eventbridge-signature-token": TOKEN},
    )
    error_of(response, 400, "invalid_json")


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def parse_workers(serve_pid: int) -> list[int]:
    """The parse processes of a serve: the children of its forkserver."""
    return [
        worker
        for child in _children(serve_pid)
        if b"forkserver" in Path(f"/proc/{child}/cmdline").read_bytes()
        for worker in _children(child)
    ]


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_a_parse_process_killed_mid_parse_is_503_and_the_next_create_works(stack: Stack, cat: Path) -> None:  # noqa: F811
    """SIGKILL the parse process while it parses a 27 MiB create: that request is answered 503
    parser_unavailable with Retry-After, a new process parses the next one, and it makes its task."""
    guarded = stack.serve(None, "--no-workers", env={"WANHOOK_PARSE_PROCESSES": "1"})
    assert guarded.proc is not None
    image = cat.read_bytes()
    padded = data_url(image + b"\0" * (9 * 1024 * 1024 - len(image)), "image/jpeg")
    body = json.dumps({"kind": "kf2v", "resolution": "480P", "first_frame_url": padded, "last_frame_url": padded})

    def create() -> httpx.Response:
        return httpx.post(
            f"{guarded.url}/v1/tasks", content=body, headers={"content-type": "application/json"}, timeout=60
        )

    assert create().status_code == 202  # the parse process started, and idle now
    (worker,) = wait_for(lambda: parse_workers(guarded.proc.pid) or None, 10, what="the parse process")
    idle = cpu_ticks(worker)
    answers: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: answers.append(create()))
    sender.start()
    wait_for(lambda: cpu_ticks(worker) > idle, 30, interval=0.002, what="the parse process to take the create")
    assert not answers  # killed while it parses
    os.kill(worker, signal.SIGKILL)
    sender.join(60)
    (killed,) = answers
    error_of(killed, 503, "parser_unavailable")
    assert killed.headers["retry-after"] == "1"
    assert create().status_code == 202, "the next create is parsed by a new process"
    (replaced,) = parse_workers(guarded.proc.pid)
    assert replaced != worker
    assert len(guarded_tasks := stack.http.get("/v1/tasks").json()["tasks"]) == 2, guarded_tasks


def _hold(port: int, token: str, stop: threading.Event) -> threading.Thread:
    """A large create by ``token`` whose body comes at 4 KiB a second until ``stop``: it holds a slot."""

    def run() -> None:
        with socket.create_connection(("127.0.0.1", port)) as held:
            held.sendall(request_head("/v1/tasks", 1 << 20, authorization=f"Bearer {token}"))
            while not stop.wait(0.25):
                held.sendall(b" " * 1024)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_large_body_slots_are_given_back_however_a_request_ends(stack: Stack) -> None:
    """Two slots, a caller one at most: after bodies cut off mid-way, refused by the parse process, timed out
    (408) and left waiting for a slot (503 busy), every slot is free again, for that caller and others."""
    guarded = stack.serve(
        None,
        "--no-workers",
        env={
            "WANHOOK_API_TOKENS": "tenant-a,tenant-b,tenant-c",
            "WANHOOK_LARGE_BODIES": "2",
            "WANHOOK_BODY_MIN_RATE": "1000",
            "WANHOOK_BODY_RATE_WINDOW_SECONDS": "1",
        },
    )
    large = json.dumps({"prompt": "a fox", "first_frame_url": "x" * (200 << 10)})

    def create(token: str) -> httpx.Response:
        return httpx.post(
            f"{guarded.url}/v1/tasks",
            content=large,
            headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
            timeout=30,
        )

    def refused_by_the_parser(token: str) -> None:
        response = create(token)
        assert response.status_code == 422 and response.json()["error"]["field"] == "first_frame_url", response.text

    for _ in range(3):  # cut off mid-body, more often than the caller's share of the slots
        with socket.create_connection(("127.0.0.1", guarded.port)) as cut:
            cut.sendall(request_head("/v1/tasks", 1 << 20, authorization="Bearer tenant-c") + b'{"prompt": "a')
        refused_by_the_parser("tenant-c")  # and a parse error each time
    head = request_head("/v1/tasks", 1 << 20, authorization="Bearer tenant-c")
    for answer in asyncio.run(_gather_drips(guarded.port, head, 2)):
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    refused_by_the_parser("tenant-c")

    stop = threading.Event()
    holders = [_hold(guarded.port, token, stop) for token in ("tenant-a", "tenant-b")]
    try:
        busy = wait_for(lambda: (r := create("tenant-c")).status_code == 503 and r, 60, what="both slots held")
        error_of(busy, 503, "busy")
    finally:
        stop.set()
        for holder in holders:
            holder.join(10)
    for token in ("tenant-c", "tenant-a", "tenant-b"):
        refused_by_the_parser(token)


async def _gather_drips(port: int, head: bytes, count: int) -> list[bytes]:
    return list(await asyncio.gather(*(_drip(port, head, b"", 0) for _ in range(count))))
