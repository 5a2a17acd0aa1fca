"""The command-line client: submit a task, follow its event stream, print a task."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

TERMINAL = {"ready", "failed", "canceled", "expired"}
STYLES = {"queued": "yellow", "submitted": "cyan", "downloading": "blue", "ready": "bold green",
          "failed": "bold red", "canceled": "magenta", "expired": "red"}


class ClientError(Exception):
    """A request to the wanhook server failed; the message says why, in one line. ``status`` is the
    server's HTTP status, None when no answer came (``wanhook`` exits 3 then)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _check(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400:
        error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
        raise ClientError(f"HTTP {response.status_code} {error.get('code', '')}: "
                          f"{error.get('message', response.text[:200])}", response.status_code)
    if not isinstance(body, dict):
        raise ClientError(f"HTTP {response.status_code} with a body that is not a JSON object", response.status_code)
    return body


def submit(server: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    try:
        return _check(httpx.post(f"{server}/v1/tasks", json=body, headers=_headers(token), timeout=30))
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach {server}: {exc}") from None


def get(server: str, task_id: str, token: str | None = None) -> dict[str, Any]:
    try:
        return _check(httpx.get(f"{server}/v1/tasks/{task_id}", headers=_headers(token), timeout=30))
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
            with httpx.stream("GET", f"{server}/v1/tasks/{task_id}/events", headers=headers,
                              timeout=httpx.Timeout(30.0, read=60.0)) as response:
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


def render(task: dict[str, Any], started: float) -> Text:
    status = task.get("status", "?")
    line = Text.assemble(("● ", STYLES.get(status, "")), (f"{status:<12}", STYLES.get(status, "")),
                         f" {time.monotonic() - started:6.1f}s  task {task.get('id')}")
    progress = task.get("progress")
    if status == "downloading" and progress:
        total = progress.get("total")
        line.append(f"  {progress['bytes']:,} / {total:,} bytes" if total else f"  {progress['bytes']:,} bytes")
    if task.get("error"):
        line.append(f"  {task['error'].get('code')}: {task['error'].get('message')}", style="red")
    return line


def wait(server: str, task: dict[str, Any], token: str | None = None, console: Console | None = None) -> dict[str, Any]:
    """Shows the task's progress live until it ends; returns its final state."""
    console = console or Console(stderr=True)
    started = time.monotonic()
    final = task
    with Live(render(task, started), console=console, refresh_per_second=4, transient=False) as live:
        for state in follow(server, task["id"], token):
            final = state
            live.update(render(state, started))
    console.line()  # the live line stays; what follows starts below it
    return final


def table(task: dict[str, Any]) -> Table:
    view = Table(show_header=False, box=None)
    view.add_column(style="bold")
    view.add_column()
    rows = [("id", task["id"]), ("status", Text(task["status"], style=STYLES.get(task["status"], ""))),
            ("model", task.get("model")), ("prompt", task.get("prompt")),
            ("parameters", json.dumps(task.get("parameters"))),
            ("dashscope task", (task.get("dashscope") or {}).get("task_id") or "-"),
            ("created", task.get("created_at")), ("updated", task.get("updated_at"))]
    if task.get("video"):
        rows += [("video", task["video"]["path"]), ("bytes", f"{task['video']['bytes']:,}"),
                 ("sha256", task["video"]["sha256"])]
    if task.get("error"):
        rows.append(("error", f"{task['error']['code']}: {task['error']['message']}"))
    for name, value in rows:
        view.add_row(name, value if isinstance(value, Text) else str(value))
    return view
