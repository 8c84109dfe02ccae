"""Reads of the output tables, for the CLI (and later the API)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from meterstream.config import Settings


def usage_aggregates(
    settings: Settings,
    account_prefix: str | None = None,
    *,
    meter: str | None = None,
    period: date | None = None,
) -> list[dict[str, Any]]:
    """Rows of `usage_aggregates`, in key order.

    Optionally only accounts starting with `account_prefix`, one meter, or one billing period
    (given by its first day).
    """
    with psycopg.connect(settings.postgres.conninfo, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT account_id, meter, period_start, dimensions, aggregation, quantity,"
            " event_count, last_arrived_at, updated_at FROM usage_aggregates"
            " WHERE starts_with(account_id, %(prefix)s)"
            " AND (%(meter)s::text IS NULL OR meter = %(meter)s)"
            " AND (%(period)s::date IS NULL OR period_start = %(period)s)"
            " ORDER BY account_id, meter, period_start, dimensions",
            {"prefix": account_prefix or "", "meter": meter, "period": period},
        ).fetchall()


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Which validation-log entries to read; None means any."""

    account: str | None = None
    meter: str | None = None
    code: str | None = None
    severity: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> tuple[str, list[Any]]:
        """The SQL condition and its parameters (values are always bound, never spliced)."""
        clauses, params = ["TRUE"], []
        for column, value in (
            ("account_id", self.account),
            ("meter", self.meter),
            ("reason_code", self.code),
            ("severity", self.severity),
        ):
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        if self.since is not None:
            clauses.append("arrived_at >= %s")
            params.append(self.since)
        if self.until is not None:
            clauses.append("arrived_at < %s")
            params.append(self.until)
        return " AND ".join(clauses), params


def validation_log(
    settings: Settings, log_filter: LogFilter, limit: int = 100
) -> list[dict[str, Any]]:
    """The newest validation-log entries matching `log_filter`."""
    where, params = log_filter.where()
    with psycopg.connect(settings.postgres.conninfo, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT arrived_at, severity, reason_code, account_id, meter, event_id, detail,"
            " raw_payload, source_topic, source_partition, source_offset FROM rejected_events"
            f" WHERE {where} ORDER BY arrived_at DESC, source_offset DESC LIMIT %s",
            [*params, limit],
        ).fetchall()


def rejection_summary(
    settings: Settings, log_filter: LogFilter | None = None
) -> list[dict[str, Any]]:
    """Validation-log entries counted by severity and reason code."""
    where, params = (log_filter or LogFilter()).where()
    with psycopg.connect(settings.postgres.conninfo, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT severity, reason_code, count(*) AS events, max(arrived_at) AS last_arrived_at"
            f" FROM rejected_events WHERE {where}"
            " GROUP BY severity, reason_code ORDER BY events DESC",
            params,
        ).fetchall()
