"""``wanhook eventbridge setup``: the rule and target of deploy/eventbridge/, as the SDK would send them.

Nothing here reaches Alibaba Cloud. The dry run goes through the command line; the real path runs the SDK's own
client with its transport (``call_api``) replaced by a recorder, so the test sees the exact API parameters.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from alibabacloud_tea_openapi.exceptions import ClientException

from service import cli
from service import eventbridge as eb
from service.config import ConfigError

from .support import ROOT, wanhook

DEFINITIONS = ROOT / "deploy" / "eventbridge"
REGION = "cn-beijing"
URL = "https://wanhook.example.org/v1/events/dashscope"
TOKEN = "eb-token-0123456789abcdef"
DLQ = "acs:mq:cn-beijing:1234567890123456:/instances/rmq-cn-abc/topic/wanhook-dead-letters"
TOPIC = "acs:mq:cn-beijing:1234567890123456:/instances/rmq-cn-abc/topic/dashscope-completions"
HTTP_ARGS = ["--region", REGION, "--url", URL, "--dead-letter-arn", DLQ]
ROCKETMQ_ARGS = ["--region", REGION, "--target", "rocketmq", "--topic-arn", TOPIC, "--dead-letter-arn", DLQ]


def definition(name: str) -> dict[str, Any]:
    return json.loads((DEFINITIONS / name).read_text())


def clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("ALIBABA_CLOUD_", "WANHOOK_", "DASHSCOPE_"))}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def dry_run(*args: str) -> list[tuple[str, dict[str, Any]]]:
    """The calls a dry run prints, as (operation, body); no credentials in the environment."""
    result = subprocess.run(wanhook("eventbridge", "setup", "--dry-run", *args), cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env=clean_env(WANHOOK_EVENTBRIDGE_TOKEN=TOKEN))
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout + result.stderr
    calls = []
    for block in result.stdout.split("\n\n")[1:]:
        heading, body = block.split("\n", 1)
        calls.append((heading.split()[0], json.loads(body)))
    return calls


def test_dry_run_prints_each_call_for_the_http_target() -> None:
    calls = dry_run(*HTTP_ARGS)
    assert [operation for operation, _ in calls] == ["GetRule", "CreateRule", "UpdateRule", "PutTargets"]
    bodies = dict(calls)
    rule = definition("rule.json")
    for operation in ("CreateRule", "UpdateRule"):
        assert json.loads(bodies[operation]["FilterPattern"]) == rule["FilterPattern"]
        assert bodies[operation]["RuleName"] == rule["RuleName"]
        assert bodies[operation]["EventBusName"] == rule["EventBusName"]
    [target] = bodies["PutTargets"]["Targets"]
    expected = copy.deepcopy(definition("http-target.json")["Targets"][0])
    template_url = expected["Endpoint"]
    expected["Endpoint"] = URL
    expected["DeadLetterQueue"]["Arn"] = DLQ
    for param in expected["ParamList"]:
        if param.get("Value") == template_url:
            param["Value"] = URL
        if param["ResourceKey"].lower() == "token":
            param["Value"] = eb.REDACTED
    assert target == expected
    assert target["PushRetryStrategy"] == "EXPONENTIAL_DECAY_RETRY"


def test_dry_run_prints_each_call_for_the_rocketmq_target() -> None:
    bodies = dict(dry_run(*ROCKETMQ_ARGS))
    [target] = bodies["PutTargets"]["Targets"]
    params = {param["ResourceKey"]: param for param in target["ParamList"]}
    assert target["Endpoint"] == TOPIC
    assert params["InstanceId"]["Value"] == "rmq-cn-abc"
    assert params["Topic"]["Value"] == "dashscope-completions"
    assert params["Keys"] == {"ResourceKey": "Keys", "Form": "JSONPATH", "Value": "$.data.task_id"}
    assert params["Tags"]["Value"] == "AsyncTaskFinish"
    assert set(params) == {"InstanceId", "Topic", "Body", "Keys", "Tags"}  # the page's keys, no Properties
    assert target["DeadLetterQueue"] == {"Arn": DLQ}
    assert target["ErrorsTolerance"] == "ALL"
    assert target["PushRetryStrategy"] == "EXPONENTIAL_DECAY_RETRY"


def test_sdk_requests_carry_the_definitions() -> None:
    plan = eb.build_plan(eb.load_definitions(DEFINITIONS), target="http", region=REGION, url=URL, token=TOKEN,
                         dead_letter_arn=DLQ)
    requests = eb.build_requests(plan)
    create = requests["CreateRule"]
    assert json.loads(create.filter_pattern) == definition("rule.json")["FilterPattern"]
    assert create.status == "ENABLE" and create.event_targets is None  # targets go in by PutTargets
    put = requests["PutTargets"]
    [target] = put.targets
    assert target.push_retry_strategy == "EXPONENTIAL_DECAY_RETRY"
    assert target.dead_letter_queue.arn == DLQ
    assert target.endpoint == URL
    params = {param.resource_key: param for param in target.param_list}
    assert set(params) == {param["ResourceKey"] for param in definition("http-target.json")["Targets"][0]["ParamList"]}
    assert params["Body"].form == "ORIGINAL" and params["Body"].value is None
    assert params["Token"].value == TOKEN
    assert params["url"].value == URL
    assert params["Network"].value == "PublicNetwork"
    assert target.type == "https"


def test_a_field_the_sdk_would_drop_is_refused() -> None:
    definitions = eb.load_definitions(DEFINITIONS)
    definitions["http-target.json"]["Targets"][0]["RetryPolicy"] = "ALWAYS"  # not a PutTargets field
    plan = eb.build_plan(definitions, target="http", region=REGION, url=URL, token=TOKEN, dead_letter_arn=DLQ)
    with pytest.raises(ConfigError, match="would not send"):
        eb.build_requests(plan)


class Recorder:
    """The SDK client's transport: records each call's action and query, answers as EventBridge would."""

    def __init__(self, rule_exists: bool, put_errors: list[dict[str, str]] | None = None) -> None:
        self.rule_exists = rule_exists
        self.put_errors = put_errors or []
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, params: Any, request: Any, runtime: Any) -> dict[str, Any]:
        self.calls.append((params.action, dict(request.query)))
        if params.action == "GetRule" and not self.rule_exists:
            raise ClientException(code=eb.RULE_MISSING, message="The event rule not existed!", status_code=404)
        data: dict[str, Any] = {}
        if params.action == "PutTargets":
            data = {"ErrorEntriesCount": len(self.put_errors), "ErrorEntries": self.put_errors}
        return {"statusCode": 200, "headers": {},
                "body": {"Code": "Success", "Success": True, "RequestId": f"req-{params.action}", "Data": data}}


def applied(recorder: Recorder, monkeypatch: pytest.MonkeyPatch, target: str = "http") -> str:
    extra = {"url": URL, "token": TOKEN} if target == "http" else {"topic_arn": TOPIC}
    plan = eb.build_plan(eb.load_definitions(DEFINITIONS), target=target, region=REGION, dead_letter_arn=DLQ,
                         **extra)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "test-key-id")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "test-secret")
    client = eb.make_client(REGION, None)
    client.call_api = recorder  # type: ignore[attr-defined]  # the transport; everything above it is the SDK's
    out = io.StringIO()
    eb.apply(plan, client, out)
    return out.getvalue()


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_SECURITY_TOKEN",
                 "ALIBABA_CLOUD_REGION_ID", "WANHOOK_EVENTBRIDGE_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_a_new_rule_is_created_then_its_target_put(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder(rule_exists=False)
    output = applied(recorder, monkeypatch)
    assert [action for action, _ in recorder.calls] == ["GetRule", "CreateRule", "PutTargets"]
    create = recorder.calls[1][1]
    assert json.loads(create["FilterPattern"]) == definition("rule.json")["FilterPattern"]
    assert "EventTargets" not in create
    targets = json.loads(recorder.calls[2][1]["Targets"])  # the SDK sends the list as one JSON string
    assert targets[0]["PushRetryStrategy"] == "EXPONENTIAL_DECAY_RETRY"
    assert targets[0]["DeadLetterQueue"]["Arn"] == DLQ
    assert "req-PutTargets" in output and TOKEN not in output


def test_an_existing_rule_is_updated_so_setup_can_run_again(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder(rule_exists=True)
    applied(recorder, monkeypatch, target="rocketmq")
    assert [action for action, _ in recorder.calls] == ["GetRule", "UpdateRule", "PutTargets"]
    targets = json.loads(recorder.calls[2][1]["Targets"])
    assert targets[0]["Type"] == "acs.rocketmq" and targets[0]["Endpoint"] == TOPIC


def test_a_refused_target_fails_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder(rule_exists=True, put_errors=[{"EntryId": "wanhook-webhook", "ErrorCode": "InvalidArgument",
                                                       "ErrorMessage": "bad url"}])
    with pytest.raises(eb.SetupError, match="InvalidArgument"):
        applied(recorder, monkeypatch)


def test_any_other_get_rule_failure_stops_before_writing(monkeypatch: pytest.MonkeyPatch) -> None:
    class Denied(Recorder):
        def __call__(self, params: Any, request: Any, runtime: Any) -> dict[str, Any]:
            self.calls.append((params.action, {}))
            raise ClientException(code="AccessDenied", message="not allowed", status_code=403)

    recorder = Denied(rule_exists=True)
    with pytest.raises(eb.SetupError, match="AccessDenied"):
        applied(recorder, monkeypatch)
    assert [action for action, _ in recorder.calls] == ["GetRule"]


@pytest.mark.parametrize(("args", "message"), [
    (["--url", URL, "--dead-letter-arn", DLQ], "region"),
    (["--region", REGION, "--dead-letter-arn", DLQ], "--url"),
    (["--region", REGION, "--url", "http://wanhook.example.org/v1/events/dashscope", "--dead-letter-arn", DLQ],
     "https"),
    (["--region", REGION, "--url", URL], "--dead-letter-arn"),
    (["--region", "cn-shanghai", "--url", URL, "--dead-letter-arn", DLQ], "cn-beijing but the rule is in cn-shanghai"),
    (["--region", REGION, "--target", "rocketmq", "--dead-letter-arn", DLQ], "--topic-arn"),
    (["--region", REGION, "--target", "rocketmq", "--topic-arn", "dashscope-events", "--dead-letter-arn", DLQ],
     "--topic-arn"),
    ([*HTTP_ARGS, "--definitions", "/nonexistent"], "--definitions"),
])
def test_incomplete_or_inconsistent_input_is_refused(args: list[str], message: str, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WANHOOK_EVENTBRIDGE_TOKEN", TOKEN)
    assert cli.main(["eventbridge", "setup", "--dry-run", *args]) == 2
    assert message in capsys.readouterr().err


def test_the_token_is_required_for_the_http_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["eventbridge", "setup", "--dry-run", *HTTP_ARGS]) == 2
    assert "WANHOOK_EVENTBRIDGE_TOKEN" in capsys.readouterr().err


def test_a_real_run_needs_credentials_and_sends_nothing_without(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["eventbridge", "setup", *HTTP_ARGS, "--token", TOKEN]) == 2
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in capsys.readouterr().err


def test_an_installed_copy_finds_the_definitions_under_its_prefix() -> None:
    # The image copies deploy/eventbridge/ there; see deploy/docker/Dockerfile.
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    assert "COPY deploy/eventbridge/ /opt/wanhook/share/wanhook/eventbridge/" in dockerfile
    assert eb.default_definitions() == DEFINITIONS
    assert Path(eb.__file__).resolve().parent.parent == ROOT
