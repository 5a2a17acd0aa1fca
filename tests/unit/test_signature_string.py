"""EventBridge's string to sign and the checks around it (service/ingress/signature.py), without a push."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from wanhook.service.config import DEFAULT_CERT_HOST
from wanhook.service.core.errors import InvalidSignature
from wanhook.service.ingress.signature import (
    check_certificate_url,
    load_public_key,
    signature_matches,
    signed_forms,
    string_to_sign,
    timestamp_seconds,
)
from wanhook.service.web.responses import status_of

URL = "https://hooks.test/v1/events/dashscope"
HEADERS = {
    "x-eventbridge-signature-timestamp": "1732536000000",
    "x-eventbridge-hash-method": "SHA256",
    "x-eventbridge-signature-version": "1.0",
    "x-eventbridge-signature-url": "https://cn-hangzhou-eventbridge.oss-accelerate.aliyuncs.com/x509/public.crt",
    "x-eventbridge-signature-token": "tok",
}
BODY = b'{"id":"ev-1"}'
DEFAULT_CERT_HOSTS = (DEFAULT_CERT_HOST,)


def test_the_string_to_sign_line_by_line() -> None:
    assert string_to_sign(URL, HEADERS, BODY, trailing_newline=True) == (
        b"https://hooks.test/v1/events/dashscope\n"
        b"x-eventbridge-signature-timestamp: 1732536000000\n"
        b"x-eventbridge-hash-method: SHA256\n"
        b"x-eventbridge-signature-version: 1.0\n"
        b"x-eventbridge-signature-url: https://cn-hangzhou-eventbridge.oss-accelerate.aliyuncs.com/x509/public.crt\n"
        b"x-eventbridge-signature-token: tok\n"
        b'{"id":"ev-1"}\n'
    )


def test_the_token_line_and_the_trailing_newline_are_optional() -> None:
    signed = string_to_sign(URL, HEADERS, BODY)
    assert signed.endswith(b"x-eventbridge-signature-token: tok\n" + BODY)
    unsigned_token = string_to_sign(URL, HEADERS, BODY, sign_token=False)
    assert b"signature-token" not in unsigned_token
    assert unsigned_token.endswith(b"public.crt\n" + BODY)


def test_a_header_the_push_lacks_is_left_out_and_latin1_is_undone() -> None:
    headers = {key: value for key, value in HEADERS.items() if "token" not in key}
    headers["x-eventbridge-signature-url"] = "https://h.test/caf\u00c3\u00a9"  # UTF-8 bytes as Starlette decodes them
    signed = string_to_sign(URL, headers, BODY)
    assert b"signature-token" not in signed
    assert "https://h.test/café".encode() in signed


def test_the_forms_tried_are_distinct_and_in_order() -> None:
    forms = signed_forms(URL, HEADERS, BODY)
    assert forms == [
        string_to_sign(URL, HEADERS, BODY, trailing_newline=True, sign_token=True),
        string_to_sign(URL, HEADERS, BODY, trailing_newline=True, sign_token=False),
        string_to_sign(URL, HEADERS, BODY, trailing_newline=False, sign_token=True),
        string_to_sign(URL, HEADERS, BODY, trailing_newline=False, sign_token=False),
    ]
    # Without a token, leaving it out changes nothing: two forms, not four.
    no_token = {key: value for key, value in HEADERS.items() if "token" not in key}
    assert len(signed_forms(URL, no_token, BODY)) == 2


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize("trailing_newline", [True, False])
@pytest.mark.parametrize("sign_token", [True, False])
def test_a_signature_over_any_accepted_form_matches(
    key: rsa.RSAPrivateKey, trailing_newline: bool, sign_token: bool
) -> None:
    data = string_to_sign(URL, HEADERS, BODY, trailing_newline=trailing_newline, sign_token=sign_token)
    signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    assert signature_matches(key.public_key(), signature, URL, HEADERS, BODY)
    assert not signature_matches(key.public_key(), signature, URL, HEADERS, BODY + b" ")
    assert not signature_matches(key.public_key(), signature, URL + "?x=1", HEADERS, BODY)


def test_a_public_key_from_pem(key: rsa.RSAPrivateKey) -> None:
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert load_public_key(pem).public_numbers() == key.public_key().public_numbers()
    with pytest.raises(InvalidSignature) as caught:
        load_public_key(b"-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n")
    assert (status_of(caught.value), caught.value.code) == (401, "invalid_signature")
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(InvalidSignature, match="no RSA key"):
        load_public_key(ec_pem)


@pytest.mark.parametrize(
    "raw,seconds",
    [
        ("1732536000000", 1732536000.0),
        ("1732536000", 1732536000.0),
        ("0", 0.0),
    ],
)
def test_a_timestamp_in_milliseconds_or_seconds(raw: str, seconds: float) -> None:
    assert timestamp_seconds(raw) == seconds


@pytest.mark.parametrize("raw", ["", "-1", "1.5", "12345678901234567", "１２３", "0x10"])
def test_a_timestamp_that_is_not_one(raw: str) -> None:
    with pytest.raises(ValueError):
        timestamp_seconds(raw)


@pytest.mark.parametrize(
    "url",
    [
        "https://cn-hangzhou-eventbridge.oss-accelerate.aliyuncs.com/x509/public.crt",
        "https://ap-southeast-1-eventbridge.oss-accelerate.aliyuncs.com/cert.pem",
    ],
)
def test_certificate_urls_on_eventbridge_hosts(url: str) -> None:
    check_certificate_url(url, DEFAULT_CERT_HOSTS)


@pytest.mark.parametrize(
    "url,why",
    [
        ("http://cn-hangzhou-eventbridge.oss-accelerate.aliyuncs.com/c.crt", "not https"),
        ("https://a.evil-eventbridge.oss-accelerate.aliyuncs.com/c.crt", "not on an EventBridge certificate host"),
        ("https://evil.test/c.crt", "not on an EventBridge certificate host"),
        ("https://cn-hangzhou-eventbridge.oss-accelerate.aliyuncs.com:8443/c.crt", "must not name a port"),
        ("https://u:p@cn-hangzhou-eventbridge.oss-accelerate.aliyuncs.com/c.crt", "must not carry credentials"),
        ("https://cn-hangzhou-eventbridge.oss-accelerate.aliyuncs.com:99999/c.crt", "is not a URL"),
    ],
)
def test_certificate_urls_refused(url: str, why: str) -> None:
    with pytest.raises(InvalidSignature, match=why) as caught:
        check_certificate_url(url, DEFAULT_CERT_HOSTS)
    assert (status_of(caught.value), caught.value.code) == (401, "invalid_signature")


def test_a_literal_host_may_use_http_and_a_port() -> None:
    check_certificate_url("http://127.0.0.1:8080/c.crt", ("127.0.0.1",))
    with pytest.raises(InvalidSignature):
        check_certificate_url("http://127.0.0.2:8080/c.crt", ("127.0.0.1",))
