"""Unit tests for meterstream.testing: named instants, builders and the seeded generator.

PERIOD_START is relative to the day the tests run, so generated events are validated as
arriving at ARRIVAL, a day after it: every well-formed generated event is then in the window.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterstream.meters.model import IdempotencyKey
from meterstream.meters.registry import MeterRegistry
from meterstream.rules.oracle import expected_outcome
from meterstream.rules.periods import period_start
from meterstream.rules.reasons import ReasonCode, Rejection
from meterstream.rules.validate import Validator, ValidEvent
from meterstream.testing import (
    LAST_MS_OF_MONTH,
    MALFORMED_KINDS,
    PATHS,
    PERIOD_START,
    SAMPLE_METERS,
    Record,
    cloud_event,
    generate,
    malformed,
    month_boundary,
    repeats,
    rfc3339,
    sample_data,
)
from tests.unit.samples import ARRIVED_AT, LAST_MS_OF_OCT, NOV_START

#: When generated records reach Kafka in these tests (month_boundary keeps it in the past).
ARRIVAL = PERIOD_START + timedelta(days=1)

#: The reason code each kind of malformed record must be rejected with.
MALFORMED_CODES = {
    "not_json": ReasonCode.MALFORMED_JSON,
    "missing_field": ReasonCode.MISSING_FIELD,
    "bad_timestamp": ReasonCode.INVALID_TIMESTAMP,
    "wrong_type": ReasonCode.WRONG_TYPE,
    "unknown_meter": ReasonCode.UNKNOWN_METER,
}


def valid_events(validator: Validator, records: list[Record]) -> list[ValidEvent]:
    """The records that validate, as ValidEvents."""
    results = (validator.validate(r.value, ARRIVAL) for r in records)
    return [r for r in results if isinstance(r, ValidEvent)]


# --- named instants and builders -------------------------------------------------------------


def test_named_instants_are_one_ms_apart_across_month_boundary() -> None:
    gap = PERIOD_START - LAST_MS_OF_MONTH

    assert gap == timedelta(milliseconds=1)
    assert period_start(LAST_MS_OF_MONTH) != period_start(PERIOD_START)
    assert LAST_MS_OF_MONTH.tzinfo is UTC
    assert PERIOD_START.tzinfo is UTC


def test_period_start_constant_is_a_utc_month_start() -> None:
    assert datetime(PERIOD_START.year, PERIOD_START.month, 1, tzinfo=UTC) == PERIOD_START


def test_period_start_constant_is_between_one_and_32_days_ago() -> None:
    # True on any day: the generator's events (PERIOD_START +- 6 h) are then never in the
    # future and never older than the 35-day window when they arrive now.
    age = datetime.now(UTC) - PERIOD_START

    assert timedelta(days=1) <= age < timedelta(days=32)


@pytest.mark.parametrize(
    ("now", "boundary"),
    [
        (datetime(2026, 11, 25, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)),
        (datetime(2026, 12, 1, 5, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)),
        # One day after a month starts, that start is far enough back.
        (datetime(2026, 12, 2, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
        (
            datetime(2026, 12, 1, 23, 59, 59, 999999, tzinfo=UTC),
            datetime(2026, 11, 1, tzinfo=UTC),
        ),
        (datetime(2027, 1, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
        (datetime(2028, 3, 1, 12, tzinfo=UTC), datetime(2028, 2, 1, tzinfo=UTC)),
        (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC)),
    ],
)
def test_month_boundary_is_latest_month_start_a_day_back(now: datetime, boundary: datetime) -> None:
    assert month_boundary(now) == boundary


@settings(database=None, deadline=None)
@given(
    now=st.datetimes(
        min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
        max_value=datetime(2100, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    )
)
def test_month_boundary_keeps_generated_times_inside_the_window(now: datetime) -> None:
    boundary = month_boundary(now)

    assert boundary.day == 1
    assert boundary == boundary.replace(hour=0, minute=0, second=0, microsecond=0)
    assert timedelta(days=1) <= now - boundary < timedelta(days=32)


def test_rfc3339_formats_milliseconds_and_z() -> None:
    assert rfc3339(LAST_MS_OF_OCT) == "2026-10-31T23:59:59.999Z"
    assert rfc3339(NOV_START) == "2026-11-01T00:00:00.000Z"


def test_rfc3339_truncates_to_milliseconds() -> None:
    moment = datetime(2026, 10, 31, 23, 59, 59, 999999, tzinfo=UTC)

    assert rfc3339(moment) == "2026-10-31T23:59:59.999Z"


def test_rfc3339_converts_offsets_to_utc() -> None:
    moment = NOV_START.astimezone(timezone(timedelta(hours=-5)))

    assert rfc3339(moment) == "2026-11-01T00:00:00.000Z"


def test_cloud_event_validates(validator: Validator) -> None:
    event = cloud_event(
        "evt-1", "acct-1", "llm_tokens", LAST_MS_OF_OCT, {"tokens": 3, "model": "small"}
    )

    result = validator.validate(json.dumps(event), ARRIVED_AT)

    assert isinstance(result, ValidEvent)
    assert (result.event_id, result.account_id, result.event_time) == (
        "evt-1",
        "acct-1",
        LAST_MS_OF_OCT,
    )
    assert event["specversion"] == "1.0"
    assert "dataschema" not in event


def test_sample_meters_are_the_shipped_meters(registry: MeterRegistry) -> None:
    assert sorted(SAMPLE_METERS) == registry.names()


@pytest.mark.parametrize("meter", SAMPLE_METERS)
def test_sample_data_is_valid_for_its_meter(validator: Validator, meter: str) -> None:
    rng = random.Random(1)
    for i in range(50):
        event = cloud_event(f"e{i}", "acct-1", meter, LAST_MS_OF_OCT, sample_data(meter, rng))
        assert isinstance(validator.validate(json.dumps(event), ARRIVED_AT), ValidEvent)


def test_sample_data_prepaid_balance_includes_negative_values() -> None:
    rng = random.Random(1)

    balances = [sample_data("prepaid_balance", rng)["balance_cents"] for _ in range(200)]

    assert min(balances) < 0 < max(balances)


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_malformed_kind_is_rejected_with_its_code(validator: Validator, kind: str) -> None:
    result = validator.validate(malformed(kind, random.Random(1), "acct-1"), ARRIVAL)

    assert isinstance(result, Rejection)
    assert result.code is MALFORMED_CODES[kind]


def test_malformed_codes_cover_every_kind() -> None:
    assert set(MALFORMED_CODES) == set(MALFORMED_KINDS)


# --- generate() ------------------------------------------------------------------------------


def test_generate_is_deterministic_per_seed() -> None:
    assert generate(300, seed=3) == generate(300, seed=3)


def test_generate_differs_between_seeds() -> None:
    first, second = generate(300, seed=3), generate(300, seed=4)

    assert [r.value for r in first] != [r.value for r in second]


def test_generate_default_seed_is_stable() -> None:
    assert generate(50) == generate(50, seed=7)


def test_generate_n_new_events_plus_duplicates() -> None:
    records = generate(400, seed=5, malformed_rate=0.0)
    distinct = {r.value for r in records}

    assert len(distinct) == 400
    assert len(records) > 400


def test_generate_includes_duplicates_as_same_bytes() -> None:
    records = generate(400, seed=5, malformed_rate=0.0)

    repeated = [(record, n) for record, n in Counter(records).items() if n > 1]

    assert repeated
    # A retry is the same record: key and value, byte for byte.
    for record, _ in repeated:
        assert [r for r in records if r.value == record.value] == [record] * records.count(record)


def test_generate_without_duplicate_rate_has_no_duplicates() -> None:
    records = generate(400, seed=5, malformed_rate=0.0, duplicate_rate=0.0)

    assert len({r.value for r in records}) == len(records) == 400


def test_generate_includes_malformed_records_of_each_kind(validator: Validator) -> None:
    records = generate(100, seed=2, malformed_rate=1.0, duplicate_rate=0.0)

    codes = Counter(
        result.code
        for r in records
        if isinstance(result := validator.validate(r.value, ARRIVAL), Rejection)
    )

    assert codes == {code: 20 for code in MALFORMED_CODES.values()}


def test_generate_default_rates_include_malformed_records(validator: Validator) -> None:
    records = generate(2000)

    codes = {
        result.code
        for r in records
        if isinstance(result := validator.validate(r.value, ARRIVAL), Rejection)
    }

    assert codes == set(MALFORMED_CODES.values())


def test_generate_well_formed_records_all_validate(validator: Validator) -> None:
    records = generate(300, seed=9, malformed_rate=0.0)

    assert len(valid_events(validator, records)) == len(records)


def test_generate_event_times_straddle_period_start(validator: Validator) -> None:
    events = valid_events(validator, generate(300, seed=9))
    times = [e.event_time for e in events]

    assert min(times) < PERIOD_START <= max(times)
    assert all(abs(t - PERIOD_START) <= timedelta(hours=6) for t in times)
    assert {e.period_start for e in events} == {
        period_start(LAST_MS_OF_MONTH),
        period_start(PERIOD_START),
    }


def test_generate_event_times_arrive_out_of_order(validator: Validator) -> None:
    times = [e.event_time for e in valid_events(validator, generate(100, seed=9))]

    assert times != sorted(times)


def test_generate_around_and_spread_bound_event_times(validator: Validator) -> None:
    around = datetime(2026, 10, 10, tzinfo=UTC)
    records = generate(100, seed=9, around=around, spread=timedelta(minutes=1), malformed_rate=0)

    results = [validator.validate(r.value, around + timedelta(days=1)) for r in records]
    events = [r for r in results if isinstance(r, ValidEvent)]

    assert len(events) == len(records)
    assert all(abs(e.event_time - around) <= timedelta(minutes=1) for e in events)


def test_generate_record_key_is_the_account(validator: Validator) -> None:
    records = generate(200, seed=9, malformed_rate=0.0)

    for record in records:
        result = validator.validate(record.value, ARRIVAL)
        assert isinstance(result, ValidEvent)
        assert record.key == result.account_id.encode()


def test_generate_respects_accounts_prefix_and_meters(validator: Validator) -> None:
    records = generate(
        200, seed=9, accounts=3, account_prefix="tenant", meters=("llm_tokens",), malformed_rate=0.0
    )

    events = valid_events(validator, records)

    assert {e.account_id for e in events} == {"tenant-0000", "tenant-0001", "tenant-0002"}
    assert {e.meter for e in events} == {"llm_tokens"}


def test_generate_default_meters_are_every_sample_meter(validator: Validator) -> None:
    events = valid_events(validator, generate(300, seed=9, malformed_rate=0.0))

    assert {e.meter for e in events} == set(SAMPLE_METERS)


def test_generate_seats_times_are_whole_seconds(registry: MeterRegistry) -> None:
    # Seats are keyed by (account, meter, time): a retry must hit the same millisecond.
    meter = registry.current("seats")
    assert meter is not None
    assert meter.idempotency_key is IdempotencyKey.ACCOUNT_METER_TIMESTAMP

    records = generate(200, seed=9, meters=("seats",), malformed_rate=0.0)

    for record in records:
        time = json.loads(record.value)["time"]
        assert time.endswith(".000Z"), time


def test_generate_seats_retries_are_silent_repeats(validator: Validator) -> None:
    records = generate(300, seed=9, meters=("seats",), malformed_rate=0.0, duplicate_rate=0.5)
    events = valid_events(validator, records)

    keys = Counter((e.account_id, e.dedup_key) for e in events)
    fingerprints: dict[tuple[str, str], set[int]] = {}
    for e in events:
        fingerprints.setdefault((e.account_id, e.dedup_key), set()).add(e.fingerprint)

    assert max(keys.values()) > 1
    assert all(len(f) == 1 for f in fingerprints.values())


def test_repeats_are_one_conflict_per_conflicting_pair_and_silent_retries(
    validator: Validator,
) -> None:
    pairs = repeats("rp")
    payloads = [r.value for pair in pairs for r in (pair.first, pair.later)]
    expected = expected_outcome(validator, payloads, ARRIVAL)
    conflicting = [i for i, pair in enumerate(pairs) if pair.conflict]
    assert expected.rejections == [(2 * i + 1, "DUPLICATE_ID_CONFLICT") for i in conflicting]
    assert sum(n for _, n in expected.totals.values()) == len(pairs)
    assert {pair.paths for pair in pairs} == {(a, b) for a in PATHS for b in PATHS}
    assert {(pair.meter, pair.conflict) for pair in pairs} == {
        (m, c) for m in ("llm_tokens", "seats") for c in (False, True)
    }


def test_a_repeats_conflict_changes_the_figure_it_would_count(validator: Validator) -> None:
    # Counting the later arrival instead of the first must show in the figures.
    for pair in repeats("rp"):
        if pair.conflict:
            first = expected_outcome(validator, [pair.first.value], ARRIVAL).totals
            later = expected_outcome(validator, [pair.later.value], ARRIVAL).totals
            assert first != later
