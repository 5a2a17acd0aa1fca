"""Parsing the settings (service/config.py), the quota table (service/flows/quota.py) and redaction
(service/core/redact.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wanhook.service.config import DEFAULT_BASE_URL, DEFAULT_CERT_HOST, ConfigError, Limit, Settings, parse_limits
from wanhook.service.core.redact import redact_secret, redact_url
from wanhook.service.domain.models import MODELS


def test_the_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.api_key is None
    assert settings.dashscope_base_url == DEFAULT_BASE_URL
    assert settings.redis_url is None
    assert settings.data_dir == Path("wanhook-data").absolute()
    assert settings.eventbridge_verify == "token"
    assert settings.eventbridge_cert_hosts == (DEFAULT_CERT_HOST,)
    assert settings.video_hosts == ("*.aliyuncs.com",)
    assert settings.api_tokens == ()
    assert settings.callback_allow_private is False
    assert (settings.download_concurrency, settings.rate_limit, settings.min_free_bytes) == (4, 100, 1 << 30)


def test_values_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "DASHSCOPE_API_KEY": "sk-1",
            "DASHSCOPE_HTTP_BASE_URL": "http://127.0.0.1:9/api/v1/",
            "WANHOOK_REDIS_URL": "redis+sentinel://:pw@s1:26379,s2:26380/mymaster/2",
            "WANHOOK_DATA_DIR": "some/dir",
            "WANHOOK_API_TOKENS": " a, b ,,c ",
            "WANHOOK_VIDEO_HOSTS": "127.0.0.1",
            "WANHOOK_EVENTBRIDGE_VERIFY": "signature",
            "WANHOOK_CALLBACK_ALLOW_PRIVATE": "1",
            "WANHOOK_CLAIM_IDLE_SECONDS": "2.5",
            "WANHOOK_MIN_FREE_BYTES": "0",
            "WANHOOK_DOWNLOAD_CONCURRENCY": "8.0",
            "WANHOOK_ROCKETMQ_ENDPOINTS": "mq:8081",
            "WANHOOK_ROCKETMQ_TOPIC": "",
            "WANHOOK_LIMITS": "wan2.6-t2v=1/1",
        }
    )
    assert settings.api_key == "sk-1"
    assert settings.dashscope_base_url == "http://127.0.0.1:9/api/v1"  # no trailing slash
    assert settings.redis_url == "redis+sentinel://:pw@s1:26379,s2:26380/mymaster/2"
    assert settings.data_dir == Path("some/dir").absolute()
    assert settings.api_tokens == ("a", "b", "c")
    assert settings.video_hosts == ("127.0.0.1",)
    assert settings.eventbridge_verify == "signature"
    assert settings.callback_allow_private is True
    assert (settings.claim_idle_seconds, settings.min_free_bytes, settings.download_concurrency) == (2.5, 0, 8)
    assert settings.rocketmq == {"endpoints": "mq:8081"}  # an empty one is unset


BAD = [
    ("WANHOOK_CLAIM_IDLE_SECONDS", "soon", "must be a number"),
    ("WANHOOK_CLAIM_IDLE_SECONDS", "nan", "finite number"),
    ("WANHOOK_CLAIM_IDLE_SECONDS", "inf", "finite number"),
    ("WANHOOK_CLAIM_IDLE_SECONDS", "0", "must be above 0"),
    ("WANHOOK_DOWNLOAD_CONCURRENCY", "0", "whole number above 0"),
    ("WANHOOK_DOWNLOAD_CONCURRENCY", "1.5", "whole number above 0"),
    ("WANHOOK_MIN_FREE_BYTES", "-1", "whole number of 0 or more"),
    ("WANHOOK_EVENTBRIDGE_VERIFY", "rsa", "must be one of token, signature"),
    ("WANHOOK_CALLBACK_ALLOW_PRIVATE", "true", "must be 0 or 1"),
    ("DASHSCOPE_HTTP_BASE_URL", "dashscope.aliyuncs.com", "http:// or https:// URL"),
    ("DASHSCOPE_HTTP_BASE_URL", "https://dashscope.test:0/api", "port that is not a number"),
    ("DASHSCOPE_HTTP_BASE_URL", "https://dashscope.test:70000/api", "port that is not a number"),
    ("WANHOOK_EVENTBRIDGE_URL", "ftp://hooks.test/", "http:// or https:// URL"),
    ("WANHOOK_VIDEO_HOSTS", " , ", "names no host"),
    ("WANHOOK_EVENTBRIDGE_CERT_HOSTS", "", "names no host"),
    ("WANHOOK_REDIS_URL", "http://127.0.0.1:6379", "must be a redis://"),
    ("WANHOOK_REDIS_URL", "unix://", "names no socket path"),
    ("WANHOOK_REDIS_URL", "redis://127.0.0.1:99999/0", "port that is not a number"),
    ("WANHOOK_REDIS_URL", "redis+sentinel://s1:26379", "names the monitored service"),
    ("WANHOOK_REDIS_URL", "redis+sentinel://s1:port/mymaster", "expected redis+sentinel://"),
    ("WANHOOK_REDIS_URL", "redis+sentinel://s1:26379/mymaster/x", "database after the service is a number"),
    ("WANHOOK_LIMITS", "wan2.6-t2v=0/1", "WANHOOK_LIMITS"),
    ("WANHOOK_CALLBACK_SCHEDULE", "soon", "WANHOOK_CALLBACK_SCHEDULE"),
]


@pytest.mark.parametrize("name,value,message", BAD, ids=[f"{name}={value}" for name, value, _ in BAD])
def test_a_bad_value_is_refused_by_name(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert message in str(caught.value)


def test_a_redis_password_never_shows_in_the_error() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"WANHOOK_REDIS_URL": "redis://:hunter2@127.0.0.1:99999/0"})
    assert "hunter2" not in str(caught.value)


def test_serving_limits_and_the_api_key() -> None:
    with pytest.raises(ConfigError, match="WANHOOK_MAX_CONNECTIONS"):
        Settings.from_env({"WANHOOK_MAX_CONNECTIONS": "10", "WANHOOK_MAX_STREAMS": "10"}).check_serving_limits()
    Settings.from_env({"WANHOOK_MAX_CONNECTIONS": "11", "WANHOOK_MAX_STREAMS": "10"}).check_serving_limits()
    with pytest.raises(ConfigError, match="DASHSCOPE_API_KEY is not set: to submit"):
        Settings.from_env({}).require_api_key("to submit")
    Settings.from_env({"DASHSCOPE_API_KEY": "sk-1"}).require_api_key("to submit")


def test_the_quota_table_and_its_overrides() -> None:
    spec = {name: Limit(rules.submit_rps, rules.max_running) for name, rules in MODELS.items()}
    assert parse_limits(None) == parse_limits("") == parse_limits(" , ") == spec
    limits = parse_limits(" wan2.6-t2v = 3 / 4 ,wan2.2-t2v-plus=1/1")
    assert limits == {**spec, "wan2.6-t2v": Limit(3, 4), "wan2.2-t2v-plus": Limit(1, 1)}


@pytest.mark.parametrize(
    "text,message",
    [
        ("wan2.6-t2v", "expected model=rps/running"),
        ("wan2.6-t2v=3", "expected model=rps/running"),
        ("wan9=1/1", "not a model wanhook knows"),
        ("wan2.6-t2v=0/1", "whole numbers above 0"),
        ("wan2.6-t2v=1/0", "whole numbers above 0"),
        ("wan2.6-t2v=1.5/1", "whole numbers above 0"),
        ("wan2.6-t2v=-1/1", "whole numbers above 0"),
    ],
)
def test_a_bad_quota_override(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_limits(text)


@pytest.mark.parametrize(
    "url,redacted",
    [
        ("https://oss.test/v.mp4?Expires=1&Signature=abc", "https://oss.test/v.mp4?<redacted>"),
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://<redacted>@127.0.0.1:6379/0"),
        ("https://token@host.test/p#frag", "https://<redacted>@host.test/p"),
        ("https://host.test/plain", "https://host.test/plain"),
    ],
)
def test_urls_lose_their_userinfo_and_query(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


@pytest.mark.parametrize(
    "secret,shown",
    [
        (None, "<unset>"),
        ("", "<unset>"),
        ("short", "<redacted>"),
        ("12345678", "<redacted>"),
        ("sk-0123456789", "sk-…"),
    ],
)
def test_secrets_show_at_most_their_start(secret: str | None, shown: str) -> None:
    assert redact_secret(secret) == shown


@pytest.mark.parametrize(
    ("url", "setting", "replicas"),
    [
        (None, None, 0),  # the embedded Redis: nothing to wait for
        ("redis://127.0.0.1:6379/0", None, 0),
        ("redis+sentinel://127.0.0.1:26379/mymaster", None, 1),  # highly available: safe by default
        ("redis+cluster://127.0.0.1:7000", None, 1),
        ("rediss+cluster://127.0.0.1:7000", "", 1),
        ("redis+sentinel://127.0.0.1:26379/mymaster", "auto", 1),
        ("redis+sentinel://127.0.0.1:26379/mymaster", "0", 0),  # turned off on purpose
        ("redis+cluster://127.0.0.1:7000", "2", 2),
        ("redis://127.0.0.1:6379/0", "1", 1),
    ],
)
def test_replicas_are_waited_for_by_default_on_a_highly_available_redis(
    url: str | None, setting: str | None, replicas: int
) -> None:
    env = {"WANHOOK_REDIS_URL": url} if url else {}
    if setting is not None:
        env["WANHOOK_REDIS_WAIT_REPLICAS"] = setting
    assert Settings.from_env(env).redis_wait_replicas == replicas


def test_a_bad_replica_count_names_auto() -> None:
    with pytest.raises(ConfigError, match="auto or a whole number"):
        Settings.from_env({"WANHOOK_REDIS_URL": "redis://127.0.0.1:6379/0", "WANHOOK_REDIS_WAIT_REPLICAS": "one"})
