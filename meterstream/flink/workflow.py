"""The aggregation workflow: raw events -> check -> dedup -> per-period figures, plus the log.

`define_workflow` knows tables only by name: jobs register Kafka and JDBC tables under those
names, tests may register others. Every operator is a JVM one; the check (jvm/udf: the fast path,
and the Python rules called in place for the records it leaves open) runs in the task that reads
Kafka. Two keyed paths, by `flink.keyed_path`:

- "operator" (the default): `KeyedPath` (jvm/udf) checks each record, gives it its period and
  routes it in plain Java (`CheckAndRoute`), then one keyed operator, `DedupAndFigures`, keeps the
  dedup keys and the figures per account.
- "sql": the reference path generated here and in `sqlgen`: the check as a SQL function, an OVER
  aggregation for the dedup and a two-phase GROUP BY for the figures.

Both give the same rows (tests/integration/test_keyed_path.py) and register the same views
(`check_log`, `duplicate_conflicts`, `late_first_arrivals`, `archive_rows`), from which the log,
late events and the archive are written by the same SQL.

Every record leaves the check in its Kafka partition's order, whichever rules decided it, and
nothing between the check and the dedup reorders records (one chain, one exchange): the dedup
sees the arrivals of each (account, idempotency key) in offset order, so the first one counts.
"""

from __future__ import annotations

from typing import Any

import orjson
from pyflink.java_gateway import get_gateway
from pyflink.table import StatementSet, StreamTableEnvironment

from meterstream.config import Settings
from meterstream.flink.sqlgen import aggregate_sql
from meterstream.flink.tables import SinkTables
from meterstream.flink.udfs import fast_path_spec, python_executable, register_check_event
from meterstream.meters.model import IDENTIFIER
from meterstream.meters.registry import MeterRegistry

# The raw records the keyed operator's path reads (KeyedPath.RAW_COLUMNS).
RAW_RECORDS = """
CREATE TEMPORARY VIEW raw_records AS
SELECT payload, kafka_topic, kafka_partition, kafka_offset, arrived_at FROM {source}
"""

# The SQL reference path. The check's row is one column, `c`, read field by field below: the
# planner must not merge a projection of its fields into the call, which it would then make once
# per field (a non-deterministic function is not reused).
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
       c.dimensions AS dimensions, c.quantity AS quantity, c.unique_value AS unique_value,
       c.dedup_key AS dedup_key, c.fingerprint AS fingerprint, c.source_topic AS source_topic,
       c.source_partition AS source_partition, c.source_offset AS source_offset,
       payload, arrived_at, PROCTIME() AS proc_time
FROM checked_events
WHERE c.reason IS NULL
"""

# Each account's billing time zone (UTC by default): `account_time_zone` (jvm/udf) holds the
# PostgreSQL table in memory and reads it again every minute.
ZONED_EVENTS = """
CREATE TEMPORARY VIEW zoned_events AS
SELECT *, account_time_zone(account_id) AS time_zone FROM validated_events
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
SELECT event_id, account_id, meter, aggregation, event_time_ms,
       billing_period_start(event_time_ms, time_zone) AS period_start, dimensions, quantity,
       unique_value, dedup_key, fingerprint, source_topic, source_partition, source_offset,
       payload, arrived_at, proc_time,
       arrived_too_late(event_time_ms, time_zone, arrived_at, {lateness_hours}) AS too_late
FROM zoned_events
"""

# Number each arrival of an (account, idempotency key) and remember the first one's content
# fingerprint: one small accumulator per key, expiring after table.exec.state.ttl (35 days).
# The first arrival is counted; a later one with another fingerprint is a conflict. Processing
# time orders them as they reach this operator, which is their Kafka offset order (one chain
# from the source, one exchange).
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
SELECT account_id, meter, aggregation, event_time_ms,
       TO_TIMESTAMP_LTZ(event_time_ms, 3) AS event_time, period_start, dimensions, quantity,
       unique_value, arrived_at
FROM arrivals
WHERE arrival = 1 AND NOT too_late
"""

# The SQL path's views under the names the keyed operator registers its outputs by.
SQL_PATH_OUTPUTS = (
    """
CREATE TEMPORARY VIEW check_log AS
SELECT c.reason AS reason, c.detail AS detail, c.warning AS warning,
       c.warning_detail AS warning_detail, c.source_topic AS source_topic,
       c.source_partition AS source_partition, c.source_offset AS source_offset,
       c.event_id AS event_id, c.account_id AS account_id, c.meter AS meter, payload, arrived_at
FROM checked_events
WHERE c.reason IS NOT NULL OR c.warning IS NOT NULL
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
    corrections: str | None = None,
) -> StatementSet:
    """Add the workflow's views and inserts to `t_env`; return the statements to execute.

    `time_zones` names the PostgreSQL table of (account_id, time_zone) to bill accounts in;
    without it every account is billed in UTC. `corrections` names a table of the corrections
    topic (`tables.kafka_corrections_ddl`) whose voids and amends the keyed operator applies;
    the SQL reference path does not (a recalculation applies them on both).
    `settings.flink.keyed_path` picks the keyed operator or the SQL path.
    """
    statements = t_env.create_statement_set()
    if settings.flink.keyed_path == "sql":
        register_check_event(t_env, registry, fast_path=settings.flink.fast_path)
        if time_zones:
            register_time_zones(t_env, settings, time_zones)
        lateness = int(settings.flink.allowed_lateness_hours)
        for view in (
            CHECKED_EVENTS.format(source=source),
            VALIDATED_EVENTS,
            ZONED_EVENTS if time_zones else UTC_EVENTS,
            ACCEPTED_EVENTS.format(lateness_hours=lateness),
            ARRIVALS,
            UNIQUE_EVENTS,
            *SQL_PATH_OUTPUTS,
        ):
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
        t_env.execute_sql(RAW_RECORDS.format(source=source))
        register_keyed_path(
            t_env, registry, settings, sinks, time_zones=time_zones, corrections=corrections
        )
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


def meter_kinds(registry: MeterRegistry) -> dict[str, str]:
    """Each meter's aggregation kind, for `KeyedPath.register`."""
    kinds = {}
    for name in registry.names():
        meter = registry.current(name)
        assert meter is not None  # noqa: S101 - names() lists loaded meters
        kinds[name] = meter.aggregation.value
    return kinds


def register_keyed_path(
    t_env: StreamTableEnvironment,
    registry: MeterRegistry,
    settings: Settings,
    sinks: SinkTables,
    *,
    time_zones: str | None,
    corrections: str | None = None,
) -> None:
    """Register the keyed operator's views (`KeyedPath`, jvm/udf).

    Over the view `raw_records` and the table `corrections` (voids and amends), if given.
    """
    f, pg = settings.flink, settings.postgres
    day_ms = 24 * 3600 * 1000
    if time_zones and not IDENTIFIER.fullmatch(time_zones):
        msg = f"{time_zones!r} is not a table name"
        raise ValueError(msg)
    zones = {
        "jdbc_url": pg.jdbc_url,
        "user": pg.user,
        "password": pg.password,
        "table": time_zones,
        "refresh_seconds": TIME_ZONE_REFRESH_S,
    }
    options = {
        "meters": registry.to_json(),
        "spec": fast_path_spec(registry) if f.fast_path else None,
        "python": python_executable(t_env),
        "time_zones": zones if time_zones else None,
        "lateness_hours": int(f.allowed_lateness_hours),
        "meter_kinds": meter_kinds(registry),
        "dedup_ttl_ms": f.dedup_ttl_days * day_ms,
        "figure_ttl_ms": f.aggregate_ttl_days * day_ms,
        "flush_interval_ms": f.mini_batch_latency_ms,
        "flush_size": f.mini_batch_size,
        "figure_cache_size": f.figure_cache_size,
        "archive": sinks.archive is not None,
        "late": sinks.late_events is not None,
    }
    gateway = get_gateway()
    loader = gateway.jvm.Thread.currentThread().getContextClassLoader()
    arguments = [
        ("org.apache.flink.table.api.bridge.java.StreamTableEnvironment", t_env._j_tenv),  # noqa: SLF001
        ("java.lang.String", "raw_records"),
        ("java.lang.String", corrections),
        ("java.lang.String", orjson.dumps(options).decode()),
    ]
    types, values = _java_arguments(gateway, loader, arguments)
    loader.loadClass(KEYED_PATH_CLASS).getMethod("register", types).invoke(None, values)
