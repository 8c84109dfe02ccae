"""Stateless Python UDFs: a few lines each, calling `meterstream.rules`. Run in thread mode."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from pyflink.common import Row
from pyflink.table import DataTypes
from pyflink.table.types import BigIntType, DataType, DecimalType, IntType, VarCharType
from pyflink.table.udf import (
    ScalarFunction,
    TableFunction,
    UserDefinedScalarFunctionWrapper,
    UserDefinedTableFunctionWrapper,
    udf,
    udtf,
)

from meterstream.meters.registry import MeterRegistry
from meterstream.rules.reasons import Rejection
from meterstream.rules.validate import Validator

# The Kafka position goes in and comes back out so that every branch of the workflow calls the
# UDF identically: the planner then runs it once per event, not once per branch (a test in
# tests/flink checks the plan).
CHECKED_EVENT = DataTypes.ROW(
    [
        DataTypes.FIELD("reason", DataTypes.STRING()),
        DataTypes.FIELD("detail", DataTypes.STRING()),
        DataTypes.FIELD("warning", DataTypes.STRING()),
        DataTypes.FIELD("warning_detail", DataTypes.STRING()),
        DataTypes.FIELD("source_topic", DataTypes.STRING()),
        DataTypes.FIELD("source_partition", DataTypes.INT()),
        DataTypes.FIELD("source_offset", DataTypes.BIGINT()),
        DataTypes.FIELD("event_id", DataTypes.STRING()),
        DataTypes.FIELD("account_id", DataTypes.STRING()),
        DataTypes.FIELD("meter", DataTypes.STRING()),
        DataTypes.FIELD("aggregation", DataTypes.STRING()),
        DataTypes.FIELD("event_time_ms", DataTypes.BIGINT()),
        DataTypes.FIELD("dimensions", DataTypes.STRING()),
        DataTypes.FIELD("quantity", DataTypes.DECIMAL(38, 9)),
        DataTypes.FIELD("unique_value", DataTypes.STRING()),
        DataTypes.FIELD("dedup_key", DataTypes.STRING()),
        DataTypes.FIELD("fingerprint", DataTypes.BIGINT()),
    ]
)


def _sql_type(data_type: DataType) -> str:
    """The Flink SQL name of one of CHECKED_EVENT's field types."""
    if isinstance(data_type, DecimalType):
        return f"DECIMAL({data_type.precision}, {data_type.scale})"
    return {VarCharType: "STRING", IntType: "INT", BigIntType: "BIGINT"}[type(data_type)]


#: CHECKED_EVENT in Flink SQL (the JVM fast path declares the same type).
CHECKED_EVENT_SQL = "ROW<{}>".format(
    ", ".join(f"`{f.name}` {_sql_type(f.data_type)}" for f in CHECKED_EVENT.fields)
)

#: The fields after `meter`, all NULL for a rejected record.
REJECTED_TAIL = (None,) * (len(CHECKED_EVENT.fields) - 10)


class CheckEvent(ScalarFunction):
    """`check_event(payload, topic, partition, offset, arrived_at)`: validate one Kafka record.

    `reason` is NULL when the event is accepted; `warning` is set when it is accepted with one.
    """

    def __init__(self, registry: MeterRegistry) -> None:
        self._registry = registry
        self._validator: Validator | None = None

    def open(self, function_context: Any) -> None:  # noqa: ARG002 - Flink's signature
        """Compile the meters' checks once per worker."""
        self._validator = Validator(self._registry)

    def eval(
        self, payload: str | None, topic: str, partition: int, offset: int, arrived_at: datetime
    ) -> Row:
        """Return the CHECKED_EVENT row for one Kafka record."""
        assert self._validator is not None  # noqa: S101 - open() always runs first
        # TIMESTAMP_LTZ arrives naive, in the session time zone, which the job pins to UTC.
        result = self._validator.validate(payload or "", arrived_at.replace(tzinfo=UTC))
        if isinstance(result, Rejection):
            known = (result.event_id, result.account_id, result.meter)
            return Row(
                result.code.value,
                result.detail,
                None,
                None,
                topic,
                partition,
                offset,
                *known,
                *REJECTED_TAIL,
            )
        warning = result.warning
        return Row(
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


#: The JVM fast path of `check_event` (jvm/udf): the same row for the events it recognises as
#: accepted, NULL for every other record, which then goes to `check_event`.
FAST_CHECK_EVENT_CLASS = "io.meterstream.flink.FastCheckEvent"
#: The billing-period functions (jvm/udf), by their SQL names: rules/periods.py in the JVM.
PERIOD_FUNCTIONS = {
    "billing_period_start": "io.meterstream.flink.BillingPeriodStart",
    "arrived_too_late": "io.meterstream.flink.ArrivedTooLate",
}


def fast_path_spec(registry: MeterRegistry) -> str:
    """The compiled meter rules `fast_check_event` applies, as JSON (its last argument)."""
    return orjson.dumps(Validator(registry).describe()).decode()


def check_event_udf(registry: MeterRegistry) -> UserDefinedScalarFunctionWrapper:
    """The `check_event` UDF, carrying the meter definitions loaded on the client."""
    return udf(CheckEvent(registry), result_type=CHECKED_EVENT)


class CheckEventRows(TableFunction):
    """`check_event_rows(payload, topic, partition, offset, arrived_at)`: one CHECKED_EVENT row.

    `check_event` as a table function, for the records the JVM fast path leaves to Python. A
    table function, because the planner keeps the filter that selects those records below a
    Python correlate; a scalar UDF would be called for every record.
    """

    def __init__(self, registry: MeterRegistry) -> None:
        self._check = CheckEvent(registry)

    def open(self, function_context: Any) -> None:
        """Compile the meters' checks once per worker."""
        self._check.open(function_context)

    def eval(  # noqa: PLR0913, PLR0917 - one argument per column of the Kafka record
        self, payload: str | None, topic: str, partition: int, offset: int, arrived_at: datetime
    ) -> Iterator[Row]:
        """Yield the record's CHECKED_EVENT row."""
        yield self._check.eval(payload, topic, partition, offset, arrived_at)


def check_event_rows_udtf(registry: MeterRegistry) -> UserDefinedTableFunctionWrapper:
    """The `check_event_rows` table function, carrying the meter definitions."""
    return udtf(
        CheckEventRows(registry),
        result_types=[field.data_type for field in CHECKED_EVENT.fields],
    )
