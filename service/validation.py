"""Checking a ``POST /v1/tasks`` body against the model's rules before anything is stored or sent."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from .errors import InvalidField, InvalidRequest
from .models import MODELS, NEGATIVE_PROMPT_MAX, SEED_MAX, SHOT_TYPES
from .outbound import not_public
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
    unknown = set(doc) - FIELDS
    if unknown:
        name = sorted(unknown)[0]
        # resolution and audio are DashScope image-to-video's; its text-to-video has neither.
        if name == "resolution":
            raise invalid(name, "is not a known field; text-to-video takes size (W*H, e.g. 1280*720)")
        if name == "audio":
            raise invalid(
                name,
                "is not a known field; wan2.5 and wan2.6 always make sound (their own, or the "
                "track at audio_url), wan2.2 and wan2.1 never: DashScope's text-to-video has no switch",
            )
        raise invalid(name, "is not a known field")

    model = _string(doc, "model") or "wan2.2-t2v-plus"
    rules = MODELS.get(model)
    if rules is None:
        raise invalid("model", f"unknown model {model!r}; expected one of {', '.join(MODELS)}")

    prompt = _string(doc, "prompt", required=True)
    assert prompt is not None
    if not prompt.strip():
        raise invalid("prompt", "must not be empty")
    if len(prompt) > rules.prompt_max:
        raise invalid("prompt", f"is {len(prompt)} characters; {model} takes at most {rules.prompt_max}")
    negative = _string(doc, "negative_prompt")
    if negative is not None and len(negative) > NEGATIVE_PROMPT_MAX:
        raise invalid("negative_prompt", f"is {len(negative)} characters; at most {NEGATIVE_PROMPT_MAX}")

    parameters: dict[str, Any] = {"size": _string(doc, "size") or rules.default_size}
    if parameters["size"] not in rules.sizes:
        raise invalid(
            "size", f"{parameters['size']!r} is not allowed for {model}; expected one of {', '.join(rules.sizes)}"
        )
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
        "prompt": prompt,
        "negative_prompt": negative,
        "parameters": parameters,
        "metadata": metadata,
        "callback": None if callback is None else check_callback(callback, allow_private_callbacks),
    }
