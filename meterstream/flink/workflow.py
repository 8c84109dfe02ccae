"""The aggregation workflow: raw events -> check -> dedup -> per-period figures, plus the log.

`define_workflow` knows tables only by name: jobs register Kafka and JDBC tables under those
names, tests may register others. Keyed state (dedup, figures) runs in JVM operators generated
from this SQL; Python runs only inside the stateless `check_event` UDF.

Every branch reads `checked_events` with the same columns, in the same order (`payload`,
`arrived_at`, `c`), so the planner evaluates the UDF once per record for all of them.
"""

from __future__ import annotations

from pyflink.table import StatementSet, TableEnvironment

from meterstream.config import Settings
from meterstream.flink.sqlgen import aggregate_sql
from meterstream.flink.tables import SinkTables
from meterstream.flink.udfs import (
    CHECKED_EVENT,
    CHECKED_EVENT_SQL,
    FAST_CHECK_EVENT_CLASS,
    PERIOD_FUNCTIONS,
    check_event_rows_udtf,
    check_event_udf,
    fast_path_spec,
)
from meterstream.meters.registry import MeterRegistry

CHECKED_EVENTS = """
CREATE TEMPORARY VIEW checked_events AS
SELECT payload, arrived_at,
       check_event(payload, kafka_topic, kafka_partition, kafka_offset, arrived_at) AS c,
       TRUE AS by_python
FROM {source}
"""

# With the fast path (the default), the JVM function `fast_check_event` checks every record
# first and answers for the events it recognises as accepted; only the other records (every
# rejection, every warning, anything unusual) reach Python, through the table function
# `check_event_rows` (a Python table function: the planner keeps the filter below it, where a
# scalar UDF would be called for every record). Both give the same row for the same record
# (tests/flink/test_fast_path.py). The JVM function remembers its last answer: the two
# branches ask about each record one after the other.
FAST_CHECKED_EVENTS = """
CREATE TEMPORARY VIEW fast_checked_events AS
SELECT payload, arrived_at, kafka_topic, kafka_partition, kafka_offset,
       fast_check_event(payload, kafka_topic, kafka_partition, kafka_offset, arrived_at,
                        '{spec}') AS fast
FROM {source}
"""

JVM_CHECKED_EVENTS = """
CREATE TEMPORARY VIEW jvm_checked_events AS
SELECT payload, arrived_at, fast AS c, FALSE AS by_python
FROM fast_checked_events
WHERE fast IS NOT NULL
"""

PYTHON_CHECKED_ROWS = """
CREATE TEMPORARY VIEW python_checked_rows AS
SELECT payload, arrived_at, t.*
FROM (SELECT * FROM fast_checked_events WHERE fast IS NULL) AS undecided,
     LATERAL TABLE(check_event_rows(payload, kafka_topic, kafka_partition, kafka_offset,
                                    arrived_at)) AS t({names})
"""

PYTHON_CHECKED_EVENTS = """
CREATE TEMPORARY VIEW python_checked_events AS
SELECT payload, arrived_at, CAST(ROW({names}) AS {row_type}) AS c, TRUE AS by_python
FROM python_checked_rows
"""

FAST_OR_PYTHON_CHECKED_EVENTS = """
CREATE TEMPORARY VIEW checked_events AS
SELECT * FROM jvm_checked_events
UNION ALL
SELECT * FROM python_checked_events
"""

# Validated and zoned per branch of checked rows ({branch}: `checked`, or `jvm_checked` and
# `python_checked` with the fast path), united only after the time-zone lookup. An operator
# that follows a UNION ALL cannot be chained to the one before it, so a lookup above the
# union ran in a task of its own, and every event crossed a thread (serialised, buffered,
# read back) on its way there; below it, the lookup runs in the source's task.
# Python's branch reads the table function's own columns ({c} empty), not the ROW built from
# them: a filter on a field of that CAST(ROW(...)) made Flink 2.2's planner generate code
# reading the wrong input fields ("Table program cannot be compiled").
VALIDATED_EVENTS = """
CREATE TEMPORARY VIEW validated_{branch}_events AS
SELECT {c}event_id AS event_id, {c}account_id AS account_id, {c}meter AS meter,
       {c}aggregation AS aggregation, {c}event_time_ms AS event_time_ms,
       TO_TIMESTAMP_LTZ({c}event_time_ms, 3) AS event_time, {c}dimensions AS dimensions,
       {c}quantity AS quantity, {c}unique_value AS unique_value, {c}dedup_key AS dedup_key,
       {c}fingerprint AS fingerprint, {c}source_topic AS source_topic,
       {c}source_partition AS source_partition, {c}source_offset AS source_offset,
       payload, arrived_at, PROCTIME() AS proc_time
FROM {rows}
WHERE {c}reason IS NULL
"""

# Each account's billing time zone, from PostgreSQL through a cached lookup (UTC by default).
ZONED_EVENTS = """
SELECT v.*, COALESCE(z.time_zone, 'UTC') AS time_zone
FROM validated_{branch}_events AS v
LEFT JOIN {time_zones} FOR SYSTEM_TIME AS OF v.proc_time AS z ON v.account_id = z.account_id
"""

UTC_EVENTS = """
SELECT *, 'UTC' AS time_zone FROM validated_{branch}_events
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
# The first arrival is counted; a later one with another fingerprint is a conflict.
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
# Only the Python rules reject or warn (the JVM fast path answers only for events accepted
# without a warning). Saying so (`by_python`) lets the planner drop the fast path's rows
# from these branches: they then have one consumer and are not copied for two that
# would drop them.
VALIDATION_LOG = """
CREATE TEMPORARY VIEW validation_log AS
SELECT c.source_topic AS source_topic, c.source_partition AS source_partition,
       c.source_offset AS source_offset, c.reason AS reason_code, 'error' AS severity,
       c.detail AS detail, c.account_id AS account_id, c.meter AS meter,
       c.event_id AS event_id, payload AS raw_payload,
       CAST(arrived_at AS TIMESTAMP(3)) AS arrived_at
FROM checked_events
WHERE by_python AND c.reason IS NOT NULL
UNION ALL
SELECT c.source_topic, c.source_partition, c.source_offset, c.warning, 'warning',
       c.warning_detail, c.account_id, c.meter, c.event_id, payload,
       CAST(arrived_at AS TIMESTAMP(3))
FROM checked_events
WHERE by_python AND c.reason IS NULL AND c.warning IS NOT NULL
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
    t_env.create_temporary_system_function("check_event", check_event_udf(registry))
    for name, java_class in PERIOD_FUNCTIONS.items():
        t_env.create_java_temporary_system_function(name, java_class)
    if settings.flink.fast_path:
        t_env.create_java_temporary_system_function("fast_check_event", FAST_CHECK_EVENT_CLASS)
        spec = fast_path_spec(registry).replace("'", "''")
        t_env.create_temporary_system_function("check_event_rows", check_event_rows_udtf(registry))
        checked = [
            FAST_CHECKED_EVENTS.format(source=source, spec=spec),
            JVM_CHECKED_EVENTS,
            PYTHON_CHECKED_ROWS.format(names=", ".join(CHECKED_EVENT.names)),
            PYTHON_CHECKED_EVENTS.format(
                row_type=CHECKED_EVENT_SQL, names=", ".join(CHECKED_EVENT.names)
            ),
            FAST_OR_PYTHON_CHECKED_EVENTS,
        ]
        branches = {
            "jvm_checked": ("jvm_checked_events", "c."),
            "python_checked": ("python_checked_rows", ""),
        }
    else:
        checked = [CHECKED_EVENTS.format(source=source)]
        branches = {"checked": ("checked_events", "c.")}
    zoned = ZONED_EVENTS if time_zones else UTC_EVENTS
    for view in (
        *checked,
        *(
            VALIDATED_EVENTS.format(branch=branch, rows=rows, c=c)
            for branch, (rows, c) in branches.items()
        ),
        "CREATE TEMPORARY VIEW zoned_events AS\n"
        + "UNION ALL".join(
            zoned.format(branch=branch, time_zones=time_zones) for branch in branches
        ),
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
