"""`meterstream corrections void|amend|list|publish`, `meterstream audit`, `accounts erase`.

The operator's side: these work on PostgreSQL and the archive directly, for any account, and
record "operator" as who did it. Registered in `meterstream/cli.py`. Heavy imports happen
inside the commands so that `meterstream --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from meterstream.config import load_settings
from meterstream.errors import MeterstreamError

console = Console()

corrections_app = typer.Typer(
    help="Void or amend counted events (docs/corrections.md); list corrections.",
    no_args_is_help=True,
)

Reason = Annotated[str, typer.Option(help="why (kept forever in the audit trail)")]
Output = Annotated[str, typer.Option("--format", help="table or json")]


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
    return typer.Exit(code=1)


def _show(result: Any, output: str) -> None:
    """Print a correction request's outcome."""
    if output == "json":
        typer.echo(json.dumps(result.describe(), indent=2))
        return
    table = Table("correction", "event", "meter", "period", "action", "applies")
    for c in result.corrections:
        table.add_row(
            str(c.correction_id),
            c.event_id,
            c.meter,
            f"{c.period_start:%Y-%m}",
            c.action.value,
            "in the stream" if c.in_stream else "at the next recalculation",
        )
    console.print(table)
    skipped = ""
    if result.skipped_voided or result.skipped_late:
        skipped = f"; skipped {result.skipped_voided} voided already, {result.skipped_late} late"
    console.print(f"request {result.request_id}: {len(result.corrections)} recorded{skipped}")
    if not result.published:
        console.print(
            f"[yellow]not published to Kafka yet[/yellow] ({result.publish_error}): "
            "`meterstream corrections publish` retries"
        )


@corrections_app.command("void")
def void(
    account: Annotated[str, typer.Argument(help="the account id")],
    reason: Reason,
    event_id: Annotated[str | None, typer.Option(help="void this event")] = None,
    meter: Annotated[str | None, typer.Option(help="void this meter's events in a range")] = None,
    start: Annotated[
        datetime | None, typer.Option("--from", help="range start (event time, UTC if no offset)")
    ] = None,
    end: Annotated[datetime | None, typer.Option("--to", help="range end, excluded")] = None,
    period: Annotated[
        str | None, typer.Option(help="with --event-id: look only in this month, YYYY-MM (faster)")
    ] = None,
    output: Output = "table",
) -> None:
    """Void a counted event (--event-id), or a meter's counted events in a time range."""
    from datetime import UTC  # noqa: PLC0415

    from meterstream.corrections import service  # noqa: PLC0415
    from meterstream.recalc import parse_period  # noqa: PLC0415

    settings = load_settings()
    actor = service.Actor()
    try:
        if event_id and not (meter or start or end):
            month = parse_period(period) if period else None
            result = service.void_event(settings, actor, account, event_id, reason, period=month)
        elif meter and start and end and not event_id:
            utc = [t if t.tzinfo else t.replace(tzinfo=UTC) for t in (start, end)]
            result = service.void_range(
                settings, actor, account, meter=meter, start=utc[0], end=utc[1], reason=reason
            )
        else:
            msg = "give --event-id, or --meter with --from and --to"
            raise typer.BadParameter(msg)
    except MeterstreamError as exc:
        raise _fail(exc) from exc
    _show(result, output)


@corrections_app.command("amend")
def amend(
    event: Annotated[Path, typer.Argument(help="a file with the new CloudEvent (JSON), or -")],
    reason: Reason,
    output: Output = "table",
) -> None:
    """Replace a counted event's content: the new CloudEvent keeps its id (key), meter, period."""
    from meterstream.corrections import service  # noqa: PLC0415

    payload = sys.stdin.buffer.read() if str(event) == "-" else event.read_bytes()
    try:
        result = service.amend_event(load_settings(), service.Actor(), payload, reason)
    except MeterstreamError as exc:
        raise _fail(exc) from exc
    _show(result, output)


@corrections_app.command("list")
def list_(
    account: Annotated[str | None, typer.Option(help="only this account")] = None,
    org: Annotated[str | None, typer.Option(help="only this organisation's accounts")] = None,
    limit: Annotated[int, typer.Option(help="at most this many (oldest first)")] = 100,
    output: Output = "table",
) -> None:
    """Show corrections in the order they were made."""
    from meterstream.corrections.service import list_corrections  # noqa: PLC0415

    rows = list_corrections(load_settings(), org_id=org, account=account, limit=limit)
    if output == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("#", "made (UTC)", "account", "action", "event", "meter", "period", "by", "why")
    for r in rows:
        table.add_row(
            str(r["seq"]),
            r["created_at"][:19],
            r["account_id"],
            r["action"],
            r["event_id"],
            r["meter"],
            r["period_start"][:7],
            r["requested_by"],
            r["reason"],
        )
    console.print(table)


@corrections_app.command("publish")
def publish() -> None:
    """Send the corrections Kafka has not acknowledged yet (exit 1 if some are still left)."""
    from meterstream.corrections.outbox import publish_pending  # noqa: PLC0415

    result = publish_pending(load_settings())
    console.print(f"published {len(result.sent)} corrections")
    if result.error:
        console.print(f"[red]{result.pending} not published:[/red] {result.error}")
        raise typer.Exit(code=1)


def audit(
    account: Annotated[str | None, typer.Option(help="only this account (or pseudonym)")] = None,
    org: Annotated[str | None, typer.Option(help="only this organisation's rows")] = None,
    limit: Annotated[int, typer.Option(help="at most this many (oldest first)")] = 100,
    output: Output = "table",
) -> None:
    """Show the audit trail: every correction request and erasure (who, when, what, why)."""
    from meterstream.corrections.service import audit_entries  # noqa: PLC0415

    rows = audit_entries(load_settings(), org_id=org, account=account, limit=limit)
    if output == "json":
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table("#", "when (UTC)", "who", "organisation", "account", "what", "why")
    for r in rows:
        table.add_row(
            str(r["audit_id"]),
            r["created_at"][:19],
            r["actor"],
            r["org_id"] or "",
            r["account_id"] or "",
            r["what"],
            r["reason"],
        )
    console.print(table)


#: Tables that keep naming an account whose figures the `keep` policy kept.
KEPT_BY_POLICY = frozenset(
    {
        "usage_aggregates",
        "aggregate_changes",
        "recalculation_runs",
        "account_time_zones",
        "accounts",
        "erased_accounts",
    }
)


def erase(
    account: Annotated[str, typer.Argument(help="the account id")],
    reason: Reason,
    figures: Annotated[
        str | None,
        typer.Option(help="keep, pseudonymise or delete its figures (default: erasure.figures)"),
    ] = None,
    output: Output = "table",
) -> None:
    """Erase an account's personal data from every store (docs/corrections.md).

    Exit 1 if something still names it afterwards (events still on their way: run it again).
    """
    from meterstream.corrections.erasure import erase_account  # noqa: PLC0415

    try:
        result = erase_account(load_settings(), account, reason=reason, figures=figures)
    except MeterstreamError as exc:
        raise _fail(exc) from exc
    if output == "json":
        typer.echo(json.dumps(result.describe(), indent=2))
    else:
        table = Table("store", "rows")
        for store, rows in result.counts.items():
            if rows:
                table.add_row(store, str(rows))
        done = result.archive
        table.add_row("archive", f"{done.rows_removed} in {done.files_rewritten} files rewritten")
        console.print(table)
        console.print(
            f"erasure {result.erasure_id}: figures {result.figures}"
            + (f" as {result.pseudonym}" if result.figures == "pseudonymise" else "")
        )
    incomplete = {
        t: n
        for t, n in result.remaining.items()
        if not (result.figures == "keep" and t in KEPT_BY_POLICY)
    }
    if incomplete or result.archive.still_in_progress:
        console.print(
            f"[red]not complete:[/red] still named in {incomplete or '-'}; archive files not "
            f"committed yet: {len(result.archive.still_in_progress)}. Events of the account "
            "were on their way: run the erasure again once it sends nothing more"
        )
        raise typer.Exit(code=1)
