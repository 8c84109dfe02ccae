"""A meter: what its events carry (an Avro record schema) and how they are billed."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class Aggregation(StrEnum):
    """How a meter's events become one figure per account and billing period."""

    SUM = "SUM"
    COUNT = "COUNT"


@dataclass(frozen=True, slots=True)
class MeterDefinition:
    """One version of a meter, loaded from `schemas/<meter>/v<N>.avsc`.

    Attributes:
        name: the meter's name; events carry it as their CloudEvents `type`.
        version: the schema version number.
        aggregation: how events are aggregated per account and period.
        value_field: the `data` field aggregated (None for COUNT).
        avro_schema: the parsed Avro record schema of the event's `data`.
    """

    name: str
    version: int
    aggregation: Aggregation
    value_field: str | None
    avro_schema: dict[str, Any] = field(compare=False, hash=False)
    description: str = ""
