"""The keyed operator against the SQL reference path and the oracle, row for row.

The same adversarial stream (time zones, a month boundary, retries, conflicting repeats on both
validation paths, composite keys, odd instants, big integers, malformed records) runs through
the job twice, once per keyed path (`flink.keyed_path`), each into a database and an archive of
its own. Every output row must be the same: figures, the validation log, late events and the
archive; and the figures, log and late events are the oracle's.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq
import pytest

from meterstream.archive import committed_files
from meterstream.config import Settings
from meterstream.kafka_io import produce
from meterstream.rules.validate import Validator
from meterstream.stack.flink import settings_env
from meterstream.testing import adversarial
from tests.pipeline_helpers import (
    consume_arrivals,
    expected_log,
    isolated_database,
    job_options,
    logged,
    oracle_of_arrivals,
    run_bounded_job,
    set_time_zones,
    totals_in_postgres,
)

pytestmark = [pytest.mark.integration, pytest.mark.flink]

#: Every output table's rows, without the columns PostgreSQL stamps itself.
OUTPUTS = {
    "usage_aggregates": "SELECT account_id, meter, period_start, dimensions, aggregation,"
    " quantity, event_count, first_event_at, last_event_at, last_arrived_at"
    " FROM usage_aggregates",
    "rejected_events": "SELECT source_topic, source_partition, source_offset, reason_code,"
    " severity, detail, account_id, meter, event_id, raw_payload, arrived_at FROM rejected_events",
    "late_events": "SELECT source_topic, source_partition, source_offset, account_id, meter,"
    " event_id, period_start, dimensions, quantity, event_time, arrived_at, raw_payload"
    " FROM late_events",
}


def outputs(settings: Settings, archive: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the job wrote, sorted: the PostgreSQL tables and the archive's Parquet files."""
    with psycopg.connect(settings.postgres.conninfo) as conn:
        rows = {name: sorted(conn.execute(sql).fetchall()) for name, sql in OUTPUTS.items()}
    archived: list[tuple[Any, ...]] = []
    for path in committed_files(archive):
        columns = pq.read_table(path).columns
        archived += zip(*(column.to_pylist() for column in columns), strict=True)
    rows["archive"] = sorted(archived, key=repr)
    return rows


def test_the_keyed_operator_writes_the_sql_paths_rows_and_the_oracles(
    stack: Settings,
    topics: tuple[str, str],
    tmp_path: Path,
    unique: str,
    validator: Validator,
) -> None:
    prefix = f"kp-{unique}"
    records, zones = adversarial(12_000, seed=29, account_prefix=prefix)
    produce(stack, topics[0], records)
    arrivals = consume_arrivals(stack, topics[0])
    assert len(arrivals) == len(records)
    # No allowed lateness: first arrivals for the period before the boundary are late.
    lateness = {"allowed_lateness_hours": 0}
    written = {}
    for path in ("sql", "operator"):
        with isolated_database(stack, keyed_path=path, **lateness) as settings:
            set_time_zones(settings, zones)
            archive = tmp_path / f"archive-{path}"
            run_bounded_job(
                job_options(
                    topics,
                    tmp_path / f"checkpoints-{path}",
                    f"kp-{path}-{unique}",
                    bounded=True,
                    env={**settings_env(settings), "METERSTREAM_FLINK_ARCHIVE_DIR": str(archive)},
                ),
                tmp_path / f"job-{path}.log",
            )
            written[path] = outputs(settings, archive)
            if path == "operator":
                expected = oracle_of_arrivals(
                    settings, validator, arrivals, time_zones=zones, allowed_lateness=timedelta(0)
                )
                assert totals_in_postgres(settings, prefix) == expected.totals
                assert logged(settings, topics[0]) == expected_log(arrivals, expected.rejections)
                assert logged(settings, topics[0], "warning") == expected_log(
                    arrivals, expected.warnings
                )
                late = {(r[1], r[2]) for r in written[path]["late_events"]}
                late_arrivals = [arrivals[i] for i, _ in expected.late]
                assert late == {(a.partition, a.offset) for a in late_arrivals}
    for name in ("usage_aggregates", "rejected_events", "late_events", "archive"):
        assert written["operator"][name] == written["sql"][name], name
    counts = {name: len(rows) for name, rows in written["operator"].items()}
    assert all(counts.values()), counts  # every output has rows to compare
    print(f"{len(records)} records: operator == SQL path == oracle; rows: {counts}")
