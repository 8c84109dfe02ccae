"""Validate an event against its meter: checks compiled once per meter version, applied per event.

Checks run in a fixed order and the first failure is the event's one reason code: envelope,
meter, schema version, deprecation, time window, `data` fields, value.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Context, Decimal
from typing import Any

import orjson

from meterstream.events import Envelope, parse_envelope
from meterstream.meters.model import Aggregation, IdempotencyKey, MeterDefinition
from meterstream.meters.registry import MeterRegistry
from meterstream.rules.periods import period_start
from meterstream.rules.reasons import ReasonCode, Rejection

#: Quantities are DECIMAL(38, 9) in Flink and PostgreSQL.
QUANTITY_SCALE = Decimal("1e-9")
#: DECIMAL(38, 9) holds 29 integer digits; a single event above this cannot be billed.
MAX_QUANTITY = Decimal("1e29")
QUANTITY_CONTEXT = Context(prec=40)
#: How far ahead of its arrival an event's time may be (client clocks drift).
MAX_CLOCK_SKEW = timedelta(minutes=5)
#: How old an event may be when it arrives: the deduplication window.
DEDUP_WINDOW = timedelta(days=35)

TypeCheck = Callable[[Any], bool]

AVRO_CHECKS: dict[str, TypeCheck] = {
    "null": lambda v: v is None,
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**31) <= v < 2**31,
    "long": lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63,
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "double": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "bytes": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "map": lambda v: isinstance(v, dict),
    "record": lambda v: isinstance(v, dict),
}


@dataclass(frozen=True, slots=True)
class ValidEvent:
    """An accepted event, ready to be deduplicated and aggregated.

    Attributes:
        dedup_key: with the account, identifies repeats of this event (see IdempotencyKey).
        fingerprint: a stable 64-bit hash of the event's content; a repeat with another
            fingerprint is a DUPLICATE_ID_CONFLICT.
        dimensions: the segment, as canonical JSON of the group-by values ('' if none).
        quantity: the value aggregated (1 for COUNT, None for UNIQUE_COUNT).
        unique_value: the value counted by UNIQUE_COUNT, as text (None otherwise).
        warning: set when the event is accepted with a warning (a deprecated version).
    """

    event_id: str
    account_id: str
    meter: str
    version: int
    aggregation: Aggregation
    event_time: datetime
    period_start: date
    dimensions: str
    quantity: Decimal | None
    unique_value: str | None
    dedup_key: str
    fingerprint: int
    warning: Rejection | None = None


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One field of a meter's `data`: its name, whether it is required, and its type check."""

    name: str
    required: bool
    #: The Avro type names of the field's union branches (one for a plain type).
    types: tuple[str, ...]
    check: TypeCheck

    @property
    def avro_type(self) -> str:
        """The field's type as rejection details name it, e.g. `null or double`."""
        return " or ".join(self.types)


def _type_name(ftype: Any) -> str:
    if isinstance(ftype, dict):
        return str(ftype.get("type", "record"))
    return str(ftype)


def _rule(field: dict[str, Any]) -> FieldRule:
    ftype = field["type"]
    branches = ftype if isinstance(ftype, list) else [ftype]
    names = [_type_name(b) for b in branches]
    # Named types (enums, fixed, records by name) are checked loosely as "present".
    checks = [AVRO_CHECKS.get(n, lambda v: v is not None) for n in names]
    nullable = "null" in names
    optional = nullable or "default" in field

    def check(value: Any) -> bool:
        return any(c(value) for c in checks)

    return FieldRule(field["name"], not optional, tuple(names), check)


def _canonical(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def fingerprint(meter: str, event_time: datetime, data: dict[str, Any]) -> int:
    """A stable signed 64-bit hash of an event's billed content (not of its id or source)."""
    content = orjson.dumps(
        [meter, event_time.isoformat(), data],
        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
        default=str,
    )
    digest = hashlib.blake2b(content, digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True, slots=True)
class CompiledMeter:
    """A meter version's checks, built once from its Avro schema."""

    meter: MeterDefinition
    fields: tuple[FieldRule, ...]

    @classmethod
    def compile(cls, meter: MeterDefinition) -> CompiledMeter:
        """Turn the meter's Avro record fields into field rules."""
        return cls(meter, tuple(_rule(f) for f in meter.avro_schema["fields"]))

    def check_fields(self, data: dict[str, Any]) -> Rejection | None:
        """The first missing or mistyped field of `data`, or None."""
        for rule in self.fields:
            value = data.get(rule.name)
            if value is None:
                if rule.required:
                    return Rejection(ReasonCode.MISSING_FIELD, f"data.{rule.name} is required")
                continue
            if not rule.check(value):
                return Rejection(
                    ReasonCode.WRONG_TYPE,
                    f"data.{rule.name} must be {rule.avro_type}, got {type(value).__name__}",
                )
        return None

    def check(self, data: dict[str, Any]) -> Decimal | Rejection | None:
        """Check `data`; return the quantity (None for UNIQUE_COUNT) or a rejection."""
        problem = self.check_fields(data)
        if problem is not None:
            return problem
        aggregation = self.meter.aggregation
        if aggregation is Aggregation.COUNT:
            return Decimal(1)
        if aggregation is Aggregation.UNIQUE_COUNT:
            return None
        name = self.meter.value_field
        value = data[name]  # type: ignore[index]  # required numeric field, checked at load
        if isinstance(value, float) and not math.isfinite(value):
            return Rejection(ReasonCode.INVALID_VALUE, f"data.{name} is {value}")
        # SUM and MEAN bill additive usage: negative amounts would be credits, not usage.
        if value < 0 and aggregation in (Aggregation.SUM, Aggregation.MEAN):
            return Rejection(ReasonCode.INVALID_VALUE, f"data.{name} must be >= 0, got {value}")
        quantity = Decimal(repr(value) if isinstance(value, float) else value)
        if abs(quantity) >= MAX_QUANTITY:
            return Rejection(
                ReasonCode.INVALID_VALUE,
                f"data.{name} is {value}, beyond the limit of ±{MAX_QUANTITY:.0e}",
            )
        # plus() turns -0 into 0; the context is wide enough for 29 + 9 digits.
        return QUANTITY_CONTEXT.plus(quantity.quantize(QUANTITY_SCALE, context=QUANTITY_CONTEXT))

    def dimensions(self, data: dict[str, Any]) -> str:
        """The segment of an event: canonical JSON of its group-by values, '' if none."""
        if not self.meter.group_by:
            return ""
        return orjson.dumps(
            {k: data[k] for k in self.meter.group_by}, option=orjson.OPT_SORT_KEYS
        ).decode()


class Validator:
    """Validates raw payloads against the meters of a registry."""

    def __init__(self, registry: MeterRegistry) -> None:
        self._versions = {
            (meter.name, meter.version): CompiledMeter.compile(meter) for meter in registry.all()
        }
        self._current = {
            name: max(v for n, v in self._versions if n == name) for name, _ in self._versions
        }

    def describe(self) -> dict[str, Any]:
        """The compiled rules as plain data: what the JVM fast path (`fast_check_event`) applies.

        Per meter its current version; per version the aggregation, the idempotency key, whether
        it has a sunset, and each `data` field's rule.
        """
        meters: dict[str, Any] = {
            name: {"current": current, "versions": {}} for name, current in self._current.items()
        }
        for (name, version), compiled in self._versions.items():
            meter = compiled.meter
            meters[name]["versions"][str(version)] = {
                "aggregation": meter.aggregation.value,
                "value_field": meter.value_field,
                "group_by": list(meter.group_by),
                "event_id_key": meter.idempotency_key is IdempotencyKey.EVENT_ID,
                "sunset": meter.sunset is not None,
                "fields": [
                    {"name": rule.name, "required": rule.required, "types": list(rule.types)}
                    for rule in compiled.fields
                ],
            }
        return {"meters": meters}

    def validate(
        self, raw: str | bytes, arrived_at: datetime | None = None
    ) -> ValidEvent | Rejection:
        """Validate one raw payload that reached Kafka at `arrived_at` (default: now)."""
        envelope = parse_envelope(raw)
        if isinstance(envelope, Rejection):
            return envelope
        return self.validate_envelope(envelope, arrived_at or datetime.now(UTC))

    def validate_envelope(self, envelope: Envelope, arrived_at: datetime) -> ValidEvent | Rejection:
        """Validate a parsed envelope against its meter version, its time window and its data."""
        result = self._check(envelope, arrived_at)
        if isinstance(result, Rejection):
            return replace(
                result,
                account_id=envelope.account_id,
                meter=envelope.meter,
                event_id=envelope.event_id,
            )
        return result

    def _check(self, envelope: Envelope, arrived_at: datetime) -> ValidEvent | Rejection:
        current = self._current.get(envelope.meter)
        if current is None:
            return Rejection(
                ReasonCode.UNKNOWN_METER,
                f"type {envelope.meter[:64]!r} is not a meter; known: {', '.join(self._current)}",
            )
        version = envelope.schema_version or current
        compiled = self._versions.get((envelope.meter, version))
        if compiled is None:
            known = sorted(v for n, v in self._versions if n == envelope.meter)
            return Rejection(
                ReasonCode.UNKNOWN_SCHEMA_VERSION,
                f"{envelope.meter} has no version {version}; known: {known}",
            )
        warning = None
        sunset = compiled.meter.sunset
        if sunset is not None:
            deprecation = Rejection(
                ReasonCode.DEPRECATED_SCHEMA_VERSION,
                f"{envelope.meter} v{version} is deprecated, sunset {sunset.isoformat()}; "
                f"send v{current}",
            )
            if arrived_at >= sunset:
                return deprecation
            warning = deprecation
        if envelope.event_time > arrived_at + MAX_CLOCK_SKEW:
            return Rejection(
                ReasonCode.TIMESTAMP_IN_FUTURE,
                f"time {envelope.event_time.isoformat()} is more than {MAX_CLOCK_SKEW} after its "
                f"arrival at {arrived_at.isoformat()}",
            )
        if envelope.event_time < arrived_at - DEDUP_WINDOW:
            return Rejection(
                ReasonCode.TIMESTAMP_TOO_OLD,
                f"time {envelope.event_time.isoformat()} is more than {DEDUP_WINDOW.days} days "
                f"before its arrival at {arrived_at.isoformat()}",
            )
        quantity = compiled.check(envelope.data)
        if isinstance(quantity, Rejection):
            return quantity
        meter = compiled.meter
        try:
            content = fingerprint(meter.name, envelope.event_time, envelope.data)
        except TypeError:
            # orjson serialises at most 254 levels; such data is not usage, it is an attack.
            return Rejection(ReasonCode.INVALID_ENVELOPE, "data is nested too deeply")
        event_ms = int(envelope.event_time.timestamp() * 1000)
        if meter.idempotency_key is IdempotencyKey.EVENT_ID:
            dedup_key = "id:" + envelope.event_id
        else:
            dedup_key = f"ts:{meter.name}:{event_ms}"
        return ValidEvent(
            event_id=envelope.event_id,
            account_id=envelope.account_id,
            meter=meter.name,
            version=version,
            aggregation=meter.aggregation,
            event_time=envelope.event_time,
            period_start=period_start(envelope.event_time),
            dimensions=compiled.dimensions(envelope.data),
            quantity=quantity,
            unique_value=(
                _canonical(envelope.data[meter.value_field])  # type: ignore[index]
                if meter.aggregation is Aggregation.UNIQUE_COUNT
                else None
            ),
            dedup_key=dedup_key,
            fingerprint=content,
            warning=warning,
        )
