"""How the CLI shows figures: one line per row, the segment spelled out, sized for 80 columns."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import date
from decimal import Decimal
from typing import Any

from rich import box
from rich.table import Table


def segment_label(dimensions: str) -> str:
    """A figure's segment (canonical JSON of its group-by values) as `name=value` pairs.

    >>> segment_label('{"model":"large"}')
    'model=large'
    >>> segment_label('{"model":"large","region":"eu"}')
    'model=large, region=eu'
    >>> segment_label("")
    ''
    """
    if not dimensions:
        return ""
    try:
        values = json.loads(dimensions)
    except ValueError:
        return dimensions
    if not isinstance(values, dict):
        return dimensions
    return ", ".join(f"{name}={value}" for name, value in values.items())


def period_label(period_start: date) -> str:
    """A billing month by its first day, as `YYYY-MM` (what `--period` takes).

    >>> period_label(date(2026, 12, 1))
    '2026-12'
    """
    return f"{period_start:%Y-%m}"


def quantity_label(quantity: Decimal) -> str:
    """A figure without trailing zeros, never in exponent notation.

    >>> quantity_label(Decimal("465.993750000")), quantity_label(Decimal("1E+3"))
    ('465.99375', '1000')
    >>> quantity_label(Decimal("0E-9"))
    '0'
    """
    return f"{quantity.normalize():f}"


def compact_table(*columns: str, title: str | None = None) -> Table:
    """A table with a rule under its header and no borders, so that rows fit 80 columns.

    A value that cannot fit is folded, never cut off. Columns named `#...` or `...quantity`,
    `...events`, `...records` are numbers, right-aligned.
    """
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        title=title,
        title_justify="left",
        title_style="bold",
    )
    for name in columns:
        numeric = name.startswith("#") or name.endswith(("quantity", "events", "records"))
        table.add_column(name.lstrip("#"), justify="right" if numeric else "left", overflow="fold")
    return table


def figures_table(
    rows: Iterable[Mapping[str, Any]], *, with_account: bool = True, title: str | None = None
) -> Table:
    """Rows of `usage_aggregates`: account, meter, period, segment, quantity, events."""
    columns = ["account"] if with_account else []
    columns += ["meter", "period", "segment", "aggregation", "quantity", "events"]
    if with_account:
        columns.remove("aggregation")  # the meter says it; keeps a row within 80 columns
    table = compact_table(*columns, title=title)
    for row in rows:
        cells = [row["account_id"]] if with_account else []
        cells += [row["meter"], period_label(row["period_start"]), segment_label(row["dimensions"])]
        if not with_account:
            cells.append(row["aggregation"])
        cells += [quantity_label(row["quantity"]), str(row["event_count"])]
        table.add_row(*cells)
    return table
