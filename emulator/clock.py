"""DashScope's time formats: China time (UTC+8) for people, UTC ISO 8601 for CloudEvents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")


def china_time(timestamp: float, millis: bool = True) -> str:
    """`2025-09-29 14:18:52.331`, or without the milliseconds as completion events write it."""
    moment = datetime.fromtimestamp(timestamp, CHINA)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{moment.microsecond // 1000:03d}" if millis else text


def utc_iso(timestamp: float) -> str:
    """`2023-10-25T01:45:16.993Z`."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_compact(text: str, utc_offset_hours: float = 8.0) -> float:
    """`YYYYMMDDhhmmss`, as the task list's window is given, read at the offset from UTC (China time by
    default; the documentation names no zone)."""
    zone = timezone(timedelta(hours=utc_offset_hours))
    return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=zone).timestamp()


def epoch_millis(timestamp: float | None) -> int | None:
    return None if timestamp is None else int(timestamp * 1000)
