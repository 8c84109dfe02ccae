"""The CLI's shape: one command per job, figures one line per row at 80 columns."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from rich.console import Console
from typer.testing import CliRunner

from meterstream.cli import app
from meterstream.display import figures_table


def test_recalculate_is_one_top_level_command() -> None:
    runner = CliRunner()

    top = runner.invoke(app, ["recalculate", "--help"])
    under_archive = runner.invoke(app, ["archive", "recalculate", "--help"])

    assert top.exit_code == 0, top.output
    assert "--period" in top.output
    assert under_archive.exit_code != 0
    assert "No such command" in under_archive.output


def test_figures_table_shows_segments_one_line_per_row_at_80_columns() -> None:
    rows = [
        {
            "account_id": "demo-3fa2-0019",
            "meter": meter,
            "period_start": date(2026, 12, 1),
            "dimensions": dimensions,
            "aggregation": "SUM",
            "quantity": Decimal(quantity),
            "event_count": 123_456,
        }
        for meter, dimensions, quantity in (
            ("llm_tokens", '{"model":"large"}', "5812.000000000"),
            ("llm_tokens", '{"model":"small"}', "2799.000000000"),
            ("compute_peak_cores", '{"region":"eu"}', "42.400000000"),
            ("request_latency_ms", "", "507.246666667"),
            ("storage_gb_hours", '{"bucket":"media"}', "154.809000000"),
        )
    ]
    console = Console(width=80, record=True)

    with console.capture() as captured:
        console.print(figures_table(rows))
    lines = captured.get().splitlines()

    assert max(len(line) for line in lines) <= 80
    body = [line for line in lines if line.startswith("demo-")]
    assert len(body) == len(rows)  # not one wrapped
    assert "model=large" in body[0]
    assert "model=small" in body[1]
    assert "2026-12" in body[0]
    assert body[3].split()[-2:] == ["507.246666667", "123456"]
