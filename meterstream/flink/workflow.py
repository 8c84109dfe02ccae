"""The aggregation workflow: raw events -> check -> dedup -> per-period figures, plus the log.

`define_workflow` knows tables only by name: jobs register Kafka and JDBC tables under those
names, tests may register others. Every operator is a JVM one: the check (`check_event`, jvm/udf)
calls the Python rules in place for the records its fast path leaves open, and keyed state
(dedup, figures) runs in the SQL operators generated from this SQL.

Every record leaves the check in its Kafka partition's order, whichever rules decided it, and
nothing between the check and the dedup reorders records (one chain, one exchange): the dedup
sees the arrivals of each (account, idempotency key) in offset order, so the first one counts.
"""

from __future__ import annotations

from pyflink.table import StatementSet, TableEnvironment

from meterstream.config import Settings
from meterstream.flink.sqlgen import aggregate_sql
from meterstream.flink.tables import SinkTables
from meterstream.flink.udfs import register_check_event
from meterstream.meters.registry import MeterRegistry

# Every branch reads `checked_events` with the same columns, so the planner calls the check once
# per record for all of them.
CHECKED_EVENTS = """
CREATE TEMPORARY VIEW checked_events AS
SELECT payload, arrived_at,
       check_event(payload, kafka_topic, kafka_partition, kafka_offset, arrived_at) AS c
FROM {source}
"""

VALIDATED_EVENTS = """
CREATE TEMPORARY VIEW validated_events AS
SELECT c.event_id AS event_id, c.account_id AS account_id, c.meter AS meter,
       c.aggregation AS aggregation, c.event_time_ms AS event_time_ms,
       TO_TIMESTAMP_LTZ(c.event_time_ms, 3) AS event_time, c.dimensions AS dimensions,
       c.quantity AS quantity, c.unique_value AS unique_value, c.dedup_key AS dedup_key,
       c.fingerprint AS fingerprint, c.source_topic AS source_topic,
       c.source_partition AS source_partition, c.source_offset AS source_offset,
       payload, arrived_at, PROCTIME() AS proc_time
FROM checked_events
WHERE c.reason IS NULL
"""

# Each account's billing time zone, from PostgreSQL through a cached lookup (UTC by default).
ZONED_EVENTS = """
CREATE TEMPORARY VIEW zoned_events AS
SELECT v.*, COALESCE(z.time_zone, 'UTC') AS time_zone
FROM validated_events AS v
LEFT JOIN {time_zones} FOR SYSTEM_TIME AS OF v.proc_time AS z ON v.account_id = z.account_id
"""

UTC_EVENTS = """
CREATE TEMPORARY VIEW zoned_events AS
SELECT *, 'UTC' AS time_zone FROM validated_events
"""

# The period is the local calendar month of the event time. An event is too late when it
# reached Kafka (the broker's append time, so a replay decides the same) after the period's
# end plus the allowed lateness. Both are JVM functions (jvm/udf: BillingPeriodStart,
# ArrivedTooLate); rules/periods.py is the same rule in Python, and tests/flink/test_periods_jvm.py
# holds them to the same answers.
ACCEPTED_EVENTS = """
CREATE TEMPORARY VIEW accepted_events AS
SELECT event_id, account_id, meter, aggregation, event_time_ms, event_time,
       billing_period_start(event_time_ms, time_zone) AS period_start, dimensions, quantity,
       unique_value, dedup_key, fingerprint, source_topic, source_partition, source_offset,
       payload, arrived_at, proc_time, time_zone,
       arrived_too_late(event_time_ms, time_zone, arrived_at, {lateness_hours}) AS too_late
FROM zoned_events
"""

# Number each arrival of an (account, idempotency key) and remember the first one's content
# fingerprint: one small accumulator per key, expiring after table.exec.state.ttl (35 days).
# The first arrival is counted; a later one with another fingerprint is a conflict. Processing
# time orders them as they reach this operator, which is their Kafka offset order (see above).
ARRIVALS = """
CREATE TEMPORARY VIEW arrivals AS
SELECT *,
       COUNT(*) OVER w AS arrival,
       FIRST_VALUE(fingerprint) OVER w AS first_fingerprint
FROM accepted_events
WINDOW w AS (
  PARTITION BY account_id, dedup_key ORDER BY proc_time
  ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
)
"""

UNIQUE_EVENTS = """
CREATE TEMPORARY VIEW unique_events AS
SELECT account_id, meter, aggregation, event_time_ms, event_time, period_start, dimensions,
       quantity, unique_value, arrived_at
FROM arrivals
WHERE arrival = 1 AND NOT too_late
"""

LATE_EVENTS = """
INSERT INTO {sink}
SELECT source_topic, source_partition, source_offset, account_id, meter, event_id,
       period_start, dimensions, quantity, CAST(event_time AS TIMESTAMP(3)),
       CAST(arrived_at AS TIMESTAMP(3)), payload
FROM arrivals
WHERE arrival = 1 AND too_late
"""

# The validation log: rejections (errors), accepted-with-warning events, and conflicts.
VALIDATION_LOG = """
CREATE TEMPORARY VIEW validation_log AS
SELECT c.source_topic AS source_topic, c.source_partition AS source_partition,
       c.source_offset AS source_offset, c.reason AS reason_code, 'error' AS severity,
       c.detail AS detail, c.account_id AS account_id, c.meter AS meter,
       c.event_id AS event_id, payload AS raw_payload,
       CAST(arrived_at AS TIMESTAMP(3)) AS arrived_at
FROM checked_events
WHERE c.reason IS NOT NULL
UNION ALL
SELECT c.source_topic, c.source_partition, c.source_offset, c.warning, 'warning',
       c.warning_detail, c.account_id, c.meter, c.event_id, payload,
       CAST(arrived_at AS TIMESTAMP(3))
FROM checked_events
WHERE c.reason IS NULL AND c.warning IS NOT NULL
UNION ALL
SELECT source_topic, source_partition, source_offset, 'DUPLICATE_ID_CONFLICT', 'error',
       CONCAT('repeats the idempotency key ', dedup_key,
              ' of an earlier event with different content; the first one was counted'),
       account_id, meter, event_id, payload, CAST(arrived_at AS TIMESTAMP(3))
FROM arrivals
WHERE arrival > 1 AND fingerprint <> first_fingerprint
"""

LOG = "INSERT INTO {sink} SELECT * FROM validation_log"


def define_workflow(
    t_env: TableEnvironment,
    registry: MeterRegistry,
    settings: Settings,
    *,
    source: str,
    sinks: SinkTables,
    time_zones: str | None = None,
) -> StatementSet:
    """Add the workflow's views and inserts to `t_env`; return the statements to execute.

    `time_zones` names a lookup table of (account_id, time_zone); without it every account
    is billed in UTC.
    """
    register_check_event(t_env, registry, fast_path=settings.flink.fast_path)
    zoned = ZONED_EVENTS.format(time_zones=time_zones) if time_zones else UTC_EVENTS
    for view in (
        CHECKED_EVENTS.format(source=source),
        VALIDATED_EVENTS,
        zoned,
        ACCEPTED_EVENTS.format(lateness_hours=int(settings.flink.allowed_lateness_hours)),
        ARRIVALS,
        UNIQUE_EVENTS,
        VALIDATION_LOG,
    ):
        t_env.execute_sql(view)
    statements = t_env.create_statement_set()
    statements.add_insert_sql(
        aggregate_sql(
            registry,
            source="unique_events",
            sink=sinks.usage_aggregates,
            ttl_days=settings.flink.aggregate_ttl_days,
        )
    )
    statements.add_insert_sql(LOG.format(sink=sinks.rejected_events))
    if sinks.rejected_topic:
        statements.add_insert_sql(LOG.format(sink=sinks.rejected_topic))
    if sinks.late_events:
        statements.add_insert_sql(LATE_EVENTS.format(sink=sinks.late_events))
    if sinks.archive:
        from meterstream.flink.archive import archive_insert_sql  # noqa: PLC0415

        statements.add_insert_sql(archive_insert_sql(sinks.archive))
    return statements
