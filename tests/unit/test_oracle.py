"""Unit tests for meterstream.rules.oracle: the expected totals the pipeline is checked against.

Every expected figure here is worked out by hand from the events listed, never by the code
under test. All events arrive at the fixed ARRIVED_AT unless a test says otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from meterstream.meters.model import Aggregation
from meterstream.meters.registry import MeterRegistry
from meterstream.rules.oracle import Expected, expected_outcome
from meterstream.rules.validate import Validator, ValidEvent
from meterstream.testing import PERIOD_START, cloud_event, generate
from tests.unit.samples import (
    ARRIVED_AT,
    LAST_MS_OF_OCT,
    NOV_START,
    NOVEMBER,
    OCTOBER,
    custom_schema,
    raw,
    registry_of,
)

#: An instant in the middle of October, for events whose order in time matters.
OCT_15 = datetime(2026, 10, 15, 12, tzinfo=UTC)
SMALL = '{"model":"small"}'
LARGE = '{"model":"large"}'


def outcome(validator: Validator, payloads: list[str | bytes]) -> Expected:
    """The oracle's outcome of `payloads`, all arriving at ARRIVED_AT."""
    return expected_outcome(validator, payloads, ARRIVED_AT)


def tokens(
    event_id: str,
    n: int,
    *,
    model: str = "small",
    account: str = "acct-1",
    moment: datetime = LAST_MS_OF_OCT,
    **envelope: Any,
) -> bytes:
    """A raw llm_tokens event of `n` tokens."""
    data = {"tokens": n, "model": model}
    return raw(
        "llm_tokens", data, event_id=event_id, account=account, moment=moment, **envelope
    ).encode()


def call(event_id: str, *, account: str = "acct-1", moment: datetime = LAST_MS_OF_OCT) -> str:
    """A raw api_calls event, as str."""
    data = {"endpoint": "/v1/search", "status": 200}
    return raw("api_calls", data, event_id=event_id, account=account, moment=moment)


def seats(
    n: int, *, event_id: str = "s", account: str = "acct-1", moment: datetime = OCT_15
) -> str:
    """A raw seats report of `n` seats (identified by account, meter and time, not by id)."""
    return raw("seats", {"seats": n}, event_id=event_id, account=account, moment=moment)


# --- plain outcomes --------------------------------------------------------------------------


def test_expected_outcome_empty_input_is_empty(validator: Validator) -> None:
    assert outcome(validator, []) == Expected({}, [], [])


def test_expected_outcome_single_event_is_one_total(validator: Validator) -> None:
    assert outcome(validator, [tokens("e1", 10)]) == Expected(
        {("acct-1", "llm_tokens", OCTOBER, SMALL): (Decimal(10), 1)}, [], []
    )


def test_expected_outcome_accepts_a_generator(validator: Validator) -> None:
    result = expected_outcome(validator, (tokens(f"e{i}", i) for i in range(4)), ARRIVED_AT)

    # 0 + 1 + 2 + 3
    assert result.totals == {("acct-1", "llm_tokens", OCTOBER, SMALL): (Decimal(6), 4)}


def test_expected_outcome_totals_per_account_meter_period_and_segment(
    validator: Validator,
) -> None:
    nov = NOV_START + timedelta(hours=1)
    payloads: list[str | bytes] = [
        tokens("e1", 100),
        tokens("e2", 20, moment=nov),
        tokens("e3", 3),
        tokens("e4", 4000, account="acct-2"),
        tokens("e5", 50, model="large"),
        call("e6"),
        call("e7"),
        call("e8", moment=nov),
        call("e9", account="acct-2", moment=nov),
    ]

    result = outcome(validator, payloads)

    assert result.totals == {
        ("acct-1", "llm_tokens", OCTOBER, SMALL): (Decimal(103), 2),
        ("acct-1", "llm_tokens", OCTOBER, LARGE): (Decimal(50), 1),
        ("acct-1", "llm_tokens", NOVEMBER, SMALL): (Decimal(20), 1),
        ("acct-2", "llm_tokens", OCTOBER, SMALL): (Decimal(4000), 1),
        ("acct-1", "api_calls", OCTOBER, ""): (Decimal(2), 2),
        ("acct-1", "api_calls", NOVEMBER, ""): (Decimal(1), 1),
        ("acct-2", "api_calls", NOVEMBER, ""): (Decimal(1), 1),
    }
    assert (result.rejections, result.warnings) == ([], [])


def test_expected_outcome_float_quantities_sum_exactly(validator: Validator) -> None:
    payloads: list[str | bytes] = [
        raw("storage_gb_hours", {"gb_hours": 0.1, "bucket": "logs"}, event_id=f"e{i}")
        for i in range(10)
    ]

    assert outcome(validator, payloads).totals == {
        ("acct-42", "storage_gb_hours", OCTOBER, ""): (Decimal("1.000000000"), 10)
    }


# --- rejections ------------------------------------------------------------------------------


def test_expected_outcome_rejections_listed_with_index_and_code(validator: Validator) -> None:
    payloads: list[str | bytes] = [
        tokens("e1", 1),
        b'{"id": "truncated',
        tokens("e2", 2),
        json.dumps(cloud_event("e3", "acct-1", "no_such_meter", LAST_MS_OF_OCT, {})),
        b'{"id": "truncated',
        tokens("e4", -1),
        json.dumps(cloud_event("e5", "acct 1", "llm_tokens", LAST_MS_OF_OCT, {})),
        tokens("e6", 1, moment=ARRIVED_AT + timedelta(minutes=6)),
        tokens("e7", 1, moment=ARRIVED_AT - timedelta(days=36)),
        tokens("e8", 1, dataschema="v3"),
        tokens("e1", 5),
    ]

    result = outcome(validator, payloads)

    assert result.rejections == [
        (1, "MALFORMED_JSON"),
        (3, "UNKNOWN_METER"),
        (4, "MALFORMED_JSON"),
        (5, "INVALID_VALUE"),
        (6, "INVALID_ACCOUNT"),
        (7, "TIMESTAMP_IN_FUTURE"),
        (8, "TIMESTAMP_TOO_OLD"),
        (9, "UNKNOWN_SCHEMA_VERSION"),
        (10, "DUPLICATE_ID_CONFLICT"),
    ]
    assert result.totals == {("acct-1", "llm_tokens", OCTOBER, SMALL): (Decimal(3), 2)}


def test_expected_outcome_rejected_first_arrival_does_not_block_retry(
    validator: Validator,
) -> None:
    broken = raw("llm_tokens", {"tokens": "5", "model": "small"}, event_id="e1", account="acct-1")

    result = outcome(validator, [broken, tokens("e1", 5)])

    assert result.rejections == [(0, "WRONG_TYPE")]
    assert result.totals == {("acct-1", "llm_tokens", OCTOBER, SMALL): (Decimal(5), 1)}


def test_expected_outcome_time_window_follows_the_given_arrival(validator: Validator) -> None:
    payload = tokens("e1", 5, moment=LAST_MS_OF_OCT)

    early = expected_outcome(validator, [payload], LAST_MS_OF_OCT - timedelta(minutes=6))
    late = expected_outcome(validator, [payload], LAST_MS_OF_OCT + timedelta(days=36))

    assert early.rejections == [(0, "TIMESTAMP_IN_FUTURE")]
    assert late.rejections == [(0, "TIMESTAMP_TOO_OLD")]
    assert early.totals == late.totals == {}


# --- idempotency: EVENT_ID -------------------------------------------------------------------


def test_expected_outcome_identical_repeat_counted_once_silently(validator: Validator) -> None:
    payload = tokens("e1", 10)

    result = outcome(validator, [payload, payload, payload])

    assert result == Expected({("acct-1", "llm_tokens", OCTOBER, SMALL): (Decimal(10), 1)}, [], [])


@pytest.mark.parametrize(
    "retry",
    [
        tokens("e1", 10, source="another-gateway"),
        tokens("e1", 10, time="2026-11-01T00:59:59.999+01:00"),  # the same instant
        raw("llm_tokens", {"model": "small", "tokens": 10}, event_id="e1", account="acct-1"),
    ],
)
def test_expected_outcome_repeat_with_same_content_is_silent(
    validator: Validator, retry: str | bytes
) -> None:
    result = outcome(validator, [tokens("e1", 10), retry])

    assert result.rejections == []
    assert result.totals == {("acct-1", "llm_tokens", OCTOBER, SMALL): (Decimal(10), 1)}


def test_expected_outcome_repeat_with_other_content_is_duplicate_id_conflict(
    validator: Validator,
) -> None:
    first, retry = tokens("e1", 10), tokens("e1", 99)

    forward = outcome(validator, [first, retry])
    backward = outcome(validator, [retry, first])

    # The first arrival is counted; the conflicting repeat is reported, not counted.
    assert forward.totals == {("acct-1", "llm_tokens", OCTOBER, SMALL): (Decimal(10), 1)}
    assert backward.totals == {("acct-1", "llm_tokens", OCTOBER, SMALL): (Decimal(99), 1)}
    assert forward.rejections == backward.rejections == [(1, "DUPLICATE_ID_CONFLICT")]


def test_expected_outcome_each_conflicting_repeat_compared_with_first(
    validator: Validator,
) -> None:
    first = tokens("e1", 10)

    result = outcome(validator, [first, tokens("e1", 99), tokens("e1", 99), first])

    assert result.rejections == [(1, "DUPLICATE_ID_CONFLICT"), (2, "DUPLICATE_ID_CONFLICT")]
    assert result.totals == {("acct-1", "llm_tokens", OCTOBER, SMALL): (Decimal(10), 1)}


def test_expected_outcome_same_id_across_meters_is_duplicate_id_conflict(
    validator: Validator,
) -> None:
    result = outcome(validator, [call("e1"), tokens("e1", 5)])

    assert result.totals == {("acct-1", "api_calls", OCTOBER, ""): (Decimal(1), 1)}
    assert result.rejections == [(1, "DUPLICATE_ID_CONFLICT")]


def test_expected_outcome_same_id_other_segment_is_duplicate_id_conflict(
    validator: Validator,
) -> None:
    result = outcome(validator, [tokens("e1", 5), tokens("e1", 5, model="large")])

    assert result.totals == {("acct-1", "llm_tokens", OCTOBER, SMALL): (Decimal(5), 1)}
    assert result.rejections == [(1, "DUPLICATE_ID_CONFLICT")]


def test_expected_outcome_same_id_across_month_boundary_keeps_first(
    validator: Validator,
) -> None:
    result = outcome(validator, [tokens("e1", 5, moment=NOV_START), tokens("e1", 5)])

    assert result.totals == {("acct-1", "llm_tokens", NOVEMBER, SMALL): (Decimal(5), 1)}
    assert result.rejections == [(1, "DUPLICATE_ID_CONFLICT")]


def test_expected_outcome_same_id_other_account_counted_separately(
    validator: Validator,
) -> None:
    result = outcome(
        validator, [tokens("e1", 5, account="acct-1"), tokens("e1", 7, account="acct-2")]
    )

    assert result.totals == {
        ("acct-1", "llm_tokens", OCTOBER, SMALL): (Decimal(5), 1),
        ("acct-2", "llm_tokens", OCTOBER, SMALL): (Decimal(7), 1),
    }
    assert result.rejections == []


# --- idempotency: ACCOUNT_METER_TIMESTAMP (seats) --------------------------------------------


def test_expected_outcome_seats_same_time_other_count_is_duplicate_id_conflict(
    validator: Validator,
) -> None:
    result = outcome(validator, [seats(40, event_id="a"), seats(41, event_id="b")])

    assert result.totals == {("acct-1", "seats", OCTOBER, ""): (Decimal(40), 1)}
    assert result.rejections == [(1, "DUPLICATE_ID_CONFLICT")]


def test_expected_outcome_seats_same_report_with_new_id_is_silent_repeat(
    validator: Validator,
) -> None:
    # A client without stable ids resends the report: same account, time and content.
    result = outcome(validator, [seats(40, event_id="a"), seats(40, event_id="b")])

    assert result == Expected({("acct-1", "seats", OCTOBER, ""): (Decimal(40), 1)}, [], [])


def test_expected_outcome_seats_same_time_in_other_offset_is_the_same_report(
    validator: Validator,
) -> None:
    shifted = raw("seats", {"seats": 41}, account="acct-1", time="2026-10-15T14:00:00+02:00")

    result = outcome(validator, [seats(40), shifted])

    assert result.rejections == [(1, "DUPLICATE_ID_CONFLICT")]


def test_expected_outcome_seats_same_time_other_account_both_counted(
    validator: Validator,
) -> None:
    result = outcome(validator, [seats(40, account="acct-1"), seats(7, account="acct-2")])

    assert result.totals == {
        ("acct-1", "seats", OCTOBER, ""): (Decimal(40), 1),
        ("acct-2", "seats", OCTOBER, ""): (Decimal(7), 1),
    }
    assert result.rejections == []


def test_expected_outcome_seats_one_ms_apart_both_counted(validator: Validator) -> None:
    later = OCT_15 + timedelta(milliseconds=1)

    result = outcome(validator, [seats(40, event_id="x"), seats(41, event_id="x", moment=later)])

    # Same id, but seats are keyed by time: two reports, the later one is the figure.
    assert result.totals == {("acct-1", "seats", OCTOBER, ""): (Decimal(41), 2)}
    assert result.rejections == []


# --- every aggregation kind, with hand-computed figures --------------------------------------


@dataclass(frozen=True)
class Case:
    """Events of one meter, in arrival order, and the one total they must give."""

    meter: str
    #: (data, event time) per event; each gets its own id.
    events: tuple[tuple[dict[str, Any], datetime], ...]
    figure: str
    count: int
    dimensions: str = ""


def _at(seconds: int) -> datetime:
    return OCT_15 + timedelta(seconds=seconds)


CASES: dict[Aggregation, Case] = {
    # 0.25 + 1.5 + 2 = 3.75
    Aggregation.SUM: Case(
        "storage_gb_hours",
        (
            ({"gb_hours": 0.25, "bucket": "logs"}, _at(0)),
            ({"gb_hours": 1.5, "bucket": "media"}, _at(1)),
            ({"gb_hours": 2, "bucket": "logs"}, _at(2)),
        ),
        "3.750000000",
        3,
    ),
    # three requests, whatever their status
    Aggregation.COUNT: Case(
        "api_calls",
        (
            ({"endpoint": "/v1/search", "status": 200}, _at(0)),
            ({"endpoint": "/v1/embed", "status": 500}, _at(1)),
            ({"endpoint": "/v1/search", "status": 404}, _at(2)),
        ),
        "3",
        3,
    ),
    # min(500, -1200, 30, -7) = -1200
    Aggregation.MIN: Case(
        "prepaid_balance",
        (
            ({"balance_cents": 500}, _at(0)),
            ({"balance_cents": -1200}, _at(1)),
            ({"balance_cents": 30}, _at(2)),
            ({"balance_cents": -7}, _at(3)),
        ),
        "-1200.000000000",
        4,
    ),
    # max(2.5, 8, -1) = 8
    Aggregation.MAX: Case(
        "compute_peak_cores",
        (
            ({"cores": 2.5, "region": "eu"}, _at(0)),
            ({"cores": 8.0, "region": "eu"}, _at(1)),
            ({"cores": -1, "region": "eu"}, _at(2)),
        ),
        "8.000000000",
        3,
        '{"region":"eu"}',
    ),
    # (1 + 2 + 2) / 3 = 1.6666666666... -> 1.666666667
    Aggregation.MEAN: Case(
        "request_latency_ms",
        (
            ({"latency_ms": 1}, _at(0)),
            ({"latency_ms": 2.0}, _at(1)),
            ({"latency_ms": 2}, _at(2)),
        ),
        "1.666666667",
        3,
    ),
    # by event time, not arrival: 12 at +3 s is the latest, though 7 (at +1 s) arrives last
    Aggregation.LATEST: Case(
        "seats",
        (
            ({"seats": 10}, _at(2)),
            ({"seats": 12}, _at(3)),
            ({"seats": 7}, _at(1)),
        ),
        "12.000000000",
        3,
    ),
    # users 1, 2, 1, 3: three distinct users, four events
    Aggregation.UNIQUE_COUNT: Case(
        "active_users",
        (
            ({"user_id": "user-1"}, _at(0)),
            ({"user_id": "user-2"}, _at(1)),
            ({"user_id": "user-1"}, _at(2)),
            ({"user_id": "user-3"}, _at(3)),
        ),
        "3",
        4,
    ),
}


@pytest.mark.parametrize("kind", list(Aggregation))
def test_expected_outcome_every_aggregation_kind_has_an_oracle_case(kind: Aggregation) -> None:
    # Adding an Aggregation member without a hand-computed case here fails this test.
    assert kind in CASES, f"no oracle case for {kind}: add one to CASES"


@pytest.mark.parametrize("kind", list(Aggregation))
def test_expected_outcome_aggregation_case_uses_a_meter_of_its_kind(
    registry: MeterRegistry, kind: Aggregation
) -> None:
    meter = registry.current(CASES[kind].meter)

    assert meter is not None
    assert meter.aggregation is kind


@pytest.mark.parametrize("kind", list(Aggregation))
def test_expected_outcome_aggregation_kind_figure(validator: Validator, kind: Aggregation) -> None:
    case = CASES[kind]
    payloads: list[str | bytes] = [
        raw(case.meter, data, event_id=f"e{i}", account="acct-1", moment=moment)
        for i, (data, moment) in enumerate(case.events)
    ]

    result = outcome(validator, payloads)

    assert result.rejections == []
    assert result.totals == {
        ("acct-1", case.meter, OCTOBER, case.dimensions): (Decimal(case.figure), case.count)
    }
    assert str(result.totals["acct-1", case.meter, OCTOBER, case.dimensions][0]) == case.figure


def test_expected_outcome_sum_segments_by_group_by(validator: Validator) -> None:
    payloads: list[str | bytes] = [
        tokens("e1", 100, model="small"),
        tokens("e2", 7, model="large"),
        tokens("e3", 20, model="small"),
    ]

    assert outcome(validator, payloads).totals == {
        ("acct-1", "llm_tokens", OCTOBER, SMALL): (Decimal(120), 2),
        ("acct-1", "llm_tokens", OCTOBER, LARGE): (Decimal(7), 1),
    }


def test_expected_outcome_max_per_region(validator: Validator) -> None:
    payloads: list[str | bytes] = [
        raw("compute_peak_cores", {"cores": 4, "region": "us"}, event_id="e1"),
        raw("compute_peak_cores", {"cores": 2.5, "region": "eu"}, event_id="e2"),
        raw("compute_peak_cores", {"cores": 3.75, "region": "us"}, event_id="e3"),
    ]

    assert outcome(validator, payloads).totals == {
        ("acct-42", "compute_peak_cores", OCTOBER, '{"region":"us"}'): (Decimal(4), 2),
        ("acct-42", "compute_peak_cores", OCTOBER, '{"region":"eu"}'): (Decimal("2.5"), 1),
    }


def test_expected_outcome_min_of_only_negative_values(validator: Validator) -> None:
    payloads: list[str | bytes] = [
        raw("prepaid_balance", {"balance_cents": n}, event_id=f"e{i}")
        for i, n in enumerate([-1, -300, -299])
    ]

    assert outcome(validator, payloads).totals == {
        ("acct-42", "prepaid_balance", OCTOBER, ""): (Decimal(-300), 3)
    }


@pytest.mark.parametrize(
    ("latencies", "figure"),
    [
        # (0.000000001 + 0) / 2 = 0.0000000005: half up gives 1e-9 (half even would give 0).
        ([1e-9, 0], "1E-9"),
        # 0.0000000015 -> 0.000000002
        ([3e-9, 0], "2E-9"),
        # 0.000000000333... -> 0
        ([1e-9, 0, 0], "0E-9"),
        # (10 + 20.5) / 2 = 15.25
        ([10, 20.5], "15.250000000"),
        ([7], "7.000000000"),
    ],
)
def test_expected_outcome_mean_rounds_half_up_to_nine_places(
    validator: Validator, latencies: list[float], figure: str
) -> None:
    payloads: list[str | bytes] = [
        raw("request_latency_ms", {"latency_ms": v}, event_id=f"e{i}")
        for i, v in enumerate(latencies)
    ]

    totals = outcome(validator, payloads).totals

    assert str(totals["acct-42", "request_latency_ms", OCTOBER, ""][0]) == figure


def test_expected_outcome_latest_may_be_negative(validator: Validator) -> None:
    payloads: list[str | bytes] = [seats(5, moment=_at(0)), seats(-3, moment=_at(1))]

    assert outcome(validator, payloads).totals == {
        ("acct-1", "seats", OCTOBER, ""): (Decimal(-3), 2)
    }


def test_expected_outcome_latest_is_per_period(validator: Validator) -> None:
    payloads: list[str | bytes] = [
        seats(9, moment=NOV_START),
        seats(4, moment=LAST_MS_OF_OCT.replace(microsecond=0)),
        seats(6, moment=LAST_MS_OF_OCT - timedelta(days=1)),
    ]

    assert outcome(validator, payloads).totals == {
        ("acct-1", "seats", OCTOBER, ""): (Decimal(4), 2),
        ("acct-1", "seats", NOVEMBER, ""): (Decimal(9), 1),
    }


@pytest.fixture(scope="module")
def gauge_validator() -> Validator:
    """A LATEST meter keyed by event id, so that two events can share an event time."""
    return Validator(registry_of(custom_schema(aggregation="LATEST")))


def gauge(event_id: str, q: int, time: str) -> str:
    """A raw event of the `custom` LATEST meter."""
    return json.dumps(cloud_event(event_id, "acct-1", "custom", OCT_15, {"q": q}) | {"time": time})


@pytest.mark.parametrize(
    ("values", "figure"),
    [
        # A tie in event time goes to the larger text: "9.000000000" > "10.000000000".
        ((10, 9), 9),
        ((9, 10), 9),
        # "1.000000000" > "-1.000000000"
        ((-1, 1), 1),
        ((1, -1), 1),
        ((5, 5), 5),
    ],
)
def test_expected_outcome_latest_tie_goes_to_larger_text(
    gauge_validator: Validator, values: tuple[int, int], figure: int
) -> None:
    time = "2026-10-15T12:00:00.000Z"
    payloads: list[str | bytes] = [gauge(f"e{i}", v, time) for i, v in enumerate(values)]

    assert expected_outcome(gauge_validator, payloads, ARRIVED_AT).totals == {
        ("acct-1", "custom", OCTOBER, ""): (Decimal(figure), 2)
    }


def test_expected_outcome_latest_compares_event_times_by_the_millisecond(
    gauge_validator: Validator,
) -> None:
    payloads: list[str | bytes] = [
        gauge("e1", 10, "2026-10-15T12:00:00.000900Z"),
        gauge("e2", 9, "2026-10-15T12:00:00.000100Z"),
    ]

    # One millisecond for the pipeline: a tie, which "9.000000000" wins.
    assert expected_outcome(gauge_validator, payloads, ARRIVED_AT).totals == {
        ("acct-1", "custom", OCTOBER, ""): (Decimal(9), 2)
    }


def test_expected_outcome_unique_count_per_segment_and_period(validator: Validator) -> None:
    payloads: list[str | bytes] = [
        raw("active_users", {"user_id": "u1"}, event_id="e1"),
        raw("active_users", {"user_id": "u1"}, event_id="e2", moment=NOV_START),
        raw("active_users", {"user_id": "u2"}, event_id="e3", moment=NOV_START),
        raw("active_users", {"user_id": "u1"}, event_id="e4", account="acct-2"),
    ]

    assert outcome(validator, payloads).totals == {
        ("acct-42", "active_users", OCTOBER, ""): (Decimal(1), 1),
        ("acct-42", "active_users", NOVEMBER, ""): (Decimal(2), 2),
        ("acct-2", "active_users", OCTOBER, ""): (Decimal(1), 1),
    }


# --- warnings: deprecated schema versions ----------------------------------------------------


@pytest.fixture(scope="module")
def sunset_validator() -> Validator:
    """Meter `custom`: v1 deprecated with a sunset on 2026-11-01, v2 current."""
    return Validator(
        registry_of(custom_schema(sunset="2026-11-01T00:00:00Z"), custom_schema(version=2))
    )


def custom(event_id: str, q: int, version: int) -> str:
    """A raw `custom` event naming schema version `version`."""
    doc = cloud_event(event_id, "acct-1", "custom", OCT_15, {"q": q})
    return json.dumps(doc | {"dataschema": f"schemas/custom/v{version}"})


def test_expected_outcome_deprecated_version_before_sunset_is_counted_with_warning(
    sunset_validator: Validator,
) -> None:
    before = datetime(2026, 10, 31, 23, 59, tzinfo=UTC)

    result = expected_outcome(sunset_validator, [custom("e1", 5, 2), custom("e2", 7, 1)], before)

    assert result == Expected(
        {("acct-1", "custom", OCTOBER, ""): (Decimal(12), 2)},
        [],
        [(1, "DEPRECATED_SCHEMA_VERSION")],
    )


def test_expected_outcome_deprecated_version_after_sunset_is_rejected(
    sunset_validator: Validator,
) -> None:
    result = expected_outcome(
        sunset_validator, [custom("e1", 5, 2), custom("e2", 7, 1)], ARRIVED_AT
    )

    assert result == Expected(
        {("acct-1", "custom", OCTOBER, ""): (Decimal(5), 1)},
        [(1, "DEPRECATED_SCHEMA_VERSION")],
        [],
    )


def test_expected_outcome_warning_listed_for_every_record_even_a_repeat(
    sunset_validator: Validator,
) -> None:
    before = datetime(2026, 10, 20, tzinfo=UTC)
    payload = custom("e1", 5, 1)

    result = expected_outcome(sunset_validator, [payload, payload], before)

    # The repeat is warned too: the warning belongs to the record, before deduplication.
    assert result.warnings == [(0, "DEPRECATED_SCHEMA_VERSION"), (1, "DEPRECATED_SCHEMA_VERSION")]
    assert result.totals == {("acct-1", "custom", OCTOBER, ""): (Decimal(5), 1)}


# --- generated streams -----------------------------------------------------------------------


def test_expected_outcome_generated_stream_counts_each_key_once(validator: Validator) -> None:
    # generate() straddles PERIOD_START (relative to today); arriving a day later, every
    # well-formed event is inside the time window.
    arrival = PERIOD_START + timedelta(days=1)
    records = generate(400, seed=11, duplicate_rate=0.3, malformed_rate=0.05)
    results = [validator.validate(r.value, arrival) for r in records]
    valid = [v for v in results if isinstance(v, ValidEvent)]
    first: dict[tuple[str, str], ValidEvent] = {}
    for v in valid:
        first.setdefault((v.account_id, v.dedup_key), v)
    conflicts = sum(first[v.account_id, v.dedup_key].fingerprint != v.fingerprint for v in valid)

    result = expected_outcome(validator, [r.value for r in records], arrival)

    assert sum(count for _, count in result.totals.values()) == len(first)
    assert len(result.rejections) == len(records) - len(valid) + conflicts
    assert len(first) < len(valid)  # duplicates were sent
    assert {meter for _, meter, _, _ in result.totals} == {v.meter for v in first.values()}
    assert {period for _, _, period, _ in result.totals} == {
        (PERIOD_START - timedelta(days=1)).date().replace(day=1),
        PERIOD_START.date(),
    }


def valid(validator: Validator, payload: bytes | str) -> ValidEvent:
    event = validator.validate(payload, ARRIVED_AT)
    assert isinstance(event, ValidEvent)
    return event


def test_expected_outcome_void_takes_the_counted_event_out_of_its_figure(
    validator: Validator,
) -> None:
    payloads = [tokens("evt-1", 10), tokens("evt-2", 5), tokens("evt-3", 7, model="large")]
    voids = {("acct-1", "id:evt-2"): None, ("acct-1", "id:evt-3"): None}

    result = expected_outcome(validator, payloads, ARRIVED_AT, corrections=voids)

    # evt-3's figure had no other event: it is gone.
    assert result.totals == {("acct-1", "llm_tokens", OCTOBER, SMALL): (Decimal(10), 1)}


def test_expected_outcome_amend_replaces_content_and_may_move_the_segment(
    validator: Validator,
) -> None:
    payloads = [tokens("evt-1", 10), tokens("evt-2", 5)]
    amended = valid(validator, tokens("evt-2", 40, model="large"))

    result = expected_outcome(
        validator, payloads, ARRIVED_AT, corrections={("acct-1", "id:evt-2"): amended}
    )

    assert result.totals == {
        ("acct-1", "llm_tokens", OCTOBER, SMALL): (Decimal(10), 1),
        ("acct-1", "llm_tokens", OCTOBER, LARGE): (Decimal(40), 1),
    }


def test_expected_outcome_correction_applies_to_the_first_arrival_not_a_repeat(
    validator: Validator,
) -> None:
    # evt-1 arrives twice with other content: the first (10) counts, the repeat is a conflict.
    payloads = [tokens("evt-1", 10), tokens("evt-1", 99)]
    amended = valid(validator, tokens("evt-1", 3))

    result = expected_outcome(
        validator, payloads, ARRIVED_AT, corrections={("acct-1", "id:evt-1"): amended}
    )

    assert result.totals == {("acct-1", "llm_tokens", OCTOBER, SMALL): (Decimal(3), 1)}
    assert result.rejections == [(1, "DUPLICATE_ID_CONFLICT")]


def test_expected_outcome_corrections_of_late_or_unknown_keys_change_nothing(
    validator: Validator,
) -> None:
    late_arrival = NOV_START + timedelta(hours=73)  # October closed 72 hours after its end
    payloads = [tokens("evt-1", 10)]
    corrections = {("acct-1", "id:evt-1"): None, ("acct-1", "id:nope"): None}

    result = expected_outcome(validator, payloads, late_arrival, corrections=corrections)

    assert result.totals == {}
    assert result.late == [(0, ("acct-1", "llm_tokens", OCTOBER, SMALL))]
    untouched = expected_outcome(validator, [tokens("evt-2", 4)], ARRIVED_AT, corrections={})
    assert untouched.totals == {("acct-1", "llm_tokens", OCTOBER, SMALL): (Decimal(4), 1)}


def test_expected_outcome_voiding_the_extreme_of_max_and_latest(validator: Validator) -> None:
    def cores(event_id: str, n: float, moment: datetime) -> str:
        data = {"cores": n, "region": "eu"}
        return raw("compute_peak_cores", data, event_id=event_id, account="a", moment=moment)

    def seats(n: int, moment: datetime) -> str:
        return raw("seats", {"seats": n}, event_id=f"s-{n}", account="a", moment=moment)

    later = OCT_15 + timedelta(hours=1)
    payloads = [cores("c1", 8.0, OCT_15), cores("c2", 32.0, OCT_15), seats(5, OCT_15)]
    payloads.append(seats(9, later))
    late_seat = valid(validator, payloads[3]).dedup_key
    corrections = {("a", "id:c2"): None, ("a", late_seat): None}

    result = expected_outcome(validator, payloads, ARRIVED_AT, corrections=corrections)

    assert result.totals == {
        ("a", "compute_peak_cores", OCTOBER, '{"region":"eu"}'): (Decimal("8.000000000"), 1),
        ("a", "seats", OCTOBER, ""): (Decimal("5.000000000"), 1),
    }
