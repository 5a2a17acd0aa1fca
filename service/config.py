"""Settings, read once from the environment (the contract's variables plus a few tuning knobs)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, urlsplit

from .errors import ConfigError

if TYPE_CHECKING:
    from .objectstore import S3Config
    from .replication import Durability

DEFAULT_BASE_URL = "https://dashscope.aliyuncs.com/api/v1"
# Where EventBridge keeps its signing certificates: https://<region>-eventbridge.oss-accelerate.aliyuncs.com/...
DEFAULT_CERT_HOST = "*-eventbridge.oss-accelerate.aliyuncs.com"


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):  # float() takes "nan" and "inf", which no limit or duration means
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    return value


def _count(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    value = _number(env, name, default)
    if value < minimum or value != int(value):
        above = "above 0" if minimum == 1 else f"of {minimum} or more"
        raise ConfigError(f"{name} must be a whole number {above}, got {env.get(name)!r}")
    return int(value)


def _object_store(env: Mapping[str, str]) -> S3Config | None:
    from .objectstore import config_from_env  # httpx only when needed

    return config_from_env(env)


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """The variable's value among ``choices``; unset or empty is the first."""
    raw = env.get(name) or choices[0]
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    """A duration or a rate: zero would mean spinning or never, so it is refused like a negative."""
    value = _number(env, name, default)
    if value <= 0:
        raise ConfigError(f"{name} must be above 0, got {env.get(name)!r}")
    return value


def _lasting(env: Mapping[str, str], name: str, default: float) -> float:
    """How long something is kept, in seconds: 0 keeps it for ever."""
    value = _number(env, name, default)
    if value < 0:
        raise ConfigError(f"{name} must be 0 (keep for ever) or more, got {env.get(name)!r}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    """``1`` or ``0`` (unset or empty: 0). Anything else is refused rather than guessed at: "true" read as
    off, or "false" as on, would be a silent surprise either way."""
    raw = env.get(name) or "0"
    if raw not in ("0", "1"):
        raise ConfigError(f"{name} must be 0 or 1, got {raw!r}")
    return raw == "1"


def _port_ok(parts: SplitResult) -> bool:
    """The URL's port, if it names one, is a TCP port (urlsplit lets 0 through, and refuses the rest late)."""
    try:
        return parts.port != 0
    except ValueError:
        return False


def _http_url(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    """An http:// or https:// URL with a host (and a port that is one, if given); unset or empty: ``default``."""
    raw = env.get(name) or default
    if raw is None:
        return None
    parts = urlsplit(raw)
    if not _port_ok(parts):
        raise ConfigError(f"{name} has a port that is not a number from 1 to 65535: {raw!r}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} must be an http:// or https:// URL, got {raw!r}")
    return raw


# What connection.py can connect to (redis-py's own schemes, and wanhook's Sentinel and Cluster forms).
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster", "rediss+cluster")


def _redis_url(env: Mapping[str, str]) -> str | None:
    raw = env.get("WANHOOK_REDIS_URL") or None
    if raw is None:
        return None
    from .redact import redact_url

    parts = urlsplit(raw)
    if parts.scheme not in REDIS_SCHEMES:
        raise ConfigError(
            f"WANHOOK_REDIS_URL must be a {', '.join(s + '://' for s in REDIS_SCHEMES[:-1])} "
            f"or {REDIS_SCHEMES[-1]}:// URL, got {redact_url(raw)!r}"
        )
    if parts.scheme == "unix" and not parts.path:
        raise ConfigError(f"WANHOOK_REDIS_URL names no socket path: {redact_url(raw)!r}")
    if parts.scheme == "redis+sentinel":  # several host:port, then the monitored service's name
        sentinels = parts.netloc.rpartition("@")[2].split(",")
        ports = [item.rpartition(":")[2] for item in sentinels if ":" in item]
        if not all(port.isdigit() and 0 < int(port) < 65536 for port in ports) or not all(sentinels):
            raise ConfigError(
                f"WANHOOK_REDIS_URL: expected redis+sentinel://host:26379[,host:port...]/<service>, "
                f"got {redact_url(raw)!r}"
            )
        path = [segment for segment in parts.path.split("/") if segment]
        if not path:
            raise ConfigError(
                "WANHOOK_REDIS_URL: a redis+sentinel:// URL names the monitored service: "
                "redis+sentinel://host:26379/mymaster"
            )
        if len(path) > 1 and not path[1].isdigit():
            raise ConfigError(f"WANHOOK_REDIS_URL: the database after the service is a number, got {path[1]!r}")
    elif parts.scheme != "unix" and not _port_ok(parts):
        raise ConfigError(f"WANHOOK_REDIS_URL has a port that is not a number from 1 to 65535: {redact_url(raw)!r}")
    return raw


def _hosts(env: Mapping[str, str], name: str, default: str) -> tuple[str, ...]:
    hosts = _split(env.get(name, default))
    if not hosts:
        # Set but empty would allow no host at all: every download (or certificate) refused, task by task.
        raise ConfigError(f"{name} is set but names no host (unset it for the default, {default})")
    return hosts


@dataclass(frozen=True)
class Settings:
    api_key: str | None = None
    dashscope_base_url: str = DEFAULT_BASE_URL
    redis_url: str | None = None
    data_dir: Path = Path("wanhook-data")
    eventbridge_token: str | None = None
    # WANHOOK_EVENTBRIDGE_VERIFY: "token" (the token alone, when set) or "signature" (EventBridge's v2 RSA
    # signature, and the token too when set); see service/ingress/signature.py.
    eventbridge_verify: str = "token"
    eventbridge_url: str | None = None  # the URL the target posts to, when a proxy makes the received one differ
    eventbridge_cert_hosts: tuple[str, ...] = (DEFAULT_CERT_HOST,)
    api_tokens: tuple[str, ...] = ()
    callback_secret: str | None = None
    video_hosts: tuple[str, ...] = ("*.aliyuncs.com",)
    callback_allow_private: bool = False
    rocketmq: Mapping[str, str] = field(default_factory=dict)
    # Tuning knobs (not in the contract; documented in the README).
    download_concurrency: int = 4
    claim_idle_seconds: float = 30.0
    download_attempts: int = 8
    dashscope_timeout: float = 30.0
    limits: str = ""  # WANHOOK_LIMITS: model=rps/running,... over the spec's table
    reserve_seconds: float = 60.0
    sweep_after_seconds: float = 900.0
    sweep_interval_seconds: float = 60.0
    dashscope_qps: int = 20
    rate_limit: int = 100
    max_queued_per_token: int = 10_000
    max_video_bytes: int = 4 << 30
    min_free_bytes: int = 1 << 30
    callback_schedule: str = ""  # WANHOOK_CALLBACK_SCHEDULE: seconds before each attempt, comma-separated
    changes_retention_seconds: float = 3600.0  # a finished task's change stream, for late SSE resumes
    # Retention (retention.py): how long an ended task, and a stored video, are kept; 0 keeps them for ever.
    task_retention_seconds: float = 90 * 86400.0
    video_retention_seconds: float = 30 * 86400.0
    retention_dry_run: bool = False  # WANHOOK_RETENTION_DRY_RUN=1: log what would go, remove nothing
    # WANHOOK_EVENTBRIDGE_ALLOW_UNAUTHENTICATED=1: serve may expose the webhook on a non-loopback address with
    # neither a token nor signature checks (something in front of it authenticates pushes).
    eventbridge_allow_unauthenticated: bool = False
    callback_timeout: float = 15.0  # WANHOOK_CALLBACK_TIMEOUT: one attempt, connect to answer, at most
    callback_concurrency: int = 16  # callback attempts in flight per process
    callback_per_destination: int = 2  # of them to one callback host:port
    max_streams: int = 1000  # open event streams per process (503 beyond)
    max_streams_per_token: int = 100  # open event streams per API token and process (429 beyond)
    redis_max_connections: int = 100  # the shared pool's size; event streams are not in it
    header_timeout_seconds: float = 10.0  # a request's headers must have arrived by then
    max_connections: int = 2000  # open client connections per process
    # WANHOOK_REDIS_WAIT_REPLICAS / _AOF / _TIMEOUT_SECONDS: what a write must reach before wanhook answers
    # for it (service/replication.py); 0 and 0 wait for nothing.
    redis_wait_replicas: int = 0
    redis_wait_aof: int = 0
    redis_wait_timeout: float = 1.0
    # WANHOOK_STORAGE_URL=s3://bucket/prefix and WANHOOK_S3_*: videos in an object store (objectstore.py).
    object_store: S3Config | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        rocketmq = {
            key.removeprefix("WANHOOK_ROCKETMQ_").lower(): value
            for key, value in env.items()
            if key.startswith("WANHOOK_ROCKETMQ_") and value
        }
        settings = cls(
            api_key=env.get("DASHSCOPE_API_KEY") or None,
            dashscope_base_url=str(_http_url(env, "DASHSCOPE_HTTP_BASE_URL", DEFAULT_BASE_URL)).rstrip("/"),
            redis_url=_redis_url(env),
            # Absolute: a task names its video by this path, and a client elsewhere must find it.
            data_dir=Path(env.get("WANHOOK_DATA_DIR") or "wanhook-data").absolute(),
            eventbridge_token=env.get("WANHOOK_EVENTBRIDGE_TOKEN") or None,
            eventbridge_verify=_choice(env, "WANHOOK_EVENTBRIDGE_VERIFY", ("token", "signature")),
            eventbridge_url=_http_url(env, "WANHOOK_EVENTBRIDGE_URL"),
            eventbridge_cert_hosts=_hosts(env, "WANHOOK_EVENTBRIDGE_CERT_HOSTS", DEFAULT_CERT_HOST),
            api_tokens=_split(env.get("WANHOOK_API_TOKENS")),
            callback_secret=env.get("WANHOOK_CALLBACK_SECRET") or None,
            video_hosts=_hosts(env, "WANHOOK_VIDEO_HOSTS", "*.aliyuncs.com"),
            callback_allow_private=_flag(env, "WANHOOK_CALLBACK_ALLOW_PRIVATE"),
            rocketmq=rocketmq,
            download_concurrency=_count(env, "WANHOOK_DOWNLOAD_CONCURRENCY", 4),
            claim_idle_seconds=_positive(env, "WANHOOK_CLAIM_IDLE_SECONDS", 30.0),
            download_attempts=_count(env, "WANHOOK_DOWNLOAD_ATTEMPTS", 8),
            dashscope_timeout=_positive(env, "WANHOOK_DASHSCOPE_TIMEOUT", 30.0),
            limits=env.get("WANHOOK_LIMITS", ""),
            reserve_seconds=_positive(env, "WANHOOK_RESERVE_SECONDS", 60.0),
            sweep_after_seconds=_positive(env, "WANHOOK_SWEEP_AFTER_SECONDS", 900.0),
            sweep_interval_seconds=_positive(env, "WANHOOK_SWEEP_INTERVAL_SECONDS", 60.0),
            dashscope_qps=_count(env, "WANHOOK_DASHSCOPE_QPS", 20),
            callback_schedule=env.get("WANHOOK_CALLBACK_SCHEDULE", ""),
            changes_retention_seconds=_positive(env, "WANHOOK_CHANGES_RETENTION_SECONDS", 3600.0),
            task_retention_seconds=_lasting(env, "WANHOOK_TASK_RETENTION_SECONDS", 90 * 86400.0),
            video_retention_seconds=_lasting(env, "WANHOOK_VIDEO_RETENTION_SECONDS", 30 * 86400.0),
            retention_dry_run=_flag(env, "WANHOOK_RETENTION_DRY_RUN"),
            rate_limit=_count(env, "WANHOOK_RATE_LIMIT", 100),
            max_queued_per_token=_count(env, "WANHOOK_MAX_QUEUED_PER_TOKEN", 10_000),
            max_video_bytes=_count(env, "WANHOOK_MAX_VIDEO_BYTES", 4 << 30),
            min_free_bytes=_count(env, "WANHOOK_MIN_FREE_BYTES", 1 << 30, minimum=0),
            eventbridge_allow_unauthenticated=_flag(env, "WANHOOK_EVENTBRIDGE_ALLOW_UNAUTHENTICATED"),
            callback_timeout=_positive(env, "WANHOOK_CALLBACK_TIMEOUT", 15.0),
            callback_concurrency=_count(env, "WANHOOK_CALLBACK_CONCURRENCY", 16),
            callback_per_destination=_count(env, "WANHOOK_CALLBACK_PER_DESTINATION", 2),
            max_streams=_count(env, "WANHOOK_MAX_STREAMS", 1000),
            max_streams_per_token=_count(env, "WANHOOK_MAX_STREAMS_PER_TOKEN", 100),
            redis_max_connections=_count(env, "WANHOOK_REDIS_MAX_CONNECTIONS", 100),
            header_timeout_seconds=_positive(env, "WANHOOK_HEADER_TIMEOUT_SECONDS", 10.0),
            max_connections=_count(env, "WANHOOK_MAX_CONNECTIONS", 2000),
            redis_wait_replicas=_count(env, "WANHOOK_REDIS_WAIT_REPLICAS", 0, minimum=0),
            redis_wait_aof=_count(env, "WANHOOK_REDIS_WAIT_AOF", 0, minimum=0),
            redis_wait_timeout=_positive(env, "WANHOOK_REDIS_WAIT_TIMEOUT_SECONDS", 1.0),
            object_store=_object_store(env),
        )
        settings.check_formats()
        return settings

    def check_formats(self) -> None:
        """The settings with a grammar of their own, parsed here once so that a mistake in one stops the
        command at its start: found later, by a worker loop, it would stop that loop while the process
        looked healthy."""
        from .callbacks import check_secret, parse_schedule
        from .quota import parse_limits

        parse_limits(self.limits)
        parse_schedule(self.callback_schedule)
        if self.callback_secret is not None:
            check_secret(self.callback_secret)
        if self.redis_url is None and self.redis_wait_replicas:
            # Every event and create would be refused (503) for ever.
            raise ConfigError("WANHOOK_REDIS_WAIT_REPLICAS needs WANHOOK_REDIS_URL: the embedded Redis has no replicas")

    def require_api_key(self, why: str) -> None:
        """For the commands that submit tasks: without a key, every task would wait in the queue for ever."""
        if not self.api_key:
            raise ConfigError(f"DASHSCOPE_API_KEY is not set: {why}")

    def check_serving_limits(self) -> None:
        """What ``serve`` refuses to start with: limits that would let streams starve the webhook."""
        if self.max_connections <= self.max_streams:
            # Streams alone must not be able to take every connection: the webhook needs some.
            raise ConfigError(
                f"WANHOOK_MAX_CONNECTIONS ({self.max_connections}) must be above WANHOOK_MAX_STREAMS "
                f"({self.max_streams})"
            )

    @property
    def durability(self) -> Durability:
        from .replication import Durability

        return Durability(self.redis_wait_replicas, self.redis_wait_aof, self.redis_wait_timeout)

    @property
    def videos_dir(self) -> Path:
        return self.data_dir / "videos"
