"""EventBridge's part: the completion CloudEvent, the targets it is pushed to, and the retries."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from .clock import china_time, utc_iso
from .config import EmulatorConfig
from .stats import Stats

if TYPE_CHECKING:
    from .tasks import Task

from .rules import PATHS

logger = logging.getLogger("emulator.eventbridge")

USER_API_KEY_PREFIX = "apikey:v1:aigc:video-generation:video-synthesis:"
TAG = "AsyncTaskFinish"
CERT_PATH = "/_emulator/eventbridge/cert.pem"
TOKEN_HEADER = "x-eventbridge-signature-token"


def build_event(task: Task, config: EmulatorConfig) -> dict[str, Any]:
    """The documented example's fields, in its order; a fresh id per event (copies keep it)."""
    now = time.time()
    end = task.end_time or now
    return {
        "datacontenttype": "application/json;charset=utf-8",
        "aliyunaccountid": config.account_id,
        "aliyunpublishtime": utc_iso(now),
        "data": {
            "start_time": china_time(task.scheduled_time or task.submit_time, millis=False),
            # apikey:v1:<group>:<task>:<function>:<model>; the task segment is the create path's service
            # (first-and-last-frame: image2video; undocumented, by analogy with the documented example).
            "user_api_unique_key": USER_API_KEY_PREFIX.replace(":video-generation:", f":{PATHS[task.kind]}:")
            + task.model,
            "task_status": task.status,
            "contain_result": False,
            "end_time": china_time(end, millis=False),
            "task_id": task.id,
            "region": config.region,
            "request_id": task.request_id,
            "api_key_id": task.api_key_id,
        },
        "aliyunoriginalaccountid": config.account_id,
        "specversion": "1.0",
        "aliyuneventbusname": "default",
        "id": str(uuid.uuid4()),
        "source": "acs.dashscope",
        "time": utc_iso(end),
        "aliyunregionid": config.region,
        "type": "dashscope:System:AsyncTaskFinish",
    }


class Signer:
    """EventBridge's v2 push signature (RSA-SHA256), made with the emulator's own key and self-signed certificate.

    The signed string is the target URL, a newline, the lines ``name: value`` of the timestamp, hash method,
    version, certificate URL and (when the push has one) token headers joined by newlines, a newline, the body and
    a newline (help.aliyun.com/zh/eventbridge/user-guide/signature-algorithm for the parts and their order; the
    newline after the body as Alibaba's code builds the string and as a push that Alibaba's key signed has it: see
    SIGNATURE_VARIANTS). The config's signature knobs bend it so that tests can cover each form a receiver must
    accept.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "emulated EventBridge push signing")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .sign(self.key, hashes.SHA256())
        )
        self.certificate_pem = certificate.public_bytes(serialization.Encoding.PEM)
        # Where the certificate is served; the app sets it, since only it knows the emulator's address.
        self.certificate_url: Callable[[], str] = lambda: CERT_PATH

    def sign(self, url: str, body: bytes, token: str | None) -> tuple[dict[str, str], bytes]:
        """The signature headers of a push of ``body`` to ``url``, and the body to send."""
        config = self.config
        signed_at = time.time() + config.signature_skew_seconds
        headers = {  # in the signed order
            "x-eventbridge-signature-timestamp": str(
                int(signed_at if config.signature_variant == "seconds" else signed_at * 1000)
            ),
            "x-eventbridge-hash-method": "SHA256",
            "x-eventbridge-signature-version": "1.0",
            "x-eventbridge-signature-url": config.signature_cert_url or self.certificate_url(),
        }
        if token:
            headers[TOKEN_HEADER] = token
        variant = config.signature_variant
        signed = [
            (name, value)
            for name, value in headers.items()
            if not (variant == "token-unsigned" and name == TOKEN_HEADER)
        ]
        lines = [config.signature_target_url or url, *(f"{name}: {value}" for name, value in signed)]
        data = "\n".join(lines).encode() + b"\n" + body
        if variant in ("trailing-newline", "token-unsigned"):
            data += b"\n"
        signature = self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        headers["x-eventbridge-signature-v2"] = base64.b64encode(signature).decode()
        return headers, (body + b" " if config.signature_tamper else body)


class Target(Protocol):
    async def deliver(self, event: dict[str, Any]) -> bool:
        """One attempt; True when the target took the event."""
        ...


class HttpTarget:
    """An EventBridge HTTP target with Token authentication; body "original" (whole event) or "data".

    With a signer, every push also carries EventBridge's v2 signature headers.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        body_mode: str = "original",
        timeout: float = 5.0,
        client: httpx.AsyncClient | None = None,
        signer: Signer | None = None,
    ) -> None:
        if body_mode not in ("original", "data"):
            raise ValueError("body_mode must be 'original' or 'data'")
        self.url, self.token, self.body_mode, self.timeout = url, token, body_mode, timeout
        self._client = client
        self.signer = signer

    async def deliver(self, event: dict[str, Any]) -> bool:
        if self._client is None:
            self._client = httpx.AsyncClient()
        body = event if self.body_mode == "original" else event["data"]
        headers = {"content-type": "application/json;charset=utf-8"}
        if self.token:
            headers[TOKEN_HEADER] = self.token
        content = json.dumps(body, ensure_ascii=False).encode()
        if self.signer is not None:
            signed, content = self.signer.sign(self.url, content, self.token)
            headers.update(signed)
        try:
            response = await self._client.post(self.url, content=content, headers=headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            logger.info("push to %s failed: %r", self.url, exc)
            return False
        return response.is_success


class RocketMQTarget:
    """An `acs.rocketmq` target as recommended: Body ORIGINAL, Keys the task id, Tag AsyncTaskFinish."""

    def __init__(self, double: Any, topic: str = "dashscope-events") -> None:
        self.double, self.topic = double, topic

    async def deliver(self, event: dict[str, Any]) -> bool:
        body = json.dumps(event, ensure_ascii=False).encode()
        keys = [event["data"]["task_id"]]
        try:
            await asyncio.to_thread(self.double.publish, self.topic, body, keys=keys, tag=TAG)
        except Exception as exc:
            logger.info("publish to %s failed: %r", self.topic, exc)
            return False
        return True


class EventBus:
    """Pushes each event to the webhook targets of the settings plus any added ones."""

    def __init__(self, config: EmulatorConfig, stats: Stats) -> None:
        self.config, self.stats = config, stats
        self.extra_targets: list[Target] = []
        self._client = httpx.AsyncClient()
        self.signer = Signer(config)

    def targets(self) -> list[Target]:
        webhooks: list[Target] = [
            HttpTarget(
                t["url"],
                t.get("token"),
                t.get("body", "original"),
                self.config.push_timeout_seconds,
                self._client,
                self.signer,
            )
            for t in self.config.webhook_targets
        ]
        return webhooks + self.extra_targets

    async def publish(self, event: dict[str, Any]) -> None:
        """Returns once every copy has been taken or its retries are spent."""
        if self.config.drop_events:
            return
        self.stats.events_published += 1
        copies = 1 + max(0, self.config.duplicate_events)
        await asyncio.gather(*(self._push(target, event) for target in self.targets() for _ in range(copies)))

    async def _push(self, target: Target, event: dict[str, Any]) -> None:
        delays = self.config.push_retry_delays
        if delays is None:
            delays = [random.uniform(10, 20) for _ in range(3)]
        await asyncio.sleep(self.config.event_delay_seconds)
        for delay in [0.0, *delays]:
            await asyncio.sleep(delay)
            self.stats.push_attempts += 1
            try:
                if await target.deliver(event):
                    return
            except Exception:
                logger.exception("target %r raised", target)
            self.stats.push_failures += 1
        logger.warning("gave up pushing event %s of task %s", event["id"], event["data"]["task_id"])

    async def aclose(self) -> None:
        await self._client.aclose()
