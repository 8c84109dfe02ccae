"""The test oracle: the exact totals a set of raw payloads must produce, computed plainly in Python.

Independent of Flink: dedup by (account, id) keeping the first arrival, then a sum per
(account, meter, period). Tests compare the pipeline's PostgreSQL rows with this.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from meterstream.rules.reasons import Rejection
from meterstream.rules.validate import Validator

TotalKey = tuple[str, str, date]


@dataclass(frozen=True, slots=True)
class Expected:
    """What the pipeline must output for some input."""

    totals: dict[TotalKey, tuple[Decimal, int]]
    rejections: list[tuple[int, str]]


def expected_outcome(validator: Validator, payloads: Iterable[bytes | str]) -> Expected:
    """Totals (quantity, event count) per (account, meter, period) and the rejections, in order.

    `payloads` are in arrival order; the first arrival of an (account, id) is the one counted.
    Rejections are (index in `payloads`, reason code).
    """
    seen: set[tuple[str, str]] = set()
    totals: dict[TotalKey, tuple[Decimal, int]] = {}
    rejections: list[tuple[int, str]] = []
    for index, raw in enumerate(payloads):
        result = validator.validate(raw)
        if isinstance(result, Rejection):
            rejections.append((index, result.code.value))
            continue
        key = (result.account_id, result.event_id)
        if key in seen:
            continue
        seen.add(key)
        total_key = (result.account_id, result.meter, result.period_start)
        quantity, count = totals.get(total_key, (Decimal(0), 0))
        totals[total_key] = (quantity + result.quantity, count + 1)
    return Expected(totals, rejections)
