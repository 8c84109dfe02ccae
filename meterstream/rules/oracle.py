"""The test oracle: the exact totals a sequence of raw payloads must produce, in plain Python.

Independent of Flink: the first arrival of each (account, idempotency key) counts, a repeat
with other content is a DUPLICATE_ID_CONFLICT, a first arrival after its period's allowed
lateness is late (not counted), then one figure per (account, meter, period in the account's
time zone, segment) is computed with plain Python for each aggregation kind. Corrections
(docs/corrections.md) apply to counted first arrivals: a void takes the event out, an amend
replaces its content. Tests compare PostgreSQL with this.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from meterstream.meters.model import Aggregation
from meterstream.rules.periods import DEFAULT_ALLOWED_LATENESS, is_late, period_start
from meterstream.rules.reasons import ReasonCode, Rejection
from meterstream.rules.validate import QUANTITY_SCALE, Validator, ValidEvent

#: (account, meter, period start, dimensions)
TotalKey = tuple[str, str, date, str]
#: (account, idempotency key) -> the amended content, or None for a void.
Corrections = Mapping[tuple[str, str], ValidEvent | None]


@dataclass(slots=True)
class _Group:
    aggregation: Aggregation
    events: list[ValidEvent] = field(default_factory=list)

    def figure(self) -> Decimal:
        quantities = [e.quantity for e in self.events if e.quantity is not None]
        match self.aggregation:
            case Aggregation.COUNT:
                return Decimal(len(self.events))
            case Aggregation.SUM:
                return sum(quantities, Decimal(0))
            case Aggregation.MIN:
                return min(quantities)
            case Aggregation.MAX:
                return max(quantities)
            case Aggregation.MEAN:
                mean = sum(quantities, Decimal(0)) / len(quantities)
                return mean.quantize(QUANTITY_SCALE, rounding=ROUND_HALF_UP)
            case Aggregation.LATEST:
                # The latest event time (to the millisecond, as in SQL) wins; ties go to the
                # larger value's text, as in SQL.
                latest = max(
                    self.events,
                    key=lambda e: (int(e.event_time.timestamp() * 1000), format(e.quantity, "f")),
                )
                return latest.quantity  # type: ignore[return-value]
            case Aggregation.UNIQUE_COUNT:
                return Decimal(len({e.unique_value for e in self.events}))
        msg = f"no oracle for {self.aggregation}"
        raise AssertionError(msg)


@dataclass(frozen=True, slots=True)
class Expected:
    """What the pipeline must output for some input.

    Attributes:
        totals: (quantity, distinct events) per (account, meter, period, dimensions).
        rejections: (index in the input, reason code) of every event not counted.
        warnings: (index, reason code) of events counted with a warning.
    """

    totals: dict[TotalKey, tuple[Decimal, int]]
    rejections: list[tuple[int, str]]
    warnings: list[tuple[int, str]]
    #: (index, period key) of first arrivals that came after their period's allowed lateness.
    late: list[tuple[int, TotalKey]] = field(default_factory=list)


def expected_outcome(
    validator: Validator,
    payloads: Iterable[bytes | str],
    arrived_at: datetime | Sequence[datetime] | None = None,
    *,
    time_zones: Mapping[str, str] | None = None,
    allowed_lateness: timedelta = DEFAULT_ALLOWED_LATENESS,
    corrections: Corrections | None = None,
) -> Expected:
    """The outcome of `payloads`, in arrival order.

    Args:
        validator: validates each payload.
        payloads: raw records in arrival order.
        arrived_at: one arrival time for all (default now), or one per payload.
        time_zones: account -> IANA zone for billing periods (default UTC).
        allowed_lateness: how long after its end a period still takes events.
        corrections: voids and amends by (account, idempotency key), applied to the key's
            counted first arrival (its lateness is the first arrival's, its content the
            amend's); keys that were never counted are left alone.
    """
    items = list(payloads)
    if arrived_at is None or isinstance(arrived_at, datetime):
        arrivals = [arrived_at or datetime.now(UTC)] * len(items)
    else:
        arrivals = list(arrived_at)
    zones = time_zones or {}
    corrected = corrections or {}
    first_fingerprint: dict[tuple[str, str], int] = {}
    groups: dict[TotalKey, _Group] = {}
    rejections: list[tuple[int, str]] = []
    warnings: list[tuple[int, str]] = []
    late: list[tuple[int, TotalKey]] = []
    for index, (raw, arrival) in enumerate(zip(items, arrivals, strict=True)):
        result = validator.validate(raw, arrival)
        if isinstance(result, Rejection):
            rejections.append((index, result.code.value))
            continue
        if result.warning is not None:
            warnings.append((index, result.warning.code.value))
        key = (result.account_id, result.dedup_key)
        if key in first_fingerprint:
            if first_fingerprint[key] != result.fingerprint:
                rejections.append((index, ReasonCode.DUPLICATE_ID_CONFLICT.value))
            continue
        first_fingerprint[key] = result.fingerprint
        tz = zones.get(result.account_id, "UTC")
        period = period_start(result.event_time, tz)
        total_key = (result.account_id, result.meter, period, result.dimensions)
        if is_late(result.event_time, arrival, tz, allowed_lateness):
            late.append((index, total_key))
            continue
        if key in corrected:
            amended = corrected[key]
            if amended is None:
                continue  # voided
            result = amended
            period = period_start(result.event_time, tz)
            total_key = (result.account_id, result.meter, period, result.dimensions)
        groups.setdefault(total_key, _Group(result.aggregation)).events.append(result)
    totals = {key: (group.figure(), len(group.events)) for key, group in groups.items()}
    return Expected(totals, rejections, warnings, late)
