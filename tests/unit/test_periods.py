"""Unit tests for meterstream.rules.periods: which calendar month (UTC) an event is billed in."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterstream.rules.periods import period_start
from tests.unit.samples import LAST_MS_OF_OCT, NOV_START

PLUS_2 = timezone(timedelta(hours=2))
MINUS_5 = timezone(timedelta(hours=-5))
PLUS_1 = timezone(timedelta(hours=1))
MINUS_1 = timezone(timedelta(hours=-1))
ONE_MS = timedelta(milliseconds=1)


def test_period_start_last_ms_of_month_stays_in_month() -> None:
    assert period_start(LAST_MS_OF_OCT) == date(2026, 10, 1)


def test_period_start_last_microsecond_of_month_stays_in_month() -> None:
    assert period_start(NOV_START - timedelta(microseconds=1)) == date(2026, 10, 1)


def test_period_start_first_instant_of_month_starts_new_period() -> None:
    assert LAST_MS_OF_OCT + ONE_MS == NOV_START
    assert period_start(NOV_START) == date(2026, 11, 1)


def test_period_start_first_instant_of_month_is_its_own_period() -> None:
    assert period_start(datetime(2026, 10, 1, tzinfo=UTC)) == date(2026, 10, 1)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        # Local November, UTC October: billed in October.
        (datetime(2026, 11, 1, 0, 30, tzinfo=PLUS_2), date(2026, 10, 1)),
        (datetime(2026, 11, 1, 1, 59, 59, 999000, tzinfo=PLUS_2), date(2026, 10, 1)),
        # Local October, UTC November: billed in November.
        (datetime(2026, 10, 31, 19, 0, tzinfo=MINUS_5), date(2026, 11, 1)),
        (datetime(2026, 10, 31, 18, 59, 59, 999000, tzinfo=MINUS_5), date(2026, 10, 1)),
        (datetime(2026, 11, 1, 2, 0, tzinfo=PLUS_2), date(2026, 11, 1)),
        (
            datetime(2026, 11, 1, 5, 29, 59, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            date(2026, 10, 1),
        ),
    ],
)
def test_period_start_offset_applied_before_choosing_month(
    moment: datetime, expected: date
) -> None:
    assert period_start(moment) == expected


def test_period_start_same_instant_same_period_in_any_offset() -> None:
    for offset in (UTC, PLUS_1, PLUS_2, MINUS_1, MINUS_5):
        assert period_start(LAST_MS_OF_OCT.astimezone(offset)) == date(2026, 10, 1)
        assert period_start(NOV_START.astimezone(offset)) == date(2026, 11, 1)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 12, 31, 23, 59, 59, 999000, tzinfo=UTC), date(2026, 12, 1)),
        (datetime(2027, 1, 1, tzinfo=UTC), date(2027, 1, 1)),
        (datetime(2027, 1, 1, 0, 30, tzinfo=PLUS_1), date(2026, 12, 1)),
        (datetime(2026, 12, 31, 23, 30, tzinfo=MINUS_1), date(2027, 1, 1)),
    ],
)
def test_period_start_december_to_january_crosses_year(moment: datetime, expected: date) -> None:
    assert period_start(moment) == expected


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2028, 2, 29, tzinfo=UTC), date(2028, 2, 1)),
        (datetime(2028, 2, 29, 23, 59, 59, 999000, tzinfo=UTC), date(2028, 2, 1)),
        (datetime(2028, 3, 1, tzinfo=UTC), date(2028, 3, 1)),
        (datetime(2028, 3, 1, 0, 30, tzinfo=PLUS_1), date(2028, 2, 1)),
        (datetime(2028, 2, 29, 23, 30, tzinfo=MINUS_1), date(2028, 3, 1)),
        # Not a leap year: February ends on the 28th.
        (datetime(2026, 2, 28, 23, 59, 59, 999000, tzinfo=UTC), date(2026, 2, 1)),
        (datetime(2026, 3, 1, tzinfo=UTC), date(2026, 3, 1)),
    ],
)
def test_period_start_leap_day_is_in_february(moment: datetime, expected: date) -> None:
    assert period_start(moment) == expected


@settings(database=None, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(1900, 1, 2),  # noqa: DTZ001 - hypothesis bounds are naive
        max_value=datetime(2100, 12, 30),  # noqa: DTZ001
        timezones=st.builds(
            timezone,
            st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)),
        ),
    )
)
def test_period_start_is_first_day_of_utc_month(moment: datetime) -> None:
    utc = moment.astimezone(UTC)

    start = period_start(moment)

    assert start == date(utc.year, utc.month, 1)
    assert datetime(start.year, start.month, 1, tzinfo=UTC) <= moment
