"""Billing periods in each account's time zone, and allowed lateness, on the real stack."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from meterstream.config import Settings
from meterstream.kafka_io import produce
from meterstream.rules.periods import period_start
from meterstream.rules.validate import Validator
from meterstream.testing import PERIOD_START, Record, cloud_event, sample_data
from tests.pipeline_helpers import (
    job_options,
    oracle,
    run_bounded_job,
    set_time_zones,
    totals_in_postgres,
)

pytestmark = [pytest.mark.integration, pytest.mark.flink]

ZONES = ("Europe/Berlin", "America/New_York", "Pacific/Pago_Pago", "UTC")


def run_bounded(topics: tuple[str, str], job_dir: Path, unique: str, env: dict[str, str]) -> None:
    options = job_options(topics, job_dir, f"tz-{unique}", bounded=True, env=env)
    run_bounded_job(options, job_dir / "job.log")


def late_in_postgres(settings: Settings, topic: str) -> set[tuple[str, str]]:
    with psycopg.connect(settings.postgres.conninfo) as conn:
        rows = conn.execute(
            "SELECT account_id, event_id FROM late_events WHERE source_topic = %s", (topic,)
        ).fetchall()
    return {(a, e) for a, e in rows}


def test_job_attributes_out_of_order_events_to_local_months_in_each_accounts_time_zone(
    stack: Settings, topics: tuple[str, str], job_dir: Path, unique: str, validator: Validator
) -> None:
    rng = random.Random(5)
    zones = {f"tz-{unique}-{i}": ZONES[i % len(ZONES)] for i in range(8)}
    set_time_zones(stack, zones)
    events = []
    for i in range(600):
        account = rng.choice(sorted(zones))
        meter = rng.choice(["llm_tokens", "api_calls", "seats"])
        moment = PERIOD_START + timedelta(minutes=rng.uniform(-14 * 60, 14 * 60))
        if meter == "seats":
            moment = moment.replace(microsecond=0)
        events.append(
            Record(
                account.encode(),
                json.dumps(
                    cloud_event(f"{account}-{i}", account, meter, moment, sample_data(meter, rng))
                ).encode(),
            )
        )
    rng.shuffle(events)
    produce(stack, topics[0], events)

    run_bounded(topics, job_dir, unique, env={})

    expected = oracle(stack, validator, [e.value for e in events], time_zones=zones)
    assert totals_in_postgres(stack, f"tz-{unique}-") == expected.totals
    # The same UTC instants fell into different months in different zones.
    months = {(zones[a], p) for (a, _, p, _) in expected.totals}
    assert {p for z, p in months if z == "Europe/Berlin"} == {
        period_start(PERIOD_START - timedelta(hours=1)),
        PERIOD_START.date(),
    }


def test_job_counts_events_inside_the_lateness_and_keeps_later_ones_in_late_events(
    stack: Settings, topics: tuple[str, str], job_dir: Path, unique: str, validator: Validator
) -> None:
    now = datetime.now(UTC)
    # The previous UTC month closed 6 hours ago; in Pago Pago (UTC-11) it closes in 5 hours.
    lateness = timedelta(hours=int((now - PERIOD_START).total_seconds() // 3600) - 6)
    utc, samoa, berlin = (f"late-{unique}-{name}" for name in ("utc", "samoa", "berlin"))
    set_time_zones(stack, {utc: "UTC", samoa: "Pacific/Pago_Pago", berlin: "Europe/Berlin"})
    tokens = {"tokens": 7, "model": "small"}
    plan = [  # (account, event id, event time, late?)
        (utc, "current", PERIOD_START + timedelta(hours=1), False),
        (utc, "previous", PERIOD_START - timedelta(hours=1), True),
        (samoa, "previous-in-lateness", PERIOD_START - timedelta(hours=1), False),
        (samoa, "current", PERIOD_START + timedelta(hours=12), False),
        (berlin, "current", PERIOD_START - timedelta(minutes=30), False),
        (berlin, "previous", PERIOD_START - timedelta(hours=2), True),
    ]
    records = [
        Record(
            a.encode(),
            json.dumps(cloud_event(f"{a}-{name}", a, "llm_tokens", moment, tokens)).encode(),
        )
        for a, name, moment, _ in plan
    ]
    produce(stack, topics[0], records)

    run_bounded(
        topics,
        job_dir,
        unique,
        env={
            "METERSTREAM_FLINK_ALLOWED_LATENESS_HOURS": str(
                lateness.seconds // 3600 + lateness.days * 24
            )
        },
    )

    zones = {utc: "UTC", samoa: "Pacific/Pago_Pago", berlin: "Europe/Berlin"}
    expected = oracle(
        stack, validator, [r.value for r in records], time_zones=zones, allowed_lateness=lateness
    )
    assert {plan[i][:2] for i, _ in expected.late} == {(a, n) for a, n, _, late in plan if late}
    assert totals_in_postgres(stack, f"late-{unique}-") == expected.totals
    assert late_in_postgres(stack, topics[0]) == {(a, f"{a}-{n}") for a, n, _, late in plan if late}
