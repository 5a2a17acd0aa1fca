"""EventBridge's v2 signature on HTTP pushes (RSA-SHA256), checked when ``WANHOOK_EVENTBRIDGE_VERIFY=signature``.

EventBridge signs, with Alibaba's private key and SHA-256, the bytes

    <target URL> \\n
    x-eventbridge-signature-timestamp: <value> \\n
    x-eventbridge-hash-method: <value> \\n
    x-eventbridge-signature-version: <value> \\n
    x-eventbridge-signature-url: <value> \\n
    x-eventbridge-signature-token: <value> \\n     (when the push carries a token: but see below)
    <raw body> [\\n]

and names the certificate holding the public key in ``x-eventbridge-signature-url``. The certificate is
trusted for where it comes from (an https URL on ``<region>-eventbridge.oss-accelerate.aliyuncs.com``), as
Alibaba's own SDK trusts it, not for its chain or its dates.

Receivers in the wild, Alibaba's own among them, disagree on three details, so every reading of each is accepted
(``signed_forms``; tests/integration/test_signature_oracle.py checks them against Alibaba's code and against a push
Alibaba's key signed):
- a newline after the body: every piece of Alibaba's code that builds the string appends one (the EventBridge SDK's
  signature util, Alibaba's reference HTTP target aliyuneventbridge/eb-http-target; so does the push signer proposed
  to Apache RocketMQ Connect), and a push signed with Alibaba's key (the SDK's test vector) verifies only with it;
  the documented formula shows none;
- the token line: the docs and the SDK's string builder sign the token when the push carries one; the reference HTTP
  target, as rewritten for v2 in 2024, never does (it tests the header's name, never blank, instead of its value);
- the timestamp in milliseconds or in seconds. It is signed as sent; only the 60 s window reads its unit.

A valid signature proves that EventBridge sent the push, not that your account's rule did: any account can
point an HTTP target at this URL. The token proves that; it is checked on its own (``web/events.py``) whether
or not the signed string holds it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections import deque
from collections.abc import Mapping
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature as SignatureMismatch
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes, PublicKeyTypes

from ..config import Settings
from ..core.errors import CertificateUnavailable, InvalidSignature
from ..core.redact import redact_url
from ..outbound import egress

log = logging.getLogger("wanhook.signature")

SIGNATURE = "x-eventbridge-signature-v2"
TIMESTAMP = "x-eventbridge-signature-timestamp"
HASH_METHOD = "x-eventbridge-hash-method"
VERSION = "x-eventbridge-signature-version"
CERT_URL = "x-eventbridge-signature-url"
TOKEN = "x-eventbridge-signature-token"
# The signed header lines, in the signed order; the token's only when the push has one.
SIGNED_HEADERS = (TIMESTAMP, HASH_METHOD, VERSION, CERT_URL, TOKEN)
REQUIRED_HEADERS = (SIGNATURE, TIMESTAMP, HASH_METHOD, VERSION, CERT_URL)

WINDOW_SECONDS = 60.0
# Above this a timestamp is read as milliseconds: 1e11 s is the year 5138, 1e11 ms is 1973.
MILLIS_ABOVE = 10**11
CERT_MAX_BYTES = 64 * 1024
CERT_TIMEOUT = httpx.Timeout(5.0, connect=3.0)
# The whole fetch, however slowly a host sends its bytes (CERT_TIMEOUT bounds each read, not their sum).
CERT_DEADLINE_SECONDS = 10.0
# Certificates are few (one per region and rotation); the bound keeps forged URLs from filling memory.
CACHE_SIZE = 16
# A certificate URL that failed is not fetched again for a while: its pushes are answered as the failure
# was, so a stranger repeating one makes one fetch. A minute when the URL names no certificate (refused,
# not a certificate); as long as the 503's Retry-After when it could not be reached, so that EventBridge's
# own next try (10 to 20 s later) fetches again.
REFUSED_FOR_SECONDS = 60.0
UNAVAILABLE_FOR_SECONDS = 5.0
# Fetches of certificates not yet known, per process, in a sliding minute: a stranger naming new URLs on
# a trusted host makes at most this many; past it a push whose certificate is not known gets 503
# (EventBridge pushes again later), while known certificates keep verifying.
FETCHES_PER_MINUTE = 10
# An RSA signature is as long as its key's modulus: 1024 to 8192 bits. Checked before any fetch.
SIGNATURE_MIN_BYTES, SIGNATURE_MAX_BYTES = 128, 1024
CERT_HOST_LABEL = "[a-z0-9-]+"

_keys: dict[str, rsa.RSAPublicKey] = {}
_loading: dict[str, asyncio.Future[rsa.RSAPublicKey]] = {}
# URL -> (monotonic time until which it is not fetched, the refusal's message or None: unavailable), at
# most CACHE_SIZE of them. A new error each time: one raised again would grow its traceback.
_failed: dict[str, tuple[float, str | None]] = {}
_fetched_at: deque[float] = deque()


def refuse(message: str) -> InvalidSignature:
    return InvalidSignature(message)


def string_to_sign(
    url: str, headers: Mapping[str, str], body: bytes, *, trailing_newline: bool = False, sign_token: bool = True
) -> bytes:
    """The bytes EventBridge signs for a push of ``body`` to ``url`` carrying ``headers`` (lower-case names).

    ``trailing_newline`` puts a newline after the body; ``sign_token=False`` leaves the token line out even when the
    push carries a token (see the module's docstring for who reads it which way).
    """
    names = SIGNED_HEADERS if sign_token else SIGNED_HEADERS[:-1]
    lines = [url.encode()]
    # Header values travel as bytes; ASGI servers hand them over decoded as latin-1, which this undoes.
    lines += [f"{name}: ".encode() + headers[name].encode("latin-1") for name in names if name in headers]
    return b"\n".join(lines) + b"\n" + body + (b"\n" if trailing_newline else b"")


# The readings tried, the likeliest first: a newline after the body (what Alibaba's code builds and Alibaba's key
# signed), then the token signed when present (the docs and the SDK), then the other way of each.
SIGNED_FORMS = ((True, True), (True, False), (False, True), (False, False))


def signed_forms(url: str, headers: Mapping[str, str], body: bytes) -> list[bytes]:
    """Every string to sign that wanhook accepts for this push, each once, in the order they are tried."""
    forms: list[bytes] = []
    for trailing_newline, sign_token in SIGNED_FORMS:
        data = string_to_sign(url, headers, body, trailing_newline=trailing_newline, sign_token=sign_token)
        if data not in forms:
            forms.append(data)
    return forms


def timestamp_seconds(raw: str) -> float:
    """A signature timestamp in seconds since the epoch, whether it was sent in milliseconds or seconds."""
    if not re.fullmatch(r"[0-9]{1,16}", raw):
        raise ValueError(f"not a timestamp: {raw!r}")
    value = int(raw)
    return value / 1000 if value >= MILLIS_ABOVE else float(value)


def _host_pattern(pattern: str) -> re.Pattern[str]:
    # "*" stands for part of one DNS label, never a dot: "*-eventbridge.oss-accelerate.aliyuncs.com" is
    # ^[a-z0-9-]+-eventbridge\.oss-accelerate\.aliyuncs\.com$ and cannot match "a.evil-eventbridge...".
    return re.compile(
        "".join(CERT_HOST_LABEL if part == "*" else re.escape(part) for part in re.split(r"(\*)", pattern.lower()))
    )


def check_certificate_url(url: str, patterns: tuple[str, ...]) -> None:
    """Refuses a certificate URL that is not https on a host of ``patterns``.

    A host named literally in ``patterns`` (no ``*``) may also be reached over http and on any port: that is
    how tests point wanhook at a local certificate. Patterns never allow either.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise refuse("the certificate URL (x-eventbridge-signature-url) is not a URL") from None
    host = (parts.hostname or "").lower()
    literal = host in {pattern.lower() for pattern in patterns if "*" not in pattern}
    if parts.username is not None or parts.password is not None:
        raise refuse("the certificate URL (x-eventbridge-signature-url) must not carry credentials")
    if not literal and not any(_host_pattern(pattern).fullmatch(host) for pattern in patterns):
        raise refuse(
            f"the certificate URL (x-eventbridge-signature-url) is not on an EventBridge certificate host "
            f"({', '.join(patterns)}): {host or 'no host'}"
        )
    if not (parts.scheme == "https" or (literal and parts.scheme == "http")):
        raise refuse("the certificate URL (x-eventbridge-signature-url) is not https")
    if port is not None and not literal:
        raise refuse("the certificate URL (x-eventbridge-signature-url) must not name a port")


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    """The RSA key of a PEM X.509 certificate or of a PEM public key."""
    key: PublicKeyTypes | CertificatePublicKeyTypes
    try:
        if b"-----BEGIN CERTIFICATE-----" in pem:
            key = x509.load_pem_x509_certificate(pem).public_key()
        else:
            key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise refuse("the certificate at x-eventbridge-signature-url is not a PEM certificate or public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise refuse("the certificate at x-eventbridge-signature-url holds no RSA key")
    return key


async def _fetch(url: str, hosts: tuple[str, ...]) -> rsa.RSAPublicKey:
    try:
        key = await _fetch_once(url, hosts)
    except (InvalidSignature, CertificateUnavailable) as exc:
        while len(_failed) >= CACHE_SIZE:
            del _failed[next(iter(_failed))]
        if isinstance(exc, InvalidSignature):
            _failed[url] = (time.monotonic() + REFUSED_FOR_SECONDS, exc.message)
        else:
            _failed[url] = (time.monotonic() + UNAVAILABLE_FOR_SECONDS, None)
        raise
    while len(_keys) >= CACHE_SIZE:
        del _keys[next(iter(_keys))]
    _keys[url] = key
    return key


async def _fetch_once(url: str, hosts: tuple[str, ...]) -> rsa.RSAPublicKey:
    try:
        async with (
            asyncio.timeout(CERT_DEADLINE_SECONDS),
            egress.client(explicit_hosts=hosts, timeout=CERT_TIMEOUT) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                # The URL passed the host check yet names no certificate: the push is not EventBridge's.
                raise refuse(f"the certificate URL (x-eventbridge-signature-url) answered {response.status_code}")
            pem = bytearray()
            async for chunk in response.aiter_bytes():
                pem += chunk
                if len(pem) > CERT_MAX_BYTES:
                    raise refuse(f"the certificate at x-eventbridge-signature-url is over {CERT_MAX_BYTES} bytes")
    except egress.DestinationRefused as exc:  # the host resolved inwards as it was connected
        raise refuse(f"the certificate URL (x-eventbridge-signature-url) is refused: {exc}") from None
    except (httpx.HTTPError, TimeoutError) as exc:
        # Not the sender's fault: 503 makes EventBridge push again later.
        log.warning("cannot fetch the EventBridge certificate %s: %r", redact_url(url), exc)
        raise CertificateUnavailable() from None
    return load_public_key(bytes(pem))


def _fetched(url: str, done: asyncio.Future[rsa.RSAPublicKey]) -> None:
    _loading.pop(url, None)
    if not done.cancelled():
        done.exception()  # retrieved here, so a fetch whose waiters all left is not reported as unhandled


async def public_key(url: str, hosts: tuple[str, ...]) -> rsa.RSAPublicKey:
    """The key of the certificate at ``url``, fetched once per process; concurrent first pushes share one fetch."""
    key = _keys.get(url)
    if key is not None:
        return key
    now = time.monotonic()
    failed = _failed.get(url)
    if failed is not None:
        until, message = failed
        if now < until:
            raise CertificateUnavailable() if message is None else refuse(message)
        del _failed[url]
    loading = _loading.get(url)
    if loading is None:
        while _fetched_at and now - _fetched_at[0] > 60.0:
            _fetched_at.popleft()
        if len(_fetched_at) >= FETCHES_PER_MINUTE:
            log.warning(
                "EventBridge certificate %s not fetched: %d fetches this minute", redact_url(url), len(_fetched_at)
            )
            raise CertificateUnavailable()
        _fetched_at.append(now)
        loading = _loading[url] = asyncio.ensure_future(_fetch(url, hosts))
        loading.add_done_callback(lambda done: _fetched(url, done))
    # Shielded: a push whose connection drops must not cancel the fetch the others wait for.
    return await asyncio.shield(loading)


def signature_matches(
    key: rsa.RSAPublicKey, signature: bytes, url: str, headers: Mapping[str, str], body: bytes
) -> bool:
    """Whether ``signature`` signs the push in one of the accepted forms (``signed_forms``)."""
    for data in signed_forms(url, headers, body):
        try:
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        except SignatureMismatch:  # cryptography's: this form does not verify, try the next
            continue
        return True
    return False


async def verify_signature(
    url: str, headers: Mapping[str, str], body: bytes, settings: Settings, now: float | None = None
) -> None:
    """Raises ``InvalidSignature`` unless the push of ``body`` to ``url`` (where this process received it)
    with ``headers`` (looked up by lower-case name) carries EventBridge's valid v2 signature;
    ``CertificateUnavailable`` when the certificate cannot be fetched."""
    try:
        await _verify(url, headers, body, settings, time.time() if now is None else now)
    except (InvalidSignature, CertificateUnavailable) as exc:
        # EventBridge's console shows that a push failed, not why: the reason is here.
        log.info("EventBridge push refused (%s): %s", exc.code, exc.message)
        raise


async def _verify(received_url: str, headers: Mapping[str, str], body: bytes, settings: Settings, now: float) -> None:
    missing = [name for name in REQUIRED_HEADERS if not headers.get(name)]
    if missing:
        raise refuse(f"missing signature header(s): {', '.join(missing)}")
    if headers[HASH_METHOD].upper() != "SHA256":
        raise refuse(f"unsupported {HASH_METHOD}: {headers[HASH_METHOD]!r} (only SHA256)")
    if headers[VERSION] != "1.0":
        raise refuse(f"unsupported {VERSION}: {headers[VERSION]!r} (only 1.0)")
    try:
        signed_at = timestamp_seconds(headers[TIMESTAMP])
    except ValueError:
        raise refuse(f"{TIMESTAMP} is not a number of seconds or milliseconds") from None
    skew = now - signed_at
    if abs(skew) > WINDOW_SECONDS:
        raise refuse(
            f"stale timestamp: {TIMESTAMP} is {abs(skew):.0f} s {'old' if skew > 0 else 'ahead'}, "
            f"outside the {WINDOW_SECONDS:.0f} s window"
        )
    try:
        signature = base64.b64decode(headers[SIGNATURE], validate=True)
    except (binascii.Error, ValueError):
        raise refuse(f"{SIGNATURE} is not base64") from None
    if not SIGNATURE_MIN_BYTES <= len(signature) <= SIGNATURE_MAX_BYTES:
        raise refuse(
            f"{SIGNATURE} is {len(signature)} bytes, not an RSA signature "
            f"({SIGNATURE_MIN_BYTES} to {SIGNATURE_MAX_BYTES} bytes)"
        )
    cert_url = headers[CERT_URL]
    check_certificate_url(cert_url, settings.eventbridge_cert_hosts)
    key = await public_key(cert_url, settings.eventbridge_cert_hosts)
    url = settings.eventbridge_url or received_url
    signed = {name: headers[name] for name in SIGNED_HEADERS if name in headers}
    if not signature_matches(key, signature, url, signed, body):
        raise refuse(
            f"the signature does not match the push to {url} (behind a proxy, set WANHOOK_EVENTBRIDGE_URL "
            "to the URL the EventBridge target posts to)"
        )
