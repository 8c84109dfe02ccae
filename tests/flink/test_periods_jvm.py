"""The JVM billing-period functions answer exactly as `meterstream.rules.periods`.

`billing_period_start` and `arrived_too_late` (jvm/udf) compute the period in the job; the
Python rules are the definition. One Flink job runs both over month edges, DST changes, odd
offsets, far past and future, and random instants; every answer is compared with Python's.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import pytest
from pyflink.table import DataTypes

from meterstream.config import Settings
from meterstream.flink.env import create_table_env
from meterstream.flink.udfs import PERIOD_FUNCTIONS
from meterstream.rules.periods import is_late, period_end, period_start
from meterstream.stack.jars import ensure_jars

pytestmark = pytest.mark.flink

ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Pacific/Pago_Pago",
    "Pacific/Kiritimati",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "America/St_Johns",
    "Asia/Kathmandu",
)
LATENESS_HOURS = (0, 72)

Case = tuple[int, str, int, int]  # (event time ms, zone, arrival ms, lateness hours)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _cases(rng: random.Random) -> list[Case]:
    cases: list[Case] = []
    for zone in ZONES:
        for year in (1969, 2026, 2027, 2100):
            for month in range(1, 13):
                end = period_end(date(year, month, 1), zone)
                for delta_ms in (-3_600_001, -1, 0, 1, 3_600_000):
                    moment = _ms(end) + delta_ms
                    for hours in LATENESS_HOURS:
                        closes = _ms(end) + hours * 3_600_000
                        for arrival in (closes - 1, closes, closes + 1):
                            cases.append((moment, zone, arrival, hours))
        for _ in range(300):
            moment = rng.randrange(_ms(datetime(1990, 1, 1, tzinfo=UTC)), 4_102_444_800_000)
            arrival = moment + rng.randrange(-86_400_000, 60 * 86_400_000)
            cases.append((moment, zone, arrival, rng.choice(LATENESS_HOURS)))
    return cases


def _python(case: Case) -> tuple[date, bool]:
    moment, zone, arrival, hours = case
    event_time = datetime.fromtimestamp(moment / 1000, UTC)
    arrived_at = datetime.fromtimestamp(arrival / 1000, UTC)
    return (
        period_start(event_time, zone),
        is_late(event_time, arrived_at, zone, timedelta(hours=hours)),
    )


def _jvm(settings: Settings, cases: list[Case], tmp) -> list[tuple[date, bool]]:  # noqa: ANN001
    t_env = create_table_env(settings, job_name="periods-test", checkpoint_dir=tmp)
    for name, java_class in PERIOD_FUNCTIONS.items():
        t_env.create_java_temporary_system_function(name, java_class)
    source = t_env.from_elements(
        [(i, *case) for i, case in enumerate(cases)],
        DataTypes.ROW(
            [
                DataTypes.FIELD("i", DataTypes.INT()),
                DataTypes.FIELD("event_ms", DataTypes.BIGINT()),
                DataTypes.FIELD("zone", DataTypes.STRING()),
                DataTypes.FIELD("arrived_ms", DataTypes.BIGINT()),
                DataTypes.FIELD("hours", DataTypes.INT()),
            ]
        ),
    )
    t_env.create_temporary_view("cases", source)
    result = t_env.execute_sql(
        "SELECT i, billing_period_start(event_ms, zone), "
        "arrived_too_late(event_ms, zone, TO_TIMESTAMP_LTZ(arrived_ms, 3), hours) FROM cases"
    )
    out: list = [None] * len(cases)
    with result.collect() as rows:
        for row in rows:
            out[row[0]] = (row[1], row[2])
    return out


def test_jvm_periods_and_lateness_match_the_python_rules(settings: Settings, tmp_path) -> None:  # noqa: ANN001
    ensure_jars(settings)
    cases = _cases(random.Random(7))
    jvm = _jvm(settings, cases, tmp_path)
    mismatches = [
        (case, answer, _python(case))
        for case, answer in zip(cases, jvm, strict=True)
        if answer != _python(case)
    ]
    assert len(cases) > 10_000
    assert mismatches[:20] == []
    assert {late for _, late in jvm} == {True, False}
