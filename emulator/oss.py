"""The OSS side: signed, expiring video URLs and answering them as OSS does (ETag, Range, XML errors)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import time
import uuid
from email.utils import formatdate
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .clock import utc_iso
from .config import EmulatorConfig
from .stats import Stats
from .video import Video

BUCKET = "dashscope-result-emulator"
ACCESS_KEY_ID = "LTAI5tEmulatorVideoKey"
# Objects larger than this are streamed from disk instead of being held in memory.
IN_MEMORY_MAX = 32 << 20
FILE_CHUNK = 1 << 20


class Bucket:
    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or os.urandom(32)

    def url(self, base_url: str, name: str, ttl: float) -> str:
        expires = int(time.time() + ttl)
        query = urlencode({"Expires": expires, "OSSAccessKeyId": ACCESS_KEY_ID, "Signature": self._sign(name, expires)})
        return f"{base_url}/oss/{name}?{query}"

    def refuse(self, name: str, request: Request) -> Response | None:
        """The 403 OSS gives a URL that is unsigned, badly signed or past its Expires; else None."""
        params = request.query_params
        expires, signature = params.get("Expires", ""), params.get("Signature", "")
        if params.get("OSSAccessKeyId", ACCESS_KEY_ID) != ACCESS_KEY_ID:
            return error(403, "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist in our records.")
        if not expires.isdigit() or not signature:
            return error(403, "AccessDenied", "You do not have read permission on this object.")
        if not hmac.compare_digest(signature, self._sign(name, int(expires))):
            return error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        if int(expires) < time.time():
            return expired(int(expires))
        return None

    def sign_text(self, text: str) -> str:
        """A form upload's Signature over its policy, as OSS's PostObject computes it."""
        return base64.b64encode(hmac.new(self._secret, text.encode(), hashlib.sha1).digest()).decode()

    def _sign(self, name: str, expires: int) -> str:
        # OSS's V1 query signature; always over GET, so HEAD on the same URL is accepted too.
        text = f"GET\n\n\n{expires}\n/{BUCKET}/{name}"
        return base64.b64encode(hmac.new(self._secret, text.encode(), hashlib.sha1).digest()).decode()


def error(status: int, code: str, message: str, extra: dict[str, str] | None = None) -> Response:
    request_id = uuid.uuid4().hex[:24].upper()
    fields = {
        "Code": code,
        "Message": message,
        "RequestId": request_id,
        "HostId": f"{BUCKET}.emulator",
        **(extra or {}),
    }
    lines = "".join(f"  <{key}>{escape(value)}</{key}>\n" for key, value in fields.items())
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n{lines}</Error>\n'
    return Response(body, status, headers={"x-oss-request-id": request_id}, media_type="application/xml")


def expired(expires: int) -> Response:
    extra = {"Expires": utc_iso(expires), "ServerTime": utc_iso(time.time())}
    return error(403, "AccessDenied", "Request has expired.", extra)


def serve(request: Request, video: Video, data: bytes | None, config: EmulatorConfig, stats: Stats) -> Response:
    """Answer a GET or HEAD of the object; ``data`` is its body in memory, or None to stream it from disk."""
    headers = {
        "accept-ranges": "bytes",
        "etag": video.etag,
        "last-modified": formatdate(video.last_modified, usegmt=True),
        "x-oss-request-id": uuid.uuid4().hex[:24].upper(),
        "x-oss-object-type": "Normal",
    }
    total = video.length if data is None else len(data)
    span = None if config.ignore_range else _span(request, video, headers["last-modified"], total)
    if span == (total, total):
        headers["content-range"] = f"bytes */{total}"
        return Response(b"", 416, headers)
    start, end = span or (0, total)
    status = 206 if span else 200
    if span:
        headers["content-range"] = f"bytes {start}-{end - 1}/{total}"
    headers["content-length"] = str(end - start)
    if request.method == "HEAD":
        return Response(b"", status, headers, media_type="video/mp4")
    if config.break_downloads > 0:
        config.break_downloads -= 1
        stats.downloads_broken += 1
        cut = config.break_after_bytes if config.break_after_bytes is not None else (end - start) // 2
        if data is None:
            return FileSlice(video.path, start, start + min(cut, end - start - 1), status, headers, hang_up=True)
        return HangUp(data[start : start + min(cut, end - start - 1)], status, headers, media_type="video/mp4")
    if data is None:
        return FileSlice(video.path, start, end, status, headers, rate=config.video_bytes_per_second)
    if config.video_bytes_per_second:
        return Trickle(data[start:end], status, headers, media_type="video/mp4", rate=config.video_bytes_per_second)
    return Response(data[start:end], status, headers, media_type="video/mp4")


def _span(request: Request, video: Video, last_modified: str, total: int) -> tuple[int, int] | None:
    """The single byte range asked for as (start, end); (total, total) when it cannot be met.

    OSS answers the whole object for anything it does not take as one valid range, and so does this.
    """
    header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if not header or (if_range is not None and if_range not in (video.etag, last_modified)):
        return None
    unit, _, spec = header.partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or "," in spec or not dash:
        return None
    try:
        if not first:
            suffix = int(last)
            return (max(0, total - suffix), total) if suffix > 0 else (total, total)
        start, end = int(first), int(last) + 1 if last else total
    except ValueError:
        return None
    if start >= total:
        return (total, total)
    return (start, min(end, total)) if end > start else None


class Trickle(Response):
    """Sends the body at a fixed rate: a slow link, so a download can be interrupted while it runs."""

    def __init__(self, *args: Any, rate: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rate = rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        chunk = max(1, int(self.rate / 20))
        for offset in range(0, len(self.body), chunk):
            await send({"type": "http.response.body", "body": self.body[offset : offset + chunk], "more_body": True})
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class HangUp(Response):
    """Promises the whole body, sends the first bytes, then drops the connection: a broken download."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": True})


class FileSlice(Response):
    """Streams bytes [start, end) of a file in chunks, so a large object never sits in memory whole.

    ``rate`` paces it as Trickle does; ``hang_up`` drops the connection after the slice, as HangUp does.
    """

    def __init__(
        self,
        path: Path,
        start: int,
        end: int,
        status: int,
        headers: dict[str, str],
        *,
        rate: float = 0,
        hang_up: bool = False,
    ) -> None:
        super().__init__(None, status, headers, media_type="video/mp4")
        self.path, self.start, self.end, self.rate, self.hang_up = path, start, end, rate, hang_up

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        chunk = max(1, int(self.rate / 20)) if self.rate else FILE_CHUNK
        with open(self.path, "rb") as file:
            file.seek(self.start)
            position = self.start
            while position < self.end:
                # Read on a thread: a cold file must not stall the other requests the emulator serves.
                data = await asyncio.to_thread(file.read, min(chunk, self.end - position))
                if not data:
                    break
                position += len(data)
                await send({"type": "http.response.body", "body": data, "more_body": True})
                if self.rate:
                    await asyncio.sleep(0.05)
        if not self.hang_up:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
