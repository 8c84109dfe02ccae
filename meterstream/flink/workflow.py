"""The aggregation workflow: raw events -> check -> dedup -> per-period figures, plus the log.

`define_workflow` knows tables only by name: jobs register Kafka and JDBC tables under those
names, tests may register others. Every operator is a JVM one: the check (`check_event`, jvm/udf)
calls the Python rules in place for the records its fast path leaves open. Keyed state (dedup,
figures) runs in one keyed operator (`DedupAndFigures`, jvm/udf, wired by `KeyedPath`), or, with
`flink.keyed_path = "sql"`, in the SQL reference path generated here and in `sqlgen`: an OVER
aggregation and a two-phase GROUP BY. Both give the same rows
(tests/integration/test_keyed_path.py).

Every record leaves the check in its Kafka partition's order, whichever rules decided it, and
nothing between the check and the dedup reorders records (one chain, one exchange): the dedup
sees the arrivals of each (account, idempotency key) in offset order, so the first one counts.
"""

from __future__ import annotations

from typing import Any

from pyflink.java_gateway import get_gateway
from pyflink.table import StatementSet, StreamTableEnvironment

from meterstream.config import Settings
from meterstream.flink.sqlgen import aggregate_sql
from meterstream.flink.tables import SinkTables
from meterstream.flink.udfs import register_check_event
from meterstream.meters.model import IDENTIFIER
from meterstream.meters.registry import MeterRegistry

# Every branch reads `checked_events` with the same columns, so the planner calls the check once
# per record for all of them.
CHECKED_EVENTS = """
CREATE TEMPORARY VIEW checked_events AS
SELECT payload, arrived_at,
       check_event(payload, kafka_topic, kafka_partition, kafka_offset, arrived_at) AS c
FROM {source}
"""

# The checked fields as columns, and the processing time the SQL path's dedup orders by.
CHECKED_FLAT = """
CREATE TEMPORARY VIEW checked_flat AS
SELECT c.reason AS reason, c.detail AS detail, c.warning AS warning,
       c.warning_detail AS warning_detail, c.source_topic AS source_topic,
       c.source_partition AS source_partition, c.source_offset AS source_offset,
       c.event_id AS event_id, c.account_id AS account_id, c.meter AS meter,
       c.aggregation AS aggregation, c.event_time_ms AS event_time_ms,
       c.dimensions AS dimensions, c.quantity AS quantity, c.unique_value AS unique_value,
       c.dedup_key AS dedup_key, c.fingerprint AS fingerprint, payload, arrived_at,
       PROCTIME() AS proc_time
FROM checked_events
"""

# Each account's billing time zone (UTC by default): `account_time_zone` (jvm/udf) holds the
# PostgreSQL table in memory and reads it again every minute. Every record is looked up (a
# rejected one has no account), so that one chain carries every record to the dedup's exchange.
ZONED_EVENTS = """
CREATE TEMPORARY VIEW zoned_events AS
SELECT *, account_time_zone(account_id) AS time_zone FROM checked_flat
"""

UTC_EVENTS = """
CREATE TEMPORARY VIEW zoned_events AS
SELECT *, 'UTC' AS time_zone FROM checked_flat
"""

# The period is the local calendar month of the event time. An event is too late when it
# reached Kafka (the broker's append time, so a replay decides the same) after the period's
# end plus the allowed lateness. Both are JVM functions (jvm/udf: BillingPeriodStart,
# ArrivedTooLate); rules/periods.py is the same rule in Python, and tests/flink/test_periods_jvm.py
# holds them to the same answers. Rejected records get neither.
# The columns are those of `KeyedPath.COLUMNS` (jvm/udf), then proc_time.
ROUTED_EVENTS = """
CREATE TEMPORARY VIEW routed_events AS
SELECT reason, detail, warning, warning_detail, source_topic, source_partition, source_offset,
       event_id, account_id, meter, aggregation, event_time_ms,
       CASE WHEN reason IS NULL THEN billing_period_start(event_time_ms, time_zone)
       END AS period_start,
       dimensions, quantity, unique_value, dedup_key, fingerprint, payload, arrived_at,
       CASE WHEN reason IS NULL
            THEN arrived_too_late(event_time_ms, time_zone, arrived_at, {lateness_hours})
            ELSE FALSE
       END AS too_late,
       proc_time
FROM zoned_events
"""

# The keyed operator's input: every record, in one chain from the source (KeyedPath.register).
KEYED_INPUT = """
CREATE TEMPORARY VIEW keyed_input AS
SELECT reason, detail, warning, warning_detail, source_topic, source_partition, source_offset,
       event_id, account_id, meter, aggregation, event_time_ms, period_start, dimensions,
       quantity, unique_value, dedup_key, fingerprint, payload, arrived_at, too_late
FROM routed_events
"""

# The SQL reference path. Number each arrival of an (account, idempotency key) and remember the
# first one's content fingerprint: one small accumulator per key, expiring after
# table.exec.state.ttl (35 days). The first arrival is counted; a later one with another
# fingerprint is a conflict. Processing time orders them as they reach this operator, which is
# their Kafka offset order (one chain from the source, one exchange).
ARRIVALS = """
CREATE TEMPORARY VIEW arrivals AS
SELECT *,
       COUNT(*) OVER w AS arrival,
       FIRST_VALUE(fingerprint) OVER w AS first_fingerprint
FROM routed_events
WHERE reason IS NULL
WINDOW w AS (
  PARTITION BY account_id, dedup_key ORDER BY proc_time
  ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
)
"""

UNIQUE_EVENTS = """
CREATE TEMPORARY VIEW unique_events AS
SELECT account_id, meter, aggregation, event_time_ms,
       TO_TIMESTAMP_LTZ(event_time_ms, 3) AS event_time, period_start, dimensions, quantity,
       unique_value, arrived_at
FROM arrivals
WHERE arrival = 1 AND NOT too_late
"""

# The SQL path's views under the names the keyed operator registers its outputs by (the log
# reads the checked records before the time-zone lookup, which it does not need).
SQL_PATH_OUTPUTS = (
    """
CREATE TEMPORARY VIEW check_log AS
SELECT * FROM checked_flat WHERE reason IS NOT NULL OR warning IS NOT NULL
""",
    """
CREATE TEMPORARY VIEW duplicate_conflicts AS
SELECT * FROM arrivals WHERE arrival > 1 AND fingerprint <> first_fingerprint
""",
    """
CREATE TEMPORARY VIEW late_first_arrivals AS
SELECT * FROM arrivals WHERE arrival = 1 AND too_late
""",
    # `arrival > 0` always holds; it keeps the planner from pruning the dedup operator out of
    # this branch, so that the archive is written in the dedup's task, off the source thread.
    """
CREATE TEMPORARY VIEW archive_rows AS
SELECT * FROM arrivals WHERE arrival > 0
""",
)

LATE_EVENTS = """
INSERT INTO {sink}
SELECT source_topic, source_partition, source_offset, account_id, meter, event_id,
       period_start, dimensions, quantity,
       CAST(TO_TIMESTAMP_LTZ(event_time_ms, 3) AS TIMESTAMP(3)),
       CAST(arrived_at AS TIMESTAMP(3)), payload
FROM late_first_arrivals
"""

# The validation log: rejections (errors), accepted-with-warning events, and conflicts.
VALIDATION_LOG = """
CREATE TEMPORARY VIEW validation_log AS
SELECT source_topic, source_partition, source_offset, reason AS reason_code,
       'error' AS severity, detail, account_id, meter, event_id, payload AS raw_payload,
       CAST(arrived_at AS TIMESTAMP(3)) AS arrived_at
FROM check_log
WHERE reason IS NOT NULL
UNION ALL
SELECT source_topic, source_partition, source_offset, warning, 'warning', warning_detail,
       account_id, meter, event_id, payload, CAST(arrived_at AS TIMESTAMP(3))
FROM check_log
WHERE reason IS NULL AND warning IS NOT NULL
UNION ALL
SELECT source_topic, source_partition, source_offset, 'DUPLICATE_ID_CONFLICT', 'error',
       CONCAT('repeats the idempotency key ', dedup_key,
              ' of an earlier event with different content; the first one was counted'),
       account_id, meter, event_id, payload, CAST(arrived_at AS TIMESTAMP(3))
FROM duplicate_conflicts
"""

LOG = "INSERT INTO {sink} SELECT * FROM validation_log"

FIGURES = "INSERT INTO {sink} SELECT * FROM figure_updates"

#: The keyed operator's wiring (jvm/udf), loaded from the job's jars.
KEYED_PATH_CLASS = "io.meterstream.flink.KeyedPath"
#: The time-zone function (jvm/udf) and how often it reads its table again, in seconds.
TIME_ZONE_CLASS = "io.meterstream.flink.AccountTimeZone"
TIME_ZONE_REFRESH_S = 60


def define_workflow(
    t_env: StreamTableEnvironment,
    registry: MeterRegistry,
    settings: Settings,
    *,
    source: str,
    sinks: SinkTables,
    time_zones: str | None = None,
) -> StatementSet:
    """Add the workflow's views and inserts to `t_env`; return the statements to execute.

    `time_zones` names the PostgreSQL table of (account_id, time_zone) to bill accounts in;
    without it every account is billed in UTC. `settings.flink.keyed_path` picks the keyed
    operator or the SQL path.
    """
    register_check_event(t_env, registry, fast_path=settings.flink.fast_path)
    if time_zones:
        register_time_zones(t_env, settings, time_zones)
    zoned = ZONED_EVENTS if time_zones else UTC_EVENTS
    lateness = int(settings.flink.allowed_lateness_hours)
    for view in (
        CHECKED_EVENTS.format(source=source),
        CHECKED_FLAT,
        zoned,
        ROUTED_EVENTS.format(lateness_hours=lateness),
    ):
        t_env.execute_sql(view)
    statements = t_env.create_statement_set()
    if settings.flink.keyed_path == "sql":
        for view in (ARRIVALS, UNIQUE_EVENTS, *SQL_PATH_OUTPUTS):
            t_env.execute_sql(view)
        statements.add_insert_sql(
            aggregate_sql(
                registry,
                source="unique_events",
                sink=sinks.usage_aggregates,
                ttl_days=settings.flink.aggregate_ttl_days,
            )
        )
    else:
        t_env.execute_sql(KEYED_INPUT)
        register_keyed_path(t_env, registry, settings, sinks)
        statements.add_insert_sql(FIGURES.format(sink=sinks.usage_aggregates))
    t_env.execute_sql(VALIDATION_LOG)
    statements.add_insert_sql(LOG.format(sink=sinks.rejected_events))
    if sinks.rejected_topic:
        statements.add_insert_sql(LOG.format(sink=sinks.rejected_topic))
    if sinks.late_events:
        statements.add_insert_sql(LATE_EVENTS.format(sink=sinks.late_events))
    if sinks.archive:
        from meterstream.flink.archive import archive_insert_sql  # noqa: PLC0415

        statements.add_insert_sql(archive_insert_sql(sinks.archive))
    return statements


def register_time_zones(t_env: StreamTableEnvironment, settings: Settings, table: str) -> None:
    """Register `account_time_zone`, reading `table` from the settings' PostgreSQL every minute."""
    if not IDENTIFIER.fullmatch(table):
        msg = f"{table!r} is not a table name"
        raise ValueError(msg)
    gateway = get_gateway()
    loader = gateway.jvm.Thread.currentThread().getContextClassLoader()
    pg = settings.postgres
    arguments = [
        ("java.lang.String", pg.jdbc_url),
        ("java.lang.String", pg.user),
        ("java.lang.String", pg.password),
        ("java.lang.String", table),
        ("long", TIME_ZONE_REFRESH_S),
    ]
    function = _new(gateway, loader, TIME_ZONE_CLASS, arguments)
    t_env._j_tenv.createTemporarySystemFunction("account_time_zone", function)  # noqa: SLF001


def _java_arguments(gateway: Any, loader: Any, arguments: list[tuple[str, Any]]) -> tuple[Any, Any]:
    """Class[] and Object[] of `arguments` for reflection.

    Each argument's Java type is a primitive or a class loaded by `loader` (the job's).
    """
    types = gateway.new_array(gateway.jvm.Class, len(arguments))
    values = gateway.new_array(gateway.jvm.Object, len(arguments))
    primitives = {
        "long": gateway.jvm.Long.TYPE,
        "int": gateway.jvm.Integer.TYPE,
        "boolean": gateway.jvm.Boolean.TYPE,
    }
    for i, (java_type, value) in enumerate(arguments):
        types[i] = primitives.get(java_type) or loader.loadClass(java_type)
        values[i] = value
    return types, values


def _new(gateway: Any, loader: Any, class_name: str, arguments: list[tuple[str, Any]]) -> Any:
    """A new instance of a class from the job's jars (not on py4j's class path)."""
    types, values = _java_arguments(gateway, loader, arguments)
    return loader.loadClass(class_name).getConstructor(types).newInstance(values)


def meter_kinds(registry: MeterRegistry) -> str:
    """Each meter's aggregation kind as `meter=KIND` pairs, for `KeyedPath.register`."""
    kinds = []
    for name in registry.names():
        meter = registry.current(name)
        assert meter is not None  # noqa: S101 - names() lists loaded meters
        kinds.append(f"{name}={meter.aggregation.value}")
    return ",".join(kinds)


def register_keyed_path(
    t_env: StreamTableEnvironment, registry: MeterRegistry, settings: Settings, sinks: SinkTables
) -> None:
    """Register the keyed operator's output views (`KeyedPath`, jvm/udf) over `keyed_input`."""
    gateway = get_gateway()
    loader = gateway.jvm.Thread.currentThread().getContextClassLoader()
    f = settings.flink
    day_ms = 24 * 3600 * 1000
    arguments = [
        ("org.apache.flink.table.api.bridge.java.StreamTableEnvironment", t_env._j_tenv),  # noqa: SLF001
        ("java.lang.String", "keyed_input"),
        ("java.lang.String", meter_kinds(registry)),
        ("long", f.dedup_ttl_days * day_ms),
        ("long", f.aggregate_ttl_days * day_ms),
        ("long", f.mini_batch_latency_ms),
        ("int", f.mini_batch_size),
        ("boolean", sinks.archive is not None),
        ("boolean", sinks.late_events is not None),
    ]
    types, values = _java_arguments(gateway, loader, arguments)
    keyed_path = loader.loadClass(KEYED_PATH_CLASS)
    keyed_path.getMethod("register", types).invoke(None, values)
