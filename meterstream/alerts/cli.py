"""`meterstream alerts ...`: run the alerts service, and manage rules and endpoints over the API.

Management commands are clients of the HTTP API (`--url`, `--token` or `METERSTREAM_API_URL`,
`METERSTREAM_TOKEN`), so the API's checks and tenant rules apply to them as to everyone. They
print the API's JSON answers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from meterstream.config import load_settings

console = Console(stderr=True)

alerts_app = typer.Typer(
    help="Alerts: the service, rules, webhook endpoints, notifications.", no_args_is_help=True
)
rules_app = typer.Typer(help="Alert rules (JSON shapes: docs/alerts.md).", no_args_is_help=True)
endpoints_app = typer.Typer(help="Webhook endpoints.", no_args_is_help=True)
alerts_app.add_typer(rules_app, name="rules")
alerts_app.add_typer(endpoints_app, name="endpoints")

Url = Annotated[str, typer.Option(envvar="METERSTREAM_API_URL", help="the API's base URL")]
Token = Annotated[
    str, typer.Option(envvar="METERSTREAM_TOKEN", help="a token with alerts:write / alerts:read")
]
DEFAULT_URL = "http://127.0.0.1:18080"


def _call(url: str, token: str, method: str, path: str, **kwargs: Any) -> Any:
    """One API request; print the JSON answer and return it, or exit 1 with the error."""
    import httpx  # noqa: PLC0415 - keep `--help` fast

    if not token:
        console.print("[red]error:[/red] give --token or set METERSTREAM_TOKEN")
        raise typer.Exit(code=1)
    try:
        response = httpx.request(
            method,
            url.rstrip("/") + path,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            **kwargs,
        )
    except httpx.HTTPError as exc:
        console.print(f"[red]error:[/red] {method} {path}: {exc}")
        raise typer.Exit(code=1) from exc
    if response.status_code >= 400:  # noqa: PLR2004
        console.print(f"[red]error:[/red] {response.status_code} {response.text[:1000]}")
        raise typer.Exit(code=1)
    doc = response.json() if response.content else None
    if doc is not None:
        typer.echo(json.dumps(doc, indent=2))
    return doc


@alerts_app.command("serve")
def serve(
    log_level: Annotated[str, typer.Option(help="logging level")] = "INFO",
) -> None:
    """Run the alerts service (evaluator, health checks, webhook notifier) until Ctrl-C."""
    import logging  # noqa: PLC0415

    from meterstream.alerts.service import run  # noqa: PLC0415

    logging.basicConfig(
        stream=sys.stderr, level=log_level.upper(), format="%(asctime)s %(name)s %(message)s"
    )
    run(load_settings())


@rules_app.command("create")
def rules_create(
    file: Annotated[Path, typer.Argument(help="the rule's JSON ('-': standard input)")],
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Create a rule from its JSON document."""
    text = sys.stdin.read() if str(file) == "-" else file.read_text()
    try:
        rule = json.loads(text)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {file} is not JSON: {exc}")
        raise typer.Exit(code=1) from exc
    _call(url, token, "POST", "/v1/alerts/rules", json=rule)


@rules_app.command("list")
def rules_list(url: Url = DEFAULT_URL, token: Token = "") -> None:
    """List your organisation's rules."""
    _call(url, token, "GET", "/v1/alerts/rules")


@rules_app.command("show")
def rules_show(rule_id: str, url: Url = DEFAULT_URL, token: Token = "") -> None:
    """Show a rule and what it fired."""
    _call(url, token, "GET", f"/v1/alerts/rules/{rule_id}")
    _call(url, token, "GET", f"/v1/alerts/rules/{rule_id}/firings")


@rules_app.command("enable")
def rules_enable(rule_id: str, url: Url = DEFAULT_URL, token: Token = "") -> None:
    """Enable a rule (it sees the figures counted while it was off)."""
    _call(url, token, "PATCH", f"/v1/alerts/rules/{rule_id}", json={"enabled": True})


@rules_app.command("disable")
def rules_disable(rule_id: str, url: Url = DEFAULT_URL, token: Token = "") -> None:
    """Disable a rule."""
    _call(url, token, "PATCH", f"/v1/alerts/rules/{rule_id}", json={"enabled": False})


@rules_app.command("delete")
def rules_delete(rule_id: str, url: Url = DEFAULT_URL, token: Token = "") -> None:
    """Delete a rule (its notifications stay)."""
    _call(url, token, "DELETE", f"/v1/alerts/rules/{rule_id}")


@endpoints_app.command("create")
def endpoints_create(
    endpoint_url: Annotated[str, typer.Argument(help="where to POST notifications")],
    event_type: Annotated[
        list[str] | None, typer.Option(help="a type, or a prefix ending in *; repeatable")
    ] = None,
    description: Annotated[str, typer.Option()] = "",
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Create an endpoint; the answer shows its signing secret once."""
    body = {"url": endpoint_url, "event_types": event_type or [], "description": description}
    _call(url, token, "POST", "/v1/alerts/endpoints", json=body)


@endpoints_app.command("list")
def endpoints_list(url: Url = DEFAULT_URL, token: Token = "") -> None:
    """List your organisation's endpoints."""
    _call(url, token, "GET", "/v1/alerts/endpoints")


@endpoints_app.command("enable")
def endpoints_enable(endpoint_id: str, url: Url = DEFAULT_URL, token: Token = "") -> None:
    """Enable an endpoint again (clears its failure record; pending deliveries resume)."""
    _call(url, token, "PATCH", f"/v1/alerts/endpoints/{endpoint_id}", json={"enabled": True})


@endpoints_app.command("disable")
def endpoints_disable(endpoint_id: str, url: Url = DEFAULT_URL, token: Token = "") -> None:
    """Disable an endpoint."""
    _call(url, token, "PATCH", f"/v1/alerts/endpoints/{endpoint_id}", json={"enabled": False})


@endpoints_app.command("delete")
def endpoints_delete(endpoint_id: str, url: Url = DEFAULT_URL, token: Token = "") -> None:
    """Delete an endpoint with its pending deliveries and log."""
    _call(url, token, "DELETE", f"/v1/alerts/endpoints/{endpoint_id}")


@endpoints_app.command("rotate-secret")
def endpoints_rotate(endpoint_id: str, url: Url = DEFAULT_URL, token: Token = "") -> None:
    """A new signing secret; the old one also signs for alerts.secret_overlap_ms."""
    _call(url, token, "POST", f"/v1/alerts/endpoints/{endpoint_id}/rotate-secret")


@endpoints_app.command("test")
def endpoints_test(endpoint_id: str, url: Url = DEFAULT_URL, token: Token = "") -> None:
    """Send an io.meterstream.endpoint.test notification to the endpoint."""
    _call(url, token, "POST", f"/v1/alerts/endpoints/{endpoint_id}/test")


@alerts_app.command("notifications")
def notifications(
    type_: Annotated[str | None, typer.Option("--type", help="only this CloudEvents type")] = None,
    limit: Annotated[int, typer.Option()] = 100,
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Your organisation's notifications, oldest first, with their deliveries."""
    params = {"limit": limit, **({"type": type_} if type_ else {})}
    _call(url, token, "GET", "/v1/alerts/notifications", params=params)


@alerts_app.command("deliveries")
def deliveries(
    endpoint: Annotated[str | None, typer.Option(help="only this endpoint id")] = None,
    notification: Annotated[str | None, typer.Option(help="only this notification id")] = None,
    limit: Annotated[int, typer.Option()] = 100,
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """The delivery log: every attempt, its outcome, HTTP status and error."""
    params: dict[str, Any] = {"limit": limit}
    if endpoint:
        params["endpoint_id"] = endpoint
    if notification:
        params["notification_id"] = notification
    _call(url, token, "GET", "/v1/alerts/deliveries", params=params)


@alerts_app.command("resend")
def resend(
    notification_id: str,
    endpoint: Annotated[str | None, typer.Option(help="only to this endpoint")] = None,
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Send a notification again, with the same webhook-id."""
    body = {"endpoint_id": endpoint} if endpoint else None
    _call(url, token, "POST", f"/v1/alerts/notifications/{notification_id}/resend", json=body)
