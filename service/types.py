"""Shared types: task states and the completion event."""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    QUEUED = "queued"
    SUBMITTED = "submitted"
    DOWNLOADING = "downloading"
    READY = "ready"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.READY, Status.FAILED, Status.CANCELED, Status.EXPIRED})
STATUSES = tuple(status.value for status in Status)
DEFAULT_CALLBACK_EVENTS = tuple(f"task.{status.value}" for status in Status if status.terminal)
CALLBACK_EVENTS = tuple(f"task.{status}" for status in STATUSES)


class Outcome(enum.StrEnum):
    """What became of a completion event; every event ends in exactly one of these (and a counter)."""

    APPLIED = "applied"  # moved a known task forward
    DUPLICATE = "duplicate"  # same source + id seen before
    STALE = "stale"  # a known task already past the state the event reports
    UNKNOWN_TASK = "unknown_task"  # kept aside: the create call may not have returned yet
    IGNORED = "ignored"  # another product's or another model family's event
