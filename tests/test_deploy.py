"""The EventBridge definitions in deploy/ select exactly DashScope's video completions, as the emulator
(and the spec's example) shape them, and route them the recommended way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .support import ROOT

DEPLOY = ROOT / "deploy" / "eventbridge"
SPEC_EXAMPLE = {
    "source": "acs.dashscope", "type": "dashscope:System:AsyncTaskFinish", "id": "81765e5b",
    "data": {"task_id": "a154c328", "task_status": "SUCCEEDED",
             "user_api_unique_key": "apikey:v1:audio:asr:transcription:paraformer-8k-v1"},
}


def load(name: str) -> dict[str, Any]:
    return json.loads((DEPLOY / name).read_text())


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """EventBridge's matching for the forms the rule uses: lists of values or of {"suffix": ...}."""
    for field, rule in pattern.items():
        value = event.get(field)
        if isinstance(rule, dict):
            if not isinstance(value, dict) or not matches(rule, value):
                return False
        elif not any(value == option or (isinstance(option, dict) and isinstance(value, str)
                                         and value.endswith(option["suffix"])) for option in rule):
            return False
    return True


def jsonpath(event: dict[str, Any], path: str) -> Any:
    value: Any = event
    for part in path.removeprefix("$.").split("."):
        value = value[part]
    return value


def test_rule_selects_video_completions_only() -> None:
    from emulator.eventbridge import USER_API_KEY_PREFIX
    from service.models import MODELS

    pattern = load("rule.json")["FilterPattern"]
    assert not matches(pattern, SPEC_EXAMPLE)  # an ASR task: another product
    video = json.loads(json.dumps(SPEC_EXAMPLE))
    for model in MODELS:  # every model wanhook accepts, keyed as the emulator (and DashScope) key it
        video["data"]["user_api_unique_key"] = USER_API_KEY_PREFIX + model
        assert matches(pattern, video), model
    assert not matches(pattern, {**video, "source": "acs.oss"})
    assert not matches(pattern, {**video, "type": "dashscope:System:Other"})


def test_targets_use_the_recommended_settings() -> None:
    http = load("http-target.json")["Targets"][0]
    rocketmq = load("rocketmq-target.json")["Targets"][0]
    for target in (http, rocketmq):
        assert target["PushRetryStrategy"] == "EXPONENTIAL_DECAY_RETRY"
        assert target["DeadLetterQueue"]["Arn"]
        assert {"ResourceKey": "Body", "Form": "ORIGINAL"} in target["ParamList"]
    params = {p["ResourceKey"]: p for p in rocketmq["ParamList"]}
    assert jsonpath(SPEC_EXAMPLE, params["Keys"]["Value"]) == SPEC_EXAMPLE["data"]["task_id"]
    assert params["Tags"]["Value"] == "AsyncTaskFinish"
    assert params["InstanceType"]["Value"] == "Cloud_5"  # 5.x: the consumer's gRPC client cannot talk to 4.x
    assert http["Endpoint"].endswith("/v1/events/dashscope")
    assert all(load(name)["RuleName"] == load("rule.json")["RuleName"]
               for name in ("http-target.json", "rocketmq-target.json"))


def test_files_are_plain_json() -> None:
    for path in Path(DEPLOY).glob("*.json"):
        json.loads(path.read_text())
