"""Recalculation where archives go wrong: rows that outrun their partition's clock, meters no
longer in `schemas/`, and a batch job that fails for good.

Each test recalculates a copy of the archive the real job wrote (`archive_run`), with rows
added by hand in the job's own Parquet schema; none applies anything.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from meterstream.archive import STACK_ID_FILE, archive_owner, committed_files, stack_id
from meterstream.cli import app
from meterstream.config import Settings
from meterstream.flink.recalculate import BATCH_RESTARTS
from meterstream.flink.tables import JDBC_APPLICATION_NAME
from meterstream.meters.model import Aggregation
from meterstream.recalc import RecalcScope, RecalculationError, recalculate
from meterstream.stack.flink import settings_env
from meterstream.testing import PERIOD_START
from tests.archive.conftest import ArchiveRun

pytestmark = [pytest.mark.integration, pytest.mark.flink]


def copy_of(archive_run: ArchiveRun, tmp_path: Path) -> Path:
    archive = tmp_path / "archive"
    shutil.copytree(archive_run.archive, archive)
    return archive


def rows_of(archive: Path, account: str, meter: str) -> tuple[pa.Table, Path]:
    """The account's archived rows of `meter` in the current period, and a file holding one."""
    for path in committed_files(archive):
        table = pq.read_table(path)
        mask = pc.and_(
            pc.equal(table["account_id"], account),
            pc.and_(
                pc.equal(table["meter"], meter),
                pc.equal(table["period_start"], pa.scalar(PERIOD_START.date())),
            ),
        )
        rows = table.filter(mask)
        if rows.num_rows:
            return rows, path
    pytest.fail(f"no archived {meter} rows of {account}")


def add_rows(next_to: Path, rows: pa.Table) -> None:
    """Commit `rows` as one more part file in the partition (arrival day) of `next_to`."""
    pq.write_table(rows, next_to.parent / f"part-added-{uuid.uuid4().hex[:8]}.parquet")


def test_recalculation_counts_the_first_in_its_partition_though_a_later_one_has_an_earlier_stamp(
    archive_run: ArchiveRun, tmp_path: Path
) -> None:
    # The stream counts the lowest offset of a partition. A later offset with an earlier
    # broker timestamp (a broker clock stepping back) and other content must not win here.
    archive = copy_of(archive_run, tmp_path)
    account = f"{archive_run.prefix}-0001"
    rows, path = rows_of(archive, account, "llm_tokens")
    first = rows.slice(0, 1).to_pylist()[0]
    repeat = {
        **first,
        "source_offset": first["source_offset"] + 1_000_000,
        "arrived_at": first["arrived_at"] - timedelta(milliseconds=1),
        "quantity": first["quantity"] + Decimal(777),
        "fingerprint": first["fingerprint"] ^ 1,
    }
    add_rows(path, pa.Table.from_pylist([repeat], schema=rows.schema))

    result = recalculate(
        archive_run.settings,
        RecalcScope(PERIOD_START.date(), account),
        archive_dir=archive,
        dry_run=True,
    )
    assert result.changes == []


def test_a_meter_no_longer_in_schemas_is_recalculated_with_its_archived_aggregation(
    archive_run: ArchiveRun, tmp_path: Path
) -> None:
    archive = copy_of(archive_run, tmp_path)
    account = f"{archive_run.prefix}-0002"
    rows, path = rows_of(archive, account, "llm_tokens")
    # Other events (ids are unique per account across meters) of a meter since removed.
    retired = [
        {**row, "meter": "retired_tokens", "event_id": f"old-{row['event_id']}",
         "dedup_key": f"id:old-{row['event_id']}"}
        for row in rows.to_pylist()
    ]  # fmt: skip
    add_rows(path, pa.Table.from_pylist(retired, schema=rows.schema))
    # The same events under another name: the figures the stream has for llm_tokens.
    with psycopg.connect(archive_run.settings.postgres.conninfo) as conn:
        expected = {
            dimensions: (quantity, count)
            for dimensions, quantity, count in conn.execute(
                "SELECT dimensions, quantity, event_count FROM usage_aggregates"
                " WHERE account_id = %s AND meter = 'llm_tokens' AND period_start = %s",
                (account, PERIOD_START.date()),
            ).fetchall()
        }
    assert expected

    result = recalculate(
        archive_run.settings,
        RecalcScope(PERIOD_START.date(), account),
        archive_dir=archive,
        dry_run=True,
    )
    assert result.retired == {"retired_tokens": Aggregation.SUM}
    got = {
        c.dimensions: (c.new_quantity, c.new_event_count)
        for c in result.changes
        if c.meter == "retired_tokens" and c.change == "added"
    }
    assert got == expected
    assert [c for c in result.changes if c.meter != "retired_tokens"] == []

    shown = CliRunner().invoke(
        app,
        [
            "recalculate",
            "--period",
            f"{PERIOD_START:%Y-%m}",
            "--account",
            account,
            "--dir",
            str(archive),
            "--dry-run",
        ],  # fmt: skip
        env=settings_env(archive_run.settings),
    )
    assert shown.exit_code == 0, shown.output
    assert "not in schemas/ any more" in shown.output
    assert "retired_tokens (SUM)" in shown.output
    assert "batch job:" in shown.output


def job_connections(settings: Settings) -> list[int]:
    """Backend pids of the Flink jobs' PostgreSQL sessions to the settings' database."""
    with psycopg.connect(settings.postgres.conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
            (settings.postgres.database, JDBC_APPLICATION_NAME),
        ).fetchall()
    return [pid for (pid,) in rows]


def test_a_failing_recalculation_fails_after_bounded_restarts_with_its_cause_in_one_line(
    archive_run: ArchiveRun, tmp_path: Path
) -> None:
    # PostgreSQL refuses every staged row; each attempt's sink fails and the JDBC connector
    # does not close its connection: idle_session_timeout (1 s here) must end those.
    settings = replace(
        archive_run.settings,
        flink=replace(archive_run.settings.flink, jdbc_idle_session_timeout_s=1),
    )
    seen: list[list[int]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(job_connections(settings))
            time.sleep(0.2)

    with psycopg.connect(settings.postgres.conninfo, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE usage_aggregates_recalc"
            " ADD CONSTRAINT refused_by_test CHECK (false) NOT VALID"
        )
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with pytest.raises(RecalculationError) as failed:
            recalculate(
                settings,
                RecalcScope(PERIOD_START.date()),
                archive_dir=archive_run.archive,
                timeout_s=600,
            )
    finally:
        done.set()
        watcher.join()
        with psycopg.connect(settings.postgres.conninfo, autocommit=True) as conn:
            conn.execute("ALTER TABLE usage_aggregates_recalc DROP CONSTRAINT refused_by_test")

    message = str(failed.value)
    assert message.startswith("the recalculation job failed: "), message
    assert "\n" not in message
    assert 'violates check constraint "refused_by_test"' in message
    attempts = {pid for pids in seen for pid in pids}
    assert len(attempts) >= BATCH_RESTARTS + 1, seen  # the job was restarted
    # Never more than the current attempt's connection and the last one's, still closing.
    assert max(len(pids) for pids in seen) <= 2, seen  # noqa: PLR2004
    # The last attempt's connection ends once it has been idle for the timeout (1 s), which on
    # a loaded machine can be just after the command returned.
    deadline = time.monotonic() + 30
    while job_connections(settings) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job_connections(settings) == []


def test_recalculation_refuses_the_archive_of_another_stack(
    archive_run: ArchiveRun, tmp_path: Path
) -> None:
    # The job marked its archive with this database's stack id; after a reset (a new
    # database, a new id), the old archive's events must not come back into the figures.
    assert archive_owner(archive_run.archive) == stack_id(archive_run.settings)
    archive = copy_of(archive_run, tmp_path)
    (archive / STACK_ID_FILE).write_text(f"{uuid.uuid4()}\n")
    with pytest.raises(RecalculationError, match="belongs to stack .*, not to this stack"):
        recalculate(archive_run.settings, RecalcScope(PERIOD_START.date()), archive_dir=archive)
