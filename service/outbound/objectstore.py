"""Videos in an S3-compatible object store (AWS S3, Alibaba Cloud OSS's S3 endpoint, MinIO, R2).

A small AWS Signature V4 signer over httpx rather than an SDK: four calls are needed (PUT, the three
multipart calls, HEAD, DELETE) plus presigned GETs, and httpx is already a dependency.

``S3Storage`` keeps the part file on local disk exactly like ``LocalStorage`` (so resuming a broken
download is unchanged); ``publish`` uploads it (multipart above ``MULTIPART_THRESHOLD``), hashing what it
reads as it goes, so the bytes sent are checked against the sha256 the download computed (a part file
that no longer matches is not stored), then checks the stored object's size and its ``sha256`` metadata
with a HEAD before the local file goes. The secret key is
never logged, and never part of an error message: only the signature derived from it leaves this module.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO
from urllib.parse import quote, urlsplit

import httpx

from ..config import S3Config
from ..core import pools
from .storage import LocalStorage, UploadFailed

log = logging.getLogger(__name__)

MULTIPART_THRESHOLD = 16 << 20  # one PUT up to here; S3 allows 5 GiB, but a failed PUT resends everything
PART_SIZE = 8 << 20  # S3's smallest part (but the last) is 5 MiB
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


class Signer:
    """AWS Signature Version 4 for the ``s3`` service, as headers or as a presigned query string."""

    def __init__(self, config: S3Config) -> None:
        self.config = config

    def _scope(self, now: datetime.datetime) -> tuple[str, str, str]:
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        return stamp, day, f"{day}/{self.config.region}/s3/aws4_request"

    def _signature(self, day: str, string_to_sign: str) -> str:
        key = _hmac(("AWS4" + self.config.secret_key).encode(), day)
        for part in (self.config.region, "s3", "aws4_request"):
            key = _hmac(key, part)
        return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def _canonical_query(query: Mapping[str, str]) -> str:
        return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items()))

    def _canonical(
        self, method: str, url: str, query: Mapping[str, str], headers: Mapping[str, str], payload: str
    ) -> tuple[str, str]:
        parts = urlsplit(url)
        names = sorted(headers)
        canonical_headers = "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in names)
        signed = ";".join(names)
        request = "\n".join(
            [method, parts.path or "/", self._canonical_query(query), canonical_headers, signed, payload]
        )
        return request, signed

    def headers(
        self,
        method: str,
        url: str,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        payload_sha256: str = EMPTY_SHA256,
        now: datetime.datetime | None = None,
    ) -> dict[str, str]:
        """The request's headers, ``Authorization`` included."""
        stamp, day, scope = self._scope(now or datetime.datetime.now(datetime.UTC))
        signed_headers = {k.lower(): v for k, v in (headers or {}).items()}
        signed_headers.update(
            {"host": urlsplit(url).netloc, "x-amz-date": stamp, "x-amz-content-sha256": payload_sha256}
        )
        if self.config.session_token:
            signed_headers["x-amz-security-token"] = self.config.session_token
        request, signed = self._canonical(method, url, query or {}, signed_headers, payload_sha256)
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(request.encode()).hexdigest()])
        signed_headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.config.access_key}/{scope}, SignedHeaders={signed}, "
            f"Signature={self._signature(day, to_sign)}"
        )
        del signed_headers["host"]  # httpx sets it from the URL
        return signed_headers

    def presign(self, method: str, url: str, seconds: int, *, now: datetime.datetime | None = None) -> str:
        """A URL anyone can use for ``seconds`` for this one request."""
        stamp, day, scope = self._scope(now or datetime.datetime.now(datetime.UTC))
        query = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"{self.config.access_key}/{scope}",
            "X-Amz-Date": stamp,
            "X-Amz-Expires": str(seconds),
            "X-Amz-SignedHeaders": "host",
        }
        if self.config.session_token:
            query["X-Amz-Security-Token"] = self.config.session_token
        request, _ = self._canonical(method, url, query, {"host": urlsplit(url).netloc}, "UNSIGNED-PAYLOAD")
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(request.encode()).hexdigest()])
        query["X-Amz-Signature"] = self._signature(day, to_sign)
        return f"{url}?{self._canonical_query(query)}"


class S3Storage:
    """``VideoStorage`` in an object store; part files in ``directory`` on local disk while downloading."""

    # The downloader's calls of this storage run on the uploads' threads, never on the files' ones.
    pool = pools.UPLOADS

    def __init__(self, config: S3Config, directory: Path) -> None:
        self.config = config
        self.signer = Signer(config)
        self.local = LocalStorage(directory)
        # Synchronous: every method here runs on a thread of pools.UPLOADS or pools.STORE, or is pure computation.
        # Its connections are as many as those threads (a connection is held for a whole request).
        self.http = httpx.Client(
            timeout=config.upload_timeout,
            limits=httpx.Limits(max_connections=pools.UPLOADS.size + pools.STORE.size),
        )

    # -- the part file: local, as with LocalStorage ------------------------------------------------------

    def open_part(self, task_id: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        return self.local.open_part(task_id)

    def discard(self, task_id: str) -> None:
        self.local.discard(task_id)

    def free_part(self, task_id: str, part: IO[bytes]) -> None:
        self.local.free_part(task_id, part)

    def disk_space(self) -> tuple[int, int]:
        return self.local.disk_space()

    # -- the object -------------------------------------------------------------------------------------

    def location(self, task_id: str) -> str:
        return f"s3://{self.config.bucket}/{self.config.key(task_id)}"

    def _request(
        self,
        method: str,
        task_id: str,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        payload_sha256: str | None = None,
        until: float | None = None,
    ) -> httpx.Response:
        """One request; ``until`` (a ``time.monotonic()``) bounds connect and each read and write to what is
        left of the caller's deadline (the client's upload timeout otherwise)."""
        url = self.config.url(self.config.key(task_id))
        payload = payload_sha256 or hashlib.sha256(body).hexdigest()
        signed = self.signer.headers(method, url, query=query, headers=headers, payload_sha256=payload)
        timeout = self.http.timeout
        if until is not None:
            left = until - time.monotonic()
            if left <= 0:
                raise UploadFailed(f"object store {method}: no time left within the deadline")
            timeout = httpx.Timeout(left)
        try:
            response = self.http.request(
                method, url, params=dict(query or {}), headers=signed, content=body, timeout=timeout
            )
        except httpx.HTTPError as exc:
            raise UploadFailed(f"object store {method}: {type(exc).__name__}") from None
        if response.status_code >= 300 and not (method in ("HEAD", "DELETE") and response.status_code == 404):
            code = re.search(r"<Code>([^<]*)</Code>", response.text)
            raise UploadFailed(
                f"object store {method} answered HTTP {response.status_code}" + (f" ({code[1]})" if code else "")
            )
        return response

    def _head(self, task_id: str, until: float | None = None) -> httpx.Response | None:
        response = self._request("HEAD", task_id, until=until)
        return None if response.status_code == 404 else response

    def stored_size(self, task_id: str) -> int | None:
        head = self._head(task_id)
        return int(head.headers["content-length"]) if head is not None else None

    def sha256(self, task_id: str) -> str:
        head = self._head(task_id)
        return head.headers.get("x-amz-meta-sha256", "") if head is not None else ""

    def publish(self, task_id: str, part: IO[bytes], sha256: str) -> str:
        size = os.fstat(part.fileno()).st_size
        meta = {"content-type": "video/mp4", "x-amz-meta-sha256": sha256}
        part.seek(0)
        if size <= MULTIPART_THRESHOLD:
            body = part.read(size)
            # One hash serves twice: the request's signed payload hash is the whole file's sha256.
            payload = hashlib.sha256(body).hexdigest()
            _check_sha256(task_id, payload, sha256)
            self._request("PUT", task_id, headers=meta, body=body, payload_sha256=payload)
        else:
            self._multipart(task_id, part, size, meta, sha256)
        head = self._head(task_id)
        if (
            head is None
            or int(head.headers["content-length"]) != size
            or head.headers.get("x-amz-meta-sha256") != sha256
        ):
            raise UploadFailed(f"the stored object of task {task_id} does not match the downloaded video")
        # Stored and checked: the local copy goes (its space was reserved for the download only).
        self.local.discard(task_id)
        return self.location(task_id)

    def _multipart(self, task_id: str, part: IO[bytes], size: int, meta: Mapping[str, str], sha256: str) -> None:
        created = self._request("POST", task_id, query={"uploads": ""}, headers=meta)
        found = re.search(r"<UploadId>([^<]+)</UploadId>", created.text)
        if found is None:
            raise UploadFailed("object store: no UploadId in the answer to CreateMultipartUpload")
        upload = found[1]
        try:
            etags: list[str] = []
            whole = hashlib.sha256()
            for number in range(1, (size + PART_SIZE - 1) // PART_SIZE + 1):
                chunk = part.read(PART_SIZE)
                whole.update(chunk)
                answer = self._request(
                    "PUT", task_id, query={"partNumber": str(number), "uploadId": upload}, body=chunk
                )
                etags.append(answer.headers.get("etag", ""))
            # Checked before the object exists: a part file that changed since its download is never stored.
            _check_sha256(task_id, whole.hexdigest(), sha256)
            body = "".join(
                f"<Part><PartNumber>{n}</PartNumber><ETag>{tag}</ETag></Part>" for n, tag in enumerate(etags, 1)
            )
            document = f"<CompleteMultipartUpload>{body}</CompleteMultipartUpload>".encode()
            done = self._request("POST", task_id, query={"uploadId": upload}, body=document)
            if b"<Error>" in done.content:  # S3 may answer 200 and report the failure in the body
                raise UploadFailed("object store: CompleteMultipartUpload failed")
        except BaseException:
            # The parts uploaded so far would be kept (and billed) until a lifecycle rule clears them.
            with contextlib.suppress(UploadFailed):
                self._request("DELETE", task_id, query={"uploadId": upload})
            raise

    def remove(self, task_id: str) -> bool:
        # Someone waits for a removal (an API deletion): its two requests share the request deadline, and a
        # removal that does not fit stays owed (removals.py).
        until = time.monotonic() + self.config.request_timeout
        self.local.remove(task_id)
        existed = self._head(task_id, until) is not None
        self._request("DELETE", task_id, until=until)
        return existed

    # -- serving ----------------------------------------------------------------------------------------

    def presigned_url(self, task_id: str) -> str:
        return self.signer.presign("GET", self.config.url(self.config.key(task_id)), self.config.presign_seconds)

    def holds(self, location: str) -> bool:
        """Whether ``location`` (``s3://bucket/key``, as a task records it) is in this store's bucket."""
        return location.startswith(f"s3://{self.config.bucket}/")

    def presigned_location(self, location: str) -> str:
        """A presigned GET of the object a task records, by its own key (the prefix may have changed since)."""
        key = location.removeprefix(f"s3://{self.config.bucket}/")
        return self.signer.presign("GET", self.config.url(key), self.config.presign_seconds)

    def close(self) -> None:
        self.http.close()


def _check_sha256(task_id: str, read: str, downloaded: str) -> None:
    if read != downloaded:
        raise UploadFailed(
            f"the part file of task {task_id} no longer matches the sha256 of its download; it is not stored"
        )
