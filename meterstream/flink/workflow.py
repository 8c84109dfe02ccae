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
from meterstream.flink.udfs import check_event_udf
from meterstream.meters.registry import MeterRegistry

CHECKED_EVENTS = """
CREATE TEMPORARY VIEW checked_events AS
SELECT payload, arrived_at, proc_time,
       check_event(payload, kafka_topic, kafka_partition, kafka_offset, arrived_at) AS c
FROM {source}
"""

ACCEPTED_EVENTS = """
CREATE TEMPORARY VIEW accepted_events AS
SELECT c.event_id AS event_id, c.account_id AS account_id, c.meter AS meter,
       c.aggregation AS aggregation, c.event_time_ms AS event_time_ms,
       TO_TIMESTAMP_LTZ(c.event_time_ms, 3) AS event_time,
       CAST(c.period_start AS DATE) AS period_start, c.dimensions AS dimensions,
       c.quantity AS quantity, c.unique_value AS unique_value, c.dedup_key AS dedup_key,
       c.fingerprint AS fingerprint, c.source_topic AS source_topic,
       c.source_partition AS source_partition, c.source_offset AS source_offset,
       payload, arrived_at, proc_time
FROM checked_events
WHERE c.reason IS NULL
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
WHERE arrival = 1
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
) -> StatementSet:
    """Add the workflow's views and inserts to `t_env`; return the statements to execute."""
    t_env.create_temporary_system_function("check_event", check_event_udf(registry))
    for view in (
        CHECKED_EVENTS.format(source=source),
        ACCEPTED_EVENTS,
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
    return statements
