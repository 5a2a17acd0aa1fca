"""Every error wanhook raises itself, in one hierarchy.

Each one carries a ``code`` (a stable, machine-readable name) and a ``message`` (one line for a person).
Nothing here knows HTTP: the web layer alone answers an error with a status and headers
(``web/responses.py``), the command line with an exit status (``cli/main.py``), a worker by retrying,
waiting or failing the task.

Most are defined here; a few stay beside the only code that raises and catches them, and are named
with their module below.

WanhookError                        code, message
├── InvalidInput                    what was sent cannot be read as what it should be (code says how)
│   ├── InvalidEvent                a body that is not a DashScope completion event
│   └── InvalidRequest              a request that reads but breaks a rule (code ``invalid_body``)
│       ├── InvalidField            one field breaks it; ``field`` names it
│       └── IdempotencyKeyReused    the Idempotency-Key came first with another body; ``task_id``
├── InvalidSignature                an EventBridge push whose v2 signature does not verify
├── TaskNotFound                    no task of that id (for this caller)
├── TaskConflict                    the task's state does not allow what was asked (too_late, not_ready, ...)
├── VideoGone                       the task is ready but its video has left the data directory
├── LimitReached                    a bound wanhook keeps was reached; ``retry_after`` seconds
│   ├── RateLimited                 a caller's requests a second
│   ├── QueueFull                   a submitter's tasks waiting in the queues; ``queued``, ``limit``
│   └── TooManyStreams              open event streams, of a token or of the process; ``per_token``
├── Unavailable                     something wanhook depends on does not answer now; ``retry_after``
│   ├── CertificateUnavailable      EventBridge's signing certificate cannot be fetched
│   ├── BrokerGone                  (consumers/rocketmq.py) no RocketMQ broker served for GIVE_UP_SECONDS
│   └── NotReplicated               (replication.py; also redis' RedisError) too few replicas confirmed a write
├── ConfigError (also ValueError)   a setting has a value wanhook cannot use
│   ├── EmbeddedRedisError          (embedded.py) the embedded Redis cannot be started or joined
│   └── LimitError                  (cli/eventbridge_limits.py) a definition breaks EventBridge's limits
├── RedisUnreachable                (connection.py; also redis' ConnectionError) Redis did not answer at start
├── DashScopeError                  a DashScope call failed; ``retryable`` says whether trying again can help
│   ├── RequestRejected             the request itself was refused                     (not retryable)
│   ├── Throttled                   429 that clears by itself                          (retryable)
│   ├── ServerError                 DashScope's 5xx                                    (retryable)
│   └── Unreachable                 no usable answer; whether a create took effect is unknown (retryable)
├── DestinationRefused              (outbound.py) a URL that points where wanhook must not send requests
├── DownloadError                   (download.py) a download failure that ends the task; ``status``
├── InvalidVideoURL                 (videofetch.py) a video URL that cannot be requested at all (ends the task)
├── VideoTooLarge                   (videofetch.py) a video over WANHOOK_MAX_VIDEO_BYTES (ends the task)
├── TooLarge                        (partwriter.py) a video's body went on past its limit (ends as VideoTooLarge)
├── Interrupted                     work stopped short without failing: it is retried, waits or is left
│   ├── TransientError              (download.py) a read of the DashScope task worth another attempt (5xx, timeout)
│   ├── FetchFailed                 (videofetch.py) the video host unreachable, or its answer broken off or refused
│   │   └── BadFraming              (videofetch.py) an answer whose head breaks RFC 9112's framing rules
│   ├── URLExpired                  (videofetch.py) the signed video URL was refused: read a fresh one
│   ├── InsufficientStorage         (download.py) the disk is too full for the video now: wait for room
│   ├── WaitAbandoned               (download.py) the worker stops while the download waits for room
│   ├── JobLost                     (download.py) another worker holds the job
│   ├── StorageBusy                 (storage.py) another worker is writing this video
│   ├── UploadFailed                (storage.py) the object store failed an upload: tried again
│   ├── DeadlineExceeded            (pools.py) a blocking call did not end within its caller's deadline
│   └── Ended                       (feed.py) an event stream's subscription was dropped or closed
├── CommandError                    what a command of the command line meets, told in one line
│   ├── ClientError                 (cli/client.py) a request to the wanhook server failed; ``status``
│   ├── WaitTimeout                 (cli/client.py) the task had not ended in the time given
│   ├── ImageError                  (cli/client.py) a local image that cannot be sent (missing, not one DashScope takes)
│   ├── EndpointsUnreachable        (cli/main.py) what a command needs from its start did not answer
│   └── SetupError                  (cli/eventbridge.py) EventBridge refused a set-up call
└── ApiError                        (web/responses.py) an answer only HTTP has (401, 413, 415, ...); ``status``
"""

from __future__ import annotations


class WanhookError(Exception):
    """The base of every error above: ``code`` names it for machines, ``message`` says it for people."""

    code = "error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(*((message,) if message else ()))
        self.message = message
        if code is not None:
            self.code = code


# What was sent.


class InvalidInput(WanhookError):
    """What was sent cannot be read as what it should be; ``code`` says how."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


class InvalidEvent(InvalidInput, ValueError):
    """The body is not JSON, or not a completion event in either accepted form."""


class InvalidRequest(InvalidInput):
    """A request that reads but breaks a rule of what it asks for."""

    def __init__(self, message: str, *, code: str = "invalid_body") -> None:
        super().__init__(code, message)


class InvalidField(InvalidRequest):
    """One field of a request breaks a rule; the message starts with the field's name."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}", code="invalid_field")
        self.field = field


class IdempotencyKeyReused(InvalidRequest):
    """The Idempotency-Key was first sent with another request body; it names that request's task."""

    def __init__(self, task_id: str) -> None:
        # As payment APIs answer: a key names one request; returning its task for another body would
        # tell the client its second request was done when it was not.
        super().__init__(
            f"this Idempotency-Key was first sent with a different body (it created task {task_id}); "
            "use a new key for a new request",
            code="idempotency_key_reused",
        )
        self.task_id = task_id


class InvalidSignature(WanhookError):
    """An EventBridge push whose v2 signature is missing, malformed or does not verify."""

    code = "invalid_signature"


# The task asked for.


class TaskNotFound(WanhookError):
    """No task of that id, or none the caller may see (another owner's task is not found either)."""

    code = "task_not_found"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task {task_id!r}")
        self.task_id = task_id


class TaskConflict(WanhookError):
    """The task's state does not allow what was asked; ``code`` says which (too_late, not_ready, no_callback)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


class VideoGone(WanhookError):
    """The task is ready, but its stored video is missing from the data directory."""

    code = "video_gone"


# Bounds and what wanhook depends on.


class LimitReached(WanhookError):
    """A bound wanhook keeps was reached; trying again after ``retry_after`` seconds may succeed."""

    retry_after: int | None = None


class RateLimited(LimitReached):
    """A caller went over its requests a second."""

    code = "rate_limited"

    def __init__(self, rate: float, retry_after: int) -> None:
        super().__init__(f"over {rate} requests a second; retry later")
        self.retry_after = retry_after


class QueueFull(LimitReached):
    """The submitter already has as many tasks waiting in the queues as it may."""

    code = "too_many_queued"
    retry_after = 60

    def __init__(self, queued: int, limit: int | None = None) -> None:
        super().__init__(f"{queued} tasks of this token are already queued (WANHOOK_MAX_QUEUED_PER_TOKEN is {limit})")
        self.queued = queued
        self.limit = limit


class TooManyStreams(LimitReached):
    """As many event streams are open as a token (``per_token``) or the whole process may have."""

    code = "too_many_streams"

    def __init__(self, per_token: bool, limit: int) -> None:
        if per_token:
            message = f"this token has {limit} event streams open (WANHOOK_MAX_STREAMS_PER_TOKEN); close one first"
        else:
            message = f"this server has {limit} event streams open (WANHOOK_MAX_STREAMS); retry later or elsewhere"
        super().__init__(message)
        self.per_token = per_token
        self.limit = limit
        # A token's own stream ends when its client closes one; the process's, when anyone's does.
        self.retry_after = 30 if per_token else 10


class Unavailable(WanhookError):
    """Something wanhook depends on does not answer now; ``retry_after`` seconds, when known, says when to retry."""

    retry_after: int | None = None

    def __init__(self, code: str, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message, code=code)
        if retry_after is not None:
            self.retry_after = retry_after


class CertificateUnavailable(Unavailable):
    """EventBridge's signing certificate cannot be fetched: not the sender's fault."""

    def __init__(self) -> None:
        super().__init__(
            "certificate_unavailable", "the EventBridge certificate cannot be fetched; retry later", retry_after=5
        )


class ConfigError(WanhookError, ValueError):
    """A setting has a value wanhook cannot use."""

    code = "invalid_setting"


# DashScope.


class DashScopeError(WanhookError):
    """A DashScope call failed; ``retryable`` says whether trying again later can help (throttling, server
    errors, network trouble) or not (the request itself was refused). ``code`` is DashScope's."""

    retryable = False

    def __init__(
        self, code: str, message: str, *, status_code: int | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.args = (f"{code}: {message}",)
        self.status_code = status_code
        self.request_id = request_id


class RequestRejected(DashScopeError):
    """DashScope refused the request itself (bad parameter, moderation, key, access, quota)."""


class Throttled(DashScopeError):
    """429 that clears by itself: back off and try again."""

    retryable = True


class ServerError(DashScopeError):
    """5xx: DashScope's side; bounded retries."""

    retryable = True


class Unreachable(DashScopeError):
    """No usable answer: connection error, timeout or a body that is not DashScope's JSON.

    Whether the request took effect is unknown, which matters for a create.
    """

    retryable = True


# The bases of errors that live beside their code.


class Interrupted(WanhookError):
    """Work stopped short of its end without failing its task: it is tried again, waits, or is left to another."""

    code = "interrupted"


class CommandError(WanhookError):
    """What a command of the command line meets: said in one line, with an exit status (``cli/main.py``)."""

    code = "command_failed"
