"""The EventBridge definitions in deploy/ select exactly DashScope's video completions, as the emulator
(and the spec's example) shape them, and route them the recommended way."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

from wanhook.service.cli import eventbridge_limits as limits

from ..support import ROOT

DEPLOY = ROOT / "deploy" / "eventbridge"
SPEC_EXAMPLE = {
    "source": "acs.dashscope",
    "type": "dashscope:System:AsyncTaskFinish",
    "id": "81765e5b",
    "data": {
        "task_id": "a154c328",
        "task_status": "SUCCEEDED",
        "user_api_unique_key": "apikey:v1:audio:asr:transcription:paraformer-8k-v1",
    },
}


def load(name: str) -> dict[str, Any]:
    return json.loads((DEPLOY / name).read_text())


def _operator(option: dict[str, Any], value: Any, present: bool) -> bool:
    """One operator object of EventBridge's event patterns page; several keys in one object must all hold."""
    for name, argument in option.items():
        if name == "exists":
            held = present is argument
        elif not present:
            held = False
        elif name == "prefix":
            held = isinstance(value, str) and value.startswith(argument)
        elif name == "suffix":
            held = isinstance(value, str) and value.endswith(argument)
        elif name == "contains":
            held = isinstance(value, str) and argument in value
        elif name == "anything-but":
            if isinstance(argument, dict):
                held = not _operator(argument, value, present)
            else:
                held = value not in (argument if isinstance(argument, list) else [argument])
        elif name == "numeric":
            pairs = zip(argument[::2], argument[1::2], strict=True)
            compare = {">": float.__gt__, ">=": float.__ge__, "<": float.__lt__, "<=": float.__le__, "=": float.__eq__}
            held = isinstance(value, int | float) and all(compare[op](float(value), bound) for op, bound in pairs)
        elif name == "cidr":
            try:
                held = ipaddress.ip_address(value) in ipaddress.ip_network(argument)
            except ValueError:
                held = False
        else:
            raise AssertionError(f"{name} is not an operator of the event patterns page")
        if not held:
            return False
    return True


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """EventBridge's matching (event patterns page): every field of the pattern (AND), any entry of its array (OR)."""
    for field, rule in pattern.items():
        present, value = field in event, event.get(field)
        if isinstance(rule, dict):
            if not isinstance(value, dict) or not matches(rule, value):
                return False
        elif not any(
            _operator(option, value, present) if isinstance(option, dict) else present and value == option
            for option in rule
        ):
            return False
    return True


def jsonpath(event: dict[str, Any], path: str) -> Any:
    value: Any = event
    for part in path.removeprefix("$.").split("."):
        value = value[part]
    return value


def with_key(unique_key: str) -> dict[str, Any]:
    event = json.loads(json.dumps(SPEC_EXAMPLE))
    event["data"]["user_api_unique_key"] = unique_key
    return event


def test_rule_selects_the_wan_video_completions_wanhook_makes() -> None:
    from wanhook.emulator.eventbridge import USER_API_KEY_PREFIX
    from wanhook.service.domain.models import MODELS

    pattern = load("rule.json")["FilterPattern"]
    limits.check_pattern(pattern)  # within every documented limit, five expressions per field among them
    assert not matches(pattern, SPEC_EXAMPLE)  # an ASR task: another product
    for model in MODELS:  # every model wanhook accepts, keyed as the emulator keys it, and whatever the group segment
        for prefix in (USER_API_KEY_PREFIX, "apikey:v1:video:video-generation:video-synthesis:"):
            assert matches(pattern, with_key(prefix + model)), model
        # First-and-last-frame tasks are created at image2video, whose name the key carries (emulator, build_event).
        assert matches(pattern, with_key(f"apikey:v1:aigc:image2video:video-synthesis:{model}")), model
    # DashScope's other video and image models share the source, the type and the key's first segments
    # (wan2.6-i2v, the newest image-to-video, is not one wanhook makes yet).
    for other in (
        "wan2.6-i2v",
        "wan2.2-s2v",
        "wanx2.1-vace-plus",
        "wan2.2-t2i-plus",
        "wanx2.1-t2i-turbo",
        "wan2.2-s2v-detect",
        "wanx2.1-imageedit",
        "wan2.5-t2i-preview",
    ):
        assert not matches(pattern, with_key(USER_API_KEY_PREFIX + other)), other
    video = with_key(USER_API_KEY_PREFIX + "wan2.2-t2v-plus")
    assert not matches(pattern, {**video, "source": "acs.oss"})
    assert not matches(pattern, {**video, "type": "dashscope:System:Other"})
    assert not matches(pattern, {**video, "data": {"task_id": "a154c328"}})  # no key at all


def test_the_matcher_follows_the_patterns_page() -> None:
    # The page's own examples, so the test above rests on EventBridge's semantics, not on this file's.
    event = {
        "source": "acs.oss",
        "subject": "acs:oss:cn-hangzhou:1234567:xls-papk/game_apk/123.jpg",
        "type": "oss:ObjectCreated:PostObject",
        "data": {"c-count": 5, "source-ip": "10.0.0.123", "state": None},
    }
    assert matches({"source": ["acs.oss"]}, event)
    assert matches({"source": [{"prefix": "acs."}]}, event)
    assert matches({"subject": [{"suffix": ".jpg"}]}, event)
    assert matches({"type": [{"contains": "Created"}]}, event)
    assert matches({"source": [{"anything-but": "acs.ecs"}]}, event)
    assert not matches({"source": [{"anything-but": {"prefix": "acs."}}]}, event)
    assert matches({"data": {"c-count": [{"numeric": [">", 0, "<=", 5]}]}}, event)
    assert matches({"data": {"source-ip": [{"cidr": "10.0.0.0/24"}]}}, event)
    assert matches({"data": {"state": [None]}}, event)
    assert matches({"data": {"absent": [{"exists": False}]}}, event)
    assert not matches({"data": {"absent": [{"exists": True}]}}, event)
    assert matches({"subject": [{"prefix": "acs:oss:", "suffix": ".jpg"}]}, event)  # one object: both must hold
    assert not matches({"subject": [{"prefix": "acs:oss:", "suffix": ".png"}]}, event)


def test_targets_use_the_recommended_settings() -> None:
    http = load("http-target.json")["Targets"][0]
    rocketmq = load("rocketmq-target.json")["Targets"][0]
    for target in (http, rocketmq):
        assert target["PushRetryStrategy"] == "EXPONENTIAL_DECAY_RETRY"
        assert target["ErrorsTolerance"] == "ALL"  # after the last retry, to the dead-letter queue
        assert target["DeadLetterQueue"]["Arn"]
        assert {"ResourceKey": "Body", "Form": "ORIGINAL"} in target["ParamList"]
    params = {p["ResourceKey"]: p for p in rocketmq["ParamList"]}
    assert jsonpath(SPEC_EXAMPLE, params["Keys"]["Value"]) == SPEC_EXAMPLE["data"]["task_id"]
    assert params["Tags"]["Value"] == "AsyncTaskFinish"
    assert "Properties" not in params  # its Forms are JSONPATH and TEMPLATE only; nothing needs it
    assert http["Type"] == "https" and http["Endpoint"].endswith("/v1/events/dashscope")
    http_params = {p["ResourceKey"]: p for p in http["ParamList"]}
    assert http_params["url"]["Value"] == http["Endpoint"]
    assert http_params["Token"]["Form"] == "CONSTANT"  # sent as x-eventbridge-signature-token, which serve checks
    assert http_params["Network"]["Value"] == "PublicNetwork"
    assert all(
        load(name)["RuleName"] == load("rule.json")["RuleName"] for name in ("http-target.json", "rocketmq-target.json")
    )


def test_files_are_plain_json() -> None:
    for path in Path(DEPLOY).glob("*.json"):
        json.loads(path.read_text())
