"""Unit tests for meterstream.testing: named instants, builders and the seeded generator."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, timedelta, timezone

import pytest

from meterstream.rules.reasons import ReasonCode, Rejection
from meterstream.rules.validate import Validator, ValidEvent
from meterstream.testing import (
    LAST_MS_OF_MONTH,
    MALFORMED_KINDS,
    PERIOD_START,
    Record,
    cloud_event,
    generate,
    malformed,
    rfc3339,
    sample_data,
)

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
    results = (validator.validate(r.value) for r in records)
    return [r for r in results if isinstance(r, ValidEvent)]


# --- named instants and builders -------------------------------------------------------------


def test_named_instants_are_one_ms_apart_across_month_boundary() -> None:
    gap = PERIOD_START - LAST_MS_OF_MONTH

    assert gap == timedelta(milliseconds=1)
    assert (LAST_MS_OF_MONTH.month, PERIOD_START.month) == (10, 11)
    assert LAST_MS_OF_MONTH.tzinfo is UTC
    assert PERIOD_START.tzinfo is UTC


def test_rfc3339_formats_milliseconds_and_z() -> None:
    assert rfc3339(LAST_MS_OF_MONTH) == "2026-10-31T23:59:59.999Z"
    assert rfc3339(PERIOD_START) == "2026-11-01T00:00:00.000Z"


def test_rfc3339_converts_offsets_to_utc() -> None:
    moment = PERIOD_START.astimezone(timezone(timedelta(hours=-5)))

    assert rfc3339(moment) == "2026-11-01T00:00:00.000Z"


def test_cloud_event_validates(validator: Validator) -> None:
    event = cloud_event(
        "evt-1", "acct-1", "llm_tokens", LAST_MS_OF_MONTH, {"tokens": 3, "model": "small"}
    )

    result = validator.validate(json.dumps(event))

    assert isinstance(result, ValidEvent)
    assert (result.event_id, result.account_id, result.event_time) == (
        "evt-1",
        "acct-1",
        LAST_MS_OF_MONTH,
    )
    assert event["specversion"] == "1.0"


@pytest.mark.parametrize("meter", ["api_calls", "llm_tokens", "storage_gb_hours"])
def test_sample_data_is_valid_for_its_meter(validator: Validator, meter: str) -> None:
    rng = random.Random(1)
    for i in range(20):
        event = cloud_event(f"e{i}", "acct-1", meter, LAST_MS_OF_MONTH, sample_data(meter, rng))
        assert isinstance(validator.validate(json.dumps(event)), ValidEvent)


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_malformed_kind_is_rejected_with_its_code(validator: Validator, kind: str) -> None:
    result = validator.validate(malformed(kind, random.Random(1), "acct-1"))

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
        result.code for r in records if isinstance(result := validator.validate(r.value), Rejection)
    )

    assert codes == {code: 20 for code in MALFORMED_CODES.values()}


def test_generate_default_rates_include_malformed_records(validator: Validator) -> None:
    records = generate(2000)

    codes = {
        result.code for r in records if isinstance(result := validator.validate(r.value), Rejection)
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
    assert {e.period_start.month for e in events} == {10, 11}


def test_generate_event_times_arrive_out_of_order(validator: Validator) -> None:
    times = [e.event_time for e in valid_events(validator, generate(100, seed=9))]

    assert times != sorted(times)


def test_generate_around_and_spread_bound_event_times(validator: Validator) -> None:
    around = PERIOD_START + timedelta(days=10)

    events = valid_events(
        validator, generate(100, seed=9, around=around, spread=timedelta(minutes=1))
    )

    assert all(abs(e.event_time - around) <= timedelta(minutes=1) for e in events)


def test_generate_record_key_is_the_account(validator: Validator) -> None:
    records = generate(200, seed=9, malformed_rate=0.0)

    for record in records:
        result = validator.validate(record.value)
        assert isinstance(result, ValidEvent)
        assert record.key == result.account_id.encode()


def test_generate_respects_accounts_prefix_and_meters(validator: Validator) -> None:
    records = generate(
        200, seed=9, accounts=3, account_prefix="tenant", meters=("llm_tokens",), malformed_rate=0.0
    )

    events = valid_events(validator, records)

    assert {e.account_id for e in events} == {"tenant-0000", "tenant-0001", "tenant-0002"}
    assert {e.meter for e in events} == {"llm_tokens"}
