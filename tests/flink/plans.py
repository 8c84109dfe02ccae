"""The job's optimized plan, as text, for the plan tests (no job runs)."""

from __future__ import annotations

from pathlib import Path

from meterstream.config import Settings
from meterstream.flink import tables
from meterstream.flink.archive import archive_table_ddl
from meterstream.flink.env import create_table_env
from meterstream.flink.workflow import define_workflow
from meterstream.meters.registry import MeterRegistry
from meterstream.stack.jars import ensure_jars


def optimized_plan(
    settings: Settings, registry: MeterRegistry, workdir: Path, *, archive: bool = False
) -> str:
    """The "Optimized Execution Plan" of the job's tables and workflow (with the archive, if
    asked), as `jobs/aggregate_usage.py` defines them."""
    ensure_jars(settings)
    t_env = create_table_env(settings, job_name="plan-test", checkpoint_dir=workdir / "ckpt")
    t_env.execute_sql(tables.kafka_raw_events_ddl(settings))
    t_env.execute_sql(tables.jdbc_usage_aggregates_ddl(settings))
    t_env.execute_sql(tables.jdbc_rejected_events_ddl(settings))
    t_env.execute_sql(tables.kafka_rejected_events_ddl(settings))
    t_env.execute_sql(tables.jdbc_late_events_ddl(settings))
    t_env.execute_sql(tables.jdbc_time_zones_ddl(settings))
    if archive:
        t_env.execute_sql(archive_table_ddl(workdir / "archive"))
    statements = define_workflow(
        t_env,
        registry,
        settings,
        source="raw_events",
        sinks=tables.SinkTables(archive="archived_events" if archive else None),
        time_zones="account_time_zones",
    )
    plan = statements.explain()
    return plan[plan.index("== Optimized Execution Plan ==") :]
