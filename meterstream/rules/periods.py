"""Billing periods: calendar months of event time (UTC for now; per-account zones come later)."""

from __future__ import annotations

from datetime import UTC, date, datetime


def period_start(event_time: datetime) -> date:
    """The first day of the calendar month (UTC) that contains `event_time`.

    >>> period_start(datetime(2026, 10, 31, 23, 59, 59, 999000, tzinfo=UTC))
    datetime.date(2026, 10, 1)
    >>> from datetime import timedelta, timezone
    >>> period_start(datetime(2026, 11, 1, 0, 30, tzinfo=timezone(timedelta(hours=2))))
    datetime.date(2026, 10, 1)
    """
    utc = event_time.astimezone(UTC)
    return date(utc.year, utc.month, 1)
