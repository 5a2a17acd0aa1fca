"""Structured logs: one JSON object a line, with the request, task and event it concerns, and no secrets.

The ids travel in context variables, set where the work begins (a request, a job, an event), so every
line logged on that path carries them without passing them around.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
task_id: ContextVar[str | None] = ContextVar("task_id", default=None)
event_id: ContextVar[str | None] = ContextVar("event_id", default=None)

SECRETS = [
    (re.compile(r"(https?://[^\s?\"'<>]+)\?[^\s\"'<>]+"), r"\1?<redacted>"),  # signed URLs' query strings
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]+"), r"\1<redacted>"),
    (re.compile(r"whsec_[A-Za-z0-9+/=]+"), "whsec_<redacted>"),
    (re.compile(r"\bsk-[A-Za-z0-9-]{6,}"), "sk-<redacted>"),
    (re.compile(r"(?i)(signature[\"']?\s*[:=]\s*[\"']?)[^\s\"',&]+"), r"\1<redacted>"),
    # Userinfo of any URL (https://user:pass@, redis://:password@), wherever it comes from: an error's
    # text, a setting. A password may hold a raw "/", so everything up to the "@" goes. Last, because
    # the rules above stop a URL at a "<".
    (re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^\s\"'<>@]*@"), r"\1<redacted>@"),
]


def redact(text: str) -> str:
    for pattern, replacement in SECRETS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name, var in (("request_id", request_id), ("task_id", task_id), ("event_id", event_id)):
            value = getattr(record, name, None) or var.get()
            if value:
                line[name] = value
        if record.exc_info:
            line["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup(level: str = "INFO", form: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if form == "json" else RedactingFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request's full URL; the redaction would catch it, but the lines are noise.
    logging.getLogger("httpx").setLevel(logging.WARNING)
