"""The JSON shapes of alert rules and webhook endpoints, and their checks (pure).

A rule is one JSON object whose `kind` says which shape it has (docs/alerts.md lists them).
`parse_rule` checks it and `usage_target` resolves a usage threshold against the meters, so the
API answers a bad rule with one clear error and the evaluator only ever sees good ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from meterstream.events import ACCOUNT_ID
from meterstream.meters.model import Aggregation
from meterstream.meters.registry import MeterRegistry
from meterstream.rules.reasons import ReasonCode
from meterstream.rules.validate import MAX_QUANTITY, CompiledMeter

MAX_THRESHOLDS = 100
MAX_WINDOW_S = 7 * 86_400
PERIOD = re.compile(r"^(\d{4})-(\d{2})(?:-01)?$")


class RuleKind(StrEnum):
    """What a rule watches. Stable: never renamed or reused."""

    USAGE_THRESHOLD = "usage_threshold"
    REJECTIONS = "rejections"
    JOB_NOT_RUNNING = "job_not_running"
    CONSUMER_LAG = "consumer_lag"
    FRESHNESS = "freshness"
    QUOTA = "quota"
    DEPRECATED_SCHEMA = "deprecated_schema"
    LATE_EVENTS = "late_events"


#: Conditions of the shared pipeline, not of one organisation's accounts: like /health/ready,
#: only the operator organisation may watch them.
OPERATOR_KINDS = frozenset({RuleKind.JOB_NOT_RUNNING, RuleKind.CONSUMER_LAG, RuleKind.FRESHNESS})


class RuleError(ValueError):
    """A rule or endpoint that cannot be accepted; the message says what to change."""


def parse_period(value: str | None) -> date | None:
    """A billing period given as `YYYY-MM` (or its first day, `YYYY-MM-01`).

    >>> parse_period("2026-10"), parse_period(None)
    (datetime.date(2026, 10, 1), None)
    """
    if value is None:
        return None
    match = PERIOD.match(value)
    if not match:
        msg = f"a period is YYYY-MM (or YYYY-MM-01), not {value!r}"
        raise ValueError(msg)
    return date(int(match.group(1)), int(match.group(2)), 1)


Account = Annotated[str, Field(max_length=128)]
Quantity = Annotated[Decimal, Field(allow_inf_nan=False)]
Window = Annotated[int, Field(ge=1, le=MAX_WINDOW_S, description="seconds")]
ForSeconds = Annotated[
    int,
    Field(ge=0, le=MAX_WINDOW_S, description="the condition must hold this long before it fires"),
]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    enabled: bool = True


class _AccountScoped(_Rule):
    account: Account | None = Field(
        default=None, description="one account of the organisation; null: every account"
    )

    @field_validator("account")
    @classmethod
    def _account_id(cls, value: str | None) -> str | None:
        if value is not None and not ACCOUNT_ID.fullmatch(value):
            msg = f"{value!r} is not an account id"
            raise ValueError(msg)
        return value


class UsageThresholdRule(_AccountScoped):
    """Fires once per (rule, account, period, threshold) when a period's figure reaches it."""

    kind: Literal["usage_threshold"]
    meter: str = Field(max_length=64)
    segment: dict[str, str | int | bool] | None = Field(
        default=None, description="the group-by values of one segment; null: the whole meter"
    )
    thresholds: list[Quantity] = Field(default_factory=list, max_length=MAX_THRESHOLDS)
    recurring_every: Quantity | None = Field(
        default=None, description="then every this many units above the highest threshold"
    )
    from_period: str | None = Field(
        default=None, description="YYYY-MM: the first period watched (default: the current one)"
    )
    period: str | None = Field(default=None, description="YYYY-MM: watch this period only")

    @field_validator("thresholds")
    @classmethod
    def _distinct(cls, values: list[Decimal]) -> list[Decimal]:
        if len(set(values)) != len(values):
            msg = "thresholds must differ from each other"
            raise ValueError(msg)
        if any(abs(v) >= MAX_QUANTITY for v in values):
            msg = f"thresholds must be below {MAX_QUANTITY:.0e} in absolute value"
            raise ValueError(msg)
        return values

    @field_validator("recurring_every")
    @classmethod
    def _positive(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and not 0 < value < MAX_QUANTITY:
            msg = "recurring_every must be > 0"
            raise ValueError(msg)
        return value

    @field_validator("from_period", "period")
    @classmethod
    def _period(cls, value: str | None) -> str | None:
        parse_period(value)
        return value


class RejectionsRule(_AccountScoped):
    """More than `above` rejected events (of `reason`, or any) in the last `window_seconds`."""

    kind: Literal["rejections"]
    reason: str | None = Field(default=None, description="a reason code; null: every code")
    above: int = Field(ge=0)
    window_seconds: Window = 300
    for_seconds: ForSeconds = 0

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str | None) -> str | None:
        if value is not None and value not in ReasonCode.__members__.values():
            msg = f"{value!r} is not a reason code (README: Reason codes)"
            raise ValueError(msg)
        return value


class JobNotRunningRule(_Rule):
    """The aggregation job is not RUNNING (or its Flink cluster does not answer)."""

    kind: Literal["job_not_running"]
    job_name: str | None = Field(default=None, description="default: flink.job_name")
    for_seconds: ForSeconds = 30


class ConsumerLagRule(_Rule):
    """The job's consumer group is more than `above` records behind the raw topic."""

    kind: Literal["consumer_lag"]
    above: int = Field(ge=0)
    consumer_group: str | None = Field(default=None, description="default: flink.consumer_group")
    topic: str | None = Field(default=None, description="default: the raw topic")
    for_seconds: ForSeconds = 60


class FreshnessRule(_Rule):
    """The oldest record the job has not yet committed arrived more than `above_seconds` ago."""

    kind: Literal["freshness"]
    above_seconds: Window
    consumer_group: str | None = None
    topic: str | None = None
    for_seconds: ForSeconds = 0


class QuotaRule(_AccountScoped):
    """An account has used more than `percent` % of its daily event quota (UTC day)."""

    kind: Literal["quota"]
    percent: Decimal = Field(gt=0, le=100, allow_inf_nan=False)


class DeprecatedSchemaRule(_Rule):
    """More than `above` events counted on a deprecated schema version in the window."""

    kind: Literal["deprecated_schema"]
    meter: str | None = Field(default=None, max_length=64)
    above: int = Field(default=0, ge=0)
    window_seconds: Window = 3_600
    for_seconds: ForSeconds = 0


class LateEventsRule(_Rule):
    """More than `above` events arrived for a closed period (late_events) in the window."""

    kind: Literal["late_events"]
    above: int = Field(default=0, ge=0)
    window_seconds: Window = 3_600
    for_seconds: ForSeconds = 0


RuleSpec = Annotated[
    UsageThresholdRule
    | RejectionsRule
    | JobNotRunningRule
    | ConsumerLagRule
    | FreshnessRule
    | QuotaRule
    | DeprecatedSchemaRule
    | LateEventsRule,
    Field(discriminator="kind"),
]
RULE = TypeAdapter(RuleSpec)


def describe(error: ValidationError) -> str:
    """Pydantic's errors as one line: `field: problem; field: problem`."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'rule'}: {e['msg']}" for e in error.errors()
    )


def parse_rule(raw: Any) -> RuleSpec:
    """A checked rule, or `RuleError` saying what is wrong.

    >>> parse_rule({"kind": "late_events", "name": "late"}).window_seconds
    3600
    >>> parse_rule({"kind": "usage_threshold", "name": "x", "meter": "m"})
    Traceback (most recent call last):
    ...
    meterstream.alerts.model.RuleError: give thresholds, recurring_every or both
    """
    try:
        rule = RULE.validate_python(raw)
    except ValidationError as exc:
        raise RuleError(describe(exc)) from exc
    if isinstance(rule, UsageThresholdRule) and not rule.thresholds and not rule.recurring_every:
        msg = "give thresholds, recurring_every or both"
        raise RuleError(msg)
    return rule


#: How the figures of a segmented meter's segments make the meter's whole figure.
COMBINE = {
    Aggregation.SUM: "sum",
    Aggregation.COUNT: "sum",
    Aggregation.MAX: "max",
    Aggregation.MIN: "min",
}


@dataclass(frozen=True, slots=True)
class UsageTarget:
    """A usage threshold resolved against the meters: the evaluator's columns."""

    account_id: str | None
    meter: str
    segment: str | None
    combine: str
    thresholds: tuple[Decimal, ...]
    recurring_every: Decimal | None
    from_period: date
    only_period: date | None


def usage_target(rule: UsageThresholdRule, registry: MeterRegistry, today: date) -> UsageTarget:
    """Resolve the meter and segment; `today` gives the default first period.

    Raises `RuleError` for an unknown meter, a segment that is not one of the meter's, or a
    whole-meter rule on a segmented meter whose segments cannot be combined.
    """
    meter = registry.current(rule.meter)
    if meter is None:
        msg = f"no meter {rule.meter!r} (meters: {', '.join(registry.names())})"
        raise RuleError(msg)
    segment: str | None = None
    combine = "sum"
    if rule.segment is not None:
        if set(rule.segment) != set(meter.group_by):
            msg = f"segment must give exactly the group-by fields of {meter.name}: " + (
                ", ".join(meter.group_by) or "it has none"
            )
            raise RuleError(msg)
        compiled = CompiledMeter.compile(meter)
        for field in compiled.fields:
            if field.name in rule.segment and not field.check(rule.segment[field.name]):
                msg = f"segment.{field.name} must be {field.avro_type}"
                raise RuleError(msg)
        segment = compiled.dimensions(dict(rule.segment))
    elif meter.group_by:
        if meter.aggregation not in COMBINE:
            msg = (
                f"{meter.name} is split by {', '.join(meter.group_by)} and its {meter.aggregation}"
                " figures cannot be combined: give a segment"
            )
            raise RuleError(msg)
        combine = COMBINE[meter.aggregation]
    first = today.replace(day=1)
    return UsageTarget(
        account_id=rule.account,
        meter=meter.name,
        segment=segment,
        combine=combine,
        thresholds=tuple(sorted(rule.thresholds)),
        recurring_every=rule.recurring_every,
        from_period=parse_period(rule.from_period) or parse_period(rule.period) or first,
        only_period=parse_period(rule.period),
    )


class EndpointIn(BaseModel):
    """A webhook endpoint as created (`POST /v1/alerts/endpoints`)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048)
    description: str = Field(default="", max_length=500)
    event_types: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="CloudEvents types (or a prefix ending in *); empty: every type",
    )
    enabled: bool = True


class EndpointPatch(BaseModel):
    """Changes to an endpoint (`PATCH`); absent fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2048)
    description: str | None = Field(default=None, max_length=500)
    event_types: list[str] | None = Field(default=None, max_length=50)
    enabled: bool | None = None


class RulePatch(BaseModel):
    """Changes to a rule's name or state (`PATCH`); replace a rule with `PUT`."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    enabled: bool | None = None
