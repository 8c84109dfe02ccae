r"""The aggregation job built up stage by stage, each stage's rate on the same topic (a script).

    .venv/bin/python bench/pipeline_stages.py --records 2000000
    .venv/bin/python bench/pipeline_stages.py --records 2000000 --stages check keyed

Where is the pipeline's throughput lost? Each stage is the one before it plus one part of the
real job, built from the job's own SQL and wiring (`meterstream.flink.workflow`, `sqlgen`),
drained from the same pre-produced topic as `bench/pipeline_ab.py` (`--records` picks it;
produced on first use), at parallelism 1, into a blackhole unless said:

    read       the Kafka source alone (`jobs/read_blackhole.py`)
    parse      the source, and each record's JSON parsed once (`--parse`)
  the keyed operator (`flink.keyed_path = operator`, the default):
    keyed      + the check of every record (JVM fast path, Python rules in place for the
               rest), its billing period and lateness (UTC), dedup and figures in the keyed
               operator; figures out
    keyed-jdbc the same into PostgreSQL's `usage_aggregates` (idempotent upserts)
  the SQL reference path (`flink.keyed_path = sql`):
    check      + the check of every record as a SQL function, its billing period and lateness
    dedup      + the dedup operator (RocksDB, 35-day TTL); first arrivals out
    aggregate  + the per-account, per-period figures (two-phase, RocksDB)
    jdbc       the same into PostgreSQL's `usage_aggregates` (idempotent upserts)
  the real job (`jobs/aggregate_usage.py`): + the time-zone lookup, the validation log
  (PostgreSQL and Kafka), late events and the audit archive:
    full       on the keyed operator
    full-no-archive  the same with `--no-archive`
    full-sql   on the SQL reference path

Needs the local stack (`meterstream up`). Prints each stage's steady rate and busiest threads.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import uuid
from pathlib import Path

from meterstream.bench import pipeline
from meterstream.bench.flinkjob import aggregate_argv, blackhole_argv, observed
from meterstream.config import load_settings
from meterstream.flink.launch import JobOptions

STAGES = (
    "read",
    "parse",
    "keyed",
    "keyed-jdbc",
    "check",
    "dedup",
    "aggregate",
    "jdbc",
    "full-no-archive",
    "full",
    "full-sql",
)
#: The stages that run dedup and figures on the SQL reference path.
SQL_STAGES = ("check", "dedup", "aggregate", "jdbc", "full-sql")

FIRST_ARRIVALS_SINK = """
CREATE TEMPORARY TABLE first_arrivals (
    account_id STRING, meter STRING, period_start DATE, dimensions STRING,
    quantity DECIMAL(38, 9), unique_value STRING, arrived_at TIMESTAMP_LTZ(3)
) WITH ('connector' = 'blackhole')
"""

CHECKED_SINK = """
CREATE TEMPORARY TABLE checked (
    event_id STRING, account_id STRING, dedup_key STRING, period_start DATE,
    too_late BOOLEAN, fingerprint BIGINT
) WITH ('connector' = 'blackhole')
"""


def run_stage_job(stage: str, topic: str, group_id: str, checkpoint_dir: Path) -> None:
    """The Flink job of one stage between `check` and `jdbc` (runs in its own process)."""
    from meterstream.flink import tables, workflow  # noqa: PLC0415 - only in the job's process
    from meterstream.flink.env import create_table_env  # noqa: PLC0415
    from meterstream.flink.sqlgen import aggregate_sql  # noqa: PLC0415
    from meterstream.flink.udfs import register_check_event  # noqa: PLC0415
    from meterstream.meters.registry import load_registry  # noqa: PLC0415

    settings = load_settings()
    registry = load_registry(settings.schemas_dir)
    t_env = create_table_env(settings, job_name=group_id, checkpoint_dir=checkpoint_dir)
    t_env.execute_sql(
        tables.kafka_raw_events_ddl(settings, topic=topic, group_id=group_id, bounded=True)
    )
    lateness = int(settings.flink.allowed_lateness_hours)
    figures = f"CREATE TEMPORARY TABLE figures ({tables.USAGE_AGGREGATES_COLUMNS})"
    figures += " WITH ('connector' = 'blackhole')"
    if stage.startswith("keyed"):
        t_env.execute_sql(workflow.RAW_RECORDS.format(source="raw_events"))
        sinks = tables.SinkTables(late_events=None, archive=None)
        workflow.register_keyed_path(t_env, registry, settings, sinks, time_zones=None)
        if stage == "keyed":
            sink = "figures"
            t_env.execute_sql(figures)
        else:
            sink = "usage_aggregates"
            t_env.execute_sql(tables.jdbc_usage_aggregates_ddl(settings))
        insert = workflow.FIGURES.format(sink=sink)
    else:
        register_check_event(t_env, registry, fast_path=settings.flink.fast_path)
        for view in (
            workflow.CHECKED_EVENTS.format(source="raw_events"),
            workflow.VALIDATED_EVENTS,
            workflow.UTC_EVENTS,
            workflow.ACCEPTED_EVENTS.format(lateness_hours=lateness),
            workflow.ARRIVALS,
            workflow.UNIQUE_EVENTS,
        ):
            t_env.execute_sql(view)
        if stage == "check":
            t_env.execute_sql(CHECKED_SINK)
            insert = (
                "INSERT INTO checked SELECT event_id, account_id, dedup_key, period_start,"
                " too_late, fingerprint FROM accepted_events"
            )
        elif stage == "dedup":
            t_env.execute_sql(FIRST_ARRIVALS_SINK)
            insert = (
                "INSERT INTO first_arrivals SELECT account_id, meter, period_start, dimensions,"
                " quantity, unique_value, arrived_at FROM unique_events"
            )
        else:
            sink = "figures" if stage == "aggregate" else "usage_aggregates"
            t_env.execute_sql(
                figures if stage == "aggregate" else tables.jdbc_usage_aggregates_ddl(settings)
            )
            insert = aggregate_sql(
                registry,
                source="unique_events",
                sink=sink,
                ttl_days=settings.flink.aggregate_ttl_days,
            )
    result = t_env.execute_sql(insert)
    client = result.get_job_client()
    if client is not None:
        print(f"job id: {client.get_job_id()}", flush=True)  # noqa: T201 - the driver reads it
    result.wait()


def stage_argv(stage: str, prefix: str, tag: str, workdir: Path) -> list[str]:
    """The command line of one stage's job."""
    topic, group, checkpoints = f"{prefix}-raw", f"bench-{tag}", workdir / "checkpoints" / tag
    if stage in ("read", "parse"):
        return blackhole_argv(
            topic=topic,
            group_id=group,
            checkpoint_dir=checkpoints,
            job_name=tag,
            parse=stage == "parse",
        )
    if stage.startswith("full"):
        job = JobOptions(
            topic=topic,
            rejected_topic=f"{prefix}-rejected",
            group_id=group,
            checkpoint_dir=checkpoints,
            bounded=True,
            job_name=group,
            archive_dir=(workdir / "archive").resolve(),
        )
        return aggregate_argv(job) + (["--no-archive"] if stage == "full-no-archive" else [])
    return observed(
        [sys.executable, __file__, "--job-stage", stage, "--topic", topic, "--group-id", group]
        + ["--checkpoint-dir", str(checkpoints)]
    )


def measure_stage(stage: str, topic: dict[str, int | str], workdir: Path, window_s: float) -> None:
    """Run one stage's job over the topic (time-boxed), print its steady rate and threads."""
    settings = load_settings()
    prefix = str(topic["prefix"])
    if stage in ("jdbc", "keyed-jdbc", "full", "full-no-archive", "full-sql"):
        pipeline.clear_outputs(settings, prefix, f"{prefix}-raw")
    tag = f"stage-{stage}-{uuid.uuid4().hex[:6]}"
    run = pipeline.drain(
        settings,
        tag,
        stage_argv(stage, prefix, tag, workdir),
        env={
            "METERSTREAM_FLINK_PARALLELISM": "1",
            "METERSTREAM_FLINK_KEYED_PATH": "sql" if stage in SQL_STAGES else "operator",
        },
        workdir=workdir,
        window_s=window_s,
    )
    figures = pipeline.measure(run, stage, 1, int(topic["records"]))
    coarse = " (coarse: RUNNING -> finished)" if figures.coarse else ""
    print(
        f"{stage:>16}: {figures.steady_events_per_s:>9,.0f} events/s steady{coarse},"
        f" {figures.records:,} records in {figures.seconds:.1f} s,"
        f" load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    for name, cores in figures.cpu_threads[:5]:
        print(f"{'':>18}{cores:4.2f} cores  {name[:90]}", flush=True)
    cpu = ", ".join(f"{name} {us:.1f}" for name, us in pipeline.cpu_per_record(figures).items())
    print(f"{'':>18}CPU per record (us): {cpu}", flush=True)
    if stage in ("full", "full-sql"):
        shutil.rmtree(workdir / "archive", ignore_errors=True)  # the job's audit archive


def main() -> None:
    """Run the stages asked for (all by default), or one stage's job (`--job-stage`)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--window", type=float, default=120.0, help="time box per stage, s")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--job-stage", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--group-id", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job_stage:
        run_stage_job(args.job_stage, args.topic, args.group_id, args.checkpoint_dir)
        return
    from pipeline_ab import STATE_DIR, topic_for  # noqa: PLC0415 - next to this script

    topic = topic_for(load_settings(), args.records)
    print(f"topic {topic['prefix']}-raw: {int(topic['records']):,} records, parallelism 1")
    for stage in args.stages:
        measure_stage(stage, topic, STATE_DIR / "work", args.window)


if __name__ == "__main__":
    main()
