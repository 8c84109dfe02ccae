"""Validate an event against its meter: a check list compiled once per meter, applied per event."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Context, Decimal
from typing import Any

from meterstream.events import Envelope, parse_envelope
from meterstream.meters.model import Aggregation, MeterDefinition
from meterstream.meters.registry import MeterRegistry
from meterstream.rules.periods import period_start
from meterstream.rules.reasons import ReasonCode, Rejection

#: Quantities are DECIMAL(38, 9) in Flink and PostgreSQL.
QUANTITY_SCALE = Decimal("1e-9")
#: DECIMAL(38, 9) holds 29 integer digits; a single event above this cannot be billed.
MAX_QUANTITY = Decimal("1e29")
QUANTITY_CONTEXT = Context(prec=40)

TypeCheck = Callable[[Any], bool]

AVRO_CHECKS: dict[str, TypeCheck] = {
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**31) <= v < 2**31,
    "long": lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63,
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "double": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


@dataclass(frozen=True, slots=True)
class ValidEvent:
    """An accepted event, ready to be deduplicated and aggregated."""

    event_id: str
    account_id: str
    meter: str
    event_time: datetime
    period_start: date
    quantity: Decimal


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One field of a meter's `data`: its path, whether it is required, and its type check."""

    name: str
    required: bool
    avro_type: str
    check: TypeCheck


def _rule(field: dict[str, Any]) -> FieldRule:
    ftype = field["type"]
    nullable = False
    if isinstance(ftype, list):
        nullable = "null" in ftype
        ftype = next((t for t in ftype if t != "null"), "null")
    if isinstance(ftype, dict):
        ftype = ftype.get("type", "record")
    base = AVRO_CHECKS.get(ftype, lambda v: True)
    check = (lambda v: v is None or base(v)) if nullable else base
    return FieldRule(field["name"], not nullable and "default" not in field, ftype, check)


@dataclass(frozen=True, slots=True)
class CompiledMeter:
    """A meter's checks, built once from its Avro schema."""

    meter: MeterDefinition
    fields: tuple[FieldRule, ...]

    @classmethod
    def compile(cls, meter: MeterDefinition) -> CompiledMeter:
        """Turn the meter's Avro record fields into field rules."""
        return cls(meter, tuple(_rule(f) for f in meter.avro_schema["fields"]))

    def check(self, data: dict[str, Any]) -> Decimal | Rejection:
        """Check `data` and return the quantity this event contributes, or a rejection."""
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
        if self.meter.aggregation is Aggregation.COUNT:
            return Decimal(1)
        value = data[self.meter.value_field]  # type: ignore[index]  # checked at load
        if isinstance(value, float) and not math.isfinite(value):
            return Rejection(ReasonCode.INVALID_VALUE, f"data.{self.meter.value_field} is {value}")
        if value < 0:
            return Rejection(
                ReasonCode.INVALID_VALUE, f"data.{self.meter.value_field} must be >= 0, got {value}"
            )
        quantity = Decimal(repr(value) if isinstance(value, float) else value)
        if quantity >= MAX_QUANTITY:
            return Rejection(
                ReasonCode.INVALID_VALUE,
                f"data.{self.meter.value_field} is {value}, above the limit of {MAX_QUANTITY:.0e}",
            )
        # plus() turns -0 into 0; the context is wide enough for 29 + 9 digits.
        return QUANTITY_CONTEXT.plus(quantity.quantize(QUANTITY_SCALE, context=QUANTITY_CONTEXT))


class Validator:
    """Validates raw payloads against the meters of a registry."""

    def __init__(self, registry: MeterRegistry) -> None:
        self._meters = {
            name: CompiledMeter.compile(meter)
            for name in registry.names()
            if (meter := registry.current(name)) is not None
        }

    def validate(self, raw: str | bytes) -> ValidEvent | Rejection:
        """Validate one raw payload: the envelope, then the meter's data."""
        envelope = parse_envelope(raw)
        if isinstance(envelope, Rejection):
            return envelope
        return self.validate_envelope(envelope)

    def validate_envelope(self, envelope: Envelope) -> ValidEvent | Rejection:
        """Validate a parsed envelope's data against its meter."""
        compiled = self._meters.get(envelope.meter)
        if compiled is None:
            return Rejection(
                ReasonCode.UNKNOWN_METER,
                f"type {envelope.meter[:64]!r} is not a meter; known: {', '.join(self._meters)}",
            )
        quantity = compiled.check(envelope.data)
        if isinstance(quantity, Rejection):
            return quantity
        return ValidEvent(
            envelope.event_id,
            envelope.account_id,
            envelope.meter,
            envelope.event_time,
            period_start(envelope.event_time),
            quantity,
        )
