"""Recalculation's Flink side: a batch TableEnvironment and the views from archive to figures.

The figures come from the streaming job's own SQL (`sqlgen.aggregate_sql`); only the dedup
differs in form: in batch, the first arrival of each (account, idempotency key) is the one with
the lowest offset in its Kafka partition, the order the streaming job saw them in (see
FIRST_ARRIVALS). Then the corrections in force (docs/corrections.md) apply to those first
arrivals: voided keys are left out, amended ones take their new content (CORRECTED). Meters the
archive holds but `schemas/` no longer defines keep the aggregation they were archived with
(`retired`).

A batch job fails fast: at most `BATCH_RESTARTS` restarts, then the error reaches the caller.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from datetime import date
from pathlib import Path

from pyflink.common import Configuration
from pyflink.table import EnvironmentSettings, StatementSet, TableEnvironment
from pyflink.table.expressions import col, lit

from meterstream.config import Settings
from meterstream.flink import tables
from meterstream.flink.env import flink_configuration, quiet_job_output
from meterstream.flink.launch import use_own_temp_dir
from meterstream.flink.sqlgen import aggregate_sql
from meterstream.meters.model import Aggregation
from meterstream.meters.registry import MeterRegistry

#: Streaming-only options that a batch job leaves out (no checkpoints, state TTL, mini-batches).
STREAMING_ONLY = (
    "execution.checkpointing.",
    "execution.state-recovery.",
    "state.",
    "table.exec.state.",
    "table.exec.mini-batch.",
)

#: The stream's rule: of one (account, idempotency key), the arrival first in its Kafka partition
#: (lowest offset) counts. Arrivals of one key share a partition when records are keyed by
#: account, as the ingest API does; for a key seen in several partitions (another producer's
#: keying, a topic given more partitions) the stream counts whichever its dedup sees first, and
#: this picks each partition's first, then the earliest of those by broker timestamp.
FIRST_ARRIVALS = """
CREATE TEMPORARY VIEW first_arrivals AS
SELECT account_id, dedup_key, meter, aggregation, event_time_ms,
       TO_TIMESTAMP_LTZ(event_time_ms, 3) AS event_time, period_start, dimensions, quantity,
       unique_value, arrived_at
FROM (
  SELECT *,
         ROW_NUMBER() OVER (
           PARTITION BY account_id, dedup_key
           ORDER BY arrived_at, source_topic, source_partition
         ) AS arrival
  FROM (
    SELECT *,
           ROW_NUMBER() OVER (
             PARTITION BY account_id, dedup_key, source_topic, source_partition
             ORDER BY source_offset
           ) AS in_partition
    FROM archive_scope
  )
  WHERE in_partition = 1
)
WHERE arrival = 1
"""

#: The corrections in force, applied to the first arrivals as the stream's keyed operator does:
#: a void takes the key's event out, an amend replaces its content but keeps its arrival time.
CORRECTED = """
CREATE TEMPORARY VIEW counted_events AS
SELECT f.account_id, f.meter, f.aggregation,
       TO_TIMESTAMP_LTZ(CASE WHEN c.action = 'amend' THEN c.new_event_time_ms
                             ELSE f.event_time_ms END, 3) AS event_time,
       CASE WHEN c.action = 'amend' THEN c.new_event_time_ms ELSE f.event_time_ms END
         AS event_time_ms,
       CASE WHEN c.action = 'amend' THEN c.period_start ELSE f.period_start END AS period_start,
       CASE WHEN c.action = 'amend' THEN c.new_dimensions ELSE f.dimensions END AS dimensions,
       CASE WHEN c.action = 'amend' THEN c.new_quantity ELSE f.quantity END AS quantity,
       CASE WHEN c.action = 'amend' THEN c.new_unique_value ELSE f.unique_value END
         AS unique_value,
       f.arrived_at
FROM first_arrivals AS f
LEFT JOIN period_corrections AS c ON f.account_id = c.account_id AND f.dedup_key = c.dedup_key
WHERE c.action IS NULL OR c.action <> 'void'
"""
UNCORRECTED = """
CREATE TEMPORARY VIEW counted_events AS SELECT * FROM first_arrivals
"""

#: `effective_corrections` (migration 0010) as the JDBC connector reads it.
CORRECTIONS_COLUMNS = """
    account_id STRING,
    dedup_key STRING,
    action STRING,
    period_start DATE,
    new_dimensions STRING,
    new_quantity DECIMAL(38, 9),
    new_unique_value STRING,
    new_event_time_ms BIGINT
"""

PERIOD_EVENTS = """
CREATE TEMPORARY VIEW period_events AS
SELECT * FROM counted_events WHERE period_start = DATE '{period_start}'
"""


#: Restarts of a failed batch job before it fails (the streaming job restarts without end).
BATCH_RESTARTS = 2


def batch_configuration(settings: Settings, *, job_name: str) -> dict[str, str]:
    """The streaming job's options (jars, Python, UTC session zone) without streaming ones.

    Restarts are bounded: a batch job that fails for good ends, with its error.
    """
    streaming = flink_configuration(
        settings, job_name=job_name, checkpoint_dir=Path(tempfile.gettempdir())
    )
    batch = {
        k: v
        for k, v in streaming.items()
        if not k.startswith((*STREAMING_ONLY, "restart-strategy."))
    }
    batch["restart-strategy.type"] = "fixed-delay"
    batch["restart-strategy.fixed-delay.attempts"] = str(BATCH_RESTARTS)
    batch["restart-strategy.fixed-delay.delay"] = "2 s"
    return batch


def create_batch_table_env(settings: Settings, *, job_name: str) -> TableEnvironment:
    """A batch TableEnvironment configured like the aggregation job's."""
    # As in meterstream.flink.env: the JDBC sink writes UTC wall-clock timestamps, and the
    # JVM started below must agree; Python (none here) would need the virtualenv on PATH.
    os.environ["TZ"] = "UTC"
    use_own_temp_dir(settings.stack_dir / "job-tmp")
    quiet_job_output()
    venv_bin = str(Path(sys.executable).parent)
    if not os.environ.get("PATH", "").startswith(venv_bin + os.pathsep):
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
    conf = Configuration()
    for key, value in batch_configuration(settings, job_name=job_name).items():
        conf.set_string(key, value)
    env_settings = EnvironmentSettings.new_instance().in_batch_mode().with_configuration(conf)
    return TableEnvironment.create(env_settings.build())


def jdbc_staging_ddl(settings: Settings, *, name: str = "usage_aggregates_recalc") -> str:
    """PostgreSQL `usage_aggregates_recalc`: the recalculated figures, same key as the real one."""
    options = tables._jdbc(settings, "usage_aggregates_recalc")  # noqa: SLF001 - same package
    # A failed write fails the attempt at once: the job's bounded restarts are the retries.
    options["sink.max-retries"] = "0"
    body = ",\n".join(f"    '{k}' = '{v}'" for k, v in options.items())
    return f"CREATE TEMPORARY TABLE {name} ({tables.USAGE_AGGREGATES_COLUMNS}) WITH (\n{body}\n)"


def jdbc_corrections_ddl(settings: Settings, *, name: str = "corrections_in_force") -> str:
    """PostgreSQL's `effective_corrections` view as a source: the correction in force per key."""
    options = tables._jdbc(settings, "effective_corrections")  # noqa: SLF001 - same package
    body = ",\n".join(f"    '{k}' = '{v}'" for k, v in options.items())
    return f"CREATE TEMPORARY TABLE {name} ({CORRECTIONS_COLUMNS}) WITH (\n{body}\n)"


def define_recalculation(
    t_env: TableEnvironment,
    registry: MeterRegistry,
    settings: Settings,
    *,
    source: str,
    sink: str,
    period_start: date,
    arrival_days: tuple[date, date],
    account: str | None = None,
    retired: Mapping[str, Aggregation] | None = None,
    corrections: str | None = None,
) -> StatementSet:
    """Add the views from the archive table `source` to `sink`'s figures for one period.

    Args:
        t_env: a batch TableEnvironment.
        registry: the meters (which figure each meter gets).
        settings: for the aggregate SQL's options.
        source: the archive table (`archive_table_ddl`).
        sink: the staging table (`jdbc_staging_ddl`).
        period_start: the first day of the billing month to recalculate.
        arrival_days: the first and last `dt` partition to read; they must hold every arrival
            that can decide the period's first arrivals (`meterstream.recalc.arrival_days`).
        account: only this account (a literal, never spliced into SQL); None: all accounts.
        retired: archived meters `registry` no longer defines, with their archived kind.
        corrections: the table of corrections in force (`jdbc_corrections_ddl`); None: none.
    """
    first, last = arrival_days
    scope = t_env.from_path(source).filter(
        (col("dt") >= lit(first.isoformat())) & (col("dt") <= lit(last.isoformat()))
    )
    if account is not None:
        scope = scope.filter(col("account_id") == lit(account))
    t_env.create_temporary_view("archive_scope", scope)
    t_env.execute_sql(FIRST_ARRIVALS)
    if corrections is None:
        t_env.execute_sql(UNCORRECTED)
    else:
        # A correction keeps its event's period: only the period's corrections can apply.
        in_force = t_env.from_path(corrections).filter(
            col("period_start") == lit(period_start.isoformat()).to_date
        )
        if account is not None:
            in_force = in_force.filter(col("account_id") == lit(account))
        t_env.create_temporary_view("period_corrections", in_force)
        t_env.execute_sql(CORRECTED)
    t_env.execute_sql(PERIOD_EVENTS.format(period_start=period_start.isoformat()))
    statements = t_env.create_statement_set()
    statements.add_insert_sql(
        aggregate_sql(
            registry,
            source="period_events",
            sink=sink,
            ttl_days=settings.flink.aggregate_ttl_days,
            retired=retired,
        )
    )
    return statements
