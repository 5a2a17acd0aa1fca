"""Settings, read once from the environment (the contract's variables plus a few tuning knobs)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_BASE_URL = "https://dashscope.aliyuncs.com/api/v1"
# Where EventBridge keeps its signing certificates: https://<region>-eventbridge.oss-accelerate.aliyuncs.com/...
DEFAULT_CERT_HOST = "*-eventbridge.oss-accelerate.aliyuncs.com"


class ConfigError(ValueError):
    """A setting has a value wanhook cannot use."""


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    value = _number(env, name, default)
    if value < 1 or value != int(value):
        raise ConfigError(f"{name} must be a whole number above 0, got {env.get(name)!r}")
    return int(value)


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """The variable's value among ``choices``; unset or empty is the first."""
    raw = env.get(name) or choices[0]
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _number(env, name, default)
    if value <= 0:
        raise ConfigError(f"{name} must be above 0, got {env.get(name)!r}")
    return value


@dataclass(frozen=True)
class Settings:
    api_key: str | None = None
    dashscope_base_url: str = DEFAULT_BASE_URL
    redis_url: str | None = None
    data_dir: Path = Path("wanhook-data")
    eventbridge_token: str | None = None
    # WANHOOK_EVENTBRIDGE_VERIFY: "token" (the token alone, when set) or "signature" (EventBridge's v2 RSA
    # signature, and the token too when set); see service/signature.py.
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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        rocketmq = {
            key.removeprefix("WANHOOK_ROCKETMQ_").lower(): value
            for key, value in env.items()
            if key.startswith("WANHOOK_ROCKETMQ_") and value
        }
        return cls(
            api_key=env.get("DASHSCOPE_API_KEY") or None,
            dashscope_base_url=(env.get("DASHSCOPE_HTTP_BASE_URL") or DEFAULT_BASE_URL).rstrip("/"),
            redis_url=env.get("WANHOOK_REDIS_URL") or None,
            data_dir=Path(env.get("WANHOOK_DATA_DIR") or "wanhook-data"),
            eventbridge_token=env.get("WANHOOK_EVENTBRIDGE_TOKEN") or None,
            eventbridge_verify=_choice(env, "WANHOOK_EVENTBRIDGE_VERIFY", ("token", "signature")),
            eventbridge_url=env.get("WANHOOK_EVENTBRIDGE_URL") or None,
            eventbridge_cert_hosts=_split(env.get("WANHOOK_EVENTBRIDGE_CERT_HOSTS", DEFAULT_CERT_HOST)),
            api_tokens=_split(env.get("WANHOOK_API_TOKENS")),
            callback_secret=env.get("WANHOOK_CALLBACK_SECRET") or None,
            video_hosts=_split(env.get("WANHOOK_VIDEO_HOSTS", "*.aliyuncs.com")),
            callback_allow_private=env.get("WANHOOK_CALLBACK_ALLOW_PRIVATE", "0") == "1",
            rocketmq=rocketmq,
            download_concurrency=int(_number(env, "WANHOOK_DOWNLOAD_CONCURRENCY", 4)),
            claim_idle_seconds=_number(env, "WANHOOK_CLAIM_IDLE_SECONDS", 30.0),
            download_attempts=int(_number(env, "WANHOOK_DOWNLOAD_ATTEMPTS", 8)),
            dashscope_timeout=_number(env, "WANHOOK_DASHSCOPE_TIMEOUT", 30.0),
            limits=env.get("WANHOOK_LIMITS", ""),
            reserve_seconds=_number(env, "WANHOOK_RESERVE_SECONDS", 60.0),
            sweep_after_seconds=_number(env, "WANHOOK_SWEEP_AFTER_SECONDS", 900.0),
            sweep_interval_seconds=_number(env, "WANHOOK_SWEEP_INTERVAL_SECONDS", 60.0),
            dashscope_qps=int(_number(env, "WANHOOK_DASHSCOPE_QPS", 20)),
            callback_schedule=env.get("WANHOOK_CALLBACK_SCHEDULE", ""),
            changes_retention_seconds=_number(env, "WANHOOK_CHANGES_RETENTION_SECONDS", 3600.0),
            rate_limit=int(_number(env, "WANHOOK_RATE_LIMIT", 100)),
            max_queued_per_token=int(_number(env, "WANHOOK_MAX_QUEUED_PER_TOKEN", 10_000)),
            max_video_bytes=int(_number(env, "WANHOOK_MAX_VIDEO_BYTES", 4 << 30)),
            min_free_bytes=int(_number(env, "WANHOOK_MIN_FREE_BYTES", 1 << 30)),
            eventbridge_allow_unauthenticated=env.get("WANHOOK_EVENTBRIDGE_ALLOW_UNAUTHENTICATED", "0") == "1",
            callback_timeout=_positive(env, "WANHOOK_CALLBACK_TIMEOUT", 15.0),
            callback_concurrency=_count(env, "WANHOOK_CALLBACK_CONCURRENCY", 16),
            callback_per_destination=_count(env, "WANHOOK_CALLBACK_PER_DESTINATION", 2),
            max_streams=_count(env, "WANHOOK_MAX_STREAMS", 1000),
            max_streams_per_token=_count(env, "WANHOOK_MAX_STREAMS_PER_TOKEN", 100),
            redis_max_connections=_count(env, "WANHOOK_REDIS_MAX_CONNECTIONS", 100),
            header_timeout_seconds=_number(env, "WANHOOK_HEADER_TIMEOUT_SECONDS", 10.0),
            max_connections=_count(env, "WANHOOK_MAX_CONNECTIONS", 2000),
        )

    def check_serving_limits(self) -> None:
        """What ``serve`` refuses to start with: limits that would let streams starve the webhook."""
        if self.max_connections <= self.max_streams:
            # Streams alone must not be able to take every connection: the webhook needs some.
            raise ConfigError(f"WANHOOK_MAX_CONNECTIONS ({self.max_connections}) must be above WANHOOK_MAX_STREAMS "
                              f"({self.max_streams})")
        if self.header_timeout_seconds <= 0:
            raise ConfigError("WANHOOK_HEADER_TIMEOUT_SECONDS must be above 0")

    @property
    def videos_dir(self) -> Path:
        return self.data_dir / "videos"
