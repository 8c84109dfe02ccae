"""A meter: what its events carry (an Avro record schema) and how they are billed."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class Aggregation(StrEnum):
    """How a meter's events become one figure per account, billing period and segment."""

    SUM = "SUM"
    COUNT = "COUNT"
    MIN = "MIN"
    MAX = "MAX"
    MEAN = "MEAN"
    #: The value of the event with the latest event time (a gauge, e.g. seats in use).
    LATEST = "LATEST"
    #: The number of distinct values of the field (e.g. active users).
    UNIQUE_COUNT = "UNIQUE_COUNT"


#: Aggregations whose value field must be numeric.
NUMERIC_AGGREGATIONS = frozenset(
    {
        Aggregation.SUM,
        Aggregation.MIN,
        Aggregation.MAX,
        Aggregation.MEAN,
        Aggregation.LATEST,
    }
)


class IdempotencyKey(StrEnum):
    """What identifies a repeat of the same event (deduplicated within 35 days)."""

    #: The CloudEvents `id` (per account): the default.
    EVENT_ID = "EVENT_ID"
    #: (account, meter, event time): for clients that cannot send stable ids.
    ACCOUNT_METER_TIMESTAMP = "ACCOUNT_METER_TIMESTAMP"


@dataclass(frozen=True, slots=True)
class MeterDefinition:
    """One version of a meter, loaded from `schemas/<meter>/v<N>.avsc`.

    Attributes:
        name: the meter's name; events carry it as their CloudEvents `type`.
        version: the schema version number.
        aggregation: how events are aggregated per account, period and segment.
        value_field: the `data` field aggregated (None for COUNT).
        group_by: `data` fields whose values split the totals into segments.
        idempotency_key: what makes two events the same event.
        sunset: when set, the version is deprecated: accepted with a warning before this
            instant, rejected after it.
        avro_schema: the Avro record schema of the event's `data`, as parsed JSON.
    """

    name: str
    version: int
    aggregation: Aggregation
    value_field: str | None
    avro_schema: dict[str, Any] = field(compare=False, hash=False)
    group_by: tuple[str, ...] = ()
    idempotency_key: IdempotencyKey = IdempotencyKey.EVENT_ID
    sunset: datetime | None = None
    description: str = ""

    def billing_semantics(self) -> tuple[object, ...]:
        """What must stay the same across a meter's versions, or totals would change meaning."""
        return (self.aggregation, self.value_field, self.group_by, self.idempotency_key)
