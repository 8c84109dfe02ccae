"""`meterstream archive` (seal, verify) and `meterstream recalculate` (a period, from the archive).

Registered in `meterstream/cli.py`. Recalculation is a top-level command, not an `archive` one:
its readers think in billing periods, not in the archive's files. Heavy imports (pyarrow,
psycopg) happen inside the commands so that `meterstream --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from meterstream.config import load_settings
from meterstream.errors import MeterstreamError

console = Console()

archive_app = typer.Typer(
    help="The audit archive: every accepted event in Parquet, sealed by a SHA-256 manifest.",
    no_args_is_help=True,
)

ArchiveDir = Annotated[
    Path | None,
    typer.Option(
        "--dir", help="the archive (default: METERSTREAM_FLINK_ARCHIVE_DIR or .stack/archive)"
    ),
]


def _root(directory: Path | None) -> Path:
    from meterstream.archive import archive_root  # noqa: PLC0415

    return directory.resolve() if directory else archive_root(load_settings())


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(code=1)


@archive_app.command("seal")
def seal(directory: ArchiveDir = None) -> None:
    """Add every committed Parquet file that is not sealed yet to MANIFEST.jsonl (SHA-256)."""
    from meterstream.archive import seal as seal_archive  # noqa: PLC0415

    root = _root(directory)
    try:
        result = seal_archive(root)
    except MeterstreamError as exc:
        raise _fail(exc) from exc
    rows = sum(e.rows for e in result.sealed)
    console.print(f"sealed {len(result.sealed)} files ({rows} rows) in {root}")
    for path in result.skipped:
        console.print(f"[red]not Parquet, not sealed:[/red] {path}")
    console.print(f"manifest head: {result.head}")
    if result.skipped:
        raise typer.Exit(code=1)


@archive_app.command("verify")
def verify(
    directory: ArchiveDir = None,
    strict: Annotated[
        bool, typer.Option(help="also fail on files committed since the last seal")
    ] = False,
    head: Annotated[
        str | None, typer.Option(help="a manifest head recorded earlier: it must still be there")
    ] = None,
) -> None:
    """Recompute every sealed file's SHA-256; exit 1 on a changed, missing or unsealed file."""
    from meterstream.archive import verify as verify_archive  # noqa: PLC0415

    root = _root(directory)
    try:
        result = verify_archive(root, strict=strict, expected_head=head)
    except MeterstreamError as exc:
        raise _fail(exc) from exc
    for path, what in result.changed.items():
        console.print(f"[red]changed:[/red] {path}: {what}")
    for path in result.missing:
        console.print(f"[red]missing:[/red] {path}")
    for path in result.unsealed:
        console.print(f"[red]unsealed:[/red] {path} (was there at the last seal)")
    for problem in result.manifest:
        console.print(f"[red]manifest:[/red] {problem}")
    pending = f", {len(result.pending)} committed since the last seal" if result.pending else ""
    console.print(f"{result.checked} sealed files match{pending}; manifest head {result.head}")
    if not result.ok:
        raise typer.Exit(code=1)


def recalculate(  # noqa: PLR0917 - typer options are parameters
    period: Annotated[str, typer.Option(help="the billing month, YYYY-MM")],
    account: Annotated[str | None, typer.Option(help="only this account")] = None,
    reason: Annotated[
        str, typer.Option(help="why (recorded with every change)")
    ] = "recalculation from the audit archive",
    directory: ArchiveDir = None,
    dry_run: Annotated[bool, typer.Option(help="show the changes, apply nothing")] = False,
    force: Annotated[
        bool, typer.Option(help="apply even if figures would lose counted events")
    ] = False,
) -> None:
    """Recompute a period's figures from the archive (late events included) and apply them.

    The first arrival of each (account, idempotency key) counts, as in the stream. A meter no
    longer in schemas/ is recalculated with the aggregation its events were archived with.
    Shows each phase; Ctrl-C stops it without changing anything.
    """
    from meterstream.recalc import RecalcScope, parse_period  # noqa: PLC0415
    from meterstream.recalc import recalculate as run  # noqa: PLC0415

    settings = load_settings()
    try:
        scope = RecalcScope(parse_period(period), account)
        console.print(f"recalculating {scope.describe()} from {_root(directory)} ...")
        result = run(
            settings,
            scope,
            archive_dir=_root(directory),
            reason=reason,
            dry_run=dry_run,
            force=force,
            say=lambda line: console.print(line, markup=False, highlight=False),
        )
    except MeterstreamError as exc:
        raise _fail(exc) from exc
    except KeyboardInterrupt:
        console.print("interrupted: the batch job was stopped, nothing was changed")
        raise typer.Exit(code=130) from None
    table = Table("account", "meter", "dimensions", "change", "quantity", "events")
    for c in result.changes:
        table.add_row(
            c.account_id,
            c.meter,
            c.dimensions,
            c.change,
            f"{c.old_quantity} -> {c.new_quantity}",
            f"{c.old_event_count} -> {c.new_event_count}",
        )
    if result.changes:
        console.print(table)
    verb = "applied" if result.applied else "dry run, not applied"
    console.print(
        f"run {result.run_id} ({verb}): {result.count('added')} added, "
        f"{result.count('changed')} changed, {result.count('removed')} removed"
    )
