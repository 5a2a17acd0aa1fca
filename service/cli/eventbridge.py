"""``wanhook eventbridge setup``: the EventBridge rule and target of deploy/eventbridge/, created through the API.

The JSON files in deploy/eventbridge/ are the single definition of the rule and the targets. This command reads
them, fills in what differs per installation (webhook URL, token, topic, dead-letter queue, bus and rule name),
and applies them with Alibaba's ``alibabacloud-eventbridge20200401`` SDK (the ``eventbridge`` extra):

    GetRule -> CreateRule, or UpdateRule when the rule exists -> PutTargets

PutTargets creates or replaces a target by its ``Id``, so running the command again converges instead of failing,
and running it once per ``--target`` puts both targets on the one rule. ``--dry-run`` prints every call with its
request body, the token redacted, and sends nothing.

Before any call, and on ``--dry-run`` too, the rule and the target are checked against every limit EventBridge
documents (``service/cli/eventbridge_limits.py``, each limit beside its page).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO
from urllib.parse import urlsplit

from ..core.errors import CommandError, ConfigError
from . import eventbridge_limits as limits

REDACTED = "<redacted>"
TARGET_FILES = {"http": "http-target.json", "rocketmq": "rocketmq-target.json"}
# EventBridge's answer when GetRule finds no rule of that name (an exception code, or the body's Code).
RULE_MISSING = "EventRuleNotExisted"
PLACEHOLDER = re.compile(r"<[^<>]+>")
MQ_TOPIC_ARN = re.compile(
    r"^acs:mq:(?P<region>[^:]+):(?P<account>[^:]+):/instances/(?P<instance>[^/]+)"
    r"/topic/(?P<topic>[^/]+)$"
)


class SetupError(CommandError):
    """EventBridge refused a call; ``code`` is EventBridge's."""

    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(f"{operation} failed: {code} {message}".rstrip(), code=code)


@dataclass(frozen=True)
class Call:
    operation: str  # the API action: GetRule, CreateRule, UpdateRule, PutTargets
    body: dict[str, Any]  # its parameters under the API's own names, as in deploy/eventbridge/*.json


@dataclass(frozen=True)
class Plan:
    region: str
    get_rule: Call
    create_rule: Call
    update_rule: Call
    put_targets: Call


def default_definitions() -> Path:
    """deploy/eventbridge/ of a source checkout, else where an installed copy keeps it (``<prefix>/share``)."""
    checkout = Path(__file__).resolve().parents[2] / "deploy" / "eventbridge"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "wanhook" / "eventbridge"


def load_definitions(directory: Path) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name in ("rule.json", *TARGET_FILES.values()):
        path = directory / name
        try:
            found[name] = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path} not found: pass --definitions DIR (the deploy/eventbridge/ folder)") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not JSON: {exc}") from None
    return found


def _arn_region(arn: str) -> str:
    parts = arn.split(":")
    if len(parts) < 5 or parts[0] != "acs":
        raise ConfigError(f"{arn!r} is not an Alibaba Cloud ARN (acs:<service>:<region>:<account>:<resource>)")
    return parts[2]


def _replace_strings(value: Any, replacements: dict[str, str]) -> Any:
    """Every string equal to a key, anywhere in ``value``, becomes that key's value."""
    if isinstance(value, dict):
        return {key: _replace_strings(item, replacements) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace_strings(item, replacements) for item in value]
    if isinstance(value, str):
        return replacements.get(value, value)
    return value


def _strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path, value


def _params(target: dict[str, Any]) -> dict[str, dict[str, Any]]:
    # Case-insensitive only to find the token to redact: the limits check holds keys to the page's spelling.
    return {str(param.get("ResourceKey", "")).lower(): param for param in target.get("ParamList", [])}


def _expect_type(template: dict[str, Any], name: str, types: tuple[str, ...], why: str) -> None:
    if template.get("Type") not in types:
        raise ConfigError(f"{name}: Type {template.get('Type')!r} is not {' or '.join(types)}: {why}")


def http_target(template: dict[str, Any], url: str | None, token: str | None) -> dict[str, Any]:
    if not url:
        raise ConfigError("--url is required for the HTTP target (https://<your host>/v1/events/dashscope)")
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        # The token travels in a header: over plain HTTP anyone on the path could read and replay it.
        raise ConfigError(f"--url must be an https:// URL, got {url!r}")
    if not token:
        raise ConfigError(
            "the HTTP target needs the token: set WANHOOK_EVENTBRIDGE_TOKEN (as for wanhook serve) or pass --token"
        )
    # An API destination (acs.api.destination) would need an Endpoint acs:api-destination:... and a Name key, and
    # a Connection carrying the token; the HTTP/HTTPS target takes the URL and the token directly.
    _expect_type(
        template,
        TARGET_FILES["http"],
        ("https",),
        f"the webhook target is EventBridge's HTTP/HTTPS target, Type https for an https URL ({limits.TARGETS_PAGE})",
    )
    target = _replace_strings(template, {template["Endpoint"]: url})
    token_param = _params(target).get("token")
    if token_param is None:
        raise ConfigError("http-target.json has no Token parameter; wanhook rejects pushes without the token")
    token_param["Value"] = token
    return target


def rocketmq_target(template: dict[str, Any], topic_arn: str | None) -> dict[str, Any]:
    if not topic_arn:
        raise ConfigError(
            "--topic-arn is required for the RocketMQ target "
            "(acs:mq:<region>:<account id>:/instances/<instance id>/topic/<topic>)"
        )
    wanted = MQ_TOPIC_ARN.match(topic_arn)
    if wanted is None:
        raise ConfigError(f"--topic-arn {topic_arn!r} is not acs:mq:<region>:<account id>:/instances/<id>/topic/<name>")
    _expect_type(
        template,
        TARGET_FILES["rocketmq"],
        ("acs.rocketmq",),
        f"the RocketMQ target's Type is acs.rocketmq ({limits.TARGETS_PAGE})",
    )
    example = MQ_TOPIC_ARN.match(template["Endpoint"])
    if example is None:
        raise ConfigError(f"rocketmq-target.json: Endpoint {template['Endpoint']!r} is not a topic ARN")
    # The instance id and topic appear in the Endpoint and again as parameters; the ARN is the one source.
    return _replace_strings(
        template,
        {template["Endpoint"]: topic_arn, example["instance"]: wanted["instance"], example["topic"]: wanted["topic"]},
    )


def build_plan(
    definitions: dict[str, dict[str, Any]],
    *,
    target: str,
    region: str | None,
    url: str | None = None,
    token: str | None = None,
    topic_arn: str | None = None,
    dead_letter_arn: str | None = None,
    bus: str | None = None,
    rule_name: str | None = None,
) -> Plan:
    """The four calls, from the definitions and this installation's values; checks them before anything is sent."""
    if not region:
        raise ConfigError(
            "the region is required: --region or ALIBABA_CLOUD_REGION_ID (the region of the "
            "DashScope tasks, whose default bus receives their events)"
        )
    rule = definitions["rule.json"]
    template = copy.deepcopy(definitions[TARGET_FILES[target]])
    if len(template.get("Targets", [])) != 1:
        raise ConfigError(f"{TARGET_FILES[target]} must hold exactly one target")
    bus = bus or rule["EventBusName"]
    rule_name = rule_name or rule["RuleName"]
    rule_fields = {
        "EventBusName": bus,
        "RuleName": rule_name,
        "Description": rule.get("Description"),
        "Status": rule.get("Status"),
        "FilterPattern": rule.get("FilterPattern"),
    }
    rule_fields = {key: value for key, value in rule_fields.items() if value is not None}
    limits.check_rule(rule_fields)
    # Both target files put their target on the one rule, so their Ids must differ.
    limits.check_target_ids(
        (name, (definitions[name].get("Targets") or [{}])[0]) for name in TARGET_FILES.values() if name in definitions
    )

    one = template["Targets"][0]
    one = http_target(one, url, token) if target == "http" else rocketmq_target(one, topic_arn)
    if dead_letter_arn:
        one["DeadLetterQueue"] = {**one.get("DeadLetterQueue", {}), "Arn": dead_letter_arn}
    if not one.get("DeadLetterQueue", {}).get("Arn") or PLACEHOLDER.search(one["DeadLetterQueue"]["Arn"]):
        # Without it, an event that outlives 176 retries over a day is dropped without trace.
        raise ConfigError(
            "--dead-letter-arn is required (e.g. acs:mq:<region>:<account id>:/instances/<id>/topic/"
            "<dead-letter topic>)"
        )
    for field, arn in (
        ("--topic-arn", one["Endpoint"] if target == "rocketmq" else None),
        ("--dead-letter-arn", one["DeadLetterQueue"]["Arn"]),
    ):
        if arn and _arn_region(arn) != region:
            raise ConfigError(
                f"{field} is in {_arn_region(arn)} but the rule is in {region}: "
                "EventBridge delivers only within the rule's region"
            )
    left = [path for path, value in _strings(one) if PLACEHOLDER.search(value)]
    if left:
        raise ConfigError(f"{TARGET_FILES[target]} still has placeholders at {', '.join(left)}")
    limits.check_target(one, TARGET_FILES[target])  # the target exactly as PutTargets will carry it

    names = {"EventBusName": bus, "RuleName": rule_name}
    pattern = json.dumps(rule["FilterPattern"], separators=(",", ":"))  # the API takes the pattern as a string
    fields = {**rule_fields, "FilterPattern": pattern}
    return Plan(
        region=region,
        get_rule=Call("GetRule", dict(names)),
        create_rule=Call("CreateRule", fields),
        update_rule=Call("UpdateRule", dict(fields)),
        put_targets=Call("PutTargets", {**names, "Targets": [one]}),
    )


def redacted(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with every Token parameter's value replaced, for printing."""
    shown = copy.deepcopy(body)
    for target in shown.get("Targets", []):
        token = _params(target).get("token")
        if token is not None and token.get("Value"):
            token["Value"] = REDACTED
    return shown


# --- the SDK: imported only here, so the core runs without the extra --------------------------------------------


def _sdk() -> Any:
    try:
        from alibabacloud_eventbridge20200401 import models
    except ImportError:
        raise ConfigError(
            "the Alibaba Cloud EventBridge SDK is missing: install the eventbridge extra "
            "(from a checkout: pip install '.[eventbridge]')"
        ) from None
    return models


def _without_empty(value: Any) -> Any:
    # The models' to_map() writes an empty list for every list field left unset; those are not sent.
    if isinstance(value, dict):
        return {key: _without_empty(item) for key, item in value.items() if item != []}
    if isinstance(value, list):
        return [_without_empty(item) for item in value]
    return value


def build_requests(plan: Plan) -> dict[str, Any]:
    """The SDK request objects for the plan's calls, keyed by operation.

    The models' from_map() silently drops a field they do not know, so each request is compared with its body:
    a definition the SDK would send differently is an error here, not a surprise in the console.
    """
    models = _sdk()
    requests = {
        "GetRule": models.GetRuleRequest().from_map(plan.get_rule.body),
        "CreateRule": models.CreateRuleRequest().from_map(plan.create_rule.body),
        "UpdateRule": models.UpdateRuleRequest().from_map(plan.update_rule.body),
        "PutTargets": models.PutTargetsRequest().from_map(plan.put_targets.body),
    }
    requests["CreateRule"].event_targets = None  # the targets go in by PutTargets, the same call as for updates
    for call in (plan.get_rule, plan.create_rule, plan.update_rule, plan.put_targets):
        sent = _without_empty(requests[call.operation].to_map())
        if sent != call.body:
            raise ConfigError(
                f"{call.operation}: the SDK would not send the definition as written "
                f"(sent {json.dumps(redacted(sent))}, defined {json.dumps(redacted(call.body))})"
            )
    return requests


class EventBridgeClient(Protocol):
    """The four SDK client methods this command uses."""

    def get_rule(self, request: Any) -> Any: ...

    def create_rule(self, request: Any) -> Any: ...

    def update_rule(self, request: Any) -> Any: ...

    def put_targets(self, request: Any) -> Any: ...


def _call(operation: str, method: Any, request: Any) -> Any:
    """One SDK call; any refusal becomes a SetupError with EventBridge's code."""
    try:
        response = method(request)
    except Exception as failure:  # the SDK raises its own exception types, each with .code and .message
        raise SetupError(
            operation,
            str(getattr(failure, "code", "") or type(failure).__name__),
            str(getattr(failure, "message", "") or failure),
        ) from None
    # EventBridge can also answer HTTP 200 with the failure in the body (Code other than Success).
    body = getattr(response, "body", None)
    code = getattr(body, "code", None)
    if body is not None and (getattr(body, "success", True) is False or code not in (None, "Success")):
        raise SetupError(operation, str(code), str(getattr(body, "message", "") or ""))
    return body


def apply(plan: Plan, client: EventBridgeClient, out: TextIO) -> None:
    requests = build_requests(plan)
    try:
        _call("GetRule", client.get_rule, requests["GetRule"])
        operation, method = "UpdateRule", client.update_rule
    except SetupError as failure:
        if failure.code != RULE_MISSING:
            raise
        operation, method = "CreateRule", client.create_rule
    for step, call in ((operation, method), ("PutTargets", client.put_targets)):
        body = _call(step, call, requests[step])
        data = getattr(body, "data", None)
        if step == "PutTargets" and data is not None and (getattr(data, "error_entries_count", 0) or 0) > 0:
            errors = [
                f"{entry.entry_id}: {entry.error_code} {entry.error_message}" for entry in data.error_entries or []
            ]
            raise SetupError(step, "ErrorEntries", "; ".join(errors))
        print(f"{step}: done (request id {getattr(body, 'request_id', None) or '?'})", file=out)


def make_client(region: str, endpoint: str | None) -> EventBridgeClient:
    key_id = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
    secret = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    if not key_id or not secret:
        raise ConfigError(
            "set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET (a RAM user allowed "
            "eventbridge:GetRule, CreateRule, UpdateRule and PutTargets), or use --dry-run"
        )
    _sdk()
    from alibabacloud_eventbridge20200401.client import Client
    from alibabacloud_tea_openapi.utils_models import Config

    config = Config(
        access_key_id=key_id,
        access_key_secret=secret,
        security_token=os.environ.get("ALIBABA_CLOUD_SECURITY_TOKEN") or None,
        region_id=region,
        endpoint=endpoint,
    )
    return Client(config)


def print_plan(plan: Plan, out: TextIO) -> None:
    print(f"# dry run: nothing is sent. Region {plan.region}.", file=out)
    notes = {"CreateRule": "when GetRule finds no rule", "UpdateRule": "instead, when GetRule finds the rule"}
    for call in (plan.get_rule, plan.create_rule, plan.update_rule, plan.put_targets):
        note = f"  # {notes[call.operation]}" if call.operation in notes else ""
        print(f"\n{call.operation}{note}\n{json.dumps(redacted(call.body), indent=2)}", file=out)


# --- the command line -------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        choices=sorted(TARGET_FILES),
        default="http",
        help="which target to put on the rule (run once per target for both)",
    )
    parser.add_argument(
        "--region",
        default=os.environ.get("ALIBABA_CLOUD_REGION_ID"),
        help="the DashScope tasks' region, e.g. cn-beijing (default: $ALIBABA_CLOUD_REGION_ID)",
    )
    parser.add_argument("--url", help="HTTP target: wanhook's public webhook, https://<host>/v1/events/dashscope")
    parser.add_argument(
        "--token",
        default=None,
        help="HTTP target: the push token (default: $WANHOOK_EVENTBRIDGE_TOKEN, which keeps it out "
        "of the process list)",
    )
    parser.add_argument("--topic-arn", help="RocketMQ target: acs:mq:<region>:<account id>:/instances/<id>/topic/<t>")
    parser.add_argument("--dead-letter-arn", help="where events go after the last retry (RocketMQ topic or MNS queue)")
    parser.add_argument("--bus", help="event bus (default: the rule file's, 'default', which receives DashScope's)")
    parser.add_argument("--rule", help="rule name (default: the rule file's)")
    parser.add_argument(
        "--definitions",
        type=Path,
        default=None,
        help="folder with rule.json and the target files (default: deploy/eventbridge)",
    )
    parser.add_argument("--endpoint", help="EventBridge API endpoint, when not the region's public one")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the calls and their bodies (the token redacted); send nothing"
    )


def run(args: argparse.Namespace) -> int:
    definitions = load_definitions(args.definitions or default_definitions())
    plan = build_plan(
        definitions,
        target=args.target,
        region=args.region,
        url=args.url,
        token=args.token or os.environ.get("WANHOOK_EVENTBRIDGE_TOKEN"),
        topic_arn=args.topic_arn,
        dead_letter_arn=args.dead_letter_arn,
        bus=args.bus,
        rule_name=args.rule,
    )
    if args.dry_run:
        build_requests(plan)  # the same check as a real run: every field survives the SDK's models
        print_plan(plan, sys.stdout)
        return 0
    client = make_client(plan.region, args.endpoint)
    try:
        apply(plan, client, sys.stdout)
    except SetupError as failure:
        print(f"wanhook eventbridge setup: {failure}", file=sys.stderr)
        return 1
    return 0
