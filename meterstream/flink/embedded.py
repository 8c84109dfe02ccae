"""The Python rules as the job's JVM check (`io.meterstream.flink.CheckEvent`) calls them.

The JVM function answers for the events its fast path recognises; it calls `EmbeddedRules.check`
for every other record, in place, through pemja (the CPython embedded in the TaskManager, as in
PyFlink's thread mode). This module therefore imports no PyFlink: only the rules.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from meterstream.meters.registry import MeterRegistry
from meterstream.rules.reasons import Rejection
from meterstream.rules.validate import Validator

#: The fields of a checked record, in order: `FastCheckEvent.CHECKED_EVENT` in the JVM.
CHECKED_EVENT_FIELDS = (
    "reason",
    "detail",
    "warning",
    "warning_detail",
    "source_topic",
    "source_partition",
    "source_offset",
    "event_id",
    "account_id",
    "meter",
    "aggregation",
    "event_time_ms",
    "dimensions",
    "quantity",
    "unique_value",
    "dedup_key",
    "fingerprint",
)

CheckedRow = tuple[
    str | None,
    str | None,
    str | None,
    str | None,
    str,
    int,
    int,
    str | None,
    str | None,
    str | None,
    str | None,
    int | None,
    str | None,
    Decimal | None,
    str | None,
    str | None,
    int | None,
]

#: The fields after `meter`, all None for a rejected record.
_REJECTED_TAIL = (None,) * (len(CHECKED_EVENT_FIELDS) - 10)


def checked_row(
    validator: Validator,
    payload: str,
    arrived: datetime,
    *,
    topic: str,
    partition: int,
    offset: int,
) -> CheckedRow:
    """The checked row of one Kafka record: `reason` None when accepted, `warning` if with one."""
    result = validator.validate(payload, arrived)
    if isinstance(result, Rejection):
        known = (result.event_id, result.account_id, result.meter)
        return (result.code.value, result.detail, None, None, topic, partition, offset, *known,
                *_REJECTED_TAIL)  # fmt: skip
    warning = result.warning
    return (
        None,
        None,
        warning.code.value if warning else None,
        warning.detail if warning else None,
        topic,
        partition,
        offset,
        result.event_id,
        result.account_id,
        result.meter,
        result.aggregation.value,
        int(result.event_time.timestamp() * 1000),
        result.dimensions,
        result.quantity,
        result.unique_value,
        result.dedup_key,
        result.fingerprint,
    )


class EmbeddedRules:
    """The rules of the meters in `meters` (`MeterRegistry.to_json`), compiled once."""

    def __init__(self, meters: str) -> None:
        self._validator = Validator(MeterRegistry.from_json(meters))

    def check(
        self, payload: bytes, topic: str, partition: int, offset: int, arrived_ms: int
    ) -> CheckedRow:
        """The checked row of one record (its UTF-8 text) that reached Kafka at `arrived_ms`.

        The JVM hands the text over as UTF-8 bytes: pemja's own string conversion drops a
        leading byte order mark, which the rules must see (and reject) as it arrived.
        """
        arrived = datetime.fromtimestamp(arrived_ms / 1000, UTC)
        text = payload.decode("utf-8")
        return checked_row(
            self._validator, text, arrived, topic=topic, partition=partition, offset=offset
        )
