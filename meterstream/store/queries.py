"""Reads of the output tables, for the CLI (and later the API)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from meterstream.config import Settings


def usage_aggregates(settings: Settings, account_prefix: str | None = None) -> list[dict[str, Any]]:
    """Rows of `usage_aggregates`, optionally only accounts starting with `account_prefix`."""
    with psycopg.connect(settings.postgres.conninfo, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT account_id, meter, period_start, dimensions, quantity, event_count, updated_at"
            " FROM usage_aggregates WHERE account_id LIKE %s"
            " ORDER BY account_id, meter, period_start, dimensions",
            ((account_prefix or "") + "%",),
        ).fetchall()


def rejection_summary(settings: Settings, topic: str | None = None) -> list[dict[str, Any]]:
    """Rejections counted by reason code, optionally for one source topic."""
    with psycopg.connect(settings.postgres.conninfo, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT reason_code, count(*) AS events, max(arrived_at) AS last_arrived_at"
            " FROM rejected_events WHERE %s::text IS NULL OR source_topic = %s"
            " GROUP BY reason_code ORDER BY events DESC",
            (topic, topic),
        ).fetchall()
