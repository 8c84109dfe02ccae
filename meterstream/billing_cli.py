"""CLI for billing periods: each account's time zone, and which periods are open or closed."""

from __future__ import annotations

from typing import Annotated

import psycopg
import typer
from psycopg.rows import dict_row
from rich.console import Console
from rich.table import Table

from meterstream.config import load_settings
from meterstream.errors import ConfigError
from meterstream.rules.periods import zone

console = Console()
time_zone_app = typer.Typer(
    help="Each account's billing time zone (UTC by default).", no_args_is_help=True
)


@time_zone_app.command("set")
def set_time_zone(
    account: Annotated[str, typer.Argument(help="the account id")],
    time_zone: Annotated[str, typer.Argument(help="an IANA name, e.g. Europe/Berlin")],
) -> None:
    """Bill an account's periods in a time zone (applies to events processed from now on)."""
    try:
        zone(time_zone)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from exc
    with psycopg.connect(load_settings().postgres.conninfo) as conn:
        conn.execute(
            "INSERT INTO account_time_zones (account_id, time_zone) VALUES (%s, %s)"
            " ON CONFLICT (account_id) DO UPDATE SET time_zone = EXCLUDED.time_zone,"
            " updated_at = now()",
            (account, time_zone),
        )
    console.print(f"{account}: billing periods in {time_zone}")


@time_zone_app.command("list")
def list_time_zones() -> None:
    """Show the accounts that are not billed in UTC."""
    with psycopg.connect(load_settings().postgres.conninfo, row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT account_id, time_zone, updated_at FROM account_time_zones ORDER BY 1"
        ).fetchall()
    table = Table("account", "time zone", "since")
    for row in rows:
        table.add_row(row["account_id"], row["time_zone"], str(row["updated_at"]))
    console.print(table)


def periods(
    account: Annotated[str | None, typer.Option(help="only this account")] = None,
    status: Annotated[str | None, typer.Option(help="open or closed")] = None,
) -> None:
    """Show billing periods: open (provisional figures) or closed (past the allowed lateness)."""
    with psycopg.connect(load_settings().postgres.conninfo, row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT account_id, period_start, time_zone, period_end, closes_at, status"
            " FROM billing_periods WHERE (%(a)s::text IS NULL OR account_id = %(a)s)"
            " AND (%(s)s::text IS NULL OR status = %(s)s) ORDER BY account_id, period_start",
            {"a": account, "s": status},
        ).fetchall()
    table = Table("account", "period", "time zone", "closes at (UTC)", "status")
    for row in rows:
        table.add_row(
            row["account_id"],
            str(row["period_start"]),
            row["time_zone"],
            row["closes_at"].strftime("%Y-%m-%d %H:%M"),
            row["status"],
        )
    console.print(table)
