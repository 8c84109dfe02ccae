"""The aggregation workflow: raw events -> check -> dedup -> per-period totals, plus rejections.

`define_workflow` knows tables only by name: jobs register Kafka and JDBC tables under those
names, tests may register others. Keyed state (dedup, totals) runs in JVM operators generated
from this SQL; Python runs only inside the stateless `check_event` UDF.
"""

from __future__ import annotations

from pyflink.table import StatementSet, TableEnvironment

from meterstream.config import Settings
from meterstream.flink.tables import SinkTables
from meterstream.flink.udfs import check_event_udf
from meterstream.meters.registry import MeterRegistry

CHECKED_EVENTS = """
CREATE TEMPORARY VIEW checked_events AS
SELECT arrived_at, proc_time,
       check_event(payload, kafka_topic, kafka_partition, kafka_offset) AS c
FROM {source}
"""

ACCEPTED_EVENTS = """
CREATE TEMPORARY VIEW accepted_events AS
SELECT c.event_id AS event_id, c.account_id AS account_id, c.meter AS meter,
       TO_TIMESTAMP_LTZ(c.event_time_ms, 3) AS event_time,
       CAST(c.period_start AS DATE) AS period_start,
       c.quantity AS quantity, arrived_at, proc_time
FROM checked_events
WHERE c.reason IS NULL
"""

# Keep the first arrival of each (account, id): ROW_NUMBER over processing time is Flink's
# deduplication operator, one small ValueState per key, expiring after table.exec.state.ttl.
UNIQUE_EVENTS = """
CREATE TEMPORARY VIEW unique_events AS
SELECT event_id, account_id, meter, event_time, period_start, quantity, arrived_at
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY account_id, event_id ORDER BY proc_time ASC) AS row_num
  FROM accepted_events
)
WHERE row_num = 1
"""

# Totals are absolute values keyed like the PostgreSQL primary key, so every write is an
# idempotent upsert; a replay after restore rewrites the same figures.
AGGREGATE = """
INSERT INTO {sink}
SELECT /*+ STATE_TTL('unique_events' = '{ttl_days}d') */
       account_id, meter, period_start, '' AS dimensions,
       SUM(quantity) AS quantity, COUNT(*) AS event_count,
       CAST(MIN(event_time) AS TIMESTAMP(3)) AS first_event_at,
       CAST(MAX(event_time) AS TIMESTAMP(3)) AS last_event_at,
       CAST(MAX(arrived_at) AS TIMESTAMP(3)) AS last_arrived_at
FROM unique_events
GROUP BY account_id, meter, period_start
"""

REJECT = """
INSERT INTO {sink}
SELECT c.source_topic, c.source_partition, c.source_offset, c.reason, c.detail, c.raw_payload,
       CAST(arrived_at AS TIMESTAMP(3))
FROM checked_events
WHERE c.reason IS NOT NULL
"""


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
    t_env.execute_sql(CHECKED_EVENTS.format(source=source))
    t_env.execute_sql(ACCEPTED_EVENTS)
    t_env.execute_sql(UNIQUE_EVENTS)
    statements = t_env.create_statement_set()
    statements.add_insert_sql(
        AGGREGATE.format(sink=sinks.usage_aggregates, ttl_days=settings.flink.aggregate_ttl_days)
    )
    statements.add_insert_sql(REJECT.format(sink=sinks.rejected_events))
    if sinks.rejected_topic:
        statements.add_insert_sql(REJECT.format(sink=sinks.rejected_topic))
    return statements
