"""Settings of the emulator; the fault knobs among them can be changed while it runs."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from .rules import MESSAGES, QUERY_QPS

# How the HTTP pushes' v2 signature reads, one of the forms receivers in the wild expect:
# - "trailing-newline" (the default): a newline after the body, the token line signed when the push has a token.
#   Every piece of Alibaba's code that builds the string puts the newline there (the EventBridge SDK's
#   StringToSignBuilder, github.com/aliyun/alibabacloud-eventbridge-sdk util/java; the reference HTTP target,
#   github.com/aliyuneventbridge/eb-http-target), and the SDK's test vector, signed with Alibaba's key, has it.
# - "plain": nothing after the body, as the documented formula reads.
# - "seconds": as "plain", the timestamp in seconds.
# - "token-unsigned": as the default, but the token header, though sent, is not signed: how the reference HTTP
#   target builds the string since its v2 rewrite (eb-http-target 579471c, StringToSignBuilder.officalHeaders).
SIGNATURE_VARIANTS = ("trailing-newline", "plain", "seconds", "token-unsigned")

# Knobs settable through POST /_emulator/config, with the JSON types each accepts.
KNOBS: dict[str, tuple[type, ...]] = {
    "render_seconds": (int, float),
    "render_seconds_max": (int, float, type(None)),
    "url_ttl_seconds": (int, float),
    "duplicate_events": (int,),
    "event_delay_seconds": (int, float),
    "early_events": (bool,),
    "drop_events": (bool,),
    "fail_marker": (str,),
    "fail_code": (str,),
    "fail_message": (str,),
    "block_marker": (str,),
    "create_errors": (list,),
    "read_errors": (list,),
    "create_answer_delay_seconds": (int, float),
    "create_land_delay_seconds": (int, float),
    "break_downloads": (int,),
    "break_after_bytes": (int, type(None)),
    "ignore_range": (bool,),
    "video_bytes_per_second": (int, float),
    "video_pad_bytes": (int,),
    "push_retry_delays": (list, type(None)),
    "push_timeout_seconds": (int, float),
    "enforce_limits": (bool,),
    "limits": (dict,),
    "query_qps": (int,),
    "list_time_zone": (int, float),
    "webhook_targets": (list,),
    "signature_variant": (str,),
    "signature_tamper": (bool,),
    "signature_skew_seconds": (int, float),
    "signature_cert_url": (str, type(None)),
    "signature_target_url": (str, type(None)),
}

# What an item of create_errors or read_errors may say (see EmulatorConfig.create_errors).
FAULT_FIELDS = frozenset({"status", "code", "message", "body", "content_type", "delay_seconds", "land"})


@dataclass
class EmulatorConfig:
    render_seconds: float = 20.0
    # When set, a task renders for a time between render_seconds and this, drawn from its prompt: random
    # over prompts, yet two clients sending the same prompts get the same render times.
    render_seconds_max: float | None = None
    url_ttl_seconds: float = 24 * 3600
    # Extra copies of each push, with the same event id: delivery is at least once.
    duplicate_events: int = 0
    event_delay_seconds: float = 0.0
    # The task ends and its event is delivered before the create call answers.
    early_events: bool = False
    drop_events: bool = False
    fail_marker: str = "[fail]"
    # What a task that fails (its prompt has fail_marker) reports as its output.code and output.message.
    fail_code: str = "InternalError.Algo"
    fail_message: str = MESSAGES["InternalError.Algo"]
    block_marker: str = "[blocked]"
    # Faults consumed one per create call, in order. An item is DashScope's JSON error
    # ({"status": 429, "code": "Throttling", "message": "..."}; status 500 when left out), or a raw
    # body instead of JSON ({"status": 502, "body": "<html>...", "content_type": "text/html"}: a proxy's
    # page, or garbage with status 200). "delay_seconds" holds the request that long first: a hang,
    # to a client whose timeout is shorter. "land": true creates the task before the fault answers (the
    # create took effect, its answer is lost); an item with only a delay lands and answers late.
    create_errors: list[dict[str, Any]] = field(default_factory=list)
    # The same faults, consumed one per task read (GET /tasks/{id}); "land" does not apply.
    read_errors: list[dict[str, Any]] = field(default_factory=list)
    create_answer_delay_seconds: float = 0.0
    # A create call is held this long before its task exists (a slow gateway): it lands late, then answers.
    create_land_delay_seconds: float = 0.0
    break_downloads: int = 0
    break_after_bytes: int | None = None  # None: half the file
    ignore_range: bool = False
    video_bytes_per_second: float = 0  # 0: as fast as loopback goes
    # Videos smaller than this are padded up to it (an MP4 "free" box) and streamed from disk: large downloads.
    video_pad_bytes: int = 0
    # None: EventBridge's BACKOFF_RETRY, three retries each a random 10-20 s after the last.
    push_retry_delays: list[float] | None = None
    push_timeout_seconds: float = 5.0
    enforce_limits: bool = True
    limits: dict[str, dict[str, int]] = field(default_factory=dict)  # {model: {"rps": n, "running": n}}
    query_qps: int = QUERY_QPS
    # The offset from UTC, in hours, in which the task list reads its start_time/end_time window: the
    # documentation gives YYYYMMDDhhmmss without a zone; China time (8) by default, as DashScope writes
    # every other time it shows.
    list_time_zone: float = 8.0
    webhook_targets: list[dict[str, Any]] = field(default_factory=list)  # [{"url", "token", "body"}]
    # Every HTTP push is signed as EventBridge signs (v2, RSA-SHA256) with the emulator's own key; its
    # certificate is served at /_emulator/eventbridge/cert.pem. These bend the signature for tests:
    signature_variant: str = "trailing-newline"  # one of SIGNATURE_VARIANTS
    signature_tamper: bool = False  # the body sent differs (by a trailing space) from the body signed
    signature_skew_seconds: float = 0.0  # added to the signature timestamp: beyond +-60 it is stale
    signature_cert_url: str | None = None  # named in x-eventbridge-signature-url instead of the served one
    signature_target_url: str | None = None  # signed instead of the target's URL (a proxy in front of it)
    # Not knobs: fixed for the life of the emulator.
    public_base_url: str | None = None
    cache_dir: str | None = None
    region: str = "cn-beijing"
    account_id: str = "1234567890123456"

    def update(self, changes: dict[str, Any]) -> None:
        """Check every change before applying any, so a bad request leaves the settings as they were."""
        if not isinstance(changes, dict):
            raise ValueError("settings must be a JSON object")
        for name, value in changes.items():
            if name not in KNOBS:
                raise ValueError(f"unknown setting {name!r}; settings: {', '.join(KNOBS)}")
            accepted = KNOBS[name]
            if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
                kinds = " or ".join("null" if kind is type(None) else kind.__name__ for kind in accepted)
                raise ValueError(f"{name} must be {kinds}")
        if not -12 <= changes.get("list_time_zone", 0) <= 14:
            raise ValueError("list_time_zone is an offset from UTC in hours, from -12 to 14")
        if changes.get("video_pad_bytes", 0) < 0:
            raise ValueError("video_pad_bytes must be at least 0")
        for limit in changes.get("limits", {}).values():
            if not isinstance(limit, dict) or not all(isinstance(n, int) for n in limit.values()):
                raise ValueError('limits are {model: {"rps": n, "running": n}}')
        for name in ("create_errors", "read_errors"):
            for fault in changes.get(name, []):
                if not isinstance(fault, dict) or set(fault) - FAULT_FIELDS:
                    raise ValueError(f"{name} items are objects with some of {', '.join(sorted(FAULT_FIELDS))}")
                delay = fault.get("delay_seconds", 0)
                if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
                    raise ValueError(f"{name}: delay_seconds must be a number of at least 0")
                if not isinstance(fault.get("body", ""), str):
                    raise ValueError(f"{name}: body must be a string")
        for target in changes.get("webhook_targets", []):
            if not isinstance(target, dict) or not target.get("url"):
                raise ValueError("webhook_targets items need a url")
            if target.get("body", "original") not in ("original", "data"):
                raise ValueError("webhook_targets body must be 'original' or 'data'")
        if changes.get("signature_variant", SIGNATURE_VARIANTS[0]) not in SIGNATURE_VARIANTS:
            raise ValueError(f"signature_variant must be one of {', '.join(SIGNATURE_VARIANTS)}")
        for name, value in changes.items():
            setattr(self, name, value)

    def render_time(self, prompt: str) -> float:
        low, high = self.render_seconds, self.render_seconds_max
        if high is None or high <= low:
            return low
        fraction = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big") / 2**64
        return low + fraction * (high - low)

    def knobs(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items() if name in KNOBS}
