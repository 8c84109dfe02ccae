"""Voids and amends of every aggregation kind, in an open and a closed period, on the real stack.

Corrections of the open period reach the job's figures within seconds (also across a kill -9
and a restore from the last checkpoint, right after they were sent); those of the closed period
wait for a recalculation, which then applies them all. Every figure equals the oracle over the
stream with the voided events removed and the amended ones replaced, and a recalculation of the
open period finds nothing to change: the stream and the batch job agree, column for column.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from meterstream.corrections.model import Correction
from meterstream.corrections.service import Actor, amend_event, void_event, void_range
from meterstream.flink.launch import latest_checkpoint
from meterstream.recalc import RecalcScope, recalculate
from meterstream.rules.validate import ValidEvent
from meterstream.testing import SAMPLE_METERS, sample_data
from tests.corrections.conftest import CorrectionsRun
from tests.pipeline_helpers import Arrival, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.flink]

#: Long enough that nothing is late: the figures a recalculation reaches.
NOTHING_LATE = timedelta(days=3650)

Counted = tuple[str, Arrival, ValidEvent]


def by_period_and_meter(run: CorrectionsRun) -> dict[tuple[bool, str], list[Counted]]:
    """The main accounts' counted events, by (closed period?, meter), in event-time order."""
    closed_before = datetime.now(UTC) - timedelta(days=10)
    groups: dict[tuple[bool, str], list[Counted]] = defaultdict(list)
    for (account, key), (arrival, event) in run.first_arrivals().items():
        if account.startswith(run.prefix):
            groups[(event.event_time < closed_before, event.meter)].append((key, arrival, event))
    for events in groups.values():
        events.sort(key=lambda e: (e[2].event_time, e[0]))
    return groups


def new_content(arrival: Arrival, rng: random.Random) -> bytes:
    """The same event (id, account, meter, time) with other data."""
    doc = json.loads(arrival.value)
    doc["data"] = sample_data(doc["type"], rng)
    return json.dumps(doc).encode()


def test_voids_and_amends_of_every_kind_agree_in_the_stream_and_a_recalculation_after_a_restart(
    corrections_run: CorrectionsRun,
) -> None:
    run, operator, rng = corrections_run, Actor(), random.Random(19)
    settings = run.settings
    groups = by_period_and_meter(run)
    assert {meter for _, meter in groups} == set(SAMPLE_METERS)
    assert {closed for closed, _ in groups} == {True, False}
    corrections: dict[tuple[str, str], ValidEvent | None] = {}
    made: list[tuple[bool, Correction]] = []

    # A range of one account's llm_tokens in each period: every counted event in it, no other.
    for closed in (True, False):
        events = groups[(closed, "llm_tokens")]
        account = events[0][2].account_id
        mine = [e for e in events if e[2].account_id == account]
        start, end = mine[1][2].event_time, mine[4][2].event_time
        inside = {e[0] for e in mine if start <= e[2].event_time < end}
        result = void_range(
            settings, operator, account, meter="llm_tokens", start=start, end=end, reason="range"
        )
        assert {c.dedup_key for c in result.corrections} == inside
        corrections.update({(account, key): None for key in inside})
        made += [(closed, c) for c in result.corrections]

    # Per period and meter: void both extremes and one more, amend two (one of them twice).
    for (closed, _meter), events in sorted(groups.items()):
        left = [e for e in events if (e[2].account_id, e[0]) not in corrections]
        by_value = sorted(left, key=lambda e: e[2].quantity or 0)
        voids = {by_value[0][0], by_value[-1][0], rng.choice(by_value[1:-1])[0]}
        for key, _arrival, event in left:
            if key in voids:
                result = void_event(settings, operator, event.account_id, event.event_id, "void")
                corrections[(event.account_id, key)] = None
                made += [(closed, c) for c in result.corrections]
        amends = rng.sample([e for e in left if e[0] not in voids], 2)
        for n, (key, arrival, event) in enumerate(amends):
            for _ in range(2 if n == 0 else 1):
                payload = new_content(arrival, rng)
                result = amend_event(settings, operator, payload, "amend")
                new = run.validator.validate(payload, arrival.arrived_at)
                assert isinstance(new, ValidEvent)
                corrections[(event.account_id, key)] = new
                made += [(closed, c) for c in result.corrections]

    assert all(c.in_stream != closed for closed, c in made)
    assert {c.action.value for _, c in made} == {"void", "amend"}
    open_corrections = {
        key: value
        for key, value in corrections.items()
        if any(not closed and c.dedup_key == key[1] for closed, c in made)
    }

    # kill -9 at once, before the job may have read them; it resumes from its last checkpoint.
    assert run.job is not None
    run.job.kill()
    run.job.wait(timeout=30)
    checkpoint = latest_checkpoint(run.job_dir)
    assert checkpoint is not None
    run.start(restore_from=str(checkpoint))
    streamed = main_totals(run, run.oracle(open_corrections).totals)
    wait_for(
        lambda: run.running() and run.totals() == streamed, 180, "the open period's corrections"
    )

    # The closed period changes only through a recalculation, which applies every correction.
    everything = main_totals(run, run.oracle(corrections, allowed_lateness=NOTHING_LATE).totals)
    closed_periods = {c.period_start for closed, c in made if closed}
    open_periods = {c.period_start for closed, c in made if not closed}
    for period in sorted(closed_periods):
        result = recalculate(
            settings,
            RecalcScope(period),
            archive_dir=Path(settings.flink.archive_dir),
            reason="corrections",
        )
        assert result.changes, "the closed period's corrections change its figures"
        assert changes_recorded(run, result.run_id) == len(result.changes)
    assert run.totals() == everything
    # A recalculation of the open period (corrected by the stream already) changes nothing.
    for period in sorted(open_periods):
        result = recalculate(
            settings,
            RecalcScope(period),
            archive_dir=Path(settings.flink.archive_dir),
            reason="check",
            dry_run=True,
        )
        assert result.changes == [], (period, result.changes)


def main_totals(run: CorrectionsRun, totals: dict) -> dict:
    return {k: v for k, v in totals.items() if k[0].startswith(run.prefix)}


def changes_recorded(run: CorrectionsRun, run_id: object) -> int:
    with psycopg.connect(run.settings.postgres.conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM aggregate_changes WHERE run_id = %s AND reason = 'corrections'",
            (run_id,),
        ).fetchone()
    return int(row[0]) if row else 0
