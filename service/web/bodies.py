"""Request bodies, read and parsed within bounds every route shares.

Every body any route takes (a create, a push from EventBridge, an operator's replay) is read by ``read``,
and every body over ``INLINE_MAX`` is read and parsed under a ``LargeBodies`` slot, so each bound below is
the mechanism's, and a new route inherits them all:

- **bytes**: the route's ``limit``; a declared ``Content-Length`` over it is refused (413) before anything
  is read, a body that goes on past it as soon as it does;
- **time**: the body keeps at least ``WANHOOK_BODY_MIN_RATE`` bytes a second over each window of
  ``WANHOOK_BODY_RATE_WINDOW_SECONDS`` (its first bytes within one window), else 408 ``body_timeout``
  (``pace.MinimumRate``, the bound downloads keep too);
- **memory**: at most ``WANHOOK_LARGE_BODIES`` bodies over ``INLINE_MAX`` are held at once, a caller at
  most half of them (where API tokens tell callers apart); a request that waits more than
  ``SLOT_WAIT_SECONDS`` for a slot is answered 503 ``busy`` with ``Retry-After``;
- **the event loop**: a large body is parsed and checked in a process of its own
  (``WANHOOK_PARSE_PROCESSES``, a ``ProcessPoolExecutor``), not on the loop: ``json.loads``, base64 and
  hashing hold the GIL for the whole call (about 220 ms of a 27 MiB create with two images), so a thread
  would stall the loop as much. Small bodies, every push among them, are parsed where they are read: the
  trip to a process costs more than they do.

A function run in the pool returns its result or raises a ``WanhookError``, which comes back as the same
answer (``responses.error_response``) to the request; a pool whose process died is replaced, and the
request that met it answered 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from starlette.types import Receive

from ..config import Settings
from ..core.errors import WanhookError
from ..core.pace import MinimumRate
from .responses import ApiError, headers_of, status_of

__all__ = ["INLINE_MAX", "SLOT_WAIT_SECONDS", "LargeBodies", "is_large", "read"]

log = logging.getLogger("wanhook.web")

# Bodies up to this size are read without a slot and parsed on the loop (a millisecond or less).
INLINE_MAX = 64 * 1024
SLOT_WAIT_SECONDS = 5.0

T = TypeVar("T")


def too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the body is over the limit of {limit} bytes")


def is_large(headers: Mapping[str, str]) -> bool:
    """Whether the body may be over INLINE_MAX: declared so, or not declared at all (chunked)."""
    declared = headers.get("content-length")
    return declared is None or not declared.isdigit() or int(declared) > INLINE_MAX


async def read(receive: Receive, headers: Mapping[str, str], limit: int, settings: Settings) -> bytes | None:
    """The whole body within ``limit`` bytes and the least pace; None when the client went away first."""
    declared = headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    pace = MinimumRate(settings.body_min_rate, settings.body_rate_window)
    body = bytearray()
    while True:
        ends = pace.window_ends()
        try:
            async with asyncio.timeout_at(_loop_time(ends)):
                message = await receive()
        except TimeoutError:
            message = None
        if message is not None and message["type"] == "http.disconnect":
            return None
        if message is not None:
            chunk = message.get("body", b"")
            if chunk:
                body += chunk
                if len(body) > limit:
                    raise too_large(limit)
            if not message.get("more_body", False):
                return bytes(body)
        if not pace.keeps_up(len(body)):
            raise ApiError(
                408,
                "body_timeout",
                f"the body came slower than {settings.body_min_rate} bytes a second over "
                f"{settings.body_rate_window:g} s (WANHOOK_BODY_MIN_RATE)",
                headers={"Connection": "close"},
            )


def _loop_time(monotonic_deadline: float | None) -> float | None:
    # MinimumRate keeps time.monotonic(); the loop's clock is the same one on CPython, but say it once here.
    if monotonic_deadline is None:
        return None
    return asyncio.get_running_loop().time() + (monotonic_deadline - time.monotonic())


class LargeBodies:
    """The slots a body over INLINE_MAX is read and parsed under, and the processes that parse them."""

    def __init__(self, slots: int, processes: int, *, per_caller: int | None = None) -> None:
        self.slots = slots
        self.per_caller = per_caller or slots
        self.processes = processes
        self._free = asyncio.Semaphore(slots)
        self._held: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._pool: ProcessPoolExecutor | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LargeBodies:
        # With tokens, a caller holds at most half the slots; an open API has one caller, who may hold them all.
        per_caller = max(1, settings.large_bodies // 2) if settings.api_tokens else None
        return cls(settings.large_bodies, settings.parse_processes, per_caller=per_caller)

    @contextlib.asynccontextmanager
    async def slot(self, caller: str) -> AsyncIterator[None]:
        """One slot for ``caller``'s large body; 503 ``busy`` after SLOT_WAIT_SECONDS without one."""
        try:
            async with asyncio.timeout(SLOT_WAIT_SECONDS):
                async with self._changed:
                    await self._changed.wait_for(lambda: self._held.get(caller, 0) < self.per_caller)
                    self._held[caller] = self._held.get(caller, 0) + 1
                try:
                    await self._free.acquire()
                except BaseException:
                    await self._give_back(caller)
                    raise
        except TimeoutError:
            raise ApiError(
                503,
                "busy",
                f"{self.slots} large request bodies are being read already (WANHOOK_LARGE_BODIES); retry later",
                headers={"Retry-After": "5"},
            ) from None
        try:
            yield
        finally:
            self._free.release()
            await self._give_back(caller)

    async def _give_back(self, caller: str) -> None:
        async with self._changed:
            left = self._held.get(caller, 0) - 1
            if left > 0:
                self._held[caller] = left
            else:
                self._held.pop(caller, None)
            self._changed.notify_all()

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a parse process: its result, or the WanhookError it raised."""
        pool = self._start()
        try:
            outcome = await asyncio.wrap_future(pool.submit(_call, function, *args))
        except BrokenProcessPool:
            log.error("a parse process died; starting a new pool")
            if self._pool is pool:  # not the new pool another request met the same death with has started
                self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise ApiError(
                503, "parser_unavailable", "the request could not be parsed now; retry", headers={"Retry-After": "1"}
            ) from None
        if isinstance(outcome, _Refused):
            raise ApiError(outcome.status, outcome.code, outcome.message, field=outcome.field, headers=outcome.headers)
        return outcome

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # forkserver: a fresh process from a clean one, not a fork of serve's threads and sockets.
            context = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(max_workers=self.processes, mp_context=context)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class _Refused:
    """A WanhookError as it crosses back from a parse process: exceptions with their own ``__init__``
    arguments do not survive pickling, their answer does."""

    def __init__(self, exc: WanhookError) -> None:
        self.status = status_of(exc)
        self.code = exc.code
        self.message = exc.message
        self.field: str | None = getattr(exc, "field", None)
        self.headers = headers_of(exc)


def _call(function: Callable[..., T], *args: Any) -> T | _Refused:
    try:
        return function(*args)
    except WanhookError as exc:
        return _Refused(exc)
