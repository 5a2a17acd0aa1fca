"""``wanhook eventbridge setup``: the rule and target of deploy/eventbridge/, as the SDK would send them.

Nothing here reaches Alibaba Cloud. The dry run goes through the command line; the real path runs the SDK's own
client with its transport (``call_api``) replaced by a recorder, so the test sees the exact API parameters.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from alibabacloud_tea_openapi.exceptions import ClientException

from wanhook.service.cli import eventbridge as eb
from wanhook.service.cli import eventbridge_limits as lim
from wanhook.service.cli import main as cli
from wanhook.service.core.errors import ConfigError

from ..support import ROOT, wanhook

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
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ALIBABA_CLOUD_", "WANHOOK_", "DASHSCOPE_"))
    }
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def dry_run(*args: str) -> list[tuple[str, dict[str, Any]]]:
    """The calls a dry run prints, as (operation, body); no credentials in the environment."""
    result = subprocess.run(
        wanhook("eventbridge", "setup", "--dry-run", *args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(WANHOOK_EVENTBRIDGE_TOKEN=TOKEN),
    )
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
    plan = eb.build_plan(
        eb.load_definitions(DEFINITIONS), target="http", region=REGION, url=URL, token=TOKEN, dead_letter_arn=DLQ
    )
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
        return {
            "statusCode": 200,
            "headers": {},
            "body": {"Code": "Success", "Success": True, "RequestId": f"req-{params.action}", "Data": data},
        }


def applied(recorder: Recorder, monkeypatch: pytest.MonkeyPatch, target: str = "http") -> str:
    extra = {"url": URL, "token": TOKEN} if target == "http" else {"topic_arn": TOPIC}
    plan = eb.build_plan(eb.load_definitions(DEFINITIONS), target=target, region=REGION, dead_letter_arn=DLQ, **extra)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "test-key-id")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "test-secret")
    client = eb.make_client(REGION, None)
    client.call_api = recorder  # type: ignore[attr-defined]  # the transport; everything above it is the SDK's
    out = io.StringIO()
    eb.apply(plan, client, out)
    return out.getvalue()


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_SECURITY_TOKEN",
        "ALIBABA_CLOUD_REGION_ID",
        "WANHOOK_EVENTBRIDGE_TOKEN",
    ):
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
    recorder = Recorder(
        rule_exists=True,
        put_errors=[{"EntryId": "wanhook-webhook", "ErrorCode": "InvalidArgument", "ErrorMessage": "bad url"}],
    )
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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", URL, "--dead-letter-arn", DLQ], "region"),
        (["--region", REGION, "--dead-letter-arn", DLQ], "--url"),
        (
            ["--region", REGION, "--url", "http://wanhook.example.org/v1/events/dashscope", "--dead-letter-arn", DLQ],
            "https",
        ),
        (["--region", REGION, "--url", URL], "--dead-letter-arn"),
        (
            ["--region", "cn-shanghai", "--url", URL, "--dead-letter-arn", DLQ],
            "cn-beijing but the rule is in cn-shanghai",
        ),
        (["--region", REGION, "--target", "rocketmq", "--dead-letter-arn", DLQ], "--topic-arn"),
        (
            ["--region", REGION, "--target", "rocketmq", "--topic-arn", "dashscope-events", "--dead-letter-arn", DLQ],
            "--topic-arn",
        ),
        ([*HTTP_ARGS, "--definitions", "/nonexistent"], "--definitions"),
    ],
)
def test_incomplete_or_inconsistent_input_is_refused(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
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
    assert Path(eb.__file__).resolve().parents[2] == ROOT


# --- the documented limits: each one broken once, refused before any call with the limit and its page ------------


def refused(change: Any, target: str = "http", **overrides: str) -> str:
    """build_plan's one-line refusal after ``change(definitions)``; the shipped definitions otherwise."""
    definitions = eb.load_definitions(DEFINITIONS)
    change(definitions)
    args: dict[str, Any] = {"url": URL, "token": TOKEN} if target == "http" else {"topic_arn": TOPIC}
    with pytest.raises(ConfigError) as refusal:
        eb.build_plan(definitions, target=target, region=REGION, **{"dead_letter_arn": DLQ, **args, **overrides})
    message = str(refusal.value)
    assert "\n" not in message and TOKEN not in message
    return message


def rule_pattern(definitions: dict[str, Any]) -> dict[str, Any]:
    return definitions["rule.json"]["FilterPattern"]


def param(definitions: dict[str, Any], name: str, key: str) -> dict[str, Any]:
    [one] = [p for p in definitions[name]["Targets"][0]["ParamList"] if p["ResourceKey"] == key]
    return one


def http_one(definitions: dict[str, Any]) -> dict[str, Any]:
    return definitions["http-target.json"]["Targets"][0]


def mq_one(definitions: dict[str, Any]) -> dict[str, Any]:
    return definitions["rocketmq-target.json"]["Targets"][0]


SEVEN_SUFFIXES = [{"suffix": f":wan2.{n}-t2v-plus"} for n in range(7)]


@pytest.mark.parametrize(
    ("change", "target", "expected", "source"),
    [
        # the pattern
        (
            lambda d: rule_pattern(d)["data"].update(user_api_unique_key=SEVEN_SUFFIXES),
            "http",
            "FilterPattern field data.user_api_unique_key: has 7 expressions; "
            "EventBridge: at most 5 expressions per field",
            lim.LIMITS_PAGE,
        ),
        (
            lambda d: rule_pattern(d).update(source=[f"acs.s{n}" for n in range(6)]),
            "http",
            "FilterPattern field source: has 6 expressions",
            lim.LIMITS_PAGE,
        ),
        (
            lambda d: rule_pattern(d).update(type=[{"equals-ignore-case": "x"}]),
            "http",
            "FilterPattern field type: uses the operator equals-ignore-case",
            lim.PATTERNS_PAGE,
        ),
        (lambda d: rule_pattern(d).update(type=[{}]), "http", "has an empty operator object", lim.PATTERNS_PAGE),
        (
            lambda d: rule_pattern(d).update(source="acs.dashscope"),
            "http",
            "FilterPattern field source: is not a non-empty array",
            lim.PATTERNS_PAGE,
        ),
        (lambda d: rule_pattern(d).update(source=[]), "http", "is not a non-empty array", lim.PATTERNS_PAGE),
        (
            lambda d: rule_pattern(d).update(source=[["acs.dashscope"]]),
            "http",
            "has an array inside its array",
            lim.PATTERNS_PAGE,
        ),
        (
            lambda d: rule_pattern(d).update(data={}),
            "http",
            "FilterPattern field data: is an empty object",
            lim.PATTERNS_PAGE,
        ),
        (
            lambda d: d["rule.json"].update(FilterPattern=[]),
            "http",
            "FilterPattern: is not a non-empty JSON object",
            lim.PATTERNS_PAGE,
        ),
        # names and status
        (
            lambda d: d["rule.json"].update(RuleName="r" * 128),
            "http",
            "RuleName: 'rrrrrrrrrrrrrrrrrrrr'... has 128",
            lim.LIMITS_PAGE,
        ),
        (
            lambda d: d["rule.json"].update(RuleName="wanhook_video"),
            "http",
            "RuleName: 'wanhook_video' is not a valid",
            lim.LIMITS_PAGE,
        ),
        (
            lambda d: d["rule.json"].update(RuleName="-wanhook"),
            "http",
            "RuleName: '-wanhook' is not a valid",
            lim.LIMITS_PAGE,
        ),
        (
            lambda d: d["rule.json"].update(RuleName="eventbridge-reserved-wanhook"),
            "http",
            "is not a valid name",
            lim.LIMITS_PAGE,
        ),
        (
            lambda d: d["rule.json"].update(EventBusName="dashscope.bus"),
            "http",
            "EventBusName: 'dashscope.bus'",
            lim.LIMITS_PAGE,
        ),
        (
            lambda d: d["rule.json"].update(Status="ENABLED"),
            "http",
            "Status: 'ENABLED'; EventBridge: a rule's Status",
            lim.TARGETS_PAGE,
        ),
        # target ids
        (
            lambda d: mq_one(d).update(Id="wanhook-webhook"),
            "http",
            "rocketmq-target.json Id: 'wanhook-webhook' is also the Id in http-target.json",
            lim.TARGETS_PAGE,
        ),
        (lambda d: http_one(d).update(Id=""), "http", "http-target.json Id: missing", lim.TARGETS_PAGE),
        # retries, fault tolerance, dead letters
        (
            lambda d: http_one(d).update(PushRetryStrategy="LINEAR_RETRY"),
            "http",
            "http-target.json PushRetryStrategy: 'LINEAR_RETRY'; EventBridge: PushRetryStrategy is required",
            lim.TARGETS_PAGE,
        ),
        (
            lambda d: mq_one(d).pop("PushRetryStrategy"),
            "rocketmq",
            "rocketmq-target.json PushRetryStrategy: None",
            lim.TARGETS_PAGE,
        ),
        (lambda d: http_one(d).update(ErrorsTolerance="SOME"), "http", "ErrorsTolerance: 'SOME'", lim.SDK_TARGETS),
        # Forms per key, values, sizes
        (
            lambda d: mq_one(d)["ParamList"].append({"ResourceKey": "Properties", "Form": "CONSTANT", "Value": "{}"}),
            "rocketmq",
            "parameter Properties: has Form CONSTANT; EventBridge: Properties takes Form JSONPATH, TEMPLATE",
            lim.TARGETS_PAGE,
        ),
        (
            lambda d: param(d, "http-target.json", "Body").update(Form="RAW"),
            "http",
            "parameter Body: has Form 'RAW'; EventBridge: Form is ORIGINAL, JSONPATH, CONSTANT or TEMPLATE",
            lim.TARGETS_PAGE,
        ),
        (
            lambda d: param(d, "http-target.json", "Token").update(Form="JSONPATH"),
            "http",
            "parameter Token: has Form JSONPATH; EventBridge: Token takes Form CONSTANT",
            lim.TARGETS_PAGE,
        ),
        (
            lambda d: param(d, "rocketmq-target.json", "Keys").update(Value=""),
            "rocketmq",
            "parameter Keys: has Form JSONPATH but no Value",
            lim.TARGETS_PAGE,
        ),
        (
            lambda d: param(d, "rocketmq-target.json", "Body").update(
                Form="TEMPLATE", Value='{"id": "$.data.task_id"}'
            ),
            "rocketmq",
            "parameter Body: has Form TEMPLATE but no Template",
            lim.TARGETS_PAGE,
        ),
        (
            lambda d: param(d, "rocketmq-target.json", "Tags").update(Value="t" * 10_241),
            "rocketmq",
            "parameter Tags: has a Value of 10,241 characters; "
            "EventBridge: a parameter's Value and Template have at most 10,240",
            lim.LIMITS_PAGE,
        ),
        (
            lambda d: param(d, "rocketmq-target.json", "Body").update(
                Form="TEMPLATE", Value="{}", Template="x" * 10_241
            ),
            "rocketmq",
            "has a Template of 10,241 characters",
            lim.LIMITS_PAGE,
        ),
        (
            lambda d: param(d, "http-target.json", "Network").update(Value="Internet"),
            "http",
            "parameter Network: is 'Internet'; EventBridge: Network is PublicNetwork or PrivateNetwork",
            lim.TARGETS_PAGE,
        ),
        # keys per target type
        (
            lambda d: http_one(d)["ParamList"].append(
                {"ResourceKey": "AuthType", "Form": "CONSTANT", "Value": "TOKEN"}
            ),
            "http",
            "http-target.json ParamList: AuthType is not one of them; EventBridge: a https target's keys are url, "
            "Body, Network",
            lim.TARGETS_PAGE,
        ),
        (
            lambda d: param(d, "http-target.json", "url").update(ResourceKey="URL"),
            "http",
            "URL is not one of them (the page spells it url)",
            lim.TARGETS_PAGE,
        ),
        (
            lambda d: mq_one(d)["ParamList"].append(
                {"ResourceKey": "InstanceType", "Form": "CONSTANT", "Value": "Cloud_5"}
            ),
            "rocketmq",
            "InstanceType is not one of them",
            lim.TARGETS_PAGE,
        ),
        (
            lambda d: http_one(d)["ParamList"].remove(param(d, "http-target.json", "Network")),
            "http",
            "http-target.json ParamList: lacks Network; EventBridge: a https target needs url, Body, Network",
            lim.TARGETS_PAGE,
        ),
        (
            lambda d: param(d, "http-target.json", "Network").update(Value="PrivateNetwork"),
            "http",
            "lacks VPCNameAndId, VSwitchesNameAndId, SecurityGroupNameAndId",
            lim.TARGETS_PAGE,
        ),
        (
            lambda d: mq_one(d)["ParamList"].append({"ResourceKey": "Body", "Form": "ORIGINAL"}),
            "rocketmq",
            "rocketmq-target.json ParamList: has Body twice",
            lim.TARGETS_PAGE,
        ),
        (
            lambda d: param(d, "http-target.json", "url").update(
                Value="https://elsewhere.example.org/v1/events/dashscope"
            ),
            "http",
            "parameter url: differs from the Endpoint",
            lim.TARGETS_PAGE,
        ),
    ],
)
def test_a_definition_breaking_a_documented_limit_is_refused(
    change: Any, target: str, expected: str, source: str
) -> None:
    message = refused(change, target)
    assert expected in message
    assert message.endswith(f"({source})")


def test_a_dead_letter_queue_of_an_undocumented_kind_is_refused() -> None:
    kafka = "acs:alikafka:cn-beijing:1234567890123456:topics/wanhook-dead-letters"
    message = refused(lambda d: None, dead_letter_arn=kafka)
    assert f"DeadLetterQueue.Arn: {kafka!r} is neither form" in message and lim.TARGETS_PAGE in message
    mns = "acs:mns:cn-beijing:1234567890123456:/queues/wanhook-dead-letters"  # the other documented kind
    eb.build_plan(
        eb.load_definitions(DEFINITIONS), target="http", region=REGION, url=URL, token=TOKEN, dead_letter_arn=mns
    )


@pytest.mark.parametrize(
    ("change", "target", "expected"),
    [
        # The shape the HTTP target had before: an API destination's Type with an HTTPS Endpoint.
        (
            lambda d: http_one(d).update(Type="acs.api.destination"),
            "http",
            "http-target.json: Type 'acs.api.destination' is not https",
        ),
        (lambda d: http_one(d).update(Type="http"), "http", "http-target.json: Type 'http' is not https"),
        (
            lambda d: mq_one(d).update(Type="acs.mns.queue"),
            "rocketmq",
            "rocketmq-target.json: Type 'acs.mns.queue' is not acs.rocketmq",
        ),
    ],
)
def test_each_target_file_holds_its_documented_type(change: Any, target: str, expected: str) -> None:
    message = refused(change, target)
    assert expected in message and lim.TARGETS_PAGE in message


def test_limits_hold_at_their_bounds() -> None:
    definitions = eb.load_definitions(DEFINITIONS)
    rule_pattern(definitions)["data"]["user_api_unique_key"] = SEVEN_SUFFIXES[:5]
    definitions["rule.json"]["RuleName"] = "w" * 127
    param(definitions, "rocketmq-target.json", "Tags")["Value"] = "t" * 10_240
    plan = eb.build_plan(definitions, target="rocketmq", region=REGION, topic_arn=TOPIC, dead_letter_arn=DLQ)
    assert plan.create_rule.body["RuleName"] == "w" * 127
    for strategy in lim.PUSH_RETRY_STRATEGIES:
        mq_one(definitions)["PushRetryStrategy"] = strategy
        eb.build_plan(definitions, target="rocketmq", region=REGION, topic_arn=TOPIC, dead_letter_arn=DLQ)


def test_the_rule_name_from_the_command_line_is_checked_too(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["eventbridge", "setup", "--dry-run", *HTTP_ARGS, "--token", TOKEN, "--rule", "wanhook video"])
    assert code == 2
    assert "RuleName: 'wanhook video' is not a valid name" in capsys.readouterr().err


def test_the_api_destination_form_is_checked_as_documented() -> None:
    # Not shipped, but documented: its Endpoint is an acs:api-destination ARN and its Name key names it.
    target = {
        "Id": "wanhook-api",
        "Type": "acs.api.destination",
        "PushRetryStrategy": "BACKOFF_RETRY",
        "Endpoint": "acs:api-destination:cn-beijing:1234567890123456:name/wanhook",
        "ParamList": [{"ResourceKey": "Name", "Form": "CONSTANT", "Value": "wanhook"}],
    }
    lim.check_target(target, "t")
    for change, expected in (
        ({"Endpoint": URL}, "Endpoint: 'https://wanhook.example.org/v1/events/dashscope' does not fit"),
        ({"ParamList": [{"ResourceKey": "Name", "Form": "CONSTANT", "Value": "other"}]}, "differs from the Endpoint"),
        ({"ParamList": []}, "lacks Name"),
        (
            {"ParamList": [*target["ParamList"], {"ResourceKey": "URL", "Form": "CONSTANT", "Value": URL}]},
            "URL is not one of them",
        ),
        ({"Type": "acs.http"}, "Type: 'acs.http' is not one of them"),
    ):
        with pytest.raises(lim.LimitError, match=re.escape(expected)):
            lim.check_target({**target, **change}, "t")


def test_at_most_five_targets_on_one_rule() -> None:
    lim.check_target_ids((f"t{n}", {"Id": f"target-{n}"}) for n in range(5))
    with pytest.raises(lim.LimitError, match="6 targets on one rule; EventBridge: at most 5 targets per rule"):
        lim.check_target_ids((f"t{n}", {"Id": f"target-{n}"}) for n in range(6))


def test_the_shipped_definitions_pass_every_check() -> None:
    for target, extra in (("http", {"url": URL, "token": TOKEN}), ("rocketmq", {"topic_arn": TOPIC})):
        plan = eb.build_plan(
            eb.load_definitions(DEFINITIONS), target=target, region=REGION, dead_letter_arn=DLQ, **extra
        )
        lim.check_rule({**plan.create_rule.body, "FilterPattern": json.loads(plan.create_rule.body["FilterPattern"])})
        [one] = plan.put_targets.body["Targets"]
        lim.check_target(one, target)


def write_definitions(directory: Path, change: Any) -> Path:
    definitions = eb.load_definitions(DEFINITIONS)
    change(definitions)
    for name, body in definitions.items():
        (directory / name).write_text(json.dumps(body))
    return directory


def test_the_command_says_which_limit_in_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = write_definitions(tmp_path, lambda d: rule_pattern(d)["data"].update(user_api_unique_key=SEVEN_SUFFIXES))
    assert (
        cli.main(["eventbridge", "setup", "--dry-run", *HTTP_ARGS, "--token", TOKEN, "--definitions", str(broken)]) == 2
    )
    captured = capsys.readouterr()
    assert captured.out == ""  # not one call printed
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert "has 7 expressions; EventBridge: at most 5 expressions per field" in lines[0]
    assert lim.LIMITS_PAGE in lines[0]


def test_a_real_run_checks_before_it_makes_a_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = write_definitions(tmp_path, lambda d: param(d, "http-target.json", "Token").update(Form="TEMPLATE"))
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "test-key-id")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "test-secret")

    def no_client(*args: Any) -> Any:
        raise AssertionError("a client was made for a definition that breaks a limit")

    monkeypatch.setattr(eb, "make_client", no_client)
    assert cli.main(["eventbridge", "setup", *HTTP_ARGS, "--token", TOKEN, "--definitions", str(broken)]) == 2
    assert "parameter Token: has Form TEMPLATE; EventBridge: Token takes Form CONSTANT" in capsys.readouterr().err
