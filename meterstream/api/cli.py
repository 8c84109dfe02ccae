"""The ingest API's commands: `serve`, `upload`, and `orgs` / `accounts` / `tokens` management.

Registered in `meterstream/cli.py`. Heavy imports (FastAPI, uvicorn, Kafka) happen inside the
commands so that `meterstream --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from meterstream.config import load_settings
from meterstream.errors import MeterstreamError

console = Console()

tokens = typer.Typer(help="API tokens: create (shown once), revoke, list.", no_args_is_help=True)
orgs = typer.Typer(help="Organisations (tenants of the ingest API).", no_args_is_help=True)
accounts = typer.Typer(help="Which organisation owns which accounts.", no_args_is_help=True)


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(code=1)


def serve(
    host: Annotated[str | None, typer.Option(help="default: api.host (127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="default: api.port (18080)")] = None,
    tls_certfile: Annotated[
        Path | None, typer.Option(help="PEM certificate chain: serve HTTPS (with --tls-keyfile)")
    ] = None,
    tls_keyfile: Annotated[
        Path | None, typer.Option(help="PEM private key for --tls-certfile")
    ] = None,
    log_level: Annotated[str, typer.Option()] = "info",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="METERSTREAM_API_WORKERS",
            help="server processes; each has its own rate limits, caches and /metrics",
        ),
    ] = 1,
) -> None:
    """Run the ingest API (HTTP, or HTTPS with a certificate and key) until Ctrl-C."""
    import uvicorn  # noqa: PLC0415

    from meterstream.api.app import create_app, tune_gc  # noqa: PLC0415
    from meterstream.api.producer import KafkaEventProducer  # noqa: PLC0415

    settings = load_settings()
    api = dataclasses.replace(
        settings.api,
        host=host or settings.api.host,
        port=port or settings.api.port,
        tls_certfile=str(tls_certfile or settings.api.tls_certfile or ""),
        tls_keyfile=str(tls_keyfile or settings.api.tls_keyfile or ""),
    )
    settings = dataclasses.replace(settings, api=api)
    try:
        settings.validate()
    except MeterstreamError as exc:
        raise _fail(exc) from exc
    options: dict[str, Any] = {
        "host": api.host,
        "port": api.port,
        "ssl_certfile": api.tls_certfile or None,
        "ssl_keyfile": api.tls_keyfile or None,
        "log_level": log_level,
        "server_header": False,
        "proxy_headers": False,
        "timeout_graceful_shutdown": 30,
        # httptools (a dependency): the C parser takes a 1,000-event body with less CPU than h11.
        "http": "httptools",
        "loop": "asyncio",
    }
    scheme = "https" if api.tls_certfile else "http"
    console.print(
        f"meterstream API on {scheme}://{api.host}:{api.port} (OpenAPI: /openapi.json)"
        + (f", {workers} processes" if workers > 1 else "")
    )
    if workers > 1:
        # Each worker process builds its own app from the environment (`worker_app`).
        os.environ.update(
            {
                "METERSTREAM_API_HOST": api.host,
                "METERSTREAM_API_PORT": str(api.port),
                "METERSTREAM_API_TLS_CERTFILE": api.tls_certfile,
                "METERSTREAM_API_TLS_KEYFILE": api.tls_keyfile,
            }
        )
        uvicorn.run("meterstream.api.app:worker_app", factory=True, workers=workers, **options)
        return
    # The app flushes the producer when it shuts down: uvicorn re-raises a SIGTERM once it
    # has finished, so code after `run` does not run then.
    app = create_app(settings, KafkaEventProducer(settings), close_producer=True)
    tune_gc()
    uvicorn.Server(uvicorn.Config(app, **options)).run()


def upload(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    *,
    url: Annotated[str, typer.Option(envvar="METERSTREAM_API_URL")] = "http://127.0.0.1:18080",
    token: Annotated[
        str, typer.Option(envvar="METERSTREAM_TOKEN", help="an ingest:write token")
    ] = "",
    fmt: Annotated[
        str | None, typer.Option("--format", help="jsonl or json (default: from the suffix)")
    ] = None,
    upload_id: Annotated[str | None, typer.Option(help="resume this upload")] = None,
    ca_file: Annotated[Path | None, typer.Option(help="CA bundle for a self-signed https")] = None,
) -> None:
    """Upload a JSON Lines or JSON array file of events, resuming after interruptions."""
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from meterstream.client import ClientError, MeterstreamClient  # noqa: PLC0415

    if not token:
        raise _fail(ValueError("give --token or set METERSTREAM_TOKEN"))
    verify: bool | str = str(ca_file) if ca_file else True
    size = file.stat().st_size
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with (
        MeterstreamClient(url, token, verify=verify) as client,
        Progress(*columns, console=console) as bar,
    ):
        task = bar.add_task(file.name, total=size)
        try:
            status = client.upload(
                file,
                fmt=fmt,
                upload_id=upload_id,
                progress=lambda sent, _total: bar.update(task, completed=sent),
            )
        except ClientError as exc:
            raise _fail(exc) from exc
    console.print(
        f"upload {status['upload_id']}: {status['state']}, {status['accepted']} accepted, "
        f"{status['rejected']} rejected"
    )
    for rejection in status.get("rejections", [])[:10]:
        console.print(f"  byte {rejection['offset']}: {rejection['reason']} {rejection['detail']}")
    if status["state"] != "done":
        console.print(f"[red]{status.get('error', '')}")
        raise typer.Exit(code=1)


@orgs.command("create")
def orgs_create(
    org_id: Annotated[str, typer.Argument(help="[a-z0-9][a-z0-9_-]{0,63}")],
    name: Annotated[str, typer.Option()] = "",
    operator: Annotated[
        bool, typer.Option(help="its admin tokens may read /health/ready and /metrics")
    ] = False,
) -> None:
    """Create an organisation."""
    from meterstream.api.admin import create_org  # noqa: PLC0415

    try:
        create_org(load_settings(), org_id, name, operator=operator)
    except MeterstreamError as exc:
        raise _fail(exc) from exc
    console.print(f"organisation {org_id} ready")


@accounts.command("add")
def accounts_add(
    org_id: Annotated[str, typer.Argument()],
    account_ids: Annotated[list[str], typer.Argument(help="account ids (CloudEvents subject)")],
    quota: Annotated[int | None, typer.Option(help="events per UTC day (default: api's)")] = None,
) -> None:
    """Give accounts to an organisation (an account belongs to one organisation only)."""
    from meterstream.api.admin import add_accounts  # noqa: PLC0415

    try:
        n = add_accounts(load_settings(), org_id, account_ids, quota)
    except MeterstreamError as exc:
        raise _fail(exc) from exc
    console.print(f"{n} account(s) of {org_id} added or updated")


@tokens.command("create")
def tokens_create(
    org: Annotated[str, typer.Option(help="the organisation")],
    scope: Annotated[list[str], typer.Option(help="ingest:write, usage:read or admin; repeatable")],
    description: Annotated[str, typer.Option()] = "",
) -> None:
    """Create a token; it is printed once and only its hash is stored."""
    from meterstream.api.admin import create_token  # noqa: PLC0415

    try:
        made = create_token(load_settings(), org, scope, description)
    except MeterstreamError as exc:
        raise _fail(exc) from exc
    console.print(f"token id {made.token_id} for {org} ({', '.join(sorted(set(scope)))}):")
    print(made.token)  # noqa: T201 - plain stdout, so scripts can capture it


@tokens.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="the token id, or the whole token")],
) -> None:
    """Revoke a token (effective within api.token_cache_seconds)."""
    from meterstream.api.admin import revoke_token  # noqa: PLC0415
    from meterstream.api.auth import split_token  # noqa: PLC0415

    parts = split_token(token_id)
    ident = parts[0] if parts else token_id
    if not revoke_token(load_settings(), ident):
        raise _fail(ValueError(f"no valid token with id {ident}"))
    console.print(f"token {ident} revoked")


@tokens.command("list")
def tokens_list(org: Annotated[str | None, typer.Option()] = None) -> None:
    """List tokens (ids, scopes, state; never secrets)."""
    from meterstream.api.admin import list_tokens  # noqa: PLC0415

    table = Table("token id", "organisation", "scopes", "created (UTC)", "revoked", "description")
    for row in list_tokens(load_settings(), org):
        table.add_row(
            row["token_id"],
            row["org_id"],
            ", ".join(row["scopes"]),
            row["created_at"].strftime("%Y-%m-%d %H:%M:%S"),
            "yes" if row["revoked_at"] else "",
            row["description"],
        )
    console.print(table)


__all__ = ["accounts", "orgs", "serve", "tokens", "upload"]
