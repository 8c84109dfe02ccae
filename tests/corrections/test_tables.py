"""PostgreSQL's side on its own (no job): append-only tables, the figures policies of erasure.

The corrections and the audit trail refuse UPDATE, DELETE and TRUNCATE from every role, and
an erasure's transaction may change only their personal columns. An erasure with `delete`
removes the account's figures and what recalculation recorded about them; with `keep` it leaves
them under the account id; either way a recalculation of the account is refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path

import psycopg
import pytest

from meterstream.config import Settings
from meterstream.corrections.erasure import erase_account
from meterstream.recalc import RecalcScope, RecalculationError, recalculate
from tests.pipeline_helpers import isolated_database

pytestmark = pytest.mark.integration

OCTOBER = date(2026, 10, 1)


@pytest.fixture
def database(stack: Settings, tmp_path: Path) -> Iterator[Settings]:
    with isolated_database(stack) as settings:
        yield replace(settings, flink=replace(settings.flink, archive_dir=str(tmp_path / "none")))


def correction(conn: psycopg.Connection, account: str, reason: str = "why") -> uuid.UUID:
    ident = uuid.uuid4()
    conn.execute(
        "INSERT INTO corrections (correction_id, request_id, account_id, action, dedup_key,"
        " event_id, meter, aggregation, period_start, dimensions, reason, requested_by,"
        " in_stream) VALUES (%s, %s, %s, 'void', 'id:e1', 'e1', 'api_calls', 'COUNT', %s, '',"
        " %s, 'operator', false)",
        (ident, uuid.uuid4(), account, OCTOBER, reason),
    )
    conn.execute(
        "INSERT INTO audit_trail (actor, action, account_id, what, reason)"
        " VALUES ('operator', 'void', %s, 'void of 1 event', %s)",
        (account, reason),
    )
    return ident


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE corrections SET reason = 'changed'",
        "DELETE FROM corrections",
        "TRUNCATE corrections CASCADE",
        "UPDATE audit_trail SET reason = 'changed'",
        "DELETE FROM audit_trail",
        "TRUNCATE audit_trail CASCADE",
    ],
)
def test_corrections_and_the_audit_trail_refuse_changes_from_every_role(
    database: Settings, statement: str
) -> None:
    with psycopg.connect(database.postgres.conninfo, autocommit=True) as conn:
        correction(conn, "acct-1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(statement)  # type: ignore[arg-type]
        assert conn.execute("SELECT count(*) FROM corrections").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM audit_trail").fetchone() == (1,)


def test_an_erasure_may_change_personal_columns_but_never_who_what_or_when(
    database: Settings,
) -> None:
    with psycopg.connect(database.postgres.conninfo) as conn:
        correction(conn, "acct-1")
        conn.commit()
        conn.execute("SELECT set_config('meterstream.erasure', 'e-1', true)")
        conn.execute("UPDATE corrections SET account_id = 'erased-x', event_id = NULL")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="requested_by"):
            conn.execute("UPDATE corrections SET requested_by = 'someone else'")
        conn.rollback()
        conn.execute("SELECT set_config('meterstream.erasure', 'e-1', true)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute("DELETE FROM audit_trail")


def figures_of(conn: psycopg.Connection, account: str) -> int:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM usage_aggregates WHERE account_id = %(a)s)"
        " + (SELECT count(*) FROM aggregate_changes WHERE account_id = %(a)s)"
        " + (SELECT count(*) FROM recalculation_runs WHERE account_id = %(a)s)"
        " + (SELECT count(*) FROM accounts WHERE account_id = %(a)s)",
        {"a": account},
    ).fetchone()
    return int(row[0]) if row else 0


def seed(conn: psycopg.Connection, account: str) -> None:
    """A figure of the account, a recalculation that changed it, its organisation."""
    run = uuid.uuid4()
    conn.execute("INSERT INTO organisations (org_id, name) VALUES ('o1', 'o1')")
    conn.execute("INSERT INTO accounts (account_id, org_id) VALUES (%s, 'o1')", (account,))
    conn.execute(
        "INSERT INTO usage_aggregates (account_id, meter, period_start, dimensions, aggregation,"
        " quantity, event_count, first_event_at, last_event_at, last_arrived_at)"
        " VALUES (%s, 'api_calls', %s, '', 'COUNT', 3, 3, now(), now(), now())",
        (account, OCTOBER),
    )
    conn.execute(
        "INSERT INTO recalculation_runs (run_id, period_start, account_id, reason, archive_dir,"
        " rows_added, rows_changed, rows_removed, started_at)"
        " VALUES (%s, %s, %s, 'late events', '/a', 0, 1, 0, now())",
        (run, OCTOBER, account),
    )
    conn.execute(
        "INSERT INTO aggregate_changes (run_id, account_id, meter, period_start, dimensions,"
        " change, aggregation, old_quantity, new_quantity, reason)"
        " VALUES (%s, %s, 'api_calls', %s, '', 'changed', 'COUNT', 2, 3, 'late events')",
        (run, account, OCTOBER),
    )


def test_erasure_with_delete_removes_the_figures_and_with_keep_leaves_them(
    database: Settings,
) -> None:
    with psycopg.connect(database.postgres.conninfo) as conn:
        seed(conn, "acct-del")
        conn.execute("INSERT INTO accounts (account_id, org_id) VALUES ('acct-keep', 'o1')")
        conn.execute(
            "INSERT INTO usage_aggregates (account_id, meter, period_start, dimensions,"
            " aggregation, quantity, event_count, first_event_at, last_event_at,"
            " last_arrived_at) VALUES ('acct-keep', 'api_calls', %s, '', 'COUNT', 1, 1, now(),"
            " now(), now())",
            (OCTOBER,),
        )
        correction(conn, "acct-keep", reason="acct-keep asked for it")
    assert figures_of(psycopg.connect(database.postgres.conninfo), "acct-del") == 4

    deleted = erase_account(database, "acct-del", reason="gone", figures="delete")
    kept = erase_account(database, "acct-keep", reason="gone", figures="keep")

    assert deleted.counts["usage_aggregates"] == 1
    assert deleted.remaining == {}
    with psycopg.connect(database.postgres.conninfo) as conn:
        assert figures_of(conn, "acct-del") == 0
        assert figures_of(conn, "acct-keep") == 2  # its figure and its account entry
        # Corrections and the audit trail are pseudonymised whatever the policy.
        assert conn.execute("SELECT account_id, event_id, reason FROM corrections").fetchall() == [
            (kept.pseudonym, None, f"{kept.pseudonym} asked for it")
        ]
    assert set(kept.remaining) == {"usage_aggregates", "accounts", "erased_accounts"}
    for account in ("acct-del", "acct-keep"):
        with pytest.raises(RecalculationError, match=f"account {account} was erased"):
            recalculate(database, RecalcScope(OCTOBER, account), archive_dir=Path("/nowhere"))
