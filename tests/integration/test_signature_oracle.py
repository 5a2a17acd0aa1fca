"""wanhook's EventBridge signature, checked against what Alibaba wrote and what Alibaba's key signed.

No registry this machine reaches (PyPI, npm, Maven Central) serves an implementation of EventBridge's HTTP push
signature: docs/security.md ("EventBridge signatures") lists what was searched. So the oracles are these, each cited:

1. A push signed with Alibaba's key. The EventBridge SDK's signature verifier ships a test vector of the v1
   signature (HMAC-SHA1 under a one-off secret that EventBridge encrypts with its RSA private key):
   github.com/aliyun/alibabacloud-eventbridge-sdk, util/java/src/test/java/com/aliyun/eventbridge/signature/
   SignatureVerifyTest.java (commit aae0a96, 2021-02-01). The certificate it names
   (x509_public_certificate_2021012101.pem) is the one Alibaba's reference HTTP target carried for offline use:
   github.com/aliyuneventbridge/eb-http-target, src/main/java/com/aliyuneventbridge/httptarget/siginature/
   PublicKeyBuilder.java (commit 153f9d1, 2021-01-25). The secret decrypts under that certificate's key, so the
   vector was made by the holder of the private key, and the HMAC matches one layout of the string to sign only.
   v2 signs the same string with RSA-SHA256 and names the hash in x-eventbridge-hash-method instead of
   x-eventbridge-signature-method (help.aliyun.com/zh/eventbridge/user-guide/signature-algorithm).
   The SDK's builder first tested the token header's name rather than its presence, and so always signed a token
   line (8669940); the commit that brought the vector made it sign the line only when the push has a token
   (aae0a96), and the vector verifies only that way.
2. Alibaba's reference HTTP target for the v2 signature, github.com/aliyuneventbridge/eb-http-target at commit
   579471c (2024-12-12, "update signature verify algorithm"): StringToSignBuilder.defaultStringToSign and
   SignatureVerify.verifySignatureBySHA256withRSA, restated below in Python line for line (it is a Spring Boot
   demo in a repository, published on no registry).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from wanhook.emulator.config import SIGNATURE_VARIANTS, EmulatorConfig
from wanhook.emulator.eventbridge import Signer
from wanhook.service.ingress import signature

from ..conftest import TOKEN
from .test_bad_input import EVENT

# ---------------------------------------------------------------------------------------------------------------
# Oracle 1: the SDK's test vector and the certificate of the key that signed it.

VECTOR_URL = "http://127.0.0.1:8080/cloudevents"
VECTOR_HEADERS = {  # as the test sends them (no token)
    "x-eventbridge-signature-timestamp": "1612167546574",
    "x-eventbridge-signature-method": "HMAC-SHA1",
    "x-eventbridge-signature-url": "https://cn-hangzhou-eventbridge.oss-cn-hangzhou.aliyuncs.com/x509_public_certificate_2021012101.pem",
    "x-eventbridge-signature-version": "1.0",
}
VECTOR_SECRET = (
    "IVmo9s1qRamopH4Ei5ZQKmVYHJ01yoOYuCTQbc4ENtINM1Gwy+x2goGfXl+NhpE6P8xgL01A/vwOn4anzVlhsvmBkkzRwbXqaY"
    "mcP44Of7nHMIfAUDeS9d0ftVOEJlPh8SmxUjUvcf4neLkkv9fgjqYjKEOEPGhLMvkyx1EKB+4="
)
VECTOR_SIGNATURE = "okK0HtfrD9y1xX0UuhKxR0DILgc="
VECTOR_BODY = b"Data is data1, constant is Please deal with it timely."
# CN=eventbridge.aliyun.com, O=Aliyun, OU=Middleware; valid 2021-01-21 to 2031-01-19; RSA 1024.
VECTOR_CERTIFICATE = b"""-----BEGIN CERTIFICATE-----
MIICwzCCAiwCCQC++87W+yaNEDANBgkqhkiG9w0BAQUFADCBpTELMAkGA1UEBhMC
Q04xETAPBgNVBAgMCFpoZUppYW5nMREwDwYDVQQHDAhIYW5nWmhvdTEPMA0GA1UE
CgwGQWxpeXVuMRMwEQYDVQQLDApNaWRkbGV3YXJlMR8wHQYDVQQDDBZldmVudGJy
aWRnZS5hbGl5dW4uY29tMSkwJwYJKoZIhvcNAQkBFhpqaW5nbHVvLnNsQGFsaWJh
YmEtaW5jLmNvbTAeFw0yMTAxMjExMzIwMzdaFw0zMTAxMTkxMzIwMzdaMIGlMQsw
CQYDVQQGEwJDTjERMA8GA1UECAwIWmhlSmlhbmcxETAPBgNVBAcMCEhhbmdaaG91
MQ8wDQYDVQQKDAZBbGl5dW4xEzARBgNVBAsMCk1pZGRsZXdhcmUxHzAdBgNVBAMM
FmV2ZW50YnJpZGdlLmFsaXl1bi5jb20xKTAnBgkqhkiG9w0BCQEWGmppbmdsdW8u
c2xAYWxpYmFiYS1pbmMuY29tMIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDG
HZD42MuTIMsyAilDiLCq73emBwQ5eYWzY+lDG9JCwZPnI73hgq/JG1r+7gurn7mH
oSgzmavRcJQzu8mAZHPBaneohetL5i4lmsPWV/Ef869OmBZi+j0rjUgJmTjAV9Vr
qTppK/rO8gedBSIiymEWpR1rgzqYZvrMrFrcFy0oqwIDAQABMA0GCSqGSIb3DQEB
BQUAA4GBAE8FQjH6SDM2CMU4RBWuI2/jqpDJtg7qc30aasVRyjlbxhSGBkzmAYnM
xwyJSfQImDs/n35uuYE3pKH0bLRlOQu9Z0TlumSRlhin+YXBfPNScoyX8upNfLgr
peHK7YGGpAbJH8Qh3GbOueSD1wT/MWA15QfQABHgtrYl5Am+VNNc
-----END CERTIFICATE-----
"""
V1_METHOD = "x-eventbridge-signature-method"


def decrypt_with_public_key(key: rsa.RSAPublicKey, encrypted: bytes) -> bytes:
    """What Java's Cipher "RSA" in DECRYPT_MODE with a public key returns: the RSA public operation, then the
    PKCS#1 v1.5 block of type 1 (00 01 FF..FF 00 data) removed. Refuses any other block."""
    numbers = key.public_numbers()
    size = (key.key_size + 7) // 8
    block = pow(int.from_bytes(encrypted, "big"), numbers.e, numbers.n).to_bytes(size, "big")
    assert block[:2] == b"\x00\x01", "not a block made with the certificate's private key"
    end = block.index(b"\x00", 2)
    assert end >= 10 and set(block[2:end]) == {0xFF}
    return block[end + 1 :]


def v1_string(lines: list[str], body: bytes, *, trailing_newline: bool) -> bytes:
    return "\n".join(lines).encode() + b"\n" + body + (b"\n" if trailing_newline else b"")


def test_a_push_signed_with_alibabas_key_pins_the_layout() -> None:
    key = x509.load_pem_x509_certificate(VECTOR_CERTIFICATE).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    secret = decrypt_with_public_key(key, base64.b64decode(VECTOR_SECRET))
    assert secret.isascii() and len(secret) == 32  # the one-off secret

    def signs(data: bytes) -> bool:
        return base64.b64encode(hmac.new(secret, data, hashlib.sha1).digest()).decode() == VECTOR_SIGNATURE

    # The fixed headers in the documented order, whatever order they came in, each as "name: value".
    order = (
        "x-eventbridge-signature-timestamp",
        V1_METHOD,
        "x-eventbridge-signature-version",
        "x-eventbridge-signature-url",
    )
    lines = [VECTOR_URL, *(f"{name}: {VECTOR_HEADERS[name]}" for name in order)]
    signed = v1_string(lines, VECTOR_BODY, trailing_newline=True)
    assert signs(signed)
    # Only that layout: not without the newline after the body (the documented formula), not with an empty token
    # line for a push that has no token, not with the headers in the order they were sent.
    assert not signs(v1_string(lines, VECTOR_BODY, trailing_newline=False))
    assert not signs(v1_string([*lines, "x-eventbridge-signature-token: "], VECTOR_BODY, trailing_newline=True))
    sent_order = [VECTOR_URL, *(f"{name}: {value}" for name, value in VECTOR_HEADERS.items())]
    assert not signs(v1_string(sent_order, VECTOR_BODY, trailing_newline=True))

    # wanhook's v2 string for the same push is that string, byte for byte, with v2's hash line for v1's method line.
    v2_headers = {name: value for name, value in VECTOR_HEADERS.items() if name != V1_METHOD}
    v2_headers["x-eventbridge-hash-method"] = "SHA256"
    ours = signature.string_to_sign(VECTOR_URL, v2_headers, VECTOR_BODY, trailing_newline=True)
    assert ours == signed.replace(
        b"x-eventbridge-signature-method: HMAC-SHA1\n", b"x-eventbridge-hash-method: SHA256\n"
    )
    # And it is the form wanhook tries first.
    assert signature.signed_forms(VECTOR_URL, v2_headers, VECTOR_BODY)[0] == ours


# ---------------------------------------------------------------------------------------------------------------
# Oracle 2: Alibaba's reference HTTP target (aliyuneventbridge/eb-http-target at 579471c), restated.

TIMESTAMP = "x-eventbridge-signature-timestamp"
HASH_METHOD = "x-eventbridge-hash-method"
VERSION = "x-eventbridge-signature-version"
CERT_URL = "x-eventbridge-signature-url"
TOKEN_HEADER = "x-eventbridge-signature-token"


def reference_string_to_sign(url_with_query: str, headers: Mapping[str, str], body: bytes) -> bytes:
    """StringToSignBuilder.defaultStringToSign(urlWithQueryString, headerMap, body) of the reference target.

    - officalHeaders: timestamp, hash method, version and certificate URL, each an httpcore BasicHeader whose
      toString() is "name: value". The token header would follow only under
      ``!Strings.isNotBlank(HEADER_X_EVENTBRIDGE_SIGNATURE_TOKEN)``: that tests the constant holding the header's
      name, which is never blank, so the token is never part of the string.
    - buildStringToSign: the URL, "\\n", each header and "\\n", ``new String(body, UTF-8)`` and "\\n".
    - SignatureVerify then hashes ``stringToSign.getBytes()``: UTF-8, Java's default charset since JDK 18 (and the
      usual one before). The bodies below are valid UTF-8, which the round trip through a String keeps as it is.
    """
    lines = [
        url_with_query,
        *(f"{name}: {headers.get(name, '')}" for name in (TIMESTAMP, HASH_METHOD, VERSION, CERT_URL)),
    ]
    return ("\n".join(lines) + "\n" + body.decode("utf-8") + "\n").encode("utf-8")


def reference_verify(url_with_query: str, headers: Mapping[str, str], body: bytes, key: rsa.RSAPublicKey) -> bool:
    """SignatureVerify.verify: the four headers must be there; then SHA256withRSA over the string to sign, the
    signature read from x-eventbridge-signature-v2 as base64. (It checks neither the timestamp nor the host of the
    certificate URL; wanhook does both, tested in test_signature.py.)"""
    if not url_with_query or not all(name in headers for name in (TIMESTAMP, HASH_METHOD, VERSION, CERT_URL)):
        return False
    try:
        key.verify(
            base64.b64decode(headers["x-eventbridge-signature-v2"]),
            reference_string_to_sign(url_with_query, headers, body),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except InvalidSignature:
        return False
    return True


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


URLS = (
    "https://hooks.example.com/v1/events/dashscope",
    "https://hooks.example.com:8443/v1/events/dashscope?tenant=a&x=%20y",
)
BODIES = (
    json.dumps(EVENT).encode(),
    json.dumps({**EVENT, "data": {**EVENT["data"], "message": "视频生成失败：内容审核"}}, ensure_ascii=False).encode(),
    b"",
    b'{"a": 1}\n',
)


def push_headers(token: str | None) -> dict[str, str]:
    headers = {
        TIMESTAMP: "1764403200123",
        HASH_METHOD: "SHA256",
        VERSION: "1.0",
        CERT_URL: "https://cn-beijing-eventbridge.oss-accelerate.aliyuncs.com/x509_public_certificate_1.pem",
        "content-type": "application/json;charset=utf-8",
    }
    if token is not None:
        headers[TOKEN_HEADER] = token
    return headers


@pytest.mark.parametrize("token", [TOKEN, None])
@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("url", URLS)
def test_the_reference_string_is_one_of_wanhooks(url: str, body: bytes, token: str | None) -> None:
    headers = push_headers(token)
    reference = reference_string_to_sign(url, headers, body)
    assert reference == signature.string_to_sign(url, headers, body, trailing_newline=True, sign_token=False)
    assert reference in signature.signed_forms(url, headers, body)
    if token is None:  # without a token the reference and the docs read alike: wanhook's first form
        assert reference == signature.signed_forms(url, headers, body)[0]


@pytest.mark.parametrize("token", [TOKEN, None])
@pytest.mark.parametrize("body", BODIES)
def test_pushes_the_reference_target_accepts_verify_in_wanhook(
    key: rsa.RSAPrivateKey, body: bytes, token: str | None
) -> None:
    url = URLS[1]
    headers = push_headers(token)
    signed = key.sign(reference_string_to_sign(url, headers, body), padding.PKCS1v15(), hashes.SHA256())
    headers["x-eventbridge-signature-v2"] = base64.b64encode(signed).decode()
    assert reference_verify(url, headers, body, key.public_key())
    assert signature.signature_matches(key.public_key(), signed, url, headers, body)
    # What the reference refuses, wanhook refuses too.
    for other_url, other_body in ((url, body + b" "), (URLS[0], body)):
        assert not reference_verify(other_url, headers, other_body, key.public_key())
        assert not signature.signature_matches(key.public_key(), signed, other_url, headers, other_body)


# Which of the emulator's forms the reference target accepts, with a token and without.
REFERENCE_ACCEPTS = {
    ("trailing-newline", False): True,
    ("trailing-newline", True): False,
    ("token-unsigned", False): True,
    ("token-unsigned", True): True,
    ("plain", False): False,
    ("plain", True): False,
    ("seconds", False): False,
    ("seconds", True): False,
}


@pytest.mark.parametrize("token", [TOKEN, None])
@pytest.mark.parametrize("variant", SIGNATURE_VARIANTS)
def test_the_emulators_pushes_against_the_reference_target(variant: str, token: str | None) -> None:
    """The emulator (which imports nothing of wanhook's) signs every form; the reference target accepts those it
    builds, and wanhook accepts them all."""
    signer = Signer(EmulatorConfig(signature_variant=variant))
    body = BODIES[1]
    headers, sent = signer.sign(URLS[0], body, token)
    public = signer.key.public_key()
    assert reference_verify(URLS[0], headers, sent, public) is REFERENCE_ACCEPTS[variant, token is not None]
    raw = base64.b64decode(headers["x-eventbridge-signature-v2"])
    assert signature.signature_matches(public, raw, URLS[0], headers, sent)
    assert set(REFERENCE_ACCEPTS) == {(v, t) for v in SIGNATURE_VARIANTS for t in (False, True)}
