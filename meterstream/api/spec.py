"""The ingest API's OpenAPI document, written to clients/openapi.json: the SDKs' wire format.

`meterstream openapi` writes it; `meterstream openapi --check` (and tests/clients) fail when the
checked-in file differs from what the app serves at `/openapi.json`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from meterstream.config import PROJECT_ROOT, Settings, load_settings

if TYPE_CHECKING:
    from meterstream.api.producer import Delivery

SPEC_PATH = PROJECT_ROOT / "clients" / "openapi.json"


class _NoKafka:
    """The producer of an app that is only asked for its OpenAPI document, never served."""

    async def enqueue(
        self, topic: str, records: Sequence[tuple[bytes, bytes]]
    ) -> Awaitable[Delivery]:
        msg = "this app only renders its OpenAPI document"
        raise RuntimeError(msg)

    def close(self) -> None:
        """Nothing to close."""


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The document the app serves at `/openapi.json`."""
    from meterstream.api.app import create_app  # noqa: PLC0415 - FastAPI is heavy

    return create_app(settings, _NoKafka()).openapi()


def render(document: dict[str, Any]) -> str:
    """The file's text: indented JSON in the app's key order, one newline at the end."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def openapi(
    out: Annotated[Path, typer.Option(help="where to write it")] = SPEC_PATH,
    check: Annotated[
        bool, typer.Option(help="write nothing; exit 1 if the file differs from the app's")
    ] = False,
) -> None:
    """Write the ingest API's OpenAPI document (the SDKs' wire format) to clients/openapi.json."""
    text = render(openapi_document(load_settings()))
    if check:
        if not out.exists() or out.read_text() != text:
            typer.echo(f"{out} differs from the app's /openapi.json: run `meterstream openapi`")
            raise typer.Exit(code=1)
        typer.echo(f"{out} is up to date")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    typer.echo(f"wrote {out}")
