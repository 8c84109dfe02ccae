"""Billing periods: calendar months of event time in each account's time zone (UTC by default).

An event belongs to the month that contains its event time on the account's local calendar.
A period closes `allowed_lateness` after its end; an event arriving later than that is late.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from meterstream.errors import ConfigError

#: Default allowed lateness: like an invoice grace period, 72 hours after a period ends.
DEFAULT_ALLOWED_LATENESS = timedelta(hours=72)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; raises ConfigError for an unknown one.

    >>> zone("Europe/Berlin").key
    'Europe/Berlin'
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        msg = f"{name!r} is not an IANA time zone name (e.g. 'Europe/Berlin', 'UTC')"
        raise ConfigError(msg) from exc


def period_start(event_time: datetime, time_zone: str = "UTC") -> date:
    """The first day of the calendar month, in `time_zone`, that contains `event_time`.

    >>> period_start(datetime(2026, 10, 31, 23, 59, 59, 999000, tzinfo=UTC))
    datetime.date(2026, 10, 1)
    >>> period_start(datetime(2026, 10, 31, 23, 30, tzinfo=UTC), "Europe/Berlin")
    datetime.date(2026, 11, 1)
    >>> period_start(datetime(2026, 11, 1, 3, 0, tzinfo=UTC), "America/New_York")
    datetime.date(2026, 10, 1)
    """
    local = event_time.astimezone(zone(time_zone))
    return date(local.year, local.month, 1)


def period_end(start: date, time_zone: str = "UTC") -> datetime:
    """The instant (UTC) the period that starts on `start` ends: next month's first local midnight.

    >>> period_end(date(2026, 10, 1), "Europe/Berlin").isoformat()
    '2026-10-31T23:00:00+00:00'
    """
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)  # noqa: PLR2004
    return datetime(year, month, 1, tzinfo=zone(time_zone)).astimezone(UTC)


def is_late(
    event_time: datetime,
    arrived_at: datetime,
    time_zone: str = "UTC",
    allowed_lateness: timedelta = DEFAULT_ALLOWED_LATENESS,
) -> bool:
    """Whether an event arrived after its period's end plus the allowed lateness.

    >>> end = datetime(2026, 11, 1, tzinfo=UTC)
    >>> is_late(end - timedelta(seconds=1), end + timedelta(hours=72))
    False
    >>> is_late(end - timedelta(seconds=1), end + timedelta(hours=72, milliseconds=1))
    True
    """
    end = period_end(period_start(event_time, time_zone), time_zone)
    return arrived_at > end + allowed_lateness
