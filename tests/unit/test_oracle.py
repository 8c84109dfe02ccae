"""Unit tests for meterstream.rules.oracle: the expected totals the pipeline is checked against."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from meterstream.rules.oracle import Expected, expected_outcome
from meterstream.rules.validate import Validator, ValidEvent
from meterstream.testing import LAST_MS_OF_MONTH, PERIOD_START, cloud_event, generate

OCT = date(2026, 10, 1)
NOV = date(2026, 11, 1)


def tokens(
    event_id: str, n: int, *, account: str = "acct-1", moment: datetime = LAST_MS_OF_MONTH
) -> bytes:
    """A raw llm_tokens event of `n` tokens."""
    data: dict[str, Any] = {"tokens": n, "model": "small"}
    return json.dumps(cloud_event(event_id, account, "llm_tokens", moment, data)).encode()


def call(event_id: str, *, account: str = "acct-1", moment: datetime = LAST_MS_OF_MONTH) -> str:
    """A raw api_calls event, as str."""
    data = {"endpoint": "/v1/search", "status": 200}
    return json.dumps(cloud_event(event_id, account, "api_calls", moment, data))


def test_expected_outcome_empty_input_is_empty(validator: Validator) -> None:
    assert expected_outcome(validator, []) == Expected({}, [])


def test_expected_outcome_duplicate_payload_counted_once(validator: Validator) -> None:
    raw = tokens("e1", 10)

    outcome = expected_outcome(validator, [raw, raw, raw])

    assert outcome.totals == {("acct-1", "llm_tokens", OCT): (Decimal(10), 1)}
    assert outcome.rejections == []


def test_expected_outcome_duplicate_id_keeps_first_arrival(validator: Validator) -> None:
    first, retry = tokens("e1", 10), tokens("e1", 99)

    assert expected_outcome(validator, [first, retry]).totals == {
        ("acct-1", "llm_tokens", OCT): (Decimal(10), 1),
    }
    assert expected_outcome(validator, [retry, first]).totals == {
        ("acct-1", "llm_tokens", OCT): (Decimal(99), 1),
    }


def test_expected_outcome_duplicate_id_across_meters_counted_once(validator: Validator) -> None:
    outcome = expected_outcome(validator, [call("e1"), tokens("e1", 5)])

    assert outcome.totals == {("acct-1", "api_calls", OCT): (Decimal(1), 1)}


def test_expected_outcome_duplicate_across_month_boundary_keeps_first(
    validator: Validator,
) -> None:
    outcome = expected_outcome(validator, [tokens("e1", 5, moment=PERIOD_START), tokens("e1", 5)])

    assert outcome.totals == {("acct-1", "llm_tokens", NOV): (Decimal(5), 1)}


def test_expected_outcome_same_id_other_account_counted_separately(
    validator: Validator,
) -> None:
    outcome = expected_outcome(
        validator, [tokens("e1", 5, account="acct-1"), tokens("e1", 7, account="acct-2")]
    )

    assert outcome.totals == {
        ("acct-1", "llm_tokens", OCT): (Decimal(5), 1),
        ("acct-2", "llm_tokens", OCT): (Decimal(7), 1),
    }


def test_expected_outcome_rejected_first_arrival_does_not_block_retry(
    validator: Validator,
) -> None:
    broken = json.dumps(
        cloud_event(
            "e1", "acct-1", "llm_tokens", LAST_MS_OF_MONTH, {"tokens": "5", "model": "small"}
        )
    )

    outcome = expected_outcome(validator, [broken, tokens("e1", 5)])

    assert outcome.rejections == [(0, "WRONG_TYPE")]
    assert outcome.totals == {("acct-1", "llm_tokens", OCT): (Decimal(5), 1)}


def test_expected_outcome_rejections_listed_with_index_and_code(validator: Validator) -> None:
    payloads: list[bytes | str] = [
        tokens("e1", 1),
        b'{"id": "truncated',
        tokens("e2", 2),
        json.dumps(cloud_event("e3", "acct-1", "no_such_meter", LAST_MS_OF_MONTH, {})),
        b'{"id": "truncated',
        tokens("e4", -1),
        json.dumps(cloud_event("e5", "acct 1", "llm_tokens", LAST_MS_OF_MONTH, {})),
    ]

    outcome = expected_outcome(validator, payloads)

    assert outcome.rejections == [
        (1, "MALFORMED_JSON"),
        (3, "UNKNOWN_METER"),
        (4, "MALFORMED_JSON"),
        (5, "INVALID_VALUE"),
        (6, "INVALID_ACCOUNT"),
    ]
    assert outcome.totals == {("acct-1", "llm_tokens", OCT): (Decimal(3), 2)}


def test_expected_outcome_totals_per_account_meter_and_period(validator: Validator) -> None:
    nov = PERIOD_START + timedelta(hours=1)
    payloads: list[bytes | str] = [
        tokens("e1", 100),
        tokens("e2", 20, moment=nov),
        tokens("e3", 3),
        tokens("e4", 4000, account="acct-2"),
        call("e5"),
        call("e6"),
        call("e7", moment=nov),
        call("e8", account="acct-2", moment=nov),
    ]

    outcome = expected_outcome(validator, payloads)

    assert outcome.totals == {
        ("acct-1", "llm_tokens", OCT): (Decimal(103), 2),
        ("acct-1", "llm_tokens", NOV): (Decimal(20), 1),
        ("acct-2", "llm_tokens", OCT): (Decimal(4000), 1),
        ("acct-1", "api_calls", OCT): (Decimal(2), 2),
        ("acct-1", "api_calls", NOV): (Decimal(1), 1),
        ("acct-2", "api_calls", NOV): (Decimal(1), 1),
    }
    assert outcome.rejections == []


def test_expected_outcome_float_quantities_sum_exactly(validator: Validator) -> None:
    payloads = [
        json.dumps(
            cloud_event(
                f"e{i}",
                "acct-1",
                "storage_gb_hours",
                LAST_MS_OF_MONTH,
                {"gb_hours": 0.1, "bucket": "logs"},
            )
        )
        for i in range(10)
    ]

    outcome = expected_outcome(validator, payloads)

    assert outcome.totals == {("acct-1", "storage_gb_hours", OCT): (Decimal("1.000000000"), 10)}


def test_expected_outcome_accepts_a_generator(validator: Validator) -> None:
    outcome = expected_outcome(validator, (tokens(f"e{i}", i) for i in range(4)))

    assert outcome.totals == {("acct-1", "llm_tokens", OCT): (Decimal(6), 4)}


def test_expected_outcome_generated_stream_counts_each_valid_id_once(
    validator: Validator,
) -> None:
    records = generate(300, seed=11, duplicate_rate=0.3, malformed_rate=0.05)
    results = [validator.validate(r.value) for r in records]
    valid = {(v.account_id, v.event_id): v for v in results if isinstance(v, ValidEvent)}

    outcome = expected_outcome(validator, [r.value for r in records])

    assert sum(count for _, count in outcome.totals.values()) == len(valid)
    assert sum(q for q, _ in outcome.totals.values()) == sum(v.quantity for v in valid.values())
    assert len(outcome.rejections) == len(records) - sum(isinstance(v, ValidEvent) for v in results)
    assert len(valid) < sum(isinstance(v, ValidEvent) for v in results)  # duplicates were sent
