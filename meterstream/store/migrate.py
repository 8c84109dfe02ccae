"""Apply `sql/postgres/NNNN_*.sql` in order, once each, recorded in `schema_migrations`."""

from __future__ import annotations

from pathlib import Path

import psycopg

from meterstream.config import PROJECT_ROOT, Settings

MIGRATIONS_DIR = PROJECT_ROOT / "sql" / "postgres"


def pending(conn: psycopg.Connection, migrations_dir: Path = MIGRATIONS_DIR) -> list[Path]:
    """Migration files not yet applied, in order."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
    return [p for p in sorted(migrations_dir.glob("[0-9]*.sql")) if p.name not in done]


def migrate(settings: Settings, migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every pending migration, each in its own transaction; return their names."""
    applied: list[str] = []
    with psycopg.connect(settings.postgres.conninfo, autocommit=True) as conn:
        # One migrator at a time, even when tests and the CLI race.
        conn.execute("SELECT pg_advisory_lock(72656)")
        try:
            for path in pending(conn, migrations_dir):
                with conn.transaction():
                    conn.execute(path.read_text())  # type: ignore[arg-type] - trusted repo file
                    conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (path.name,))
                applied.append(path.name)
            _sync_billing_config(conn, settings)
        finally:
            conn.execute("SELECT pg_advisory_unlock(72656)")
    return applied


def _sync_billing_config(conn: psycopg.Connection, settings: Settings) -> None:
    """Record the deployment's allowed lateness where `billing_periods` reads it."""
    exists = conn.execute("SELECT to_regclass('billing_config') IS NOT NULL").fetchone()
    if exists and exists[0]:
        conn.execute(
            "UPDATE billing_config SET allowed_lateness = make_interval(hours => %s)",
            (settings.flink.allowed_lateness_hours,),
        )
