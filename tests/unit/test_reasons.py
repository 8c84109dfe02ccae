"""Unit tests for meterstream.rules.reasons: the reason codes, their examples and their docs.

Completeness tests keep three lists in step: the ReasonCode enum, an example event for every
code the Validator or the oracle produces, and the reason-code table of docs/meters.md.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from meterstream.rules.oracle import expected_outcome
from meterstream.rules.reasons import ReasonCode, Rejection
from meterstream.rules.validate import Validator
from meterstream.testing import rfc3339
from tests.unit.samples import (
    API_CODES,
    ARRIVED_AT,
    VALIDATOR_CODES,
    custom_schema,
    raw,
    registry_of,
)

REASON_CODES_PAGE = Path(__file__).parents[2] / "docs" / "meters.md"
SUNSET = datetime(2026, 11, 1, tzinfo=UTC)

#: For every code the pipeline can give an event: a stream whose last record gets that code,
#: and whether it needs the `custom` meter with a sunset on v1.
EXAMPLES: dict[ReasonCode, tuple[list[str], bool]] = {
    ReasonCode.MALFORMED_JSON: (['{"id": "evt-1", "data": NaN}'], False),
    ReasonCode.INVALID_ENVELOPE: ([raw("llm_tokens", dataschema="latest")], False),
    ReasonCode.MISSING_FIELD: ([raw("llm_tokens", {"model": "small"})], False),
    ReasonCode.WRONG_TYPE: ([raw("seats", {"seats": "forty"})], False),
    ReasonCode.INVALID_VALUE: ([raw("request_latency_ms", {"latency_ms": -1})], False),
    ReasonCode.INVALID_TIMESTAMP: ([raw("llm_tokens", time="2026-10-31T23:59:59")], False),
    ReasonCode.INVALID_ACCOUNT: ([raw("llm_tokens", account="acct 42")], False),
    ReasonCode.UNKNOWN_METER: ([raw("llm_tokens", type="gpu_hours")], False),
    ReasonCode.UNKNOWN_SCHEMA_VERSION: ([raw("seats", dataschema="schemas/seats/v2")], False),
    ReasonCode.DEPRECATED_SCHEMA_VERSION: (
        [raw("llm_tokens", type="custom", data={"q": 1}, dataschema="v1")],
        True,
    ),
    ReasonCode.TIMESTAMP_IN_FUTURE: (
        [raw("llm_tokens", moment=ARRIVED_AT + timedelta(minutes=5, milliseconds=1))],
        False,
    ),
    ReasonCode.TIMESTAMP_TOO_OLD: (
        [raw("llm_tokens", moment=ARRIVED_AT - timedelta(days=35, milliseconds=1))],
        False,
    ),
    ReasonCode.DUPLICATE_ID_CONFLICT: (
        [
            raw("llm_tokens", {"tokens": 1, "model": "m"}),
            raw("llm_tokens", {"tokens": 2, "model": "m"}),
        ],
        False,
    ),
}


@pytest.fixture(scope="module")
def sunset_validator() -> Validator:
    """Meter `custom`: v1 past its sunset at ARRIVED_AT, v2 current."""
    return Validator(registry_of(custom_schema(sunset=rfc3339(SUNSET)), custom_schema(version=2)))


def test_reason_code_values_are_their_names() -> None:
    for code in ReasonCode:
        assert code.value == code.name
        assert re.fullmatch(r"[A-Z][A-Z_]*[A-Z]", code.value)


def test_reason_code_api_codes_are_not_validator_codes() -> None:
    assert set(ReasonCode) >= API_CODES
    assert not API_CODES & VALIDATOR_CODES
    assert VALIDATOR_CODES | API_CODES | {ReasonCode.DUPLICATE_ID_CONFLICT} == set(ReasonCode)


@pytest.mark.parametrize("code", sorted(set(ReasonCode) - API_CODES))
def test_reason_code_has_an_example_event(code: ReasonCode) -> None:
    # A new code the Validator or oracle can give needs an example here.
    assert code in EXAMPLES, f"no example event for {code}: add one to EXAMPLES"


@pytest.mark.parametrize("code", sorted(EXAMPLES))
def test_reason_code_example_is_rejected_with_its_code(
    validator: Validator, sunset_validator: Validator, code: ReasonCode
) -> None:
    payloads, with_sunset = EXAMPLES[code]
    chosen = sunset_validator if with_sunset else validator

    outcome = expected_outcome(chosen, payloads, ARRIVED_AT)

    assert outcome.rejections == [(len(payloads) - 1, code.value)]
    if len(payloads) == 1:
        result = chosen.validate(payloads[0], ARRIVED_AT)
        assert isinstance(result, Rejection)
        assert result.code is code
        assert result.detail


def test_rejection_carries_code_detail_and_optional_identity() -> None:
    rejection = Rejection(ReasonCode.WRONG_TYPE, "data.tokens must be long, got str")

    assert (rejection.account_id, rejection.meter, rejection.event_id) == (None, None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rejection.code = ReasonCode.MISSING_FIELD  # type: ignore[misc]


def documented_codes() -> set[str]:
    """The codes listed in the "Reason codes" table of docs/meters.md."""
    text = REASON_CODES_PAGE.read_text()
    section = text.split("## Reason codes", 1)[1]
    section = re.split(r"\n#{2,3} ", section, maxsplit=1)[0]
    return set(re.findall(r"^\| `([A-Z_]+)` \|", section, flags=re.MULTILINE))


def test_documented_reason_code_table_lists_every_code() -> None:
    assert {code.value for code in ReasonCode} - documented_codes() == set()


def test_documented_reason_code_table_lists_no_unknown_code() -> None:
    assert documented_codes() - {code.value for code in ReasonCode} == set()
