"""Aggregate usage: raw CloudEvents in Kafka -> per-account, per-meter, per-month totals.

Input:  Kafka topic `meterstream.events.raw` (CloudEvents JSON, keyed by account id), and
        `meterstream.corrections` (voids and amends of counted events, docs/corrections.md).
Lookup: PostgreSQL `account_time_zones` (each account's billing time zone, read every minute).
Output: PostgreSQL `usage_aggregates` (upserts by primary key), `rejected_events` (validation log,
        keyed by Kafka position), `late_events` (first arrivals after their period's allowed
        lateness), Kafka topic `meterstream.events.rejected` (transactional), and the audit
        archive: every accepted event, before dedup, in Parquet files by arrival day
        (`--archive-dir`, default `<stack_dir>/archive`; files appear when a checkpoint completes).
Guarantees: Kafka offsets are checkpointed with the dedup and aggregate state; every write is
an idempotent upsert of absolute values, so a restart from a checkpoint neither loses nor double
counts.

Run locally with `meterstream run`, or on a cluster with
`flink run --python jobs/aggregate_usage.py`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from meterstream.archive import archive_root, claim, stack_id
from meterstream.config import load_settings
from meterstream.flink import tables
from meterstream.flink.archive import archive_table_ddl
from meterstream.flink.env import create_table_env
from meterstream.flink.launch import latest_checkpoint
from meterstream.flink.workflow import define_workflow
from meterstream.meters.registry import load_registry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic", help="raw events topic (default: settings)")
    parser.add_argument("--rejected-topic", help="rejected events topic (default: settings)")
    parser.add_argument("--group-id", help="Kafka consumer group (default: settings)")
    parser.add_argument("--checkpoint-dir", type=Path, help="default: .stack/checkpoints/<job>")
    parser.add_argument("--restore-from", help="a checkpoint or savepoint path to resume from")
    parser.add_argument(
        "--bounded", action="store_true", help="stop at the offsets that are current at start-up"
    )
    parser.add_argument("--job-name", help="the job's name (default: settings)")
    parser.add_argument(
        "--archive-dir",
        type=Path,
        help="the audit archive (default: METERSTREAM_FLINK_ARCHIVE_DIR or <stack_dir>/archive)",
    )
    parser.add_argument("--no-archive", action="store_true", help="do not write the archive")
    args = parser.parse_args(argv)

    settings = load_settings()
    job_name = args.job_name or settings.flink.job_name
    group_id = args.group_id or settings.flink.consumer_group
    checkpoint_dir = args.checkpoint_dir or settings.stack_dir / "checkpoints" / job_name
    t_env = create_table_env(
        settings,
        job_name=job_name,
        checkpoint_dir=checkpoint_dir,
        restore_from=args.restore_from,
    )
    t_env.execute_sql(
        tables.kafka_raw_events_ddl(
            settings, topic=args.topic, group_id=group_id, bounded=args.bounded
        )
    )
    t_env.execute_sql(
        tables.kafka_corrections_ddl(settings, group_id=group_id, bounded=args.bounded)
    )
    t_env.execute_sql(tables.jdbc_usage_aggregates_ddl(settings))
    t_env.execute_sql(tables.jdbc_rejected_events_ddl(settings))
    t_env.execute_sql(tables.jdbc_late_events_ddl(settings))
    t_env.execute_sql(
        tables.kafka_rejected_events_ddl(settings, topic=args.rejected_topic, job_name=job_name)
    )
    if not args.no_archive:
        archive_dir = args.archive_dir or archive_root(settings)
        # Marked as this stack's: a recalculation refuses another stack's archive.
        claim(archive_dir, stack_id(settings))
        t_env.execute_sql(archive_table_ddl(archive_dir))
    statements = define_workflow(
        t_env,
        load_registry(settings.schemas_dir),
        settings,
        source="raw_events",
        sinks=tables.SinkTables(archive=None if args.no_archive else "archived_events"),
        time_zones="account_time_zones",
        corrections="corrections",
    )
    result = statements.execute()
    client = result.get_job_client()
    if client is not None:
        logging.info("submitted job %s", client.get_job_id())
        print(f"job id: {client.get_job_id()}", flush=True)  # noqa: T201 - the CLI reads this
    try:
        result.wait()
    except KeyboardInterrupt:
        latest = latest_checkpoint(checkpoint_dir)
        resume = f"`meterstream run --restore-from {latest}`" if latest else "no checkpoint yet"
        print(f"stopped (Ctrl-C); resume from its newest checkpoint: {resume}", file=sys.stderr)  # noqa: T201
        raise SystemExit(130) from None


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    # py4j logs a traceback (on the root logger) when Ctrl-C interrupts a call; main says why.
    logging.getLogger().addFilter(
        lambda record: not (record.exc_info and record.exc_info[0] is KeyboardInterrupt)
    )
    main()
