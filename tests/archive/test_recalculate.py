"""Recalculation from the archive the real job wrote, and sealing that archive.

All tests share one bounded run of the job (`archive_run`, an isolated database). Each test
leaves the figures as the oracle has them, so they do not depend on their order.
"""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from meterstream.cli import app
from meterstream.config import Settings
from meterstream.recalc import RecalcScope, RecalculationError, recalculate
from meterstream.rules.oracle import TotalKey, expected_outcome
from meterstream.rules.validate import Validator
from meterstream.testing import PERIOD_START
from tests.archive.conftest import ArchiveRun, archived_count
from tests.pipeline_helpers import oracle

pytestmark = [pytest.mark.integration, pytest.mark.flink]

#: Long enough that nothing is late: the figures recalculation must reach.
NOTHING_LATE = timedelta(days=3650)


def totals(
    settings: Settings, period: date, account_like: str
) -> dict[TotalKey, tuple[Decimal, int]]:
    with psycopg.connect(settings.postgres.conninfo) as conn:
        rows = conn.execute(
            "SELECT account_id, meter, period_start, dimensions, quantity, event_count"
            " FROM usage_aggregates WHERE period_start = %s AND account_id LIKE %s",
            (period, account_like),
        ).fetchall()
    return {(a, m, p, d): (q, n) for a, m, p, d, q, n in rows}


def only(
    expected: dict[TotalKey, tuple[Decimal, int]], period: date, account_like: str
) -> dict[TotalKey, tuple[Decimal, int]]:
    prefix = account_like.rstrip("%")
    exact = not account_like.endswith("%")
    return {
        k: v
        for k, v in expected.items()
        if k[2] == period and (k[0] == prefix if exact else k[0].startswith(prefix))
    }


def change_rows(settings: Settings, run_id: object) -> list[tuple]:
    with psycopg.connect(settings.postgres.conninfo) as conn:
        return conn.execute(
            "SELECT meter, dimensions, change, old_quantity, new_quantity, old_event_count,"
            " new_event_count, reason FROM aggregate_changes WHERE run_id = %s"
            " ORDER BY meter, dimensions",
            (run_id,),
        ).fetchall()


def run_counts(settings: Settings, run_id: object) -> tuple[int, int, int] | None:
    with psycopg.connect(settings.postgres.conninfo) as conn:
        row = conn.execute(
            "SELECT rows_added, rows_changed, rows_removed FROM recalculation_runs"
            " WHERE run_id = %s",
            (run_id,),
        ).fetchone()
    return tuple(row) if row else None


def updated_at(settings: Settings, period: date) -> dict[tuple, object]:
    with psycopg.connect(settings.postgres.conninfo) as conn:
        rows = conn.execute(
            "SELECT account_id, meter, dimensions, updated_at FROM usage_aggregates"
            " WHERE period_start = %s",
            (period,),
        ).fetchall()
    return {(a, m, d): u for a, m, d, u in rows}


def test_recalculating_a_period_without_late_events_twice_changes_nothing(
    archive_run: ArchiveRun, validator: Validator
) -> None:
    settings, period = archive_run.settings, PERIOD_START.date()
    expected = oracle(settings, validator, [r.value for r in archive_run.records])
    assert not [key for _, key in expected.late if key[2] == period]
    before = totals(settings, period, "%")
    assert before == only(expected.totals, period, archive_run.prefix + "%")
    written = updated_at(settings, period)

    for attempt in ("first", "second"):
        result = recalculate(
            settings, RecalcScope(period), archive_dir=archive_run.archive, reason=attempt
        )
        assert result.applied
        assert result.changes == [], attempt
        assert change_rows(settings, result.run_id) == []
        assert run_counts(settings, result.run_id) == (0, 0, 0)
        assert totals(settings, period, "%") == before
        # Not even rewritten with equal values: the rows' updated_at did not move.
        assert updated_at(settings, period) == written


def test_recalculation_restores_a_deleted_and_an_altered_row_to_the_oracle_and_logs_both(
    archive_run: ArchiveRun, validator: Validator
) -> None:
    settings, period = archive_run.settings, PERIOD_START.date()
    account = f"{archive_run.prefix}-0001"
    expected = oracle(settings, validator, [r.value for r in archive_run.records])
    want = only(expected.totals, period, account)
    assert totals(settings, period, account) == want
    deleted, altered = sorted(want)[:2]
    with psycopg.connect(settings.postgres.conninfo) as conn:
        conn.execute(
            "DELETE FROM usage_aggregates"
            " WHERE (account_id, meter, period_start, dimensions) = (%s, %s, %s, %s)",
            deleted,
        )
        conn.execute(
            "UPDATE usage_aggregates SET quantity = quantity + 1000, event_count = event_count - 1"
            " WHERE (account_id, meter, period_start, dimensions) = (%s, %s, %s, %s)",
            altered,
        )
    assert totals(settings, period, account) != want

    result = recalculate(
        settings,
        RecalcScope(period, account),
        archive_dir=archive_run.archive,
        reason="restore after manual edit",
    )

    assert totals(settings, period, account) == want
    assert run_counts(settings, result.run_id) == (1, 1, 0)
    logged = {(m, d): rest for m, d, *rest in change_rows(settings, result.run_id)}
    quantity, count = want[deleted]
    assert logged[deleted[1], deleted[3]] == [
        "added",
        None,
        quantity,
        None,
        count,
        "restore after manual edit",
    ]
    quantity, count = want[altered]
    assert logged[altered[1], altered[3]] == [
        "changed",
        quantity + 1000,
        quantity,
        count - 1,
        count,
        "restore after manual edit",
    ]
    assert len(logged) == 2


def test_recalculation_refuses_to_drop_counted_events_unless_forced(
    archive_run: ArchiveRun, validator: Validator
) -> None:
    settings, period = archive_run.settings, PERIOD_START.date()
    account = f"{archive_run.prefix}-0002"
    want = only(
        oracle(settings, validator, [r.value for r in archive_run.records]).totals,
        period,
        account,
    )
    inflated = sorted(want)[0]
    with psycopg.connect(settings.postgres.conninfo) as conn:
        conn.execute(
            "UPDATE usage_aggregates SET event_count = event_count + 5"
            " WHERE (account_id, meter, period_start, dimensions) = (%s, %s, %s, %s)",
            inflated,
        )
    scope = RecalcScope(period, account)

    with pytest.raises(RecalculationError, match="would remove counted events from 1 rows"):
        recalculate(settings, scope, archive_dir=archive_run.archive)
    assert totals(settings, period, account)[inflated][1] == want[inflated][1] + 5

    result = recalculate(settings, scope, archive_dir=archive_run.archive, force=True)
    assert [c.change for c in result.changes] == ["changed"]
    assert totals(settings, period, account) == want


def test_recalculation_folds_late_events_into_their_period(
    archive_run: ArchiveRun, validator: Validator
) -> None:
    settings, account = archive_run.settings, archive_run.late_account
    payloads = [r.value for r in archive_run.records]
    streaming = oracle(settings, validator, payloads)
    late = [key for _, key in streaming.late if key[0] == account]
    assert late, "the fixture's late events must be late"
    period = late[0][2]
    # The job kept them out of the figures and logged them in late_events.
    assert totals(settings, period, account) == {}
    with psycopg.connect(settings.postgres.conninfo) as conn:
        logged = conn.execute(
            "SELECT count(*) FROM late_events WHERE account_id = %s", (account,)
        ).fetchone()
    assert logged == (len(late),)

    result = recalculate(
        settings, RecalcScope(period, account), archive_dir=archive_run.archive, reason="late"
    )

    everything = expected_outcome(validator, payloads, allowed_lateness=NOTHING_LATE)
    want = only(everything.totals, period, account)
    assert want
    assert totals(settings, period, account) == want
    assert {c.change for c in result.changes} == {"added"}
    assert len(change_rows(settings, result.run_id)) == len(want)


def test_seal_then_verify_passes_and_fails_once_a_byte_of_a_file_changes(
    archive_run: ArchiveRun, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    shutil.copytree(archive_run.archive, archive)
    runner = CliRunner()
    env = {"COLUMNS": "200"}

    sealed = runner.invoke(app, ["archive", "seal", "--dir", str(archive)], env=env)
    assert sealed.exit_code == 0, sealed.output
    assert f"({archived_count(archive)} rows)" in sealed.output
    verified = runner.invoke(app, ["archive", "verify", "--dir", str(archive)], env=env)
    assert verified.exit_code == 0, verified.output
    again = runner.invoke(app, ["archive", "seal", "--dir", str(archive)], env=env)
    assert "sealed 0 files" in again.output

    victim = sorted(archive.glob("events/dt=*/part-*"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))

    tampered = runner.invoke(app, ["archive", "verify", "--dir", str(archive)], env=env)
    assert tampered.exit_code == 1
    assert f"changed: {victim.relative_to(archive).as_posix()}" in tampered.output
