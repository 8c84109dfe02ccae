"""Corrections in the stream: the keyed operator voids and amends counted events of open periods.

Messages on the corrections topic (docs/corrections.md) take counted events out of their figures
(void) or replace their content (amend); each figure is then what the oracle computes over the
stream with the voided events removed and the amended ones replaced: quantity, count, and the
first and last event times, for every aggregation kind. A figure whose events are all voided is
deleted. A correction that comes before its event waits for it. Sending one twice changes nothing.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import defaultdict
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from meterstream.config import Settings
from meterstream.corrections.model import Action, Correction, epoch_ms
from meterstream.flink.launch import start_job
from meterstream.kafka_io import produce
from meterstream.rules.oracle import TotalKey
from meterstream.rules.validate import Validator, ValidEvent
from meterstream.stack.flink import settings_env
from meterstream.stack.kafka import create_topics
from meterstream.testing import SAMPLE_METERS, Record, generate, sample_data
from tests.pipeline_helpers import (
    Arrival,
    consume_arrivals,
    job_options,
    kill_job,
    oracle_of_arrivals,
    totals_in_postgres,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.flink]


def message(event: ValidEvent, action: str, amended: ValidEvent | None = None) -> Record:
    """The corrections topic's record of a void, or an amend to `amended`'s content, as the
    corrections service publishes it (`Correction.message`)."""
    new = amended if action == "amend" else None
    correction = Correction(
        correction_id=uuid.uuid4(),
        request_id=uuid.uuid4(),
        account_id=event.account_id,
        action=Action(action),
        dedup_key=event.dedup_key,
        event_id=event.event_id,
        meter=event.meter,
        aggregation=event.aggregation.value,
        period_start=event.period_start,
        dimensions=event.dimensions,
        in_stream=True,
        new_dimensions=new.dimensions if new else None,
        new_quantity=new.quantity if new else None,
        new_unique_value=new.unique_value if new else None,
        new_event_time_ms=epoch_ms(new.event_time) if new else None,
        new_fingerprint=new.fingerprint if new else None,
    )
    return Record(*correction.message())


def amend(raw: bytes, rng: random.Random) -> bytes:
    """The same event (id, account, meter, time) with other data."""
    doc = json.loads(raw)
    doc["data"] = sample_data(doc["type"], rng)
    return json.dumps(doc).encode()


def times_in_postgres(settings: Settings, prefix: str) -> dict[TotalKey, tuple[datetime, datetime]]:
    """(first_event_at, last_event_at) per figure of the prefix's accounts."""
    with psycopg.connect(settings.postgres.conninfo) as conn:
        rows = conn.execute(
            "SELECT account_id, meter, period_start, dimensions, first_event_at, last_event_at"
            " FROM usage_aggregates WHERE account_id LIKE %s",
            (prefix + "%",),
        ).fetchall()
    return {(a, m, p, d): (f, la) for a, m, p, d, f, la in rows}


def corrected(arrivals: list[Arrival], values: dict[bytes, bytes | None]) -> list[Arrival]:
    """The arrivals as corrected: `values` maps an event's payload to its amended payload, or to
    None when it was voided (no repeats in these streams: every event is a first arrival)."""
    out = []
    for arrival in arrivals:
        value = values.get(arrival.value, arrival.value)
        if value is not None:
            out.append(replace(arrival, value=value))
    return out


def expected_times(
    validator: Validator, arrivals: list[Arrival]
) -> dict[TotalKey, tuple[datetime, datetime]]:
    """The first and last event time per figure (to the millisecond, as the job keeps them)."""
    times: dict[TotalKey, list[datetime]] = defaultdict(list)
    for arrival in arrivals:
        event = validator.validate(arrival.value, arrival.arrived_at)
        if isinstance(event, ValidEvent):
            key = (event.account_id, event.meter, event.period_start, event.dimensions)
            ms = event.event_time.microsecond // 1000 * 1000
            times[key].append(event.event_time.replace(microsecond=ms))
    return {key: (min(v), max(v)) for key, v in times.items()}


def choose(
    events: dict[bytes, ValidEvent], validator: Validator, rng: random.Random
) -> tuple[dict[bytes, bytes | None], list[Record], TotalKey]:
    """Voids and amends for every meter: the corrected payloads (None: voided), their messages,
    and the key of a figure all of whose events are voided."""
    values: dict[bytes, bytes | None] = {}
    messages: list[Record] = []
    by_meter: dict[str, list[bytes]] = defaultdict(list)
    for value, event in events.items():
        by_meter[event.meter].append(value)
    assert set(by_meter) == set(SAMPLE_METERS)
    for chosen in by_meter.values():
        # The meter's largest value is voided: a MAX figure's extreme goes.
        largest = max(chosen, key=lambda v: events[v].quantity or 0)
        for value in {largest, *rng.sample(chosen, 3)}:
            values[value] = None
            messages.append(message(events[value], "void"))
        for value in rng.sample([v for v in chosen if v not in values], 3):
            messages.append(amended(events[value], value, values, validator, rng))
    figures: dict[TotalKey, list[bytes]] = defaultdict(list)
    for value, event in events.items():
        figures[(event.account_id, event.meter, event.period_start, event.dimensions)].append(value)
    untouched = [k for k, vs in figures.items() if all(v not in values for v in vs)]
    emptied = min(untouched, key=lambda k: len(figures[k]))
    for value in figures[emptied]:
        values[value] = None
        messages.append(message(events[value], "void"))
    return values, messages, emptied


def amended(
    event: ValidEvent,
    value: bytes,
    values: dict[bytes, bytes | None],
    validator: Validator,
    rng: random.Random,
) -> Record:
    """Amend the event of `value` to other data (recorded in `values`); its message."""
    values[value] = amend(value, rng)
    new = validator.validate(values[value], datetime.now().astimezone())
    assert isinstance(new, ValidEvent)
    return message(event, "amend", new)


@pytest.fixture
def corrections_stack(stack: Settings, unique: str) -> Settings:
    """The stack's settings with a corrections topic of this test's own."""
    topic = f"test-{unique}-corrections"
    create_topics(stack, [topic])
    corrections = replace(stack.kafka.topics, corrections=topic)
    return replace(stack, kafka=replace(stack.kafka, topics=corrections))


def test_voids_and_amends_reach_the_figures_of_every_kind_and_wait_for_late_coming_events(
    corrections_stack: Settings,
    topics: tuple[str, str],
    job_dir: Path,
    unique: str,
    validator: Validator,
) -> None:
    settings, prefix = corrections_stack, f"corr-{unique}"
    rng = random.Random(61)
    records = generate(
        1600, seed=61, accounts=8, account_prefix=prefix, duplicate_rate=0, malformed_rate=0
    )
    # Held back: events whose corrections are sent before them.
    later, records = records[:40], records[40:]
    produce(settings, topics[0], records)
    options = job_options(topics, job_dir, f"corr-{unique}", env=settings_env(settings))
    job = start_job(options, log=job_dir.parent / "job.log")
    try:
        arrivals = consume_arrivals(settings, topics[0])
        expected = oracle_of_arrivals(settings, validator, arrivals).totals
        wait_for(lambda: totals_in_postgres(settings, prefix) == expected, 180, "every event")

        events = {
            a.value: e
            for a in arrivals
            if isinstance(e := validator.validate(a.value, a.arrived_at), ValidEvent)
        }
        values, messages, emptied = choose(events, validator, rng)
        produce(settings, settings.kafka.topics.corrections, messages + messages[:10])  # 10 twice
        now = corrected(arrivals, values)
        expected = oracle_of_arrivals(settings, validator, now).totals
        assert emptied not in expected
        wait_for(lambda: totals_in_postgres(settings, prefix) == expected, 120, "the corrections")
        assert times_in_postgres(settings, prefix) == expected_times(validator, now)

        # Corrections of events not sent yet: they wait for their events.
        early = []
        for j, record in enumerate(later):
            event = validator.validate(record.value, datetime.now().astimezone())
            assert isinstance(event, ValidEvent)
            if j % 2 == 0:
                values[record.value] = None
                early.append(message(event, "void"))
            elif j % 4 == 1:
                early.append(amended(event, record.value, values, validator, rng))
        produce(settings, settings.kafka.topics.corrections, early)
        produce(settings, topics[0], later)
        now = corrected(consume_arrivals(settings, topics[0]), values)
        expected = oracle_of_arrivals(settings, validator, now).totals
        wait_for(lambda: totals_in_postgres(settings, prefix) == expected, 120, "the waiting ones")
        assert times_in_postgres(settings, prefix) == expected_times(validator, now)
    finally:
        kill_job(job)
