"""The command-line client: submit a task, follow its event stream, print a task."""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..core.errors import CommandError
from ..domain.task import TERMINAL, Status

STYLES = {
    Status.QUEUED: "yellow",
    Status.SUBMITTED: "cyan",
    Status.DOWNLOADING: "blue",
    Status.READY: "bold green",
    Status.FAILED: "bold red",
    Status.CANCELED: "magenta",
    Status.EXPIRED: "red",
}


class ClientError(CommandError):
    """A request to the wanhook server failed; the message says why, in one line. ``status`` is the
    server's HTTP status, None when no answer came (``wanhook`` exits 3 then)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ImageError(CommandError):
    """A local image that cannot be sent: missing, unreadable, or not one DashScope takes."""


def image_value(given: str) -> str:
    """An image argument as the API takes it: an http(s) or oss:// URL as it is (DashScope fetches it), a
    local file as a base64 data URL, checked here first as the server would (format, sides, bytes) so that
    a wrong file is refused before anything is sent."""
    import base64
    from pathlib import Path

    from ..core.errors import InvalidField
    from ..domain.models import IMAGE_MAX_BYTES
    from ..domain.validation import check_image_bytes

    if given.split("://", 1)[0] in ("http", "https", "oss"):
        return given
    path = Path(given.removeprefix("file://")).expanduser()
    try:
        if path.stat().st_size > IMAGE_MAX_BYTES:
            raise ImageError(
                f"{given}: {path.stat().st_size} bytes; DashScope takes images of at most {IMAGE_MAX_BYTES} (10 MB)"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{given}: {exc.strerror or exc}") from None
    try:
        kind, _, _ = check_image_bytes("image", data)
    except InvalidField as exc:
        raise ImageError(f"{given}: {exc.message.removeprefix('image: ')}") from None
    return f"data:image/{kind.lower()};base64,{base64.b64encode(data).decode()}"


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _check(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400:
        error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
        raise ClientError(
            f"HTTP {response.status_code} {error.get('code', '')}: {error.get('message', response.text[:200])}",
            response.status_code,
        )
    if not isinstance(body, dict):
        raise ClientError(f"HTTP {response.status_code} with a body that is not a JSON object", response.status_code)
    return body


def submit(server: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    try:
        return _check(httpx.post(f"{server}/v1/tasks", json=body, headers=_headers(token), timeout=120))
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach {server}: {exc}") from None


def get(server: str, task_id: str, token: str | None = None) -> dict[str, Any]:
    try:
        return _check(httpx.get(f"{server}/v1/tasks/{task_id}", headers=_headers(token), timeout=30))
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach {server}: {exc}") from None


def dead_letters(server: str, token: str | None, kind: str | None = None, limit: int = 100) -> dict[str, Any]:
    params: dict[str, str | int] = {"limit": limit, **({"kind": kind} if kind else {})}
    try:
        return _check(httpx.get(f"{server}/v1/dead-letters", params=params, headers=_headers(token), timeout=30))
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach {server}: {exc}") from None


def replay_dead_letter(server: str, letter: str, token: str | None) -> dict[str, Any]:
    try:
        url = f"{server}/v1/dead-letters/{quote(letter, safe=':-')}/replay"
        return _check(httpx.post(url, headers=_headers(token), timeout=30))
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach {server}: {exc}") from None


def delete(server: str, task_id: str, token: str | None = None) -> dict[str, Any]:
    try:
        return _check(httpx.delete(f"{server}/v1/tasks/{task_id}", headers=_headers(token), timeout=60))
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach {server}: {exc}") from None


def follow(server: str, task_id: str, token: str | None = None) -> Iterator[dict[str, Any]]:
    """Each state of the task from its event stream, until a terminal one; reconnects with
    Last-Event-ID when the connection drops."""
    last_id: str | None = None
    failures = 0
    while True:
        headers = _headers(token) | ({"Last-Event-ID": last_id} if last_id else {})
        try:
            with httpx.stream(
                "GET", f"{server}/v1/tasks/{task_id}/events", headers=headers, timeout=httpx.Timeout(30.0, read=60.0)
            ) as response:
                if response.status_code in (429, 503) and failures < 5:
                    # Too many streams open (or Redis away): wait as the server asks, then again.
                    failures += 1
                    time.sleep(_retry_after(response))
                    continue
                if response.status_code != 200:
                    response.read()
                    _check(response)
                failures = 0
                for line in response.iter_lines():
                    if line.startswith("id: "):
                        last_id = line[4:]
                    elif line.startswith("data: "):
                        task = json.loads(line[6:])
                        yield task
                        if task.get("status") in TERMINAL:
                            return
        except httpx.HTTPError as exc:
            failures += 1
            if failures > 5:
                raise ClientError(f"lost the event stream from {server}: {exc}") from None
            time.sleep(min(2.0**failures / 4, 5.0))  # back off before reconnecting


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "")
    return min(float(value), 30.0) if value.isdigit() else 5.0


class WaitTimeout(CommandError):
    """The task had not ended when ``wait``'s time was up; ``task`` is its last state seen. The task goes on."""

    def __init__(self, task: dict[str, Any], seconds: float) -> None:
        super().__init__(f"task {task.get('id')} still {task.get('status')} after {seconds:g} s")
        self.task, self.seconds = task, seconds


def _details(task: dict[str, Any]) -> tuple[str, bool]:
    """What a state line says beside the state (bytes while downloading, the size once ready, else the error),
    and whether that is the error."""
    status = task.get("status")
    progress = task.get("progress")
    if status == Status.DOWNLOADING and progress:
        total = progress.get("total")
        if total:
            return f"{progress['bytes']:,} / {total:,} bytes ({100 * progress['bytes'] // total}%)", False
        return f"{progress['bytes']:,} bytes", False
    if status == Status.READY and task.get("video"):
        return f"{task['video']['bytes']:,} bytes", False
    if task.get("error"):
        return f"{task['error'].get('code')}: {task['error'].get('message')}", True
    return "", False


def render(task: dict[str, Any], started: float) -> Text:
    status = task.get("status", "?")
    line = Text.assemble(
        ("● ", STYLES.get(status, "")),
        (f"{status:<12}", STYLES.get(status, "")),
        f" {time.monotonic() - started:6.1f}s  task {task.get('id')}",
    )
    details, is_error = _details(task)
    if details:
        line.append(f"  {details}", style="red" if is_error else "")
    return line


class _LiveView:
    """The live line, drawn afresh at each refresh of the display, so that its clock moves between events too."""

    def __init__(self, task: dict[str, Any], started: float) -> None:
        self.task, self.started = task, started

    def __rich__(self) -> Text:
        return render(self.task, self.started)


class _PlainView:
    """One line per state change (and per second of download progress), for logs and pipes."""

    def __init__(self, out: IO[str], started: float) -> None:
        self.out, self.started = out, started
        self.status: str | None = None
        self.progress_at = 0.0

    def show(self, task: dict[str, Any]) -> None:
        now = time.monotonic()
        status = task.get("status")
        if status == self.status:
            # Progress of the same download: a line a second at most, or the log would hold one per chunk.
            if not (status == Status.DOWNLOADING and task.get("progress") and now - self.progress_at >= 1.0):
                return
            self.progress_at = now
        self.status = status
        details, _ = _details(task)
        print(f"{now - self.started:.1f}s {status}" + (f" {details}" if details else ""), file=self.out, flush=True)


_END = object()


def _follow_in_background(server: str, task_id: str, token: str | None) -> queue.Queue[Any]:
    """The task's states as they arrive, then _END (or the exception that ended the stream).

    The stream is read in a thread of its own so that the caller can keep time (its clock, its deadline)
    while a read blocks; the thread is a daemon, so a caller that gives up leaves nothing to join.
    """
    updates: queue.Queue[Any] = queue.Queue()

    def run() -> None:
        try:
            for state in follow(server, task_id, token):
                updates.put(state)
            updates.put(_END)
        except BaseException as exc:  # handed to the caller, which raises it
            updates.put(exc)

    threading.Thread(target=run, name=f"follow-{task_id}", daemon=True).start()
    return updates


def wait(
    server: str,
    task: dict[str, Any],
    token: str | None = None,
    console: Console | None = None,
    *,
    timeout: float | None = None,
    plain: bool = False,
    out: IO[str] | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """Shows the task's progress until it ends; returns its final state.

    Live (a line redrawn at least once a second on ``console``, stderr by default), or with ``plain`` one line
    per change on ``out`` (stdout by default). ``started`` (time.monotonic()) is where the clock starts, by
    default now. Raises WaitTimeout when ``timeout`` seconds, counted from ``started``, pass first.
    """
    started = time.monotonic() if started is None else started
    # From where the clock starts, so that the line saying "after N s" and the clock agree.
    deadline = None if timeout is None else started + timeout
    updates = _follow_in_background(server, task["id"], token)
    final = task

    def next_state() -> Any:
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimeout(final, timeout or 0)
            try:
                return updates.get(timeout=left)
            except queue.Empty:
                continue

    if plain:
        view = _PlainView(out or sys.stdout, started)
        view.show(task)
        while (item := next_state()) is not _END:
            if isinstance(item, BaseException):
                raise item
            final = item
            view.show(item)
        return final

    console = console or Console(stderr=True)
    live_view = _LiveView(task, started)
    try:
        with Live(live_view, console=console, refresh_per_second=4, transient=False):
            while (item := next_state()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                final = live_view.task = item
    finally:
        console.line()  # the live line stays; what follows starts below it
    return final


def table(task: dict[str, Any]) -> Table:
    view = Table(show_header=False, box=None)
    view.add_column(style="bold")
    view.add_column()
    rows = [
        ("id", task["id"]),
        ("status", Text(task["status"], style=STYLES.get(task["status"], ""))),
        ("model", task.get("model")),
        ("prompt", task.get("prompt")),
        ("parameters", json.dumps(task.get("parameters"))),
        ("dashscope task", (task.get("dashscope") or {}).get("task_id") or "-"),
        # FAILED here while the task is still submitted: its reason is being read.
        ("dashscope status", (task.get("dashscope") or {}).get("status") or "-"),
        ("created", task.get("created_at")),
        ("updated", task.get("updated_at")),
    ]
    if task.get("video"):
        rows += [
            ("video", task["video"]["path"]),
            ("bytes", f"{task['video']['bytes']:,}"),
            ("sha256", task["video"]["sha256"]),
        ]
    if task.get("error"):
        rows.append(("error", f"{task['error']['code']}: {task['error']['message']}"))
    for name, value in rows:
        view.add_row(name, value if isinstance(value, Text) else str(value))
    return view
