"""Checking a ``POST /v1/tasks`` body against the model's rules before anything is stored or sent."""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import re
import warnings
from typing import Any
from urllib.parse import urlsplit

from ..core.errors import InvalidField, InvalidRequest
from .addresses import not_public
from .models import (
    DEFAULT_MODELS,
    IMAGE_FIELDS,
    IMAGE_FORMATS,
    IMAGE_MAX_BYTES,
    IMAGE_MAX_SIDE,
    IMAGE_MIN_SIDE,
    KIND_NAMES,
    KINDS,
    MODELS,
    NEGATIVE_PROMPT_MAX,
    SEED_MAX,
    SHOT_TYPES,
    T2V,
    ModelRules,
)
from .task import CALLBACK_EVENTS, DEFAULT_CALLBACK_EVENTS

FIELDS = {
    "prompt",
    "model",
    "negative_prompt",
    "size",
    "duration",
    "seed",
    "prompt_extend",
    "watermark",
    "audio_url",
    "shot_type",
    "callback",
    "metadata",
}
# The image kinds' own fields (models.py names their sources).
IMAGE_TASK_FIELDS = {"kind", "img_url", "first_frame_url", "last_frame_url", "resolution", "audio"}
ALL_IMAGE_FIELDS = ("img_url", "first_frame_url", "last_frame_url")
IMAGE_URL_MAX_LENGTH = 2048
DATA_URL = re.compile(r"data:(image/[A-Za-z0-9.+-]+);base64,(.*)", re.DOTALL)
METADATA_MAX_KEYS = 32
METADATA_MAX_LENGTH = 512
AUDIO_URL_MAX_LENGTH = 2048


def invalid(field: str, message: str) -> InvalidField:
    return InvalidField(field, message)


def _string(doc: dict[str, Any], field: str, *, required: bool = False) -> str | None:
    value = doc.get(field)
    if value is None:
        if required:
            raise invalid(field, "is required")
        return None
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    return value


def _integer(doc: dict[str, Any], field: str) -> int | None:
    value = doc.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(field, "must be an integer")
    return value


def _boolean(doc: dict[str, Any], field: str) -> bool | None:
    value = doc.get(field)
    if value is not None and not isinstance(value, bool):
        raise invalid(field, "must be true or false")
    return value


def is_private_host(host: str) -> bool:
    """Loopback, private, link-local or otherwise non-public by its literal name or address."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost") or host.endswith(".local"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return not_public(host)


def check_callback(value: Any, allow_private: bool) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid("callback", "must be an object with 'url' and optional 'events'")
    unknown = set(value) - {"url", "events"}
    if unknown:
        raise invalid("callback", f"unknown field {sorted(unknown)[0]!r}")
    url = value.get("url")
    if not isinstance(url, str):
        raise invalid("callback.url", "is required and must be a string")
    if any(char.isspace() or not char.isprintable() for char in url):
        # urlsplit strips some of these and keeps others; the request line could carry none of them.
        raise invalid("callback.url", "must not contain whitespace or control characters (percent-encode them)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid("callback.url", "must be an http or https URL with a host")
    if not allow_private and is_private_host(parts.hostname):
        raise invalid(
            "callback.url",
            "points at a loopback, private or link-local address (set WANHOOK_CALLBACK_ALLOW_PRIVATE=1 to allow it)",
        )
    events = value.get("events", list(DEFAULT_CALLBACK_EVENTS))
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise invalid("callback.events", "must be a non-empty list of event names")
    for event in events:
        if event not in CALLBACK_EVENTS:
            raise invalid("callback.events", f"unknown event {event!r}; expected some of {', '.join(CALLBACK_EVENTS)}")
    return {"url": url, "events": list(dict.fromkeys(events))}


def _newer_parameters(doc: dict[str, Any], model: str, audio: bool, shot_type: bool) -> dict[str, Any]:
    """audio_url and shot_type, each refused for a model that does not take it (DashScope's answer to
    those is undocumented: it may ignore them, and the video would not be what was asked)."""
    takes = {"audio_url": audio, "shot_type": shot_type}
    for name, taken in takes.items():
        if doc.get(name) is not None and not taken:
            which = ", ".join(m for m, r in MODELS.items() if (r.shot_type if name == "shot_type" else r.audio))
            raise invalid(name, f"{model} does not take {name}; {which} do")
    found: dict[str, Any] = {}
    url = _string(doc, "audio_url")
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > AUDIO_URL_MAX_LENGTH:
            raise invalid(
                "audio_url",
                f"must be an http or https URL of at most {AUDIO_URL_MAX_LENGTH} characters "
                "that DashScope can fetch (wav or mp3, 3 to 30 s, at most 15 MB)",
            )
        found["audio_url"] = url
    shots = _string(doc, "shot_type")
    if shots is not None:
        if shots not in SHOT_TYPES:
            raise invalid("shot_type", f"{shots!r} is not one of {', '.join(SHOT_TYPES)}")
        if shots == "multi" and doc.get("prompt_extend") is False:
            # DashScope makes a multi-shot video only while it rewrites the prompt; without, one shot.
            raise invalid("shot_type", "'multi' needs prompt_extend true (DashScope ignores it otherwise)")
        found["shot_type"] = shots
    return found


def check_task(doc: Any, *, allow_private_callbacks: bool = False) -> dict[str, Any]:
    """The fields to store for a valid request; raises ``InvalidField`` naming the first bad field
    (``InvalidRequest`` when the body is not an object)."""
    if not isinstance(doc, dict):
        raise InvalidRequest("the body must be a JSON object")
    unknown = set(doc) - FIELDS - IMAGE_TASK_FIELDS
    if unknown:
        raise invalid(sorted(unknown)[0], "is not a known field")
    rules = _model(doc)
    model = rules.name
    if rules.kind == T2V:
        _refuse_image_fields(doc)
    prompt = _string(doc, "prompt", required=rules.prompt_required)
    if prompt is not None and not prompt.strip():
        if rules.prompt_required:
            raise invalid("prompt", "must not be empty")
        prompt = None
    if prompt is not None and len(prompt) > rules.prompt_max:
        raise invalid("prompt", f"is {len(prompt)} characters; {model} takes at most {rules.prompt_max}")
    negative = _string(doc, "negative_prompt")
    if negative is not None and len(negative) > NEGATIVE_PROMPT_MAX:
        raise invalid("negative_prompt", f"is {len(negative)} characters; at most {NEGATIVE_PROMPT_MAX}")

    parameters: dict[str, Any] = _picture(doc, rules)
    duration = _integer(doc, "duration")
    if duration is not None:
        if duration not in rules.durations:
            allowed = ", ".join(str(d) for d in rules.durations)
            raise invalid("duration", f"{duration} is not allowed for {model}; expected one of {allowed}")
        parameters["duration"] = duration
    seed = _integer(doc, "seed")
    if seed is not None:
        if not 0 <= seed <= SEED_MAX:
            raise invalid("seed", f"must be between 0 and {SEED_MAX}")
        parameters["seed"] = seed
    for flag in ("prompt_extend", "watermark"):
        value = _boolean(doc, flag)
        if value is not None:
            parameters[flag] = value
    parameters.update(_newer_parameters(doc, model, rules.audio, rules.shot_type))
    if rules.kind != T2V:
        parameters.update(_images(doc, rules))
        audio = _boolean(doc, "audio")
        if audio is not None:
            if not rules.audio:
                raise invalid("audio", f"{model} makes silent video and takes no audio switch")
            parameters["audio"] = audio

    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise invalid("metadata", "must be an object of string values")
    if len(metadata) > METADATA_MAX_KEYS or any(len(k) + len(v) > METADATA_MAX_LENGTH for k, v in metadata.items()):
        raise invalid("metadata", f"at most {METADATA_MAX_KEYS} entries of at most {METADATA_MAX_LENGTH} characters")

    callback = doc.get("callback")
    return {
        "model": model,
        "prompt": prompt or "",
        "negative_prompt": negative,
        "parameters": parameters,
        "metadata": metadata,
        "callback": None if callback is None else check_callback(callback, allow_private_callbacks),
    }


def _model(doc: dict[str, Any]) -> ModelRules:
    """The model asked for, within the kind asked for: ``kind`` defaults to the model's kind, or to
    text-to-video when no model is named; ``model`` to the kind's default."""
    kind = _string(doc, "kind")
    if kind is not None:
        if kind not in KINDS and kind not in KIND_NAMES:
            raise invalid("kind", f"{kind!r} is not one of {', '.join(KIND_NAMES)} (or {', '.join(KINDS)})")
        kind = KIND_NAMES.get(kind, kind)
    model = _string(doc, "model") or DEFAULT_MODELS[kind or T2V]
    rules = MODELS.get(model)
    if rules is None:
        raise invalid("model", f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    if kind is not None and rules.kind != kind:
        which = ", ".join(m for m, r in MODELS.items() if r.kind == kind)
        raise invalid("model", f"{model} is a {rules.kind} model, not {kind}; {kind} models: {which}")
    return rules


def _refuse_image_fields(doc: dict[str, Any]) -> None:
    """Text-to-video: the image kinds' fields are named as such."""
    for name in sorted(set(doc) & IMAGE_TASK_FIELDS - {"kind"}):
        # resolution and audio are DashScope image-to-video's; its text-to-video has neither.
        if name == "resolution":
            raise invalid(name, "is not a known field; text-to-video takes size (W*H, e.g. 1280*720)")
        if name == "audio":
            raise invalid(
                name,
                "is not a known field; wan2.5 and wan2.6 always make sound (their own, or the "
                "track at audio_url), wan2.2 and wan2.1 never: DashScope's text-to-video has no switch",
            )
        raise invalid(
            name,
            "is not a known field for text-to-video; give kind i2v (img_url) or kf2v (first_frame_url, last_frame_url)",
        )


def _picture(doc: dict[str, Any], rules: ModelRules) -> dict[str, Any]:
    """size (text-to-video, "W*H") or resolution (the image kinds, a tier)."""
    if rules.kind == T2V:
        size = _string(doc, "size") or rules.default_size
        if size not in rules.sizes:
            raise invalid("size", f"{size!r} is not allowed for {rules.name}; expected one of {', '.join(rules.sizes)}")
        return {"size": size}
    if doc.get("size") is not None:
        raise invalid(
            "size",
            f"{rules.name} takes resolution (one of {', '.join(rules.tiers)}), not size: "
            "the video keeps the image's aspect ratio",
        )
    resolution = _string(doc, "resolution") or rules.default_resolution
    if resolution not in rules.tiers:
        raise invalid(
            "resolution", f"{resolution!r} is not allowed for {rules.name}; expected one of {', '.join(rules.tiers)}"
        )
    return {"resolution": resolution}


def _images(doc: dict[str, Any], rules: ModelRules) -> dict[str, str]:
    wanted = IMAGE_FIELDS[rules.kind]
    for name in ALL_IMAGE_FIELDS:
        if name not in wanted and doc.get(name) is not None:
            raise invalid(name, f"{rules.name} ({rules.kind}) takes {', '.join(wanted)}, not {name}")
    found = {}
    for name in wanted:
        value = _string(doc, name, required=True)
        assert value is not None
        found[name] = check_image(name, value)
    return found


def check_image(field: str, value: str) -> str:
    """An image field as DashScope takes it: a public http(s) URL or an oss:// temporary URL (passed on
    unfetched), or a base64 data URL whose picture is checked here (format, sides, bytes)."""
    if value.startswith("data:"):
        match = DATA_URL.fullmatch(value)
        if match is None:
            raise invalid(field, "a data URL must read data:image/<type>;base64,<data>")
        encoded = match.group(2)
        if len(encoded) > (IMAGE_MAX_BYTES + 2) // 3 * 4 + 4:
            raise invalid(field, f"the image is over {IMAGE_MAX_BYTES // (1024 * 1024)} MB, the most DashScope takes")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise invalid(field, "the data URL's base64 does not decode") from None
        check_image_bytes(field, data)
        return value
    parts = urlsplit(value)
    if parts.scheme == "oss" and parts.netloc:
        return value
    if parts.scheme not in ("http", "https") or not parts.hostname or len(value) > IMAGE_URL_MAX_LENGTH:
        raise invalid(
            field,
            f"must be an http or https URL of at most {IMAGE_URL_MAX_LENGTH} characters, an oss:// "
            "temporary URL, or a base64 data URL (data:image/png;base64,...)",
        )
    return value


def check_image_bytes(field: str, data: bytes) -> tuple[str, int, int]:
    """The image's format, width and height, if DashScope takes it; ``InvalidField`` naming the problem."""
    from PIL import Image, UnidentifiedImageError  # only image tasks pay for Pillow's import

    if len(data) > IMAGE_MAX_BYTES:
        raise invalid(field, f"the image is {len(data)} bytes; DashScope takes at most {IMAGE_MAX_BYTES} (10 MB)")
    try:
        # Only the header is read (the sides are checked below, before anything would decode the pixels).
        # Pillow refuses a header that claims more than twice MAX_IMAGE_PIXELS (a decompression bomb) and
        # warns above it: both are the same 422 here, naming the field.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                kind, (width, height), mode = image.format or "", image.size, image.mode
                transparent = mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise invalid(
            field, f"claims more pixels than any image DashScope takes (sides of {IMAGE_MIN_SIDE} to {IMAGE_MAX_SIDE})"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise invalid(field, "is not an image (DashScope takes JPEG, PNG, BMP or WEBP)") from None
    if kind not in IMAGE_FORMATS:
        raise invalid(field, f"is a {kind or 'unknown'} image; DashScope takes JPEG, PNG, BMP or WEBP")
    if kind == "PNG" and transparent:
        raise invalid(field, "is a PNG with an alpha channel, which DashScope does not take")
    if not (IMAGE_MIN_SIDE <= width <= IMAGE_MAX_SIDE and IMAGE_MIN_SIDE <= height <= IMAGE_MAX_SIDE):
        raise invalid(field, f"is {width}x{height} pixels; each side must be {IMAGE_MIN_SIDE} to {IMAGE_MAX_SIDE}")
    return kind, width, height
