"""A ``POST /v1/tasks`` body checked against the model's rules (service/domain/validation.py), field by field."""

from __future__ import annotations

from typing import Any

import pytest

from wanhook.service.core.errors import InvalidRequest
from wanhook.service.domain.models import MODELS, NEGATIVE_PROMPT_MAX, SEED_MAX
from wanhook.service.domain.task import DEFAULT_CALLBACK_EVENTS
from wanhook.service.domain.validation import METADATA_MAX_KEYS, check_task, is_private_host
from wanhook.service.web.responses import status_of

CALLBACK = "https://hooks.example.com/wan"


def refused(doc: Any, **kwargs: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        check_task(doc, **kwargs)
    assert status_of(caught.value) == 422
    return caught.value


def test_the_defaults() -> None:
    assert check_task({"prompt": "a fox"}) == {
        "model": "wan2.2-t2v-plus",
        "prompt": "a fox",
        "negative_prompt": None,
        "parameters": {"size": MODELS["wan2.2-t2v-plus"].default_size},
        "metadata": {},
        "callback": None,
    }


def test_every_field() -> None:
    fields = check_task(
        {
            "prompt": "a fox",
            "model": "wan2.6-t2v",
            "negative_prompt": "blur",
            "size": "1280*720",
            "duration": 10,
            "seed": 0,
            "prompt_extend": True,
            "watermark": False,
            "audio_url": "https://cdn.test/a.mp3",
            "shot_type": "multi",
            "metadata": {"order": "42"},
            "callback": {"url": CALLBACK, "events": ["task.ready", "task.failed", "task.ready"]},
        }
    )
    assert fields == {
        "model": "wan2.6-t2v",
        "prompt": "a fox",
        "negative_prompt": "blur",
        "parameters": {
            "size": "1280*720",
            "duration": 10,
            "seed": 0,
            "prompt_extend": True,
            "watermark": False,
            "audio_url": "https://cdn.test/a.mp3",
            "shot_type": "multi",
        },
        "metadata": {"order": "42"},
        # Each event once, in the order given.
        "callback": {"url": CALLBACK, "events": ["task.ready", "task.failed"]},
    }


def test_a_callback_without_events_gets_the_terminal_ones() -> None:
    assert check_task({"prompt": "a fox", "callback": {"url": CALLBACK}})["callback"] == {
        "url": CALLBACK,
        "events": list(DEFAULT_CALLBACK_EVENTS),
    }


@pytest.mark.parametrize("doc", [[], "a fox", None, 3])
def test_the_body_must_be_an_object(doc: Any) -> None:
    error = refused(doc)
    assert (error.code, getattr(error, "field", None)) == ("invalid_body", None)


WRONG = [
    ({}, "prompt", "is required"),
    ({"prompt": 7}, "prompt", "must be a string"),
    ({"prompt": "  "}, "prompt", "must not be empty"),
    ({"prompt": "x" * 801}, "prompt", "takes at most 800"),
    ({"prompt": "a", "nope": 1}, "nope", "is not a known field"),
    ({"prompt": "a", "resolution": "720P"}, "resolution", "takes size"),
    ({"prompt": "a", "audio": True}, "audio", "no switch"),
    ({"prompt": "a", "model": "wan9"}, "model", "unknown model"),
    ({"prompt": "a", "negative_prompt": "x" * (NEGATIVE_PROMPT_MAX + 1)}, "negative_prompt", "at most"),
    ({"prompt": "a", "size": "1280*720"}, "size", "not allowed for wan2.2-t2v-plus"),
    ({"prompt": "a", "duration": 10}, "duration", "not allowed"),
    ({"prompt": "a", "duration": "5"}, "duration", "must be an integer"),
    ({"prompt": "a", "duration": True}, "duration", "must be an integer"),
    ({"prompt": "a", "seed": -1}, "seed", f"between 0 and {SEED_MAX}"),
    ({"prompt": "a", "seed": SEED_MAX + 1}, "seed", "between"),
    ({"prompt": "a", "watermark": "yes"}, "watermark", "true or false"),
    ({"prompt": "a", "prompt_extend": 1}, "prompt_extend", "true or false"),
    ({"prompt": "a", "audio_url": "https://cdn.test/a.mp3"}, "audio_url", "does not take audio_url"),
    ({"prompt": "a", "model": "wan2.5-t2v-preview", "audio_url": "ftp://cdn.test/a.mp3"}, "audio_url", "http or https"),
    ({"prompt": "a", "model": "wan2.5-t2v-preview", "shot_type": "single"}, "shot_type", "does not take shot_type"),
    ({"prompt": "a", "model": "wan2.6-t2v", "shot_type": "many"}, "shot_type", "is not one of"),
    (
        {"prompt": "a", "model": "wan2.6-t2v", "shot_type": "multi", "prompt_extend": False},
        "shot_type",
        "needs prompt_extend",
    ),
    ({"prompt": "a", "metadata": ["x"]}, "metadata", "string values"),
    ({"prompt": "a", "metadata": {"n": 1}}, "metadata", "string values"),
    ({"prompt": "a", "metadata": {str(i): "v" for i in range(METADATA_MAX_KEYS + 1)}}, "metadata", "at most"),
    ({"prompt": "a", "metadata": {"k": "v" * 512}}, "metadata", "at most"),
    ({"prompt": "a", "callback": "https://x.test"}, "callback", "must be an object"),
    ({"prompt": "a", "callback": {"url": CALLBACK, "secret": "s"}}, "callback", "unknown field 'secret'"),
    ({"prompt": "a", "callback": {}}, "callback.url", "is required"),
    ({"prompt": "a", "callback": {"url": "mailto:a@b.test"}}, "callback.url", "http or https"),
    ({"prompt": "a", "callback": {"url": "http://127.0.0.1:9/"}}, "callback.url", "loopback, private"),
    ({"prompt": "a", "callback": {"url": "http://[::1]/"}}, "callback.url", "loopback, private"),
    ({"prompt": "a", "callback": {"url": "http://printer.local/"}}, "callback.url", "loopback, private"),
    ({"prompt": "a", "callback": {"url": CALLBACK + "\n"}}, "callback.url", "whitespace or control"),
    ({"prompt": "a", "callback": {"url": CALLBACK + "/a\r\nX-Injected: 1"}}, "callback.url", "whitespace or control"),
    ({"prompt": "a", "callback": {"url": CALLBACK + "/a b"}}, "callback.url", "whitespace or control"),
    ({"prompt": "a", "callback": {"url": CALLBACK + "/\x00"}}, "callback.url", "whitespace or control"),
    ({"prompt": "a", "callback": {"url": CALLBACK, "events": []}}, "callback.events", "non-empty list"),
    ({"prompt": "a", "callback": {"url": CALLBACK, "events": ["task.done"]}}, "callback.events", "unknown event"),
]


@pytest.mark.parametrize("doc,field,message", WRONG, ids=[f"{row[1]}-{i}" for i, row in enumerate(WRONG)])
def test_a_wrong_field_is_named(doc: dict[str, Any], field: str, message: str) -> None:
    error = refused(doc)
    assert (error.code, error.field) == ("invalid_field", field)
    assert error.message.startswith(f"{field}: ")
    assert message in error.message


def test_the_first_unknown_field_by_name() -> None:
    assert refused({"prompt": "a", "zeta": 1, "alpha": 2}).field == "alpha"


def test_private_callbacks_when_allowed() -> None:
    fields = check_task({"prompt": "a", "callback": {"url": "http://127.0.0.1:9/"}}, allow_private_callbacks=True)
    assert fields["callback"]["url"] == "http://127.0.0.1:9/"


@pytest.mark.parametrize(
    "host,private",
    [
        ("localhost", True),
        ("api.localhost", True),
        ("nas.local", True),
        ("10.0.0.1", True),
        ("[fe80::1]", True),
        ("169.254.169.254", True),
        ("::ffff:127.0.0.1", True),
        ("8.8.8.8", False),
        ("example.com", False),
    ],
)
def test_private_hosts_by_their_literal_name(host: str, private: bool) -> None:
    assert is_private_host(host) is private
