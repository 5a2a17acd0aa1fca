"""A video's GET: one HTTP/1.1 request on a socket of its own, whose body is read on a thread.

A video is the one large body wanhook receives, and it goes to one place: the part file, hashed on the
way (``partwriter.py``). Through httpx, each piece of it travels the event loop, httpcore and h11 (which
copies it twice) before the writer's threads see it; on a GiB over loopback that took about 1.2 CPU
seconds to receive, against 0.3-0.45 s for a thread that reads the socket straight into a few reused
buffers with ``readinto`` (http.client, the standard library's HTTP/1.1, which handles Content-Length,
chunked and close-delimited bodies). So the download opens its request here, on a thread, and the part
writer's receiving thread reads the body.

The connection is pinned as ``egress.py``'s clients are: the host is resolved once, every address
it resolves to must be public (unless the host is named literally in ``WANHOOK_VIDEO_HOSTS``), and the
socket connects to the address that was checked; TLS runs against the URL's host (SNI and certificate
verification). No redirect is followed (http.client follows none) and no proxy is used.

Requests run on threads started for them, not on the loop's default executor: a host that answers
slowly holds its own thread for its timeouts, never the threads other work shares. The answer's head
has a deadline of its own (``HEAD_DEADLINE``), whatever the pace of its bytes: a host that drips its
headers gives the request back, as one that drips its body does (the downloader's minimum rate).

**Framing, strictly (RFC 9112 §6).** http.client is lenient where RFC 9112 says a client must not be: it
reads the first of several ``Content-Length`` fields, decodes ``chunked`` when ``Transfer-Encoding``
merely contains it and then ignores ``Content-Length``. A video stored from a misframed answer is the
wrong bytes, so ``framing`` checks the answer's head before a byte of its body is read, and refuses
(``BadFraming``, an attempt like a broken transfer):

- ``Transfer-Encoding`` other than exactly ``chunked`` (wanhook asks for no other coding, and a coding
  after ``chunked``, or without it, leaves the length to the connection's close: §6.1, §6.3 item 4);
- ``Transfer-Encoding`` together with ``Content-Length`` (§6.3 item 3: "ought to be handled as an
  error", a sign of response splitting);
- a ``Content-Length`` that is not ``1*DIGIT``, or several that differ (§6.3 item 5: "an unrecoverable
  error"); the same value repeated, as fields or as a list, is one length (RFC 9110 §8.6 allows either);
- an interim (1xx) answer other than ``100 Continue``, which http.client skips itself.

The declared length then binds the part writer: no byte past it is written (``PartWriter``'s limit), and
the task is ``ready`` only when exactly that many arrived. It binds http.client too, which reads exactly
that many bytes even of a length it could not parse itself (``5, 5``), and never reads on into what follows.

**Chunked bodies, strictly (§7.1).** http.client decodes them leniently: a size of ``+5``, `` 5 ``, ``0x5``
or ``1_0`` is read as Python's ``int(..., 16)`` reads it, the two bytes after a chunk are dropped whatever
they are, and the trailer section is read line after line without end. So ``_Chunked`` decodes them here:
a chunk-size is ``1*HEXDIG`` (an extension after it, up to the line's limit), each chunk's data ends with
CRLF, and the trailer section is held to the head's own limits (``MAX_FIELDS`` fields; ``MAX_LINE`` bytes in
all, as one of the head's lines may be), read and dropped. Anything else is ``BadFraming``; a body that
ends before its last chunk is a broken transfer (``FetchFailed``).

**The exchange, checked (``PartFetch``).** The GET fills a part file and may continue one: with bytes in
it and a validator (the ETag or Last-Modified of the answer they came from), it asks for the rest
(``Range: bytes=N-`` and ``If-Range``), else the file starts empty. What the host answers is checked
before it is believed, and each refusal is an attempt like a broken transfer (``FetchFailed``) unless no
attempt can help:

- ``403``, ``404`` or ``410``: the signed URL is refused (``URLExpired``; the caller reads a fresh one);
- ``206`` must continue the file (its ``Content-Range`` starts where the file ends, else the file starts
  over), and its length must match its bounds; ``200`` is the whole video, from byte zero (a host that
  ignores Range); ``416`` with the file's own size as the total means the file is whole already (a
  worker died after the last byte, before publishing), any other ``416`` starts the file over;
- a total over ``WANHOOK_MAX_VIDEO_BYTES`` ends the task (``VideoTooLarge``), checked before the caller
  reserves room for it (``admit``), as is a body of no declared size that goes past it;
- the body: no byte past its declared size reaches the file (the part writer's limit), a body whose
  framing breaks leaves nothing of the file behind, one that drips under ``WANHOOK_DOWNLOAD_MIN_RATE``
  is given up (what arrived is kept, for the resume), and it must end at exactly the declared total.

The answer is a ``Fetched``: the whole file's size and sha256, and where this answer took it up.

**The URL.** DashScope's URLs are ASCII; a non-ASCII character in the path or query is sent as its UTF-8
bytes percent-encoded, as a browser does (WHATWG URL). Whitespace or a control character, a scheme other
than http(s), no host or an impossible port make ``InvalidVideoURL``: no attempt can succeed, so the
task fails at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import os
import re
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from email.message import Message
from typing import IO, TypeVar
from urllib.parse import quote, urlsplit

from ..core import pools
from ..core.errors import Interrupted, WanhookError
from ..core.pace import MinimumRate
from . import egress
from .partwriter import PartWriter, TooLarge
from .storage import sha256_prefix

CONNECT_TIMEOUT = 10.0  # seconds to connect (and finish TLS) to one address
READ_TIMEOUT = 30.0  # seconds any read may wait for bytes: the response's head, or the body's next bytes
HEAD_DEADLINE = 60.0  # seconds from sending the request to the whole head of its answer, however it trickles
PROGRESS_INTERVAL = 0.5  # seconds between two reports of a body's progress (``PartFetch``'s ``progress``)

# The answer's head, as http.client reads it: lines of at most MAX_LINE bytes, at most MAX_FIELDS fields. Named
# here once, for the chunked body's lines and its trailer section to be held to the same (``_Chunked``).
MAX_LINE: int = http.client._MAXLINE  # type: ignore[attr-defined]
MAX_FIELDS: int = http.client._MAXHEADERS  # type: ignore[attr-defined]

T = TypeVar("T")
Connect = Callable[[str, int, float], socket.socket]


class FetchFailed(Interrupted):
    """The video host could not be reached, or the request or its answer broke off: worth another attempt."""


class BadFraming(FetchFailed):
    """The answer's head breaks RFC 9112's framing rules: its body cannot be trusted to be the video."""


class InvalidVideoURL(WanhookError):
    """The video URL cannot be requested at all (see the module's docstring): no attempt can succeed."""


class URLExpired(Interrupted):
    """The video host refused the signed URL (403/404): it has expired or was revoked."""


class VideoTooLarge(WanhookError):
    """The video is over ``WANHOOK_MAX_VIDEO_BYTES``, as its host declared it or as its body went on: no
    attempt can succeed."""

    code = "VideoTooLarge"


_DIGITS = re.compile(r"[0-9]+")
# chunk-size [ chunk-ext ] CRLF (RFC 9112 7.1.1): the extension is dropped, but may hold no control character.
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]+)(?:[ \t]*;[^\x00-\x08\x0a-\x1f\x7f]*)?\r\n")
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")  # whitespace and control characters: never in a request line
# What a browser leaves as it is in a path or query (RFC 3986's reserved and unreserved characters, and
# "%" of what is encoded already); everything else, non-ASCII among it, is percent-encoded as UTF-8.
_KEEP = "/?#[]@!$&'()*+,;=:-._~%"


def request_target(url: str) -> tuple[str, int, bool, str]:
    """``url``'s host, port, whether it is https, and its request target; ``InvalidVideoURL`` when it has none."""
    if _FORBIDDEN.search(url):
        raise InvalidVideoURL("the video URL contains whitespace or a control character")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # an impossible port, a broken IPv6 literal
        raise InvalidVideoURL(f"the video URL cannot be parsed: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidVideoURL("the video URL is not an http(s) URL with a host")
    try:
        parts.hostname.encode("ascii")
    except UnicodeEncodeError:
        raise InvalidVideoURL("the video URL's host is not ASCII") from None
    tls = parts.scheme == "https"
    target = quote(parts.path or "/", safe=_KEEP) + (f"?{quote(parts.query, safe=_KEEP)}" if parts.query else "")
    return parts.hostname, port or (443 if tls else 80), tls, target


def framing(status: int, headers: http.client.HTTPMessage) -> int | None:
    """The body's declared length (``None``: chunked, or until the connection closes); ``BadFraming`` when
    the head breaks RFC 9112 §6 (see the module's docstring)."""
    if 100 <= status < 200:
        raise BadFraming(f"the video host answered an interim HTTP {status} as its answer")
    codings = [c.strip().lower() for f in headers.get_all("transfer-encoding") or [] for c in f.split(",")]
    lengths = [v.strip() for f in headers.get_all("content-length") or [] for v in f.split(",")]
    if codings:
        if codings != ["chunked"]:
            raise BadFraming(f"the video host answered Transfer-Encoding {', '.join(codings)!r}, not chunked")
        if lengths:
            raise BadFraming("the video host answered both Transfer-Encoding and Content-Length")
        return None
    if not lengths:
        return None
    if not all(_DIGITS.fullmatch(value) for value in lengths):
        raise BadFraming("the video host answered a Content-Length that is not a number")
    if len({int(value) for value in lengths}) > 1:
        raise BadFraming("the video host answered Content-Length fields that differ")
    return int(lengths[0])


class VideoResponse:
    """An answer's status and headers; its body is read with ``readinto`` (blocking: on a thread).
    ``length`` is the body's declared length, checked (``framing``)."""

    def __init__(self, connection: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        self._connection = connection
        self._response = response
        self.status_code = response.status
        self.headers = response.headers  # case-insensitive ``get``
        self.length = framing(response.status, response.headers)
        if self.length is not None:
            response.length = self.length  # what http.client reads, and not a byte past it
        # framing let Transfer-Encoding through only as exactly "chunked": decoded here, strictly.
        chunked = bool(response.headers.get_all("transfer-encoding")) and response.fp is not None
        self._chunked = _Chunked(response.fp) if chunked else None

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` with the body's next bytes (whole, unless the body ends); 0 at its end."""
        try:
            if self._chunked is not None:
                return self._chunked.readinto(buffer)
            return self._response.readinto(buffer)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise FetchFailed(f"transfer broken: {_name(exc)}") from None

    def interrupt(self) -> None:
        """Make a read blocked on another thread return (short, or failing): the download was stopped."""
        sock = self._connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected any more: nothing is blocked on it

    def close(self) -> None:
        self._response.close()
        self._connection.close()


class _Chunked:
    """A chunked body (RFC 9112 §7.1) read from ``fp``, strictly (see the module's docstring)."""

    def __init__(self, fp: IO[bytes]) -> None:
        self.fp = fp
        self.left = 0  # bytes of the current chunk still to read
        self.started = False  # whether a chunk was read (its CRLF comes before the next size)
        self.done = False

    def readinto(self, buffer: memoryview) -> int:
        total = 0
        while total < len(buffer) and not self.done:
            if not self.left:
                if self.started:
                    end = self.fp.read(2)
                    if len(end) < 2:
                        raise FetchFailed("transfer broken: the chunked body ended after a chunk")
                    if end != b"\r\n":
                        raise BadFraming("the video host's chunked body has a chunk not followed by CRLF")
                self.started = True
                self.left = self._size()
                if not self.left:
                    self._trailers()
                    self.done = True
                    break
            count = self.fp.readinto(buffer[total : total + min(self.left, len(buffer) - total)])  # type: ignore[attr-defined]
            if not count:
                raise FetchFailed("transfer broken: the chunked body ended inside a chunk")
            total += count
            self.left -= count
        return total

    def _line(self, what: str) -> bytes:
        line = self.fp.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise BadFraming(f"the video host's chunked body has a {what} line over {MAX_LINE} bytes")
        if not line.endswith(b"\n"):
            raise FetchFailed(f"transfer broken: the chunked body ended in a {what} line")
        return line

    def _size(self) -> int:
        match = _CHUNK_SIZE.fullmatch(self._line("chunk size"))
        if match is None:
            raise BadFraming(
                "the video host's chunked body has a chunk-size line that is not hexadecimal digits and CRLF"
            )
        return int(match.group(1), 16)

    def _trailers(self) -> None:
        """Read and drop the trailer section, within the head's limits; up to the empty line that ends it."""
        fields = size = 0
        while True:
            line = self._line("trailer")
            size += len(line)
            if line == b"\r\n":
                return
            fields += 1
            if fields > MAX_FIELDS or size > MAX_LINE:
                raise BadFraming(f"the video host's trailer section is over {MAX_FIELDS} fields or {MAX_LINE} bytes")


class _PinnedConnection(http.client.HTTPConnection):
    """http.client's connection to ``host``, made to one of ``addresses`` (checked before), TLS when told."""

    def __init__(
        self,
        host: str,
        port: int,
        addresses: list[str],
        *,
        tls: ssl.SSLContext | None,
        connect: Connect,
    ) -> None:
        super().__init__(host, port, timeout=READ_TIMEOUT)
        self.default_port = 443 if tls is not None else 80  # the Host header carries any other port
        self.addresses = addresses
        self.tls = tls
        self._connect = connect

    def connect(self) -> None:
        failure: OSError | None = None
        for address in self.addresses:
            try:
                sock = self._connect(address, self.port, CONNECT_TIMEOUT)
            except OSError as exc:
                failure = exc
                continue
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.tls is not None:
                    sock = self.tls.wrap_socket(sock, server_hostname=self.host)
                sock.settimeout(READ_TIMEOUT)
            except BaseException:
                sock.close()
                raise
            self.sock = sock
            return
        assert failure is not None
        raise failure


def _connect(address: str, port: int, timeout: float) -> socket.socket:
    return socket.create_connection((address, port), timeout)


async def open_video(
    url: str,
    headers: Mapping[str, str],
    *,
    explicit_hosts: Iterable[str] = (),
    allow_private: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    connect: Connect = _connect,
    head_deadline: float = HEAD_DEADLINE,
) -> VideoResponse:
    """Send a GET for ``url`` and read its answer's head. ``InvalidVideoURL`` when it cannot be requested;
    ``DestinationRefused`` when the host resolves somewhere wanhook must not go; ``FetchFailed`` when it
    cannot be reached or its answer is broken or misframed, or its head takes over ``HEAD_DEADLINE``.
    ``connect`` makes the TCP connection to a checked address (tests route it to loopback)."""
    host, port, tls, target = request_target(url)
    if allow_private or host.lower() in egress.literal_hosts(explicit_hosts):
        addresses = [host]
    else:
        addresses = await egress.public_addresses(host, port)
    context = (ssl_context or ssl.create_default_context()) if tls else None
    connection = _PinnedConnection(host, port, addresses, tls=context, connect=connect)

    def send() -> VideoResponse:
        try:
            connection.request("GET", target, headers=dict(headers))
            return VideoResponse(connection, connection.getresponse())
        except BadFraming:
            connection.close()
            raise
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise FetchFailed(f"no answer from the video host: {_name(exc)}") from None

    try:
        return await asyncio.wait_for(on_own_thread(send, VideoResponse.close), head_deadline)
    except TimeoutError:
        sock = connection.sock  # the thread's read returns once its socket is shut
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        raise FetchFailed(f"the video host's answer had not arrived after {head_deadline:g}s") from None


async def on_own_thread(call: Callable[[], T], discard: Callable[[T], object]) -> T:
    """``call()`` on a thread started for it. Cancelled meanwhile, the caller goes at once and what the call
    returns later is given to ``discard`` (the thread cannot be stopped, but its result is not leaked)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.cancelled():
            if error is None:
                discard(result)  # type: ignore[arg-type]
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = call()
        except BaseException as exc:
            outcome: tuple[T | None, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop is closed: nobody waits any more
            if outcome[1] is None:
                discard(outcome[0])  # type: ignore[arg-type]

    threading.Thread(target=run, name="wanhook-video-request", daemon=True).start()
    return await future


@dataclass(frozen=True)
class Limits:
    """What a video's GET is held to, from the settings."""

    max_bytes: int  # WANHOOK_MAX_VIDEO_BYTES: the largest video stored, and the bound of a body of no declared size
    min_rate: int  # WANHOOK_DOWNLOAD_MIN_RATE: bytes a second the body must keep up (0: any pace) ...
    rate_window: float  # ... over each WANHOOK_DOWNLOAD_RATE_WINDOW seconds; also the head's deadline
    explicit_hosts: tuple[str, ...] = ()  # WANHOOK_VIDEO_HOSTS: hosts named literally connect as they are


@dataclass(frozen=True)
class Head:
    """An answer's head, checked: where its body goes in the part file and what it says of the whole video."""

    resumed_from: int  # the bytes of the part file the body continues (0: the file starts over)
    total: int | None  # the whole video's size, when the host declared it
    size: int  # what the whole video may take on disk: ``total``, else WANHOOK_MAX_VIDEO_BYTES
    validator: str  # ETag or Last-Modified ("" for neither): what a later resume's If-Range sends


@dataclass(frozen=True)
class Fetched:
    """The part file holds the whole video, checked against what its host declared."""

    total: int  # bytes in the part file
    sha256: str  # of the whole file (hex)
    resumed_from: int  # the bytes it held already, that this answer continued
    received: int  # the bytes of this answer's body
    whole_already: bool = False  # the host had nothing left to send (416 to a range at the file's end)


class PartFetch:
    """One GET of a video into its part file, resuming it when it can (see the module's docstring).

    Made, it has decided what to ask for: the rest of the file from ``resuming_at`` (with ``Range`` and
    ``If-Range``) when the file has bytes and ``validator`` names what they came from, else the whole video
    into the file, emptied. ``run`` performs the exchange."""

    def __init__(self, url: str, file: IO[bytes], validator: str | None, limits: Limits) -> None:
        self.url = url
        self.file = file
        self.limits = limits
        offset = file.seek(0, os.SEEK_END)
        self.headers: dict[str, str] = {}
        if offset and validator:
            self.headers = {"Range": f"bytes={offset}-", "If-Range": validator}
        else:
            offset = 0
            file.truncate(0)
        self.resuming_at = offset

    async def run(
        self,
        *,
        admit: Callable[[Head], Awaitable[None]],
        progress: Callable[[Head, int], Awaitable[None]],
        name: str = "wanhook-part",
    ) -> Fetched:
        """Send the GET, check its answer, and append its body to the part file.

        ``admit`` is told the checked head before a byte of the body is written, and may refuse it by
        raising (the downloader reserves the disk space the rest of the video needs); ``progress`` is told the
        bytes in the file every ``PROGRESS_INTERVAL`` seconds, first before any is written. Raises
        ``URLExpired``, ``VideoTooLarge``, ``InvalidVideoURL``, ``DestinationRefused``, ``FetchFailed`` (an
        attempt worth another: the file keeps what is sound of it, for the next one's resume), a write's
        ``OSError``, or what ``admit`` or ``progress`` raised."""
        response = await open_video(
            self.url, self.headers, explicit_hosts=self.limits.explicit_hosts, head_deadline=self.limits.rate_window
        )
        try:
            head = await self._check(response)
            if isinstance(head, Fetched):
                return head
            await admit(head)
            return await self._receive(response, head, progress, name)
        finally:
            response.close()

    async def _check(self, response: VideoResponse) -> Head | Fetched:
        """The answer's head against what was asked: the ``Head`` its body is to be written by, or the
        ``Fetched`` of a file that was whole already. Empties the file when the answer does not continue it."""
        file, offset, limits = self.file, self.resuming_at, self.limits
        if response.status_code in (403, 404, 410):
            raise URLExpired()
        if response.status_code == 416:
            # Nothing left to send: a worker died after the last byte but before publishing.
            if offset and _range_total(response.headers) == offset:
                digest = await pools.FILES.run(sha256_prefix, file, offset)
                return Fetched(offset, digest.hexdigest(), offset, 0, whole_already=True)
            file.truncate(0)
            raise FetchFailed("video host refused the range; starting over")
        if response.status_code == 206:
            if _range_start(response.headers) != offset:
                file.truncate(0)
                raise FetchFailed("video host answered a range that does not continue the file")
            total = _range_total(response.headers)
            if total is not None and response.length is not None and response.length != total - offset:
                raise FetchFailed("video host answered a range whose length does not match its bounds")
        elif response.status_code == 200:
            offset, total = 0, response.length  # checked against RFC 9112's framing rules (``framing``)
            file.truncate(0)
        else:
            raise FetchFailed(f"video host answered HTTP {response.status_code}")
        if total is not None and total > limits.max_bytes:
            raise VideoTooLarge(f"the video is {total} bytes, over WANHOOK_MAX_VIDEO_BYTES ({limits.max_bytes})")
        validator = response.headers.get("etag") or response.headers.get("last-modified") or ""
        return Head(offset, total, total if total is not None else limits.max_bytes, validator)

    async def _receive(
        self,
        response: VideoResponse,
        head: Head,
        progress: Callable[[Head, int], Awaitable[None]],
        name: str,
    ) -> Fetched:
        """Append the body to the part file, reporting its progress, and check it ended where it was declared to."""
        file, offset, total, limits = self.file, head.resumed_from, head.total, self.limits
        # In a thread: the part file may hold most of a large video, to be read back and hashed.
        digest = await pools.FILES.run(sha256_prefix, file, offset) if offset else hashlib.sha256()
        file.seek(offset)
        # The body is received, hashed and written on the writer's threads; this loop only reports.
        # The writer's own bound: nothing past the declared size (what was admitted) reaches the disk, whatever
        # the body does; a body of no declared size stops at WANHOOK_MAX_VIDEO_BYTES.
        writer = PartWriter(file, digest, response, limit=head.size - offset, name=name)
        try:
            pace = MinimumRate(limits.min_rate, limits.rate_window)
            while True:
                # What the writer has put in the file, not what was received: the caller learns of bytes once
                # they are on the disk.
                await progress(head, writer.written)
                if await writer.wait(PROGRESS_INTERVAL):
                    break
                if not pace.keeps_up(writer.received):
                    slow = f"under {pace.rate} bytes/s for {pace.window:g}s"
                    raise FetchFailed(f"the video host sent {slow} (WANHOOK_DOWNLOAD_MIN_RATE)")
            try:
                sha256 = await writer.finish()
            except TooLarge:
                if total is not None and total <= limits.max_bytes:
                    # Past its own declared size: a misframed answer, not a large video.
                    raise FetchFailed(f"the video host sent more than the {total} bytes it declared") from None
                raise VideoTooLarge(f"the video is over WANHOOK_MAX_VIDEO_BYTES ({limits.max_bytes} bytes)") from None
            except BadFraming:
                # The body's framing broke: what came before it is not trusted either. The file starts over,
                # once no write of the writer's can land in it any more.
                await writer.close()
                file.truncate(0)
                raise
            # Any other FetchFailed goes as it is: what did arrive is written, and kept for the resume.
        finally:
            await writer.close()  # no write may outlive this call (nor reach a file given back)
        received = offset + writer.received
        if total is not None and received != total:
            raise FetchFailed(f"transfer ended at {received} of {total} bytes")
        return Fetched(received, sha256, offset, writer.received)


def _range_start(headers: Message) -> int | None:
    value = headers.get("content-range", "")  # bytes 100-199/1000
    try:
        return int(value.split(" ", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return None


def _range_total(headers: Message) -> int | None:
    total = headers.get("content-range", "").rpartition("/")[2]
    return int(total) if total.isdigit() else None


def _name(exc: BaseException) -> str:
    """What broke, for the task's error: the exception's kind and, for a certificate, why it was refused."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"{type(exc).__name__} ({exc.verify_message or exc.reason})"
    if isinstance(exc, TimeoutError):
        return "TimeoutError (no bytes within the read timeout)"
    return type(exc).__name__
