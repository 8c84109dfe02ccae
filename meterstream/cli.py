"""The `meterstream` command line: local stack, migrations, sample data, the job, and reads."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from meterstream.alerts.cli import alerts_app
from meterstream.api.cli import accounts, orgs, serve, tokens, upload
from meterstream.api.spec import openapi
from meterstream.archive_cli import archive_app, recalculate
from meterstream.bench.cli import bench
from meterstream.billing_cli import periods, time_zone_app
from meterstream.cluster_cli import PASS_THROUGH, cluster_down, cluster_up, submit, upgrade
from meterstream.config import env_names, load_settings
from meterstream.corrections.cli import audit, corrections_app, erase
from meterstream.errors import MeterstreamError

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()


def _fail(exc: MeterstreamError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(code=1)


@app.command()
def up() -> None:
    """Start the local stack (Kafka, PostgreSQL), create topics and apply migrations."""
    from meterstream.stack import local  # noqa: PLC0415 - keep `--help` fast

    try:
        local.up(load_settings(), say=console.print)
    except MeterstreamError as exc:
        raise _fail(exc) from exc


@app.command()
def down() -> None:
    """Stop the local stack; its data stays in .stack/ (see `reset`)."""
    from meterstream.stack import local  # noqa: PLC0415

    local.down(load_settings(), say=console.print)


@app.command()
def status() -> None:
    """Show which local-stack services run."""
    from meterstream.stack import local  # noqa: PLC0415

    states = local.status(load_settings())
    for name, running in states.items():
        console.print(f"{name:14} {'[green]running' if running else '[yellow]stopped'}")
    if not (states["kafka"] and states["postgres"]):
        raise typer.Exit(code=3)


@app.command()
def reset(
    keep_archive: Annotated[
        bool, typer.Option(help="keep the audit archive (a recalculation will refuse it)")
    ] = False,
) -> None:
    """Delete everything the stopped stack wrote, the audit archive too (unless --keep-archive).

    Kafka's and PostgreSQL's data, checkpoints, savepoints, job temp files,
    logs and the archive. The next `up` is a new stack with a new stack id.
    Downloaded jars are kept.
    """
    from meterstream.stack import local  # noqa: PLC0415

    try:
        local.reset(load_settings(), keep_archive=keep_archive, say=console.print)
    except MeterstreamError as exc:
        raise _fail(exc) from exc


@app.command()
def migrate() -> None:
    """Apply pending PostgreSQL migrations from sql/postgres/."""
    from meterstream.store.migrate import migrate as apply  # noqa: PLC0415

    applied = apply(load_settings())
    console.print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))


@app.command()
def config() -> None:
    """Show every setting with the environment variable that overrides it."""
    table = Table("environment variable", "value")
    for name, value in env_names(load_settings()).items():
        table.add_row(name, str(value))
    console.print(table)


@app.command("produce-sample")
def produce_sample(
    events: Annotated[int, typer.Option(help="new events to generate")] = 2_000,
    seed: Annotated[
        int, typer.Option(help="generator seed; the same seed re-sends the same ids")
    ] = 7,
    topic: Annotated[str | None, typer.Option(help="default: the raw topic")] = None,
) -> None:
    """Produce sample events (with duplicates, disorder across a month boundary, malformed ones)."""
    from meterstream.kafka_io import produce  # noqa: PLC0415
    from meterstream.testing import generate  # noqa: PLC0415

    settings = load_settings()
    records = generate(events, seed=seed)
    produce(settings, topic or settings.kafka.topics.raw, records)
    console.print(
        f"produced {len(records)} records ({events} new events) to "
        f"{topic or settings.kafka.topics.raw}"
    )


@app.command()
def run(
    bounded: Annotated[bool, typer.Option(help="stop at the offsets current at start-up")] = False,
    restore_from: Annotated[str | None, typer.Option(help="checkpoint/savepoint to resume")] = None,
    checkpoint_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Run the aggregation job on a local mini cluster (foreground; Ctrl-C stops it)."""
    from meterstream.flink.launch import JobOptions  # noqa: PLC0415

    options = JobOptions(bounded=bounded, restore_from=restore_from, checkpoint_dir=checkpoint_dir)
    raise typer.Exit(code=subprocess.call(options.argv()))


@app.command()
def aggregates(
    account: Annotated[str | None, typer.Option(help="only accounts starting with this")] = None,
    meter: Annotated[str | None, typer.Option(help="only this meter")] = None,
    period: Annotated[str | None, typer.Option(help="only this billing month, YYYY-MM")] = None,
    limit: Annotated[int, typer.Option(help="show at most this many rows (0: all)")] = 0,
) -> None:
    """Show the figures in PostgreSQL: one row per account, meter, period and segment."""
    from meterstream.display import figures_table  # noqa: PLC0415
    from meterstream.recalc import parse_period  # noqa: PLC0415
    from meterstream.store.queries import usage_aggregates  # noqa: PLC0415

    try:
        month = parse_period(period) if period else None
    except MeterstreamError as exc:
        raise _fail(exc) from exc
    rows = usage_aggregates(load_settings(), account, meter=meter, period=month)
    shown = rows[:limit] if limit > 0 else rows
    console.print(figures_table(shown))
    more = f" of {len(rows)} (--limit 0 shows all)" if len(shown) < len(rows) else ""
    console.print(f"{len(shown)} rows{more}")


@app.command()
def rejections(
    account: Annotated[str | None, typer.Option(help="only this account")] = None,
    meter: Annotated[str | None, typer.Option(help="only this meter")] = None,
    code: Annotated[str | None, typer.Option(help="only this reason code")] = None,
    severity: Annotated[str | None, typer.Option(help="error (not counted) or warning")] = None,
    since: Annotated[datetime | None, typer.Option(help="arrived at or after (UTC)")] = None,
    until: Annotated[datetime | None, typer.Option(help="arrived before (UTC)")] = None,
    limit: Annotated[int, typer.Option(help="newest entries to show")] = 50,
    output: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    summary: Annotated[bool, typer.Option(help="counts by reason code instead of entries")] = False,
) -> None:
    """Query the validation log: rejected events (and accepted ones with warnings)."""
    from meterstream.store.queries import LogFilter, rejection_summary, validation_log  # noqa: PLC0415

    utc = [t.replace(tzinfo=UTC) if t and t.tzinfo is None else t for t in (since, until)]
    log_filter = LogFilter(account, meter, code, severity, utc[0], utc[1])
    settings = load_settings()
    rows = (
        rejection_summary(settings, log_filter)
        if summary
        else validation_log(settings, log_filter, limit)
    )
    if output == "json":
        typer.echo(json.dumps(rows, default=str, indent=2))
        return
    if summary:
        table = Table("severity", "reason code", "events", "last arrived (UTC)")
        for row in rows:
            table.add_row(
                row["severity"], row["reason_code"], str(row["events"]), str(row["last_arrived_at"])
            )
    else:
        table = Table("arrived (UTC)", "severity", "code", "account", "meter", "detail")
        for row in rows:
            table.add_row(
                row["arrived_at"].strftime("%Y-%m-%d %H:%M:%S"),
                row["severity"],
                row["reason_code"],
                row["account_id"] or "",
                row["meter"] or "",
                row["detail"],
            )
    console.print(table)


schemas_app = typer.Typer(help="Meter definitions in schemas/.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")


@schemas_app.command("check")
def schemas_check(
    directory: Annotated[Path | None, typer.Option("--dir", help="default: schemas/")] = None,
) -> None:
    """Load every meter version and check each new version against the one before it."""
    from meterstream.meters.compat import check_registry  # noqa: PLC0415
    from meterstream.meters.registry import load_registry  # noqa: PLC0415

    try:
        registry = load_registry(directory or load_settings().schemas_dir)
    except MeterstreamError as exc:
        raise _fail(exc) from exc
    problems = check_registry(registry)
    for problem in problems:
        console.print(f"[red]incompatible:[/red] {problem}")
    versions = sum(len(v) for v in registry.meters.values())
    if problems:
        raise typer.Exit(code=1)
    console.print(f"{len(registry.meters)} meters, {versions} versions: compatible")


@schemas_app.command("list")
def schemas_list() -> None:
    """Show every meter version and its billing semantics."""
    from meterstream.meters.registry import load_registry  # noqa: PLC0415

    registry = load_registry(load_settings().schemas_dir)
    table = Table(
        "meter", "version", "aggregation", "value field", "group by", "idempotency", "sunset"
    )
    for m in registry.all():
        table.add_row(
            m.name,
            str(m.version),
            m.aggregation.value,
            m.value_field or "",
            ", ".join(m.group_by),
            m.idempotency_key.value,
            m.sunset.isoformat() if m.sunset else "",
        )
    console.print(table)


@app.command()
def demo(events: Annotated[int, typer.Option(help="new sample events")] = 2_000) -> None:
    """Start the stack, produce sample events, run the job over them, and tell what happened."""
    from meterstream.demo import run_demo  # noqa: PLC0415
    from meterstream.stack import local  # noqa: PLC0415

    settings = load_settings()
    try:
        code = run_demo(
            settings,
            console,
            events=events,
            start_stack=lambda: local.up(settings, say=console.print),
        )
    except MeterstreamError as exc:
        raise _fail(exc) from exc
    if code != 0:
        console.print(f"[red]the job failed (exit {code})")
        raise typer.Exit(code=code)
    console.print("The stack is still running: `meterstream down` (or `make down`) stops it.")


# Billing periods (meterstream/billing_cli.py).
app.add_typer(time_zone_app, name="time-zone")
app.command("periods")(periods)

# The ingest API's commands (meterstream/api/cli.py).
app.command("serve")(serve)
app.command("upload")(upload)
app.command("openapi")(openapi)
app.add_typer(tokens, name="tokens")
app.add_typer(orgs, name="orgs")
app.add_typer(accounts, name="accounts")
app.command("bench")(bench)
app.add_typer(archive_app, name="archive")
# Alerts and webhooks (meterstream/alerts/cli.py).
app.add_typer(alerts_app, name="alerts")

# The Flink cluster's commands (meterstream/cluster_cli.py).
app.command("cluster-up")(cluster_up)
app.command("cluster-down")(cluster_down)
app.command("submit", context_settings=PASS_THROUGH)(submit)
app.command("upgrade", context_settings=PASS_THROUGH)(upgrade)
# Recalculation of a billing period from the audit archive (meterstream/archive_cli.py).
app.command("recalculate")(recalculate)
# Corrections, the audit trail and erasure (meterstream/corrections/cli.py).
app.add_typer(corrections_app, name="corrections")
app.command("audit")(audit)
accounts.command("erase")(erase)
