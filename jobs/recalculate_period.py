"""Recalculate one billing period's figures from the audit archive (a Flink batch job).

Input:  the audit archive (Parquet, `dt=` partitions by arrival day): the days that can hold
        the period's events and the earlier arrivals that decide which of them came first.
Output: PostgreSQL `usage_aggregates_recalc` (staging, upserts by primary key).
        `meterstream recalculate` runs this job, then compares the staging rows with
        `usage_aggregates` and applies the differences in one transaction.
Guarantees: the streaming job's rules: the first arrival of each (account, idempotency key)
counts (the lowest offset in its Kafka partition), the corrections in force (PostgreSQL
`effective_corrections`) void or amend it, and each meter's figure comes from the
same generated SQL (`meterstream.flink.sqlgen.aggregate_sql`). Events that came after their
period's allowed lateness are in the archive, so they are counted here. A meter that
`schemas/` no longer defines is recalculated with the aggregation its events were archived
with (and named in a note). The job fails after 2 restarts, printing the cause in one line.

Run by `meterstream recalculate`; by hand:
`python jobs/recalculate_period.py --period 2026-10 [--account A] [--archive-dir DIR]`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from meterstream.archive import archive_root
from meterstream.config import load_settings
from meterstream.flink.archive import archive_table_ddl
from meterstream.flink.launch import FAILURE_MARKER, root_cause
from meterstream.flink.recalculate import (
    create_batch_table_env,
    define_recalculation,
    jdbc_corrections_ddl,
    jdbc_staging_ddl,
)
from meterstream.meters.registry import load_registry
from meterstream.recalc import arrival_days, parse_period, retired_note, scan_archive


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--period", required=True, help="the billing month, YYYY-MM")
    parser.add_argument("--account", help="only this account (default: all accounts)")
    parser.add_argument("--archive-dir", type=Path, help="default: the settings' archive")
    parser.add_argument("--job-name", help="default: meterstream-recalculate-<period>")
    args = parser.parse_args(argv)

    settings = load_settings()
    period = parse_period(args.period)
    archive_dir = args.archive_dir or archive_root(settings)
    job_name = args.job_name or f"meterstream-recalculate-{period:%Y-%m}"
    registry = load_registry(settings.schemas_dir)
    scope = scan_archive(archive_dir, period, args.account)
    print(f"archive: {scope.rows} events in {scope.files} files of the arrival days", flush=True)
    retired = scope.retired(registry)
    if retired:
        print(retired_note(retired), flush=True)
    t_env = create_batch_table_env(settings, job_name=job_name)
    t_env.execute_sql(archive_table_ddl(archive_dir))
    t_env.execute_sql(jdbc_staging_ddl(settings))
    t_env.execute_sql(jdbc_corrections_ddl(settings))
    statements = define_recalculation(
        t_env,
        registry,
        settings,
        source="archived_events",
        sink="usage_aggregates_recalc",
        period_start=period,
        arrival_days=arrival_days(period),
        account=args.account,
        retired=retired,
        corrections="corrections_in_force",
    )
    try:
        statements.execute().wait()
    except Exception as exc:  # noqa: BLE001 - Py4J's error carries the Java trace as text
        print(f"{FAILURE_MARKER} {root_cause(str(exc))}", file=sys.stderr, flush=True)
        raise SystemExit(1) from exc


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    main()
