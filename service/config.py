"""Settings, read once from the environment (the contract's variables plus a few tuning knobs)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, quote, urlsplit

from standardwebhooks.webhooks import Webhook

from .core.errors import ConfigError
from .domain.models import MODELS

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


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name) or str(default)
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise ConfigError(f"{name} must be a number of seconds above 0, got {raw!r}")
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
    from .core.redact import redact_url

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


# The URLs that name a highly available Redis: a failover there loses what no replica had.
HA_SCHEMES = ("redis+sentinel", "redis+cluster", "rediss+cluster")


def _wait_replicas(env: Mapping[str, str], redis_url: str | None) -> int:
    """WANHOOK_REDIS_WAIT_REPLICAS: a count, or ``auto`` (unset or empty too): 1 when the URL names Sentinel or
    a Cluster, 0 otherwise. Safe by default where there are replicas to wait for, as Kafka made ``acks=all``
    its producers' default; an explicit 0 turns the wait off (logged at start, replication.warn_if_short)."""
    name = "WANHOOK_REDIS_WAIT_REPLICAS"
    raw = (env.get(name) or "").strip() or "auto"
    if raw == "auto":
        return 1 if redis_url is not None and urlsplit(redis_url).scheme in HA_SCHEMES else 0
    try:
        return _count(env, name, 0, minimum=0)
    except ConfigError:
        raise ConfigError(f"{name} must be auto or a whole number of 0 or more, got {env.get(name)!r}") from None


def _hosts(env: Mapping[str, str], name: str, default: str) -> tuple[str, ...]:
    hosts = _split(env.get(name, default))
    if not hosts:
        # Set but empty would allow no host at all: every download (or certificate) refused, task by task.
        raise ConfigError(f"{name} is set but names no host (unset it for the default, {default})")
    return hosts


# Settings with a type or a grammar of their own: the object store, the replicated write, the models' limits,
# the callbacks' schedule and secret. Each is parsed here, once, at a command's start, so that no layer below
# the one that uses it has to know of the environment.

# Delay before each attempt, in seconds: at once, then as Svix does.
DEFAULT_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


SERVE_MODES = ("redirect", "stream")


@dataclass(frozen=True)
class Durability:
    """What a write must reach before wanhook answers for it. ``aofs`` counts AOFs fsynced, the
    primary's first: 1 is the primary's own, 2 the primary's and one replica's, and so on."""

    replicas: int = 0
    aofs: int = 0
    timeout_seconds: float = 1.0

    @property
    def off(self) -> bool:
        return self.replicas == 0 and self.aofs == 0

    @property
    def timeout_ms(self) -> int:
        return max(1, round(self.timeout_seconds * 1000))


@dataclass(frozen=True)
class S3Config:
    bucket: str
    prefix: str
    endpoint: str  # scheme://host[:port], without the bucket
    region: str
    access_key: str
    secret_key: str = field(repr=False)  # never printed, even by a debug dump of the settings
    session_token: str | None = field(default=None, repr=False)
    path_style: bool = False
    serve: str = "redirect"
    presign_seconds: int = 300
    # How long an upload that keeps failing is tried again, from its first failure, before its task fails.
    upload_retry_seconds: float = 6 * 3600.0
    # WANHOOK_S3_REQUEST_TIMEOUT_SECONDS: the whole of a request someone is waiting for (an API deletion, the
    # video relayed), thread queueing included; a removal that does not fit is owed and retried (removals.py).
    request_timeout: float = 5.0
    # WANHOOK_S3_UPLOAD_TIMEOUT_SECONDS: connect, and each read or write, of the downloader's requests (uploads
    # and the HEADs around them), which no client waits for and which are retried with backoff.
    upload_timeout: float = 60.0

    def key(self, task_id: str) -> str:
        return f"{self.prefix}{task_id}.mp4"

    def url(self, key: str) -> str:
        """The object's URL, virtual-hosted (the bucket in the host, as OSS requires) or path style."""
        parts = urlsplit(self.endpoint)
        path = "/" + quote(key, safe="/-_.~")
        if self.path_style:
            return f"{parts.scheme}://{parts.netloc}/{self.bucket}{path}"
        return f"{parts.scheme}://{self.bucket}.{parts.netloc}{path}"


def config_from_env(env: Mapping[str, str]) -> S3Config | None:
    """The object store named by ``WANHOOK_STORAGE_URL`` (``s3://bucket/prefix``), or None for local disk;
    ``ConfigError`` (the command exits 2) for anything incomplete or malformed."""
    raw = env.get("WANHOOK_STORAGE_URL") or ""
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"WANHOOK_STORAGE_URL must look like s3://bucket/prefix, got {raw!r}")
    bucket = parts.netloc
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise ConfigError(f"WANHOOK_STORAGE_URL: {bucket!r} is not a valid bucket name")
    prefix = parts.path.strip("/")
    prefix = prefix + "/" if prefix else ""
    region = env.get("WANHOOK_S3_REGION") or env.get("AWS_REGION") or "us-east-1"
    endpoint = env.get("WANHOOK_S3_ENDPOINT") or f"https://s3.{region}.amazonaws.com"
    ends = urlsplit(endpoint)
    if ends.scheme not in ("http", "https") or not ends.netloc or ends.path.strip("/") or ends.query:
        raise ConfigError(f"WANHOOK_S3_ENDPOINT must be http(s)://host[:port], got {endpoint!r}")
    access = env.get("WANHOOK_S3_ACCESS_KEY_ID") or env.get("AWS_ACCESS_KEY_ID") or ""
    secret = env.get("WANHOOK_S3_SECRET_ACCESS_KEY") or env.get("AWS_SECRET_ACCESS_KEY") or ""
    if not access or not secret:
        raise ConfigError(
            "WANHOOK_STORAGE_URL is set but its credentials are not: set WANHOOK_S3_ACCESS_KEY_ID and "
            "WANHOOK_S3_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        )
    addressing = env.get("WANHOOK_S3_ADDRESSING") or "virtual"
    if addressing not in ("virtual", "path"):
        raise ConfigError(f"WANHOOK_S3_ADDRESSING must be virtual or path, got {addressing!r}")
    serve = env.get("WANHOOK_S3_SERVE") or "redirect"
    if serve not in SERVE_MODES:
        raise ConfigError(f"WANHOOK_S3_SERVE must be one of {', '.join(SERVE_MODES)}, got {serve!r}")
    raw_seconds = env.get("WANHOOK_S3_PRESIGN_SECONDS") or "300"
    # SigV4 presigned URLs live at most 7 days.
    if not raw_seconds.isdigit() or not 1 <= int(raw_seconds) <= 604800:
        raise ConfigError(f"WANHOOK_S3_PRESIGN_SECONDS must be a whole number from 1 to 604800, got {raw_seconds!r}")
    upload_retry = _seconds(env, "WANHOOK_S3_UPLOAD_RETRY_SECONDS", 21600.0)
    request_timeout = _seconds(env, "WANHOOK_S3_REQUEST_TIMEOUT_SECONDS", 5.0)
    upload_timeout = _seconds(env, "WANHOOK_S3_UPLOAD_TIMEOUT_SECONDS", 60.0)
    return S3Config(
        bucket=bucket,
        prefix=prefix,
        endpoint=f"{ends.scheme}://{ends.netloc}",
        region=region,
        access_key=access,
        secret_key=secret,
        session_token=env.get("WANHOOK_S3_SESSION_TOKEN") or env.get("AWS_SESSION_TOKEN") or None,
        path_style=addressing == "path",
        serve=serve,
        presign_seconds=int(raw_seconds),
        upload_retry_seconds=upload_retry,
        request_timeout=request_timeout,
        upload_timeout=upload_timeout,
    )


@dataclass(frozen=True)
class Limit:
    rps: int
    running: int


def parse_limits(text: str | None) -> dict[str, Limit]:
    """The spec's limits, overridden by ``model=rps/running,...`` (``WANHOOK_LIMITS``).

    Both numbers are whole and above 0: a model allowed no submission a second, or no running task,
    would keep its tasks queued for ever without a word.
    """
    limits = {name: Limit(rules.submit_rps, rules.max_running) for name, rules in MODELS.items()}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        model, equals, numbers = (part.strip() for part in item.partition("="))
        rps, slash, running = (part.strip() for part in numbers.partition("/"))
        if not equals or not slash:
            raise ConfigError(f"WANHOOK_LIMITS: expected model=rps/running (e.g. wan2.2-t2v-plus=2/2), got {item!r}")
        if model not in MODELS:
            raise ConfigError(f"WANHOOK_LIMITS: {model!r} is not a model wanhook knows (one of {', '.join(MODELS)})")
        if not (rps.isdigit() and running.isdigit() and int(rps) > 0 and int(running) > 0):
            raise ConfigError(
                f"WANHOOK_LIMITS: {item.strip()!r}: submissions a second and running tasks must be "
                "whole numbers above 0"
            )
        limits[model] = Limit(int(rps), int(running))
    return limits


def parse_schedule(text: str | None) -> tuple[float, ...]:
    """``WANHOOK_CALLBACK_SCHEDULE``: seconds before each attempt, comma-separated (0 is at once)."""
    if not text:
        return DEFAULT_SCHEDULE
    try:
        schedule = tuple(float(part) for part in text.split(","))
    except ValueError:
        schedule = ()
    if not schedule or not all(math.isfinite(delay) and delay >= 0 for delay in schedule):
        raise ConfigError(
            "WANHOOK_CALLBACK_SCHEDULE must be the seconds before each attempt, numbers of 0 or more "
            f"separated by commas (e.g. 0,5,300), got {text!r}"
        )
    return schedule


def check_secret(configured: str) -> None:
    """``WANHOOK_CALLBACK_SECRET`` as Standard Webhooks reads it: ``whsec_`` and base64."""
    try:
        Webhook(configured)
    except Exception:  # the library's own errors: binascii.Error, its EmptyWebhookSecretError
        # The value is a secret: the message never repeats it.
        raise ConfigError(
            "WANHOOK_CALLBACK_SECRET must be whsec_ followed by base64 (a Standard Webhooks secret)"
        ) from None


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
    # Tuning knobs (not in the contract; documented in DOCUMENTED below).
    download_concurrency: int = 4
    claim_idle_seconds: float = 30.0
    download_attempts: int = 8
    # WANHOOK_DOWNLOAD_MIN_RATE / _RATE_WINDOW_SECONDS: a download whose body brings fewer bytes a second than
    # this, over each window of that many seconds, gives its slot back (a failed attempt): a dripping host
    # cannot hold a slot for ever.
    download_min_rate: int = 16384
    download_rate_window: float = 60.0
    # WANHOOK_BODY_MIN_RATE / _RATE_WINDOW_SECONDS: a request body that brings fewer bytes a second than this,
    # over each window of that many seconds (the first bytes within one window), is answered 408: a client
    # that drips its body cannot hold a connection, or a large body's slot, for ever.
    body_min_rate: int = 16384
    body_rate_window: float = 10.0
    # WANHOOK_LARGE_BODIES: request bodies over web/bodies.INLINE_MAX read and parsed at once (a caller holds at
    # most half of them); WANHOOK_PARSE_PROCESSES: the processes that parse and check them, off the event loop.
    large_bodies: int = 4
    parse_processes: int = 1
    job_max_attempts: int = 5  # WANHOOK_JOB_MAX_ATTEMPTS: deliveries of a job before it is dead-lettered
    # WANHOOK_OPERATOR_TOKEN: the bearer token of the operator's routes (/v1/dead-letters); unset, they answer 403.
    operator_token: str | None = None
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
    max_header_bytes: int = 32768  # WANHOOK_MAX_HEADER_BYTES: a request's head at most (431 past it)
    max_headers: int = 100  # WANHOOK_MAX_HEADERS: header fields a request at most (431 past them)
    # WANHOOK_REDIS_WAIT_REPLICAS / _AOF / _TIMEOUT_SECONDS: what a write must reach before wanhook answers
    # for it (service/persistence/replication.py); 0 and 0 wait for nothing. From the environment the replicas
    # default to "auto": 1 for a Sentinel or Cluster URL, 0 for a single server (_wait_replicas).
    redis_wait_replicas: int = 0
    redis_wait_aof: int = 0
    redis_wait_timeout: float = 1.0
    # WANHOOK_STORAGE_URL=s3://bucket/prefix and WANHOOK_S3_*: videos in an object store (objectstore.py).
    object_store: S3Config | None = None
    # The per-purpose thread pools (pools.py): local file work, and object-store requests someone waits for.
    file_threads: int = 4  # WANHOOK_FILE_THREADS
    store_threads: int = 4  # WANHOOK_S3_THREADS

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
            download_min_rate=_count(env, "WANHOOK_DOWNLOAD_MIN_RATE", 16384, minimum=0),
            download_rate_window=_positive(env, "WANHOOK_DOWNLOAD_RATE_WINDOW_SECONDS", 60.0),
            body_min_rate=_count(env, "WANHOOK_BODY_MIN_RATE", 16384, minimum=0),
            body_rate_window=_positive(env, "WANHOOK_BODY_RATE_WINDOW_SECONDS", 10.0),
            large_bodies=_count(env, "WANHOOK_LARGE_BODIES", 4),
            parse_processes=_count(env, "WANHOOK_PARSE_PROCESSES", 1),
            job_max_attempts=_count(env, "WANHOOK_JOB_MAX_ATTEMPTS", 5),
            operator_token=env.get("WANHOOK_OPERATOR_TOKEN") or None,
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
            max_header_bytes=_count(env, "WANHOOK_MAX_HEADER_BYTES", 32768, minimum=1024),
            max_headers=_count(env, "WANHOOK_MAX_HEADERS", 100, minimum=10),
            redis_wait_replicas=_wait_replicas(env, env.get("WANHOOK_REDIS_URL") or None),
            redis_wait_aof=_count(env, "WANHOOK_REDIS_WAIT_AOF", 0, minimum=0),
            redis_wait_timeout=_positive(env, "WANHOOK_REDIS_WAIT_TIMEOUT_SECONDS", 1.0),
            object_store=config_from_env(env),
            file_threads=_count(env, "WANHOOK_FILE_THREADS", 4),
            store_threads=_count(env, "WANHOOK_S3_THREADS", 4),
        )
        settings.check_formats()
        return settings

    def check_formats(self) -> None:
        """The settings with a grammar of their own, parsed here once so that a mistake in one stops the
        command at its start: found later, by a worker loop, it would stop that loop while the process
        looked healthy."""
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
        return Durability(self.redis_wait_replicas, self.redis_wait_aof, self.redis_wait_timeout)

    @property
    def videos_dir(self) -> Path:
        return self.data_dir / "videos"


# --- The settings' documentation ------------------------------------------------------------------------------------
# What each environment variable means, beside the code that reads it. docs/reference/settings.md is generated from
# this table when the documentation is built (docs/_hooks/reference.py), in this order; the build fails on a variable
# the code reads that has no row here, and on a row naming a variable nothing reads (tests/integration/test_docs.py
# too). The cells are Markdown. Variables of other modules (the RocketMQ consumer, the command line, the emulator)
# are here too, so that the reference is one table.


@dataclass(frozen=True)
class Documented:
    """One row of the settings reference: the variables it describes (one, or a family read together), the
    default as the reader should see it, and what the setting does."""

    names: tuple[str, ...]
    default: str
    meaning: str


DOCUMENTED: tuple[Documented, ...] = (
    Documented(
        ("DASHSCOPE_API_KEY",),
        "none",
        "API key (the emulator accepts any non-empty key)",
    ),
    Documented(
        ("DASHSCOPE_HTTP_BASE_URL",),
        "`https://dashscope.aliyuncs.com/api/v1`",
        "as in the official SDK",
    ),
    Documented(
        ("WANHOOK_REDIS_URL",),
        "unset: embedded Redis",
        "`redis://`, `rediss://` or `unix://` URL; `redis+sentinel://host:26379[,host:port]/<service>[/db]`"
        " for a Sentinel-monitored master; `redis+cluster://host:port` (any node) for a Redis Cluster. "
        "Redis 6.2+ is required (XAUTOCLAIM)",
    ),
    Documented(
        ("WANHOOK_DATA_DIR",),
        "`./wanhook-data`",
        "videos in `<dir>/videos/<task id>.mp4`; the embedded Redis in `<dir>/redis`",
    ),
    Documented(
        ("WANHOOK_EVENTBRIDGE_TOKEN",),
        "none",
        "when set, a push without the matching `x-eventbridge-signature-token` gets 401 (constant-time check)",
    ),
    Documented(
        ("WANHOOK_EVENTBRIDGE_VERIFY",),
        "`token`",
        "`token`: pushes are checked by the token alone (when set). `signature`: EventBridge's v2 "
        "RSA-SHA256 signature is verified too; otherwise 401 `invalid_signature`",
    ),
    Documented(
        ("WANHOOK_EVENTBRIDGE_URL",),
        "unset: the URL as received",
        "the URL the EventBridge target posts to, which is what EventBridge signs; set it whenever a proxy "
        "or TLS terminator sits in front of wanhook",
    ),
    Documented(
        ("WANHOOK_EVENTBRIDGE_ALLOW_UNAUTHENTICATED",),
        "`0`",
        "`1` lets `wanhook serve` expose the webhook on a non-loopback address with neither "
        "`WANHOOK_EVENTBRIDGE_TOKEN` nor `WANHOOK_EVENTBRIDGE_VERIFY=signature` (something in front of "
        "wanhook authenticates pushes); otherwise serve refuses to start",
    ),
    Documented(
        ("WANHOOK_EVENTBRIDGE_CERT_HOSTS",),
        "`*-eventbridge.oss-accelerate.aliyuncs.com`",
        "hosts the signing certificate may be fetched from (`*` = part of one DNS label; https, default "
        "port). A host named literally (no `*`) may also be reached over http and on any port: for local "
        "testing only",
    ),
    Documented(
        ("WANHOOK_API_TOKENS",),
        "none",
        "comma-separated bearer tokens for the client API; a task belongs to the token that created it, and"
        " another token gets 404 for it",
    ),
    Documented(
        ("WANHOOK_CALLBACK_SECRET",),
        "generated",
        "`whsec_...` secret for signing outgoing callbacks",
    ),
    Documented(
        ("WANHOOK_VIDEO_HOSTS",),
        "`*.aliyuncs.com`",
        "host patterns a video URL must match before it is fetched",
    ),
    Documented(
        ("WANHOOK_CALLBACK_ALLOW_PRIVATE",),
        "`0`",
        "`1` allows callback URLs on loopback and private addresses",
    ),
    Documented(
        ("WANHOOK_CALLBACK_SCHEDULE",),
        "`0,5,300,1800,7200,18000,36000,36000`",
        "seconds before each callback attempt; after the last, the delivery is dead-lettered",
    ),
    Documented(
        ("WANHOOK_CALLBACK_TIMEOUT",),
        "`15`",
        "seconds one callback attempt may take in all: connecting, sending, the status and headers, and up "
        "to 4 KiB of the answer's body",
    ),
    Documented(
        ("WANHOOK_CALLBACK_CONCURRENCY",),
        "`16`",
        "callback attempts in flight per process",
    ),
    Documented(
        ("WANHOOK_CALLBACK_PER_DESTINATION",),
        "`2`",
        "callback attempts in flight per process to one destination (the URL's host and port); more wait "
        "their turn without holding up others",
    ),
    Documented(
        ("WANHOOK_ROCKETMQ_ENDPOINTS", "WANHOOK_ROCKETMQ_TOPIC", "WANHOOK_ROCKETMQ_GROUP"),
        "none",
        "the consumer's endpoint (`host:port`), topic and consumer group; `wanhook consume` needs all three",
    ),
    Documented(
        ("WANHOOK_ROCKETMQ_ACCESS_KEY", "WANHOOK_ROCKETMQ_SECRET_KEY"),
        "none",
        "the instance's username and password",
    ),
    Documented(
        ("WANHOOK_ROCKETMQ_NAMESPACE",),
        "none",
        "the instance id, for serverless instances reached over the internet",
    ),
    Documented(
        ("WANHOOK_ROCKETMQ_INVISIBLE_SECONDS",),
        "`60`",
        "how long a received message stays hidden (the redelivery delay after a crash); 10 to 43200, the "
        "bounds the RocketMQ 5.x proxy accepts (checked at start)",
    ),
    Documented(
        ("WANHOOK_ROCKETMQ_MAX_DELIVERIES",),
        "`16`",
        "deliveries before a failing message is parked in the dead-letter stream; keep it at most the "
        'consumer group\'s retries (see "Which dead-letter queue to watch"); with protocol 4 at most 17 '
        "(exit 2 otherwise)",
    ),
    Documented(
        ("WANHOOK_ROCKETMQ_GIVE_UP_SECONDS",),
        "`300`",
        "receiving failing (with protocol 4: the check for a broker of the topic through the NameServer) "
        "this long without a break: `wanhook consume` exits with status 3 and one line, for the "
        "orchestrator to restart it",
    ),
    Documented(
        ("WANHOOK_ROCKETMQ_SHUTDOWN_SECONDS",),
        "`10`",
        "on SIGTERM, how long the batch in hand may take to be recorded (Redis may hang); the rest is left "
        "unacknowledged and comes back",
    ),
    Documented(
        ("WANHOOK_ROCKETMQ_TAG",),
        "`*`",
        "tag filter, e.g. `AsyncTaskFinish`",
    ),
    Documented(
        ("WANHOOK_ROCKETMQ_TRUST_DATA_FORM",),
        "`0`",
        "`1`: a message without a CloudEvent envelope (the target's Body `$.data`) is DashScope's; `0`: it "
        "is recorded and acknowledged as `ignored` (anyone who can publish could send one)",
    ),
    Documented(
        ("WANHOOK_ROCKETMQ_PROTOCOL",),
        "`5`",
        "`5`: gRPC through the Proxy (`WANHOOK_ROCKETMQ_ENDPOINTS`); `4`: 4.x remoting through the "
        'NameServer, with `rocketmq-client-python` (see "RocketMQ 4.x"); anything else exits 2 at start',
    ),
    Documented(
        ("WANHOOK_ROCKETMQ_NAMESRV",),
        "none",
        "with protocol 4: the NameServer address, `host:port` (several separated by `;`); checked at start "
        "(exit 2 if malformed, 3 if nothing answers)",
    ),
    Documented(
        ("WANHOOK_ROCKETMQ_CLIENT4_DIR",),
        "`~/.cache/wanhook/rocketmq4/rocketmq4`",
        "with protocol 4: the folder of `rocketmq-client-python` 2.0.0's package with `librocketmq.so` "
        "beside it (`make rocketmq4` makes it)",
    ),
    Documented(
        ("WANHOOK_ROCKETMQ_BATCH", "WANHOOK_ROCKETMQ_AWAIT_SECONDS"),
        "`16`, `10`",
        "receive batch size and long-polling time (at least 3: the proxy polls 5 to 20 s and refuses a "
        "receive whose deadline, this plus the client's 3 s, is shorter); with protocol 4 the batch is the "
        "number of librocketmq's consume threads, messages settled at once",
    ),
    Documented(
        ("WANHOOK_DOWNLOAD_CONCURRENCY",),
        "`4`",
        "downloads at once per worker process",
    ),
    Documented(
        ("WANHOOK_LIMITS",),
        "the spec's table",
        "per-model quotas over the built-in table: `model=rps/running,...`, e.g. `wan2.2-t2v-plus=2/2`",
    ),
    Documented(
        ("WANHOOK_DASHSCOPE_QPS",),
        "`20`",
        "the account's reads, lists and cancels per second, shared by every process",
    ),
    Documented(
        ("WANHOOK_RESERVE_SECONDS",),
        "`60`",
        "the lease of an admitted task's slot until DashScope has answered its create, renewed every third "
        "of it while the call runs (a dead process's slot comes back after this, or after its create's "
        "deadline)",
    ),
    Documented(
        ("WANHOOK_SWEEP_AFTER_SECONDS",),
        "`900`",
        "a task `submitted` this long without a completion event is read once from DashScope",
    ),
    Documented(
        ("WANHOOK_SWEEP_INTERVAL_SECONDS",),
        "`60`",
        "how often the sweeper looks for such tasks",
    ),
    Documented(
        ("WANHOOK_CLAIM_IDLE_SECONDS",),
        "`30`",
        "a job untouched this long is taken over from its (dead) worker; a dead worker's disk reservations "
        "lapse after as long",
    ),
    Documented(
        ("WANHOOK_JOB_MAX_ATTEMPTS",),
        "`5`",
        "deliveries of a job (download, failure read) or unexpected errors of a callback delivery before it"
        " is dead-lettered and its task ends `failed` (`job_dead_lettered`); also the sweeper's requeues of"
        " a download without a job",
    ),
    Documented(
        ("WANHOOK_OPERATOR_TOKEN",),
        "unset",
        "bearer token of the operator's routes (`/v1/dead-letters`); unset, they answer 403 `operator_disabled`",
    ),
    Documented(
        ("WANHOOK_DOWNLOAD_ATTEMPTS",),
        "`8`",
        "failed attempts (broken transfers, and failed reads of the task for its URL) before the task fails"
        " with `DownloadFailed`; also the reads allowed for a failed task's reason",
    ),
    Documented(
        ("WANHOOK_DOWNLOAD_MIN_RATE",),
        "`16384`",
        "bytes a second a video's body must bring over every window of "
        "`WANHOOK_DOWNLOAD_RATE_WINDOW_SECONDS`; slower, the transfer is broken off and counts as a failed "
        "attempt (a host that drips bytes gives its download slot back). `0` turns it off",
    ),
    Documented(
        ("WANHOOK_DOWNLOAD_RATE_WINDOW_SECONDS",),
        "`60`",
        "the window of `WANHOOK_DOWNLOAD_MIN_RATE`",
    ),
    Documented(
        ("WANHOOK_DASHSCOPE_TIMEOUT",),
        "`30`",
        "seconds per DashScope call (a create's whole call; its task is not sent again until this and 2 s "
        "more have passed)",
    ),
    Documented(
        ("WANHOOK_RATE_LIMIT",),
        "`100`",
        "client API requests a second per token (429 with `Retry-After` beyond)",
    ),
    Documented(
        ("WANHOOK_MAX_QUEUED_PER_TOKEN",),
        "`10000`",
        "tasks one token may have waiting in the queues (429 `too_many_queued` beyond)",
    ),
    Documented(
        ("WANHOOK_MAX_VIDEO_BYTES",),
        "`4294967296`",
        "a larger video is refused (`VideoTooLarge`)",
    ),
    Documented(
        ("WANHOOK_MIN_FREE_BYTES",),
        "`1073741824`",
        "free space never reserved for downloads: a download that does not fit over it and the other "
        "downloads' reservations waits (the task shows `InsufficientStorage`) until there is room. It must "
        "cover the embedded Redis' AOF growth when the AOF is on the same disk",
    ),
    Documented(
        ("WANHOOK_CHANGES_RETENTION_SECONDS",),
        "`3600`",
        "how long a finished task's change stream is kept for `Last-Event-ID` resumes; after it, the event "
        "stream of that task sends its final state alone. Shared by every process (the last one started "
        "sets it)",
    ),
    Documented(
        ("WANHOOK_TASK_RETENTION_SECONDS",),
        "`7776000` (90 days)",
        "how long an ended task is kept, with everything kept for it, from when it ended; `0` keeps tasks "
        "for ever (see *Operations*)",
    ),
    Documented(
        ("WANHOOK_VIDEO_RETENTION_SECONDS",),
        "`2592000` (30 days)",
        "how long a stored video is kept from when its task became `ready`; its task then reads `video: "
        "null` with `video_removed`; `0` keeps videos as long as their task",
    ),
    Documented(
        ("WANHOOK_RETENTION_DRY_RUN",),
        "`0`",
        "`1`: retention logs how many tasks and videos are past their time and removes nothing",
    ),
    Documented(
        ("WANHOOK_STORAGE_URL",),
        "unset: videos in `WANHOOK_DATA_DIR`",
        "`s3://bucket/prefix`: videos in that S3-compatible bucket under `prefix/<task id>.mp4` (part files"
        " stay in `<data dir>/videos` while downloading). See *Videos in an object store*",
    ),
    Documented(
        ("WANHOOK_S3_ENDPOINT",),
        "`https://s3.<region>.amazonaws.com`",
        "the store's `http(s)://host[:port]`, without the bucket; e.g. "
        "`https://s3.oss-cn-hangzhou.aliyuncs.com` for Alibaba Cloud OSS",
    ),
    Documented(
        ("WANHOOK_S3_REGION",),
        "`AWS_REGION`, else `us-east-1`",
        "the region signed into each request (SigV4); for OSS the region ID, e.g. `cn-hangzhou`",
    ),
    Documented(
        ("WANHOOK_S3_ACCESS_KEY_ID", "WANHOOK_S3_SECRET_ACCESS_KEY"),
        "`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`",
        "the store's credentials (required with `WANHOOK_STORAGE_URL`); the secret is never logged",
    ),
    Documented(
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION"),
        "none",
        "the usual AWS variables, read when the `WANHOOK_S3_` ones above and below are unset",
    ),
    Documented(
        ("WANHOOK_S3_SESSION_TOKEN",),
        "`AWS_SESSION_TOKEN`",
        "the STS token, when the key above is temporary",
    ),
    Documented(
        ("WANHOOK_S3_ADDRESSING",),
        "`virtual`",
        "`virtual`: the bucket in the host name (`bucket.endpoint`), which OSS requires; `path`: "
        "`endpoint/bucket` (MinIO, moto and other local stores)",
    ),
    Documented(
        ("WANHOOK_S3_SERVE",),
        "`redirect`",
        "how `GET /v1/tasks/{id}/video` serves a stored video: `redirect` answers 302 to a presigned URL of"
        " the object; `stream` relays the object through wanhook, `Range` included",
    ),
    Documented(
        ("WANHOOK_S3_PRESIGN_SECONDS",),
        "`300`",
        "how long a presigned video URL is valid, 1 to 604800 (SigV4's limit, 7 days)",
    ),
    Documented(
        ("WANHOOK_S3_REQUEST_TIMEOUT_SECONDS",),
        "`5`",
        "the whole of an object-store request someone waits for (a `DELETE`'s removal of the object, "
        "waiting for a thread included; the video relayed with `WANHOOK_S3_SERVE=stream`, per read). A "
        "removal that does not fit is left owed and the `DELETE` answers at once with `video_pending`",
    ),
    Documented(
        ("WANHOOK_S3_UPLOAD_TIMEOUT_SECONDS",),
        "`60`",
        "connect, and each read or write, of the downloader's requests to the store (uploads and the "
        "`HEAD`s around them); a request past it fails the upload, tried again with backoff",
    ),
    Documented(
        ("WANHOOK_S3_THREADS",),
        "`4`",
        "threads per process for the object-store requests someone waits for (deletions, the sweeper's owed"
        " removals); uploads have their own, one per download slot",
    ),
    Documented(
        ("WANHOOK_FILE_THREADS",),
        "`4`",
        "threads per process for local file work (part files, hashing, free-space checks), apart from every"
        " network call (see *Blocking work on its own threads*)",
    ),
    Documented(
        ("WANHOOK_S3_UPLOAD_RETRY_SECONDS",),
        "`21600` (6 hours)",
        "how long an upload to the object store that keeps failing is tried again, from its first failure; "
        "the task then fails with `UploadFailed` (meanwhile it shows the failure as its `error`, with "
        "`attempts`)",
    ),
    Documented(
        ("WANHOOK_MAX_STREAMS",),
        "`1000`",
        "open event streams per process (503 `too_many_streams` with `Retry-After` beyond)",
    ),
    Documented(
        ("WANHOOK_MAX_STREAMS_PER_TOKEN",),
        "`100`",
        "open event streams per API token and process, when `WANHOOK_API_TOKENS` is set (429 "
        "`too_many_streams` with `Retry-After` beyond)",
    ),
    Documented(
        ("WANHOOK_REDIS_MAX_CONNECTIONS",),
        "`100`",
        "the size of each process's shared Redis pool (requests and workers); event streams use the change "
        "feed's own connections, one per 1,000 followed tasks",
    ),
    Documented(
        ("WANHOOK_REDIS_WAIT_REPLICAS",),
        "`auto`",
        "`auto`: 1 when `WANHOOK_REDIS_URL` names Sentinel or a Cluster (`redis+sentinel://`, "
        "`redis+cluster://`, `rediss+cluster://`), 0 for a single server; or a count. The replicas that "
        "must have a recorded event, a created task, a DashScope task id or a parked RocketMQ message "
        "(Redis `WAIT`) before wanhook answers for it (2xx, 202, a RocketMQ acknowledgement); otherwise 503"
        " `not_replicated` and the sender retries. Needs `WANHOOK_REDIS_URL` (the embedded Redis has no "
        "replicas). See *Redis persistence*",
    ),
    Documented(
        ("WANHOOK_REDIS_WAIT_AOF",),
        "`0`",
        "AOFs, the primary's first, that must have fsynced such a write (Redis 7.2+ `WAITAOF`): `1` the "
        "primary's, `2` the primary's and one replica's",
    ),
    Documented(
        ("WANHOOK_REDIS_WAIT_TIMEOUT_SECONDS",),
        "`1`",
        "how long one write waits for those replicas (and, again, AOFs) before it is answered 503",
    ),
    Documented(
        ("WANHOOK_HEADER_TIMEOUT_SECONDS",),
        "`10`",
        "a connection that has not sent its request's headers by then is closed",
    ),
    Documented(
        ("WANHOOK_MAX_CONNECTIONS",),
        "`2000`",
        "open client connections per serve process; a connection past it is closed at once. Must be above "
        "`WANHOOK_MAX_STREAMS`",
    ),
    Documented(
        ("WANHOOK_MAX_HEADER_BYTES",),
        "`32768`",
        "bytes of a request's head (request line and header lines) at most; past them, 431 "
        "`request_header_fields_too_large` and the connection is closed without reading more",
    ),
    Documented(
        ("WANHOOK_MAX_HEADERS",),
        "`100`",
        "header fields of a request at most; past them, the same 431",
    ),
    Documented(
        ("WANHOOK_BODY_MIN_RATE",),
        "`16384`",
        "bytes a second a request's body must bring over every window of `WANHOOK_BODY_RATE_WINDOW_SECONDS`"
        " (its first bytes within one); slower, 408 `body_timeout` and the connection closed. `0` turns it "
        "off",
    ),
    Documented(
        ("WANHOOK_BODY_RATE_WINDOW_SECONDS",),
        "`10`",
        "the window of `WANHOOK_BODY_MIN_RATE`",
    ),
    Documented(
        ("WANHOOK_LARGE_BODIES",),
        "`4`",
        "request bodies over 64 KiB read and parsed at once per serve process, a caller at most half of "
        "them; a request that waits 5 s for one is answered 503 `busy`",
    ),
    Documented(
        ("WANHOOK_PARSE_PROCESSES",),
        "`1`",
        "processes that parse and check large request bodies, off the event loop",
    ),
    Documented(
        ("WANHOOK_LOG_LEVEL",),
        "`INFO`",
        "log level",
    ),
    Documented(
        ("WANHOOK_LOG_FORMAT",),
        "`json`",
        "`json`: one object a line with `request_id`, `task_id`, `event_id`; `text` for people",
    ),
    Documented(
        ("WANHOOK_SERVER", "WANHOOK_API_TOKEN"),
        "`http://127.0.0.1:8000`, none",
        "for the `submit` and `status` client commands",
    ),
    Documented(
        ("WANHOOK_DEMO_RENDER_SECONDS",),
        "`5`",
        "how long the demo's emulated render takes",
    ),
    Documented(
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
        "none",
        "for `wanhook eventbridge setup`: a RAM user's key allowed `eventbridge:GetRule`, `CreateRule`, "
        "`UpdateRule` and `PutTargets` (not needed with `--dry-run`)",
    ),
    Documented(
        ("ALIBABA_CLOUD_SECURITY_TOKEN",),
        "none",
        "for `wanhook eventbridge setup`: the STS token, when the key above is temporary",
    ),
    Documented(
        ("ALIBABA_CLOUD_REGION_ID",),
        "none",
        "for `wanhook eventbridge setup`: the region when `--region` is not given",
    ),
)
