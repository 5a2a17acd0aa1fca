"""A task: its states, the outcome of a completion event, and the task as stored and as shown.

The stored form is one Redis hash of strings (written only by the Lua scripts of ``persistence/lua``);
``Task.from_hash`` reads it, ``Task.public`` is the contract's JSON shape of it (internal fields, such
as the signed video URL or the owner, stay out).
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .models import IMAGE_INPUTS, brief_image


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


def as_text(value: Any) -> str:
    """A Redis reply (bytes, or str on a decoding connection) as text; nothing (None) as ""."""
    return value.decode() if isinstance(value, bytes) else "" if value is None else str(value)


def iso_of_ms(ms: int) -> str:
    """A time in ms since the epoch as wanhook writes times: ``2026-11-25T01:45:16.969Z`` (UTC)."""
    seconds, millis = divmod(ms, 1000)
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=millis * 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _created_at(raw: Mapping[str, str]) -> str | None:
    # Not stored since it is created_ms written out (some 40 bytes of each hash); tasks stored before
    # keep their own field, which is read as it is.
    if raw.get("created_at"):
        return raw["created_at"]
    return iso_of_ms(int(raw["created_ms"])) if raw.get("created_ms", "").isdigit() else None


def _json(value: str | None, default: Any = None) -> Any:
    # An empty field reads as absent, as a missing one does.
    return json.loads(value) if value else default


# A stored video's fields in the task's hash. Redis keeps a hash compact (a listpack: about a third of
# the memory) only while every value is at most hash-max-listpack-value bytes, 64 by default; the video
# as one JSON value (its path, size, digest and URL, some 230 bytes) alone made every ready task's hash
# a hashtable. Its parts fit: the directory (the file is always "<task id>.mp4" in it), the size, the
# sha256 (64 hex digits), and the URL, which is the task's own. A video of another shape is kept whole.
VIDEO_FIELDS = ("video_dir", "video_bytes", "video_sha256")


def encode_video(task_id: str, video: dict[str, Any]) -> dict[str, str]:
    """The hash fields that store ``video`` (read back by ``Task.from_hash``)."""
    directory, _, name = str(video.get("path", "")).rpartition("/")
    if (
        set(video) == {"path", "bytes", "sha256", "url"}
        and name == f"{task_id}.mp4"
        and video["url"] == f"/v1/tasks/{task_id}/video"
    ):
        return {"video_dir": directory, "video_bytes": str(video["bytes"]), "video_sha256": str(video["sha256"])}
    return {"video": json.dumps(video, separators=(",", ":"))}


def _decode_video(task_id: str, raw: Mapping[str, str]) -> dict[str, Any] | None:
    if raw.get("video"):
        return dict(json.loads(raw["video"]))
    if "video_sha256" not in raw:
        return None
    return {
        "path": f"{raw.get('video_dir', '')}/{task_id}.mp4",
        "bytes": int(raw.get("video_bytes") or 0),
        "sha256": raw["video_sha256"],
        "url": f"/v1/tasks/{task_id}/video",
    }


@dataclasses.dataclass(frozen=True)
class Task:
    """One stored task. A field the hash lacks is None; one stored empty stays "" (the API shows it so)."""

    id: str
    status: Status
    owner: str = ""  # a digest of the submitter's token ("" when the API is open)
    model: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    callback: dict[str, Any] | None = None
    video: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    ds_task_id: str | None = None
    ds_status: str | None = None
    ds_request_id: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    dl_bytes: str | None = None
    dl_total: str | None = None
    awaiting_reason: str | None = None  # DashScope ended the task FAILED; its reason is being read
    video_removed: dict[str, Any] | None = None  # why ``video`` is null on a ready task (retention)
    # The rest of the hash (signed URL, validators, attempt marks, ...), kept as stored for the workers.
    internal: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_hash(cls, mapping: Mapping[str, str] | Mapping[bytes, bytes] | Mapping[bytes | str, bytes | str]) -> Task:
        """The task from its Redis hash, as redis-py returns it (bytes, or str when it decodes)."""
        raw = {as_text(name): as_text(value) for name, value in mapping.items()}
        typed = ({field.name for field in dataclasses.fields(cls)} - {"internal"}) | set(VIDEO_FIELDS)
        get = raw.get
        return cls(
            id=raw["id"],
            status=Status(raw["status"]),
            owner=raw.get("owner", ""),
            model=get("model"),
            prompt=get("prompt"),
            negative_prompt=get("negative_prompt"),
            parameters=_json(get("parameters"), {}),
            metadata=_json(get("metadata"), {}),
            callback=_json(get("callback")),
            video=_decode_video(raw["id"], raw),
            error=_json(get("error")),
            ds_task_id=get("ds_task_id"),
            ds_status=get("ds_status"),
            ds_request_id=get("ds_request_id"),
            created_at=_created_at(raw),
            updated_at=get("updated_at"),
            dl_bytes=get("dl_bytes"),
            dl_total=get("dl_total"),
            awaiting_reason=get("awaiting_reason"),
            video_removed=_json(get("video_removed")),
            internal={name: value for name, value in raw.items() if name not in typed},
        )

    def public(self) -> dict[str, Any]:
        """The contract's task shape (``GET /v1/tasks/{id}``, the event streams, callbacks)."""
        task: dict[str, Any] = {
            "id": self.id,
            "status": self.status.value,
            "model": self.model,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            # Inline images are shown by their digest, not their bytes (models.brief_image).
            "parameters": {
                k: brief_image(v) if k in IMAGE_INPUTS and isinstance(v, str) else v for k, v in self.parameters.items()
            },
            "metadata": self.metadata,
            "callback": self.callback,
            "dashscope": {
                "task_id": self.ds_task_id,
                "status": self.ds_status,
                "request_id": self.ds_request_id,
            },
            "video": self.video,
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        if self.video_removed:
            task["video_removed"] = self.video_removed
        if self.status == Status.DOWNLOADING and self.dl_bytes:
            task["progress"] = {"bytes": int(self.dl_bytes), "total": int(self.dl_total or 0) or None}
        return task
