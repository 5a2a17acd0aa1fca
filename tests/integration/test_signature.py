"""EventBridge's v2 push signature: the string to sign, the certificate URL check, and the whole path through real
processes (the emulator signs every push with its own key; wanhook fetches its certificate and verifies)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from wanhook.emulator.config import SIGNATURE_VARIANTS, EmulatorConfig
from wanhook.emulator.eventbridge import CERT_PATH, Signer
from wanhook.service.config import DEFAULT_CERT_HOST, Settings
from wanhook.service.core.errors import ConfigError, InvalidSignature
from wanhook.service.ingress import signature
from wanhook.service.web.responses import status_of

from ..conftest import TOKEN, Stack
from ..support import Process, wait_for
from .test_bad_input import EVENT, assert_error, snapshot

URL = "https://hooks.example.com/v1/events/dashscope"
CERT = "https://cn-beijing-eventbridge.oss-accelerate.aliyuncs.com/x509_public_certificate_1.pem"
EVENT_LOG = "{wanhook}:events"

# ---------------------------------------------------------------------------------------------------------------
# The pieces, in-process.


def test_string_to_sign_layout() -> None:
    headers = {
        "x-eventbridge-signature-timestamp": "1700000000000",
        "x-eventbridge-hash-method": "SHA256",
        "x-eventbridge-signature-version": "1.0",
        "x-eventbridge-signature-url": CERT,
        "x-eventbridge-signature-v2": "not signed",
        "content-type": "application/json",
    }
    lines = (
        f"{URL}\nx-eventbridge-signature-timestamp: 1700000000000\nx-eventbridge-hash-method: SHA256\n"
        f"x-eventbridge-signature-version: 1.0\nx-eventbridge-signature-url: {CERT}\n"
    )
    assert signature.string_to_sign(URL, headers, b'{"a": 1}') == lines.encode() + b'{"a": 1}'
    assert signature.string_to_sign(URL, headers, b"{}", trailing_newline=True) == lines.encode() + b"{}\n"
    with_token = {**headers, "x-eventbridge-signature-token": "tök"}
    assert signature.string_to_sign(URL, with_token, b"{}") == (
        lines.encode() + "x-eventbridge-signature-token: tök\n".encode("latin-1") + b"{}"
    )
    assert signature.string_to_sign(URL, with_token, b"{}", sign_token=False) == lines.encode() + b"{}"
    # Every reading, each once, the likeliest first; without a token the token's two readings are one.
    assert signature.signed_forms(URL, with_token, b"{}") == [
        lines.encode() + "x-eventbridge-signature-token: tök\n".encode("latin-1") + b"{}\n",
        lines.encode() + b"{}\n",
        lines.encode() + "x-eventbridge-signature-token: tök\n".encode("latin-1") + b"{}",
        lines.encode() + b"{}",
    ]
    assert signature.signed_forms(URL, headers, b"{}") == [lines.encode() + b"{}\n", lines.encode() + b"{}"]


def test_timestamps_in_milliseconds_or_seconds() -> None:
    assert signature.timestamp_seconds("1700000000123") == 1700000000.123
    assert signature.timestamp_seconds("1700000000") == 1700000000.0
    for bad in ("", "-1", "1.5", "17e11", " 1700000000", "١٧٠٠٠٠٠٠٠٠"):
        with pytest.raises(ValueError):
            signature.timestamp_seconds(bad)


def test_certificate_url_hosts() -> None:
    default = (DEFAULT_CERT_HOST,)
    for good in (CERT, "https://ap-southeast-1-eventbridge.oss-accelerate.aliyuncs.com/c.pem"):
        signature.check_certificate_url(good, default)
    for bad in (
        "http://cn-beijing-eventbridge.oss-accelerate.aliyuncs.com/c.pem",
        "https://cn-beijing-eventbridge.oss-accelerate.aliyuncs.com:8443/c.pem",
        "https://user:pw@cn-beijing-eventbridge.oss-accelerate.aliyuncs.com/c.pem",
        "https://a.b-eventbridge.oss-accelerate.aliyuncs.com/c.pem",
        "https://cn-beijing-eventbridge.oss-accelerate.aliyuncs.com.evil.example/c.pem",
        "https://-eventbridge.oss-accelerate.aliyuncs.com/c.pem",
        "https://evil.example/c.pem",
        "ftp://cn-beijing-eventbridge.oss-accelerate.aliyuncs.com/c.pem",
        "https://[::1/c.pem",
        "not a url",
    ):
        with pytest.raises(InvalidSignature) as refused:
            signature.check_certificate_url(bad, default)
        assert status_of(refused.value) == 401 and refused.value.code == "invalid_signature"
    # A host named literally (for tests) may be reached over http and on a port; patterns never may.
    signature.check_certificate_url("http://127.0.0.1:8090/c.pem", ("127.0.0.1",))
    with pytest.raises(InvalidSignature):
        signature.check_certificate_url("http://localhost:8090/c.pem", ("127.0.0.1",))


def test_settings() -> None:
    settings = Settings.from_env({})
    assert settings.eventbridge_verify == "token" and settings.eventbridge_url is None
    assert settings.eventbridge_cert_hosts == ("*-eventbridge.oss-accelerate.aliyuncs.com",)
    settings = Settings.from_env(
        {
            "WANHOOK_EVENTBRIDGE_VERIFY": "signature",
            "WANHOOK_EVENTBRIDGE_URL": URL,
            "WANHOOK_EVENTBRIDGE_CERT_HOSTS": "127.0.0.1, cn-beijing-eventbridge.x",
        }
    )
    assert settings.eventbridge_verify == "signature" and settings.eventbridge_url == URL
    assert settings.eventbridge_cert_hosts == ("127.0.0.1", "cn-beijing-eventbridge.x")
    with pytest.raises(ConfigError):
        Settings.from_env({"WANHOOK_EVENTBRIDGE_VERIFY": "hmac"})


def test_certificate_or_public_key() -> None:
    signer = Signer(EmulatorConfig())
    from_certificate = signature.load_public_key(signer.certificate_pem)
    public_pem = signer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert signature.load_public_key(public_pem).public_numbers() == from_certificate.public_numbers()
    for bad in (b"", b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", b"<html>404</html>"):
        with pytest.raises(InvalidSignature):
            signature.load_public_key(bad)


@pytest.mark.parametrize("token", [TOKEN, None])
@pytest.mark.parametrize("variant", SIGNATURE_VARIANTS)
def test_emulator_and_service_agree(variant: str, token: str | None) -> None:
    """The emulator's signer and wanhook's builder are written apart; each variant's signature verifies."""
    signer = Signer(EmulatorConfig(signature_variant=variant))
    signer.certificate_url = lambda: CERT
    body = json.dumps(EVENT).encode()
    headers, sent = signer.sign(URL, body, token)
    assert sent == body and headers["x-eventbridge-signature-url"] == CERT
    assert ("x-eventbridge-signature-token" in headers) == (token is not None)
    assert abs(signature.timestamp_seconds(headers["x-eventbridge-signature-timestamp"]) - time.time()) < 5
    key = signature.load_public_key(signer.certificate_pem)
    raw = base64.b64decode(headers["x-eventbridge-signature-v2"])
    assert signature.signature_matches(key, raw, URL, headers, body)
    assert not signature.signature_matches(key, raw, URL, headers, body + b" ")
    assert not signature.signature_matches(key, raw, URL.replace("hooks", "other"), headers, body)
    # A token the signature covers cannot be swapped; one it does not cover (no token signed, or the form that
    # leaves it out) is not bound by it, and the token check alone vouches for it.
    token_signed = token is not None and variant != "token-unsigned"
    swapped = {**headers, "x-eventbridge-signature-token": "x"}
    assert signature.signature_matches(key, raw, URL, swapped, body) is not token_signed


# ---------------------------------------------------------------------------------------------------------------
# Through real processes: the emulator signs and pushes, `wanhook serve` verifies.

SIGNED_ENV = {
    "WANHOOK_EVENTBRIDGE_VERIFY": "signature",
    # The emulator's certificate is on loopback, named literally; Alibaba's pattern stays trusted too.
    "WANHOOK_EVENTBRIDGE_CERT_HOSTS": f"127.0.0.1,{DEFAULT_CERT_HOST}",
    # A task whose event was refused keeps its slot: room for all of them.
    "WANHOOK_LIMITS": "wan2.2-t2v-plus=2/20",
}


@pytest.fixture
def signed(tmp_path: Path, redis_url: str, processes: list[Process]) -> Iterator[Stack]:
    stack = Stack(tmp_path, redis_url, processes)
    stack.env.update(SIGNED_ENV)
    stack.start()
    # One attempt per push, so that a refused push is over as soon as it is answered.
    stack.emulator.configure(push_retry_delays=[])
    yield stack
    stack.http.close()
    stack.redis.close()


def test_signed_pushes_of_every_variant_are_accepted(signed: Stack) -> None:
    for variant in SIGNATURE_VARIANTS:
        signed.emulator.configure(signature_variant=variant)
        signed.wait_status(signed.create(f"signed {variant}")["id"], "ready")
    stats = signed.emulator.stats()
    assert stats["push_failures"] == 0 and stats["push_attempts"] == len(SIGNATURE_VARIANTS)


def refused_push(stack: Stack, reason: str, **knobs: Any) -> None:
    """A push bent by ``knobs`` is answered 401 for ``reason`` and leaves its task submitted, no event recorded."""
    stack.emulator.configure(**knobs)
    failures, events = stack.emulator.stats()["push_failures"], stack.redis.xlen(EVENT_LOG)
    logged = stack.server.log().count(reason)
    created = stack.create(f"refused: {reason}")
    wait_for(lambda: stack.emulator.stats()["push_failures"] > failures, 30, what=f"the push refused for {reason}")
    wait_for(lambda: stack.server.log().count(reason) > logged, 10, what=f"{reason!r} in the server's log")
    stack.wait_status(created["id"], "submitted")
    assert stack.redis.xlen(EVENT_LOG) == events
    defaults = EmulatorConfig()
    stack.emulator.configure(**{name: getattr(defaults, name) for name in knobs})


def test_bent_signatures_are_refused(signed: Stack) -> None:
    refused_push(signed, "signature does not match", signature_tamper=True)
    refused_push(signed, "stale timestamp", signature_skew_seconds=-90)
    refused_push(signed, "stale timestamp", signature_skew_seconds=90)
    # The right certificate, but named on a host that is not trusted: refused for the host, not the key.
    elsewhere = signed.emulator.url.replace("127.0.0.1", "localhost") + CERT_PATH
    refused_push(signed, "not on an EventBridge certificate host", signature_cert_url=elsewhere)
    # Unbent again: the next push goes through.
    signed.wait_status(signed.create("after the refusals")["id"], "ready")


def test_unsigned_and_malformed_pushes(signed: Stack) -> None:
    stack = signed
    stack.emulator.configure(render_seconds=60)
    stack.wait_status(stack.create("already here")["id"], "submitted")
    before = snapshot(stack)
    body = json.dumps(EVENT).encode()
    good = {
        "content-type": "application/json",
        "x-eventbridge-signature-token": TOKEN,
        "x-eventbridge-signature-timestamp": str(int(time.time() * 1000)),
        "x-eventbridge-hash-method": "SHA256",
        "x-eventbridge-signature-version": "1.0",
        "x-eventbridge-signature-url": stack.emulator.url + CERT_PATH,
        "x-eventbridge-signature-v2": base64.b64encode(b"\x01" * 256).decode(),
    }

    def push(message: str, **changes: str | None) -> None:
        headers = {name: value for name, value in {**good, **changes}.items() if value is not None}
        response = stack.http.post("/v1/events/dashscope", content=body, headers=headers)
        assert_error(response, 401, "invalid_signature")
        assert message in response.json()["error"]["message"], response.text

    token_only = {name: None for name in good if name.startswith("x-eventbridge-") and not name.endswith("token")}
    push("missing signature header(s): x-eventbridge-signature-v2, x-eventbridge-signature-timestamp", **token_only)
    for name in signature.REQUIRED_HEADERS:
        push(f"missing signature header(s): {name}", **{name: None})
    push("unsupported x-eventbridge-hash-method", **{"x-eventbridge-hash-method": "SHA1"})
    push("unsupported x-eventbridge-signature-version", **{"x-eventbridge-signature-version": "2.0"})
    push("is not a number", **{"x-eventbridge-signature-timestamp": "yesterday"})
    push("stale timestamp", **{"x-eventbridge-signature-timestamp": str(int(time.time()) - 61)})
    push("stale timestamp", **{"x-eventbridge-signature-timestamp": str(int(time.time() * 1000) + 70_000)})
    push("is not base64", **{"x-eventbridge-signature-v2": "%%%"})
    push("not on an EventBridge certificate host", **{"x-eventbridge-signature-url": "https://evil.example/c.pem"})
    push("is not https", **{"x-eventbridge-signature-url": CERT.replace("https:", "http:")})
    push("answered 404", **{"x-eventbridge-signature-url": stack.emulator.url + "/_emulator/nothing.pem"})
    push("signature does not match")
    # The token is still checked, before the signature.
    assert_error(
        stack.http.post(
            "/v1/events/dashscope", content=body, headers={**good, "x-eventbridge-signature-token": "wrong"}
        ),
        401,
        "invalid_token",
    )
    assert snapshot(stack) == before


def test_canonical_url_behind_a_proxy(signed: Stack) -> None:
    """A server told the public URL verifies pushes signed for it; one that is not refuses them."""
    proxied = signed.serve(env={"WANHOOK_EVENTBRIDGE_URL": URL})
    signed.emulator.configure(
        signature_target_url=URL, webhook_targets=[{"url": proxied.url + "/v1/events/dashscope", "token": TOKEN}]
    )
    signed.wait_status(signed.create("through the proxy")["id"], "ready")
    signed.emulator.configure(webhook_targets=[{"url": signed.webhook, "token": TOKEN}])
    refused_push(signed, "signature does not match", signature_target_url=URL)


def test_certificate_is_served(signed: Stack) -> None:
    response = httpx.get(signed.emulator.url + CERT_PATH, timeout=10)
    assert response.status_code == 200 and response.content.startswith(b"-----BEGIN CERTIFICATE-----")
    signature.load_public_key(response.content)


def test_signature_only_fetches_no_certificate_for_what_it_can_refuse_first(signed: Stack) -> None:
    """With no token (signature checks alone), a stranger's unsigned or garbled push is refused before any
    certificate is fetched; a certificate URL that named no certificate is fetched once, not once a push."""
    server = signed.serve(env={"WANHOOK_EVENTBRIDGE_TOKEN": ""})
    body = json.dumps(EVENT).encode()
    cert = signed.emulator.url + CERT_PATH
    good = {
        "content-type": "application/json",
        "x-eventbridge-signature-timestamp": str(int(time.time() * 1000)),
        "x-eventbridge-hash-method": "SHA256",
        "x-eventbridge-signature-version": "1.0",
        "x-eventbridge-signature-url": cert,
        "x-eventbridge-signature-v2": base64.b64encode(b"\x01" * 256).decode(),
    }

    def push(message: str, **changes: str | None) -> None:
        headers = {name: value for name, value in {**good, **changes}.items() if value is not None}
        response = httpx.post(server.url + "/v1/events/dashscope", content=body, headers=headers, timeout=10)
        assert_error(response, 401, "invalid_signature")
        assert message in response.json()["error"]["message"], response.text

    def fetched() -> int:
        return int(signed.emulator.stats()["certificate_requests"])

    before = fetched()
    push("missing signature header(s)", **{"x-eventbridge-signature-v2": None})
    push("is not base64", **{"x-eventbridge-signature-v2": "%%%"})
    push("not an RSA signature", **{"x-eventbridge-signature-v2": base64.b64encode(b"\x01" * 3).decode()})
    push("not an RSA signature", **{"x-eventbridge-signature-v2": base64.b64encode(b"\x01" * 2000).decode()})
    push("stale timestamp", **{"x-eventbridge-signature-timestamp": str(int(time.time()) - 3600)})
    push("not on an EventBridge certificate host", **{"x-eventbridge-signature-url": "https://evil.example/c.pem"})
    assert fetched() == before
    # A URL on a trusted host that names nothing: one fetch, then its refusal is remembered.
    nothing = signed.emulator.url + CERT_PATH.rsplit("/", 1)[0] + "/nothing.pem"
    for _ in range(3):
        push("answered 404", **{"x-eventbridge-signature-url": nothing})
    assert fetched() == before + 1
    # The certificate itself: fetched once, then kept; a wrong signature is refused by it.
    for _ in range(3):
        push("signature does not match")
    assert fetched() == before + 2


def test_signature_alone_does_not_vouch_for_the_data_form(signed: Stack) -> None:
    """A signed push proves only that some account's EventBridge sent it, and any account's rule can send a
    bare ``data`` object: with no token it is recorded as ignored and moves no task. With the token checked
    (the account's own rule) the same form applies."""
    bare = signed.serve(env={"WANHOOK_EVENTBRIDGE_TOKEN": ""})
    signed.emulator.configure(webhook_targets=[{"url": bare.url + "/v1/events/dashscope", "body": "data"}])
    attempts = signed.emulator.stats()["push_attempts"]
    created = signed.create("a bare data object, signed")
    wait_for(lambda: signed.emulator.stats()["push_attempts"] > attempts, 30, what="the push")
    wait_for(lambda: "ignored" in [e["outcome"] for _, e in signed.redis.xrange(EVENT_LOG)], 10, what="recorded")
    assert signed.task(created["id"])["status"] == "submitted"
    assert signed.emulator.stats()["push_failures"] == 0  # acknowledged: EventBridge does not push it again

    signed.emulator.configure(webhook_targets=[{"url": signed.webhook, "token": TOKEN, "body": "data"}])
    signed.wait_status(signed.create("a bare data object, with the token")["id"], "ready")
