"""What EventBridge documents about rules and targets, each limit beside the page that states it.

``wanhook eventbridge setup`` runs these checks on the exact rule and target it is about to send, before any call,
and on ``--dry-run`` too: a definition EventBridge would refuse is refused here, in one line that names the limit
and its page, instead of as an error code from CreateRule or PutTargets (or, worse, as a target that is accepted
and then never delivers).

Nothing here is guessed. Where the documentation is silent (the size of a pattern, the characters of a target id),
there is no check, and docs/deploying.md says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ConfigError

LIMITS_PAGE = "https://www.alibabacloud.com/help/en/eventbridge/product-overview/limits"
PATTERNS_PAGE = "https://www.alibabacloud.com/help/en/eventbridge/user-guide/event-patterns"
TARGETS_PAGE = "https://www.alibabacloud.com/help/en/eventbridge/user-guide/event-target-parameters"
# Alibaba's own SDK (the package this command calls), docstring of PutTargetsRequestTargets.errors_tolerance.
SDK_TARGETS = (
    "https://github.com/aliyun/alibabacloud-python-sdk/blob/master/eventbridge-20200401/"
    "alibabacloud_eventbridge20200401/models/_put_targets_request.py"
)


@dataclass(frozen=True)
class Limit:
    text: str  # what the page says, in a few words
    source: str


class LimitError(ConfigError):
    """A definition breaks a documented limit. A ConfigError, so the command exits 2 with this one line."""

    def __init__(self, where: str, detail: str, limit: Limit) -> None:
        super().__init__(f"{where}: {detail}; EventBridge: {limit.text} ({limit.source})")
        self.limit = limit


# --- rules ---------------------------------------------------------------------------------------------------------

EXPRESSIONS_PER_FIELD = 5
EXPRESSIONS = Limit(f"at most {EXPRESSIONS_PER_FIELD} expressions per field of an event pattern", LIMITS_PAGE)
# The limits page counts expressions "in the map data structure"; the ROS page for ALIYUN::EventBridge::Rule
# (https://www.alibabacloud.com/help/en/resource-orchestration-service/latest/aliyun-eventbridge-rule) says "each
# field in the pattern can contain up to five values". Plain values are counted too: the stricter reading.

# Each operator is an object with one of these keys inside the field's array; two keys in one object combine.
PATTERN_OPERATORS = frozenset({"prefix", "suffix", "contains", "anything-but", "numeric", "cidr", "exists"})
OPERATORS = Limit(
    "the pattern operators are prefix, suffix, contains, anything-but, numeric, cidr and exists", PATTERNS_PAGE
)
SHAPE = Limit(
    "a pattern is a JSON object; each field's value is an array of values or operators, or an object "
    "for a nested field",
    PATTERNS_PAGE,
)

NAME_MAX = 127
RESERVED_PREFIX = "eventbridge-reserved-"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
RULE_NAME = Limit(
    f"a rule name has at most {NAME_MAX} characters, starts with a letter or digit, holds only "
    f"letters, digits and hyphens, and does not start with {RESERVED_PREFIX}",
    LIMITS_PAGE,
)
BUS_NAME = Limit(
    f"an event bus name has at most {NAME_MAX} characters, starts with a letter or digit, holds only "
    f"letters, digits and hyphens, and does not start with {RESERVED_PREFIX}",
    LIMITS_PAGE,
)
# "default" is reserved for custom buses because it names the one system bus, which is where DashScope publishes.
SYSTEM_BUS = "default"

STATUSES = frozenset({"ENABLE", "DISABLE"})
STATUS = Limit("a rule's Status is ENABLE or DISABLE", TARGETS_PAGE)

# --- targets -------------------------------------------------------------------------------------------------------

TARGETS_PER_RULE = 5
TARGET_COUNT = Limit(f"at most {TARGETS_PER_RULE} targets per rule", LIMITS_PAGE)
TARGET_ID = Limit("a target Id is required and unique within its rule", TARGETS_PAGE)


@dataclass(frozen=True)
class RetryBounds:
    retries: int
    intervals: str
    total: str


# The two strategies and what each does; neither has a setting of its own, so the strategy is the whole choice.
PUSH_RETRY_STRATEGIES = {
    "BACKOFF_RETRY": RetryBounds(3, "a random 10 to 20 s apart", "about a minute"),
    "EXPONENTIAL_DECAY_RETRY": RetryBounds(176, "1, 2, 4 ... 256 s, then 512 s apart", "one day"),
}
RETRY = Limit(
    "PushRetryStrategy is required: BACKOFF_RETRY (3 retries, 10-20 s apart) or EXPONENTIAL_DECAY_RETRY "
    "(176 retries, intervals doubling to 512 s, one day)",
    TARGETS_PAGE,
)

ERRORS_TOLERANCES = frozenset({"ALL", "NONE"})
ERRORS_TOLERANCE = Limit(
    "ErrorsTolerance is ALL (after the last retry the event goes to the dead-letter queue) or NONE (delivery blocks)",
    SDK_TARGETS,
)

DEAD_LETTER_ARNS = (
    re.compile(r"acs:mns:[a-z0-9-]+:\d+:/queues/[^/]+"),
    re.compile(r"acs:mq:[a-z0-9-]+:\d+:/instances/[^/]+/topic/[^/]+"),
)
DEAD_LETTER = Limit(
    "a dead-letter queue is a Simple Message Queue (MNS) queue, acs:mns:<region>:<account>:/queues/"
    "<name>, or an ApsaraMQ for RocketMQ topic, acs:mq:<region>:<account>:/instances/<id>/topic/<name>",
    TARGETS_PAGE,
)

FORMS = frozenset({"ORIGINAL", "JSONPATH", "CONSTANT", "TEMPLATE"})
FORM = Limit(
    "Form is ORIGINAL, JSONPATH, CONSTANT or TEMPLATE; JSONPATH and CONSTANT need a Value, TEMPLATE a "
    "Value and a Template, ORIGINAL neither",
    TARGETS_PAGE,
)
TRANSFORM_MAX = 10_240
TRANSFORM_SIZE = Limit(f"a parameter's Value and Template have at most {TRANSFORM_MAX:,} characters each", LIMITS_PAGE)

ALL_FORMS = ("ORIGINAL", "JSONPATH", "CONSTANT", "TEMPLATE")


@dataclass(frozen=True)
class Param:
    forms: tuple[str, ...]
    required: bool = False
    values: tuple[str, ...] = ()  # when the page lists the values a CONSTANT may take


@dataclass(frozen=True)
class TargetType:
    """One target type of the target parameters page: its Endpoint and the ParamList keys it documents."""

    name: str
    endpoint: re.Pattern[str]
    endpoint_text: str
    params: dict[str, Param]
    # Keys required only when another key has a given value: (key, value) -> keys.
    conditional: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)


def _http(scheme: str) -> TargetType:
    return TargetType(
        name=scheme,
        endpoint=re.compile(rf"{scheme}://[^\s/]+(/\S*)?"),
        endpoint_text=f"the URL itself ({scheme}://...), also given as the url parameter",
        params={
            "url": Param(("CONSTANT",), required=True),
            "Body": Param(ALL_FORMS, required=True),
            "Network": Param(("CONSTANT",), required=True, values=("PublicNetwork", "PrivateNetwork")),
            "VPCNameAndId": Param(("CONSTANT",)),
            "VSwitchesNameAndId": Param(("CONSTANT",)),
            "SecurityGroupNameAndId": Param(("CONSTANT",)),
            # Sent as the header x-eventbridge-signature-token (the same page, and "Route events to HTTP endpoints":
            # https://www.alibabacloud.com/help/tc/eventbridge/user-guide/route-events-to-http-endpoints), which
            # wanhook checks (service/ingress/webhook.py).
            "Token": Param(("CONSTANT",)),
        },
        conditional={("Network", "PrivateNetwork"): ("VPCNameAndId", "VSwitchesNameAndId", "SecurityGroupNameAndId")},
    )


TARGET_TYPES: dict[str, TargetType] = {
    "http": _http("http"),
    "https": _http("https"),
    "acs.rocketmq": TargetType(
        name="acs.rocketmq",
        endpoint=re.compile(r"acs:mq:[a-z0-9-]+:\d+:/instances/[^/]+/topic/[^/]+"),
        endpoint_text="acs:mq:<region>:<account id>:/instances/<instance id>/topic/<topic>",
        params={
            "InstanceId": Param(("CONSTANT",), required=True),
            "Topic": Param(("CONSTANT",), required=True),
            "Body": Param(("ORIGINAL", "JSONPATH", "CONSTANT", "TEMPLATE"), required=True),
            "Properties": Param(("JSONPATH", "TEMPLATE")),
            "Keys": Param(("JSONPATH", "CONSTANT", "TEMPLATE")),
            "Tags": Param(("JSONPATH", "CONSTANT", "TEMPLATE")),
        },
    ),
    "acs.api.destination": TargetType(
        name="acs.api.destination",
        endpoint=re.compile(r"acs:api-destination:[a-z0-9-]+:\d+:name/[^/]+"),
        endpoint_text="acs:api-destination:<region>:<account id>:name/<API destination name>",
        params={
            "Name": Param(("CONSTANT",), required=True),
            "HeaderParameters": Param(("TEMPLATE",)),
            "BodyParameters": Param(("TEMPLATE",)),
            "QueryStringParameters": Param(("TEMPLATE",)),
        },
    ),
}
TARGET_TYPE = Limit("each target Type has its own Endpoint format and ParamList keys", TARGETS_PAGE)
PARAM_KEY = Limit(
    "each target Type accepts only the ParamList keys its section lists, each with its own Forms", TARGETS_PAGE
)


# --- the checks ----------------------------------------------------------------------------------------------------


def check_name(value: Any, where: str, limit: Limit, *, system_bus: bool = False) -> None:
    if system_bus and value == SYSTEM_BUS:
        return
    if not isinstance(value, str) or not value:
        raise LimitError(where, "missing", limit)
    if len(value) > NAME_MAX:
        raise LimitError(where, f"{value[:20]!r}... has {len(value)} characters", limit)
    if not NAME.fullmatch(value) or value.startswith(RESERVED_PREFIX):
        raise LimitError(where, f"{value!r} is not a valid name", limit)


def _fields(pattern: dict[str, Any], path: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in pattern.items():
        where = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            if not value:
                raise LimitError(f"FilterPattern field {where}", "is an empty object", SHAPE)
            yield from _fields(value, where)
        else:
            yield where, value


def check_pattern(pattern: Any, where: str = "FilterPattern") -> None:
    if not isinstance(pattern, dict) or not pattern:
        raise LimitError(where, "is not a non-empty JSON object", SHAPE)
    for path, expressions in _fields(pattern):
        at = f"{where} field {path}"
        if not isinstance(expressions, list) or not expressions:
            raise LimitError(at, "is not a non-empty array", SHAPE)
        if len(expressions) > EXPRESSIONS_PER_FIELD:
            raise LimitError(at, f"has {len(expressions)} expressions", EXPRESSIONS)
        for expression in expressions:
            if isinstance(expression, dict):
                if not expression:
                    raise LimitError(at, "has an empty operator object", OPERATORS)
                unknown = sorted(set(expression) - PATTERN_OPERATORS)
                if unknown:
                    raise LimitError(at, f"uses the operator {', '.join(unknown)}", OPERATORS)
            elif isinstance(expression, list):
                raise LimitError(at, "has an array inside its array", SHAPE)


def check_rule(fields: dict[str, Any]) -> None:
    """CreateRule/UpdateRule's fields, with FilterPattern still an object."""
    check_name(fields.get("EventBusName"), "EventBusName", BUS_NAME, system_bus=True)
    check_name(fields.get("RuleName"), "RuleName", RULE_NAME)
    if "Status" in fields and fields["Status"] not in STATUSES:
        raise LimitError("Status", f"{fields['Status']!r}", STATUS)
    check_pattern(fields.get("FilterPattern"))


def _param_lists(target: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    params: dict[str, dict[str, Any]] = {}
    entries = target.get("ParamList")
    if not isinstance(entries, list):
        raise LimitError(f"{where} ParamList", "is not a list", PARAM_KEY)
    for param in entries:
        key = param.get("ResourceKey") if isinstance(param, dict) else None
        if not isinstance(key, str) or not key:
            raise LimitError(f"{where} ParamList", "has an entry without a ResourceKey", PARAM_KEY)
        if key in params:
            raise LimitError(f"{where} ParamList", f"has {key} twice", PARAM_KEY)
        params[key] = param
    return params


def check_param(key: str, param: dict[str, Any], spec: Param, where: str) -> None:
    at = f"{where} parameter {key}"
    form = param.get("Form")
    if form not in FORMS:
        raise LimitError(at, f"has Form {form!r}", FORM)
    if form not in spec.forms:
        documented = Limit(f"{key} takes Form {', '.join(spec.forms)}", TARGETS_PAGE)
        raise LimitError(at, f"has Form {form}", documented)
    value, template = param.get("Value"), param.get("Template")
    if form in ("JSONPATH", "CONSTANT", "TEMPLATE") and value in (None, ""):
        raise LimitError(at, f"has Form {form} but no Value", FORM)
    if form == "TEMPLATE" and template in (None, ""):
        raise LimitError(at, "has Form TEMPLATE but no Template", FORM)
    for name, text in (("Value", value), ("Template", template)):
        if isinstance(text, str) and len(text) > TRANSFORM_MAX:
            raise LimitError(at, f"has a {name} of {len(text):,} characters", TRANSFORM_SIZE)
    if spec.values and value not in spec.values:
        allowed = Limit(f"{key} is {' or '.join(spec.values)}", TARGETS_PAGE)
        raise LimitError(at, f"is {value!r}", allowed)


def check_target(target: dict[str, Any], where: str) -> None:
    """One entry of PutTargets' Targets, as it will be sent."""
    if not isinstance(target, dict):
        raise LimitError(where, "is not an object", TARGET_TYPE)
    if not isinstance(target.get("Id"), str) or not target["Id"]:
        raise LimitError(f"{where} Id", "missing", TARGET_ID)
    kind = TARGET_TYPES.get(target["Type"]) if isinstance(target.get("Type"), str) else None
    if kind is None:
        known = Limit(f"the Types wanhook can use are {', '.join(TARGET_TYPES)}", TARGETS_PAGE)
        raise LimitError(f"{where} Type", f"{target.get('Type')!r} is not one of them", known)
    endpoint = target.get("Endpoint")
    if not isinstance(endpoint, str) or not kind.endpoint.fullmatch(endpoint):
        documented = Limit(f"a {kind.name} target's Endpoint is {kind.endpoint_text}", TARGETS_PAGE)
        raise LimitError(f"{where} Endpoint", f"{endpoint!r} does not fit", documented)
    strategy = target.get("PushRetryStrategy")
    if strategy not in PUSH_RETRY_STRATEGIES:
        raise LimitError(f"{where} PushRetryStrategy", f"{strategy!r}", RETRY)
    if "ErrorsTolerance" in target and target["ErrorsTolerance"] not in ERRORS_TOLERANCES:
        raise LimitError(f"{where} ErrorsTolerance", f"{target['ErrorsTolerance']!r}", ERRORS_TOLERANCE)
    queue = target.get("DeadLetterQueue") or {}
    dead_letter = queue.get("Arn") if isinstance(queue, dict) else queue
    if dead_letter is not None and not any(form.fullmatch(str(dead_letter)) for form in DEAD_LETTER_ARNS):
        raise LimitError(f"{where} DeadLetterQueue.Arn", f"{dead_letter!r} is neither form", DEAD_LETTER)

    params = _param_lists(target, where)
    for key, param in params.items():
        spec = kind.params.get(key)
        if spec is None:
            near = next((name for name in kind.params if name.lower() == key.lower()), None)
            hint = f" (the page spells it {near})" if near else ""
            documented = Limit(f"a {kind.name} target's keys are {', '.join(kind.params)}", TARGETS_PAGE)
            raise LimitError(f"{where} ParamList", f"{key} is not one of them{hint}", documented)
        check_param(key, param, spec, where)
    required = [key for key, spec in kind.params.items() if spec.required]
    for (key, value), needed in kind.conditional.items():
        if (params.get(key) or {}).get("Value") == value:
            required += needed
    missing = [key for key in required if key not in params]
    if missing:
        documented = Limit(f"a {kind.name} target needs {', '.join(required)}", TARGETS_PAGE)
        raise LimitError(f"{where} ParamList", f"lacks {', '.join(missing)}", documented)
    if kind.name in ("http", "https") and params["url"].get("Value") != endpoint:
        same = Limit("an HTTP/HTTPS target's Endpoint is the configured URL, the url parameter", TARGETS_PAGE)
        raise LimitError(f"{where} parameter url", "differs from the Endpoint", same)
    if kind.name == "acs.api.destination" and params["Name"].get("Value") != endpoint.rsplit("/", 1)[1]:
        same = Limit("an API destination target's Name is the name at the end of its Endpoint", TARGETS_PAGE)
        raise LimitError(f"{where} parameter Name", "differs from the Endpoint's name", same)


def check_target_ids(targets: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """The targets wanhook puts on the one rule (one per target file): distinct Ids, and no more than allowed."""
    seen: dict[Any, str] = {}
    for where, target in targets:
        target_id = target.get("Id") if isinstance(target, dict) else None
        if target_id in seen:
            raise LimitError(f"{where} Id", f"{target_id!r} is also the Id in {seen[target_id]}", TARGET_ID)
        seen[target_id] = where
    if len(seen) > TARGETS_PER_RULE:
        raise LimitError("targets", f"{len(seen)} targets on one rule", TARGET_COUNT)
