"""Tasks: what a create call is allowed to ask, the per-account limits, and the life of a task."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import logging
import math
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from . import rules
from .config import EmulatorConfig
from .eventbridge import EventBus, build_event
from .rules import IMAGE_MODELS, MODELS, NEGATIVE_PROMPT_MAX, SEED_MAX, ImageModel, Model
from .stats import Stats
from .video import Video, VideoStore

logger = logging.getLogger("emulator.tasks")

TASK_LIFETIME = rules.TASK_LIFETIME_SECONDS  # after this a task reads as UNKNOWN
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELED"})


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error(code: str, message: str | None = None) -> ApiError:
    """DashScope's error ``code`` with its documented status, and its documented message unless given one."""
    return ApiError(rules.ERROR_STATUS[code], code, message or rules.MESSAGES[code])


def throttled() -> ApiError:
    return error("Throttling.RateQuota")


def invalid(message: str) -> ApiError:
    return error("InvalidParameter", message)


@dataclass(eq=False)
class Task:
    id: str
    model: str
    prompt: str
    size: str
    duration: int
    api_key: str
    request_id: str
    negative_prompt: str | None = None
    seed: int | None = None
    prompt_extend: bool = True
    watermark: bool = False
    audio_url: str | None = None
    sound: str | None = None  # "dubbed" (the model's own), "audio_url" (the track given), None: silent
    shot_type: str | None = None  # None: the model takes no shot_type
    kind: str = rules.T2V
    resolution: str | None = None  # the image kinds' tier; ``size`` is then the video's, from the image
    images: tuple[bytes, ...] = ()  # the first frame (and the last, for kf2v)
    status: str = "PENDING"
    submit_time: float = field(default_factory=time.time)
    scheduled_time: float | None = None
    end_time: float | None = None
    code: str | None = None
    message: str | None = None
    video: Video | None = None
    video_url: str | None = None
    expired: bool = False
    # Set once the completion event has been handed to every target (after any retries).
    settled: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def api_key_id(self) -> str:
        # DashScope names keys by a small number; any stable one will do.
        return str(int(hashlib.sha256(self.api_key.encode()).hexdigest()[:8], 16) % 100000)

    def visible_status(self, now: float | None = None) -> str:
        if self.expired or (now or time.time()) - self.submit_time > TASK_LIFETIME:
            return "UNKNOWN"
        return self.status


class RateWindow:
    """Admissions in the last second, as a sliding window."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def admit(self, limit: float, now: float) -> bool:
        while self._times and now - self._times[0] >= 1.0:
            self._times.popleft()
        if len(self._times) >= limit:
            return False
        self._times.append(now)
        return True


class Tasks:
    """The registry and the scheduler: FIFO per model, at most the model's running limit at once."""

    def __init__(
        self,
        config: EmulatorConfig,
        stats: Stats,
        videos: VideoStore,
        bus: EventBus,
        sign: Callable[[Task], str],
    ) -> None:
        self.config, self.stats, self.videos, self.bus, self.sign = config, stats, videos, bus, sign
        self.by_id: dict[str, Task] = {}
        self._queues: dict[str, deque[Task]] = defaultdict(deque)
        self._running: dict[str, set[str]] = defaultdict(set)
        self._submits: dict[str, RateWindow] = defaultdict(RateWindow)
        self._queries = RateWindow()
        self._workers: set[asyncio.Task[None]] = set()

    def running_now(self) -> dict[str, int]:
        return {model: len(ids) for model, ids in self._running.items() if ids}

    def _limit(self, model: str, name: str, default: int) -> float:
        if not self.config.enforce_limits:
            return math.inf
        return self.config.limits.get(model, {}).get(name, default)

    def admit_query(self) -> None:
        """Reads, lists and cancels share one per-account rate."""
        limit = self.config.query_qps if self.config.enforce_limits else math.inf
        if not self._queries.admit(limit, time.monotonic()):
            raise throttled()

    def create(
        self,
        body: Any,
        api_key: str,
        request_id: str,
        *,
        path: str = "video-generation",
        images: dict[str, bytes] | None = None,
    ) -> Task:
        """``path``: the endpoint's service (rules.PATHS); ``images``: the image fields' bytes, fetched."""
        spec = model_of(body, path)
        model = spec.name
        if not self._submits[model].admit(self._limit(model, "rps", spec.submit_rps), time.monotonic()):
            self.stats.creates_throttled += 1
            raise throttled()
        fields = _parameters(body, spec)
        if isinstance(spec, ImageModel):
            pictures = tuple((images or {})[name] for name in spec.image_fields)
            for name, data in zip(spec.image_fields, pictures, strict=True):
                check_picture(name, data)
            fields.update(kind=spec.kind, images=pictures, size=video_size(fields["resolution"], pictures[0]))
        task = Task(id=str(uuid.uuid4()), model=model, api_key=api_key, request_id=request_id, **fields)
        marker = self.config.block_marker
        if marker and (marker in task.prompt or marker in (task.negative_prompt or "")):
            raise error("DataInspectionFailed")
        self.by_id[task.id] = task
        self._queues[model].append(task)
        self._schedule(model)
        return task

    def cancel(self, task_id: str) -> None:
        task = self.by_id.get(task_id)
        if task is None or task.visible_status() != "PENDING":
            raise error("UnsupportedOperation")
        self._queues[task.model].remove(task)
        self._end(task, "CANCELED")
        self._spawn(self._announce(task))

    def expire(self, task_id: str) -> Task | None:
        task = self.by_id.get(task_id)
        if task is not None:
            task.expired = True
            if task in self._queues[task.model]:
                self._queues[task.model].remove(task)
        return task

    def reschedule(self) -> None:
        """After the limits change, start whatever now fits."""
        for model in list(self._queues):
            self._schedule(model)

    async def close(self) -> None:
        for worker in list(self._workers):
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for task in self.by_id.values():
            task.settled.set()  # lets create calls waiting for early events answer before the server stops

    def _schedule(self, model: str) -> None:
        queue, running = self._queues[model], self._running[model]
        while queue and len(running) < self._limit(model, "running", spec_of(model).max_running):
            task = queue.popleft()
            task.status, task.scheduled_time = "RUNNING", time.time()
            running.add(task.id)
            seen = self.stats.max_running_seen
            seen[model] = max(seen.get(model, 0), len(running))
            self._spawn(self._run(task))

    async def _run(self, task: Task) -> None:
        fail = bool(self.config.fail_marker) and self.config.fail_marker in task.prompt
        # Rendering starts with the task, so the file usually exists by the time the task is due to end.
        render = (
            None
            if fail
            else asyncio.ensure_future(
                self.videos.get(
                    task.size, task.prompt, task.duration, pad_to=self.config.video_pad_bytes, images=task.images
                )
            )
        )
        try:
            await asyncio.sleep(self.config.render_time(task.prompt))
            if render is None:
                self._end(task, "FAILED", self.config.fail_code, self.config.fail_message)
            else:
                task.video = await render
                task.video_url = self.sign(task)
                self._end(task, "SUCCEEDED")
        except Exception:
            logger.exception("rendering task %s failed", task.id)
            self._end(task, "FAILED", "InternalError", rules.MESSAGES["InternalError"])
        finally:
            if render is not None and not render.done():
                render.cancel()
        await self._announce(task)

    def _end(self, task: Task, status: str, code: str | None = None, message: str | None = None) -> None:
        task.status, task.end_time, task.code, task.message = status, time.time(), code, message
        running = self._running[task.model]
        if task.id in running:
            running.discard(task.id)
            self._schedule(task.model)

    async def _announce(self, task: Task) -> None:
        try:
            await self.bus.publish(build_event(task, self.config))
        finally:
            task.settled.set()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        worker = asyncio.ensure_future(work)
        self._workers.add(worker)
        worker.add_done_callback(self._workers.discard)


def spec_of(model: str) -> Model | ImageModel:
    return MODELS[model] if model in MODELS else IMAGE_MODELS[model]


def model_of(body: Any, path: str) -> Model | ImageModel:
    """The body's model, if it is created at ``path`` (rules.PATHS)."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    model = body.get("model")
    if not model or not isinstance(model, str):
        raise invalid("Field required: model")
    spec = MODELS.get(model) or IMAGE_MODELS.get(model)
    if spec is None:
        raise error("ModelNotFound")
    kind = spec.kind if isinstance(spec, ImageModel) else rules.T2V
    if rules.PATHS[kind] != path:
        raise invalid(rules.WRONG_PATH_MESSAGE)
    return spec


def _parameters(body: dict[str, Any], spec: Model | ImageModel) -> dict[str, Any]:
    """The task's fields from a create body, checked as DashScope checks them (see ``rules``)."""
    if isinstance(spec, ImageModel):
        return _image_parameters(body, spec)
    given, params = body.get("input"), body.get("parameters") or {}
    if not isinstance(given, dict):
        raise invalid("Field required: input")
    if not isinstance(params, dict):
        raise invalid("parameters must be an object")
    if rules.STRICT_UNKNOWN_PARAMETERS:
        unknown = [f"input.{name}" for name in sorted(set(given) - set(spec.input_fields) - set(rules.SDK_INPUT))]
        unknown += [f"parameters.{name}" for name in sorted(set(params) - set(spec.parameters))]
        if unknown:
            raise invalid(f"{unknown[0]} is not supported by {spec.name}")
    prompt = given.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid("Field required: input.prompt")
    negative = given.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        raise invalid("input.negative_prompt must be a string")
    size = params.get("size", spec.default_size)
    if size not in spec.sizes:
        raise invalid(f"parameters.size {size!r} is not supported by {spec.name}; allowed: {', '.join(spec.sizes)}")
    duration, seed = _duration_and_seed(params, spec)
    flags = _flags(params, prompt_extend=True, watermark=False)
    audio_url = _audio_url(given)
    shot_type = params.get("shot_type", rules.SHOT_TYPES[0])
    if shot_type not in rules.SHOT_TYPES:
        raise invalid(f"parameters.shot_type must be one of {', '.join(rules.SHOT_TYPES)}")
    return {
        # Longer text is cut to the model's limit, not refused (rules: REF, input.prompt and
        # input.negative_prompt).
        "prompt": prompt[: spec.prompt_max],
        "negative_prompt": None if negative is None else negative[:NEGATIVE_PROMPT_MAX],
        "size": size,
        "duration": duration,
        "seed": seed,
        "prompt_extend": flags["prompt_extend"],
        "watermark": flags["watermark"],
        "audio_url": audio_url,
        # Sound: the track given, else the model's own (rules: AUDIO_URL_SCHEMES and below).
        "sound": ("audio_url" if audio_url is not None else "dubbed") if spec.audio else None,
        "shot_type": shot_type if spec.shot_type else None,
    }


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _duration_and_seed(params: dict[str, Any], spec: Model | ImageModel) -> tuple[Any, Any]:
    duration = params.get("duration", spec.default_duration)
    if not _is_int(duration) or duration not in spec.durations:
        allowed = ", ".join(map(str, spec.durations))
        raise invalid(f"parameters.duration {duration!r} is not supported by {spec.name}; allowed: {allowed}")
    seed = params.get("seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed <= SEED_MAX):
        raise invalid(f"parameters.seed must be an integer from 0 to {SEED_MAX}")
    return duration, seed


def _flags(params: dict[str, Any], **defaults: bool) -> dict[str, bool]:
    """The boolean parameters with their defaults; a given value must be a JSON boolean."""
    flags = {}
    for name, default in defaults.items():
        value = params.get(name, default)
        if not isinstance(value, bool):
            raise invalid(f"parameters.{name} must be true or false")
        flags[name] = value
    return flags


def _audio_url(given: dict[str, Any]) -> str | None:
    audio_url = given.get("audio_url")
    if audio_url is not None and (
        not isinstance(audio_url, str)
        or urlsplit(audio_url).scheme not in rules.AUDIO_URL_SCHEMES
        or not urlsplit(audio_url).hostname
    ):
        raise invalid("input.audio_url must be an http or https URL")
    return audio_url


def _image_parameters(body: dict[str, Any], spec: ImageModel) -> dict[str, Any]:
    """An image kind's fields (rules: I2V and KF2V); the images are checked for form here, for content once
    fetched (``check_picture``)."""
    given, params = body.get("input"), body.get("parameters") or {}
    if not isinstance(given, dict):
        raise invalid("Field required: input")
    if not isinstance(params, dict):
        raise invalid("parameters must be an object")
    unknown = [f"input.{name}" for name in sorted(set(given) - set(spec.input_fields) - set(rules.SDK_INPUT))]
    unknown += [f"parameters.{name}" for name in sorted(set(params) - set(spec.parameters))]
    if unknown:
        raise invalid(f"{unknown[0]} is not supported by {spec.name}")
    prompt = given.get("prompt")  # optional for both image kinds
    if prompt is not None and not isinstance(prompt, str):
        raise invalid("input.prompt must be a string")
    negative = given.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        raise invalid("input.negative_prompt must be a string")
    for name in spec.image_fields:
        image_source(name, given.get(name))
    resolution = params.get("resolution", spec.default_resolution)
    if resolution not in spec.tiers:
        raise invalid(
            f"parameters.resolution {resolution!r} is not supported by {spec.name}; allowed: {', '.join(spec.tiers)}"
        )
    duration, seed = _duration_and_seed(params, spec)
    flags = _flags(params, prompt_extend=True, watermark=False, audio=True)
    audio_url = _audio_url(given)
    sound = None
    if spec.audio:
        sound = "audio_url" if audio_url is not None else ("dubbed" if flags["audio"] else None)
    return {
        "prompt": (prompt or "")[: spec.prompt_max],
        "negative_prompt": None if negative is None else negative[:NEGATIVE_PROMPT_MAX],
        "resolution": resolution,
        "size": "",  # from the first image, once fetched
        "duration": duration,
        "seed": seed,
        "prompt_extend": flags["prompt_extend"],
        "watermark": flags["watermark"],
        "audio_url": audio_url,
        "sound": sound,
    }


def image_source(name: str, value: Any) -> str:
    """How an image field is given: "data", "oss" or "http" (rules, IMAGE_FORMATS and UPLOAD)."""
    if value is None or value == "":
        raise invalid(f"Field required: input.{name}")
    if not isinstance(value, str):
        raise invalid(f"input.{name} must be a string")
    if value.startswith("data:"):
        _decode_data_url(name, value)
        return "data"
    parts = urlsplit(value)
    if parts.scheme == "oss" and parts.netloc:
        return "oss"
    if parts.scheme in ("http", "https") and parts.hostname:
        return "http"
    raise invalid(f"input.{name} must be an http or https URL, an oss:// URL or data:{{MIME_type}};base64,{{data}}")


def _decode_data_url(name: str, value: str) -> bytes:
    head, comma, data = value.partition(",")
    if not comma or not head.startswith("data:image/") or not head.endswith(";base64"):
        raise invalid(f"input.{name}: a data URL must read data:{{MIME_type}};base64,{{base64_data}}")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"input.{name}: the base64 data does not decode") from None


def check_picture(name: str, data: bytes) -> tuple[int, int]:
    """Width and height of an image DashScope takes (rules: IMAGE_FORMATS, IMAGE_SIDES, IMAGE_BYTES_MAX)."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > rules.IMAGE_BYTES_MAX:
        raise invalid(f"input.{name}: the image is larger than 10MB")
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind, size, mode, info = image.format, image.size, image.mode, image.info
    except (UnidentifiedImageError, OSError, ValueError):
        raise invalid(f"input.{name}: the file is not an image of a supported format") from None
    if kind not in rules.IMAGE_FORMATS:
        raise invalid(f"input.{name}: the image format {kind} is not supported (JPEG, JPG, PNG, BMP, WEBP)")
    if kind == "PNG" and (mode in ("RGBA", "LA", "PA") or "transparency" in info):
        raise invalid(f"input.{name}: PNG images with an alpha channel are not supported")
    low, high = rules.IMAGE_SIDES
    if not all(low <= side <= high for side in size):
        raise invalid(f"input.{name}: the image is {size[0]}x{size[1]}; width and height must be in [{low}, {high}]")
    return size


def video_size(resolution: str, first: bytes) -> str:
    """ "W*H" of about the tier's pixels at the first image's aspect ratio (rules, RESOLUTION_PIXELS), even sides."""
    from PIL import Image

    with Image.open(io.BytesIO(first)) as image:
        width, height = image.size
    pixels = rules.RESOLUTION_PIXELS[resolution]
    scale = math.sqrt(pixels / (width * height))
    return f"{max(2, round(width * scale / 2) * 2)}*{max(2, round(height * scale / 2) * 2)}"


async def fetch_images(
    body: Any,
    path: str,
    resolve_oss: bool,
    uploads: dict[str, tuple[str, bytes, float]],
    get: Callable[[str], Coroutine[Any, Any, bytes]],
) -> dict[str, bytes]:
    """The bytes of the body's images, as DashScope reads them before it answers: data URLs decoded, oss://
    files looked up (only with X-DashScope-OssResourceResolve), http(s) URLs downloaded."""
    try:
        spec = model_of(body, path)
    except ApiError:
        return {}  # create() answers it
    if not isinstance(spec, ImageModel) or not isinstance(body.get("input"), dict):
        return {}
    found: dict[str, bytes] = {}
    for name in spec.image_fields:
        value = body["input"].get(name)
        try:
            source = image_source(name, value)
        except ApiError:
            return {}  # create() answers it
        if source == "data":
            found[name] = _decode_data_url(name, value)
        elif source == "oss":
            if not resolve_oss:
                raise invalid(f"input.{name}: an oss:// URL needs the header X-DashScope-OssResourceResolve: enable")
            model, data, expires = uploads.get(value.removeprefix("oss://"), ("", b"", 0.0))
            # Bound to the model it was uploaded for, and gone after 48 hours (rules, UPLOAD).
            if model != spec.name or time.time() > expires:
                raise error("InvalidParameter.DataInspection")
            found[name] = data
        else:
            try:
                found[name] = await get(value)
            except Exception:
                raise error("InvalidParameter.DataInspection") from None
    return found
