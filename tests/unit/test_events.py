"""Unit tests for meterstream.events: CloudEvents envelope parsing and RFC 3339 event times.

The property tests at the end feed arbitrary input, and random mutations of valid events,
through `Validator.validate`: bad input is a value (`Rejection`), never an exception.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterstream.events import MAX_ID_LENGTH, REQUIRED, Envelope, parse_envelope, parse_time
from meterstream.meters.model import Aggregation
from meterstream.meters.registry import MeterRegistry
from meterstream.rules.reasons import ReasonCode, Rejection
from meterstream.rules.validate import MAX_QUANTITY, Validator, ValidEvent
from meterstream.testing import cloud_event
from tests.unit.samples import ARRIVED_AT, GOOD_DATA, LAST_MS_OF_OCT, VALIDATOR_CODES

STRING_FIELDS = ("id", "source", "type", "subject", "time")


def event(**overrides: Any) -> dict[str, Any]:
    """A valid llm_tokens CloudEvent at the last millisecond of October, with `overrides` set."""
    doc = cloud_event(
        "evt-1",
        "acct-42",
        "llm_tokens",
        LAST_MS_OF_OCT,
        {"tokens": 812, "model": "small"},
        source="api-gateway",
    )
    doc.update(overrides)
    return doc


def without(*names: str) -> dict[str, Any]:
    """A valid event with the named fields removed."""
    doc = event()
    for name in names:
        del doc[name]
    return doc


def rejection_code(raw: str | bytes) -> ReasonCode:
    """The reason code `parse_envelope` gives `raw`; fails the test if `raw` was accepted."""
    result = parse_envelope(raw)
    assert isinstance(result, Rejection), result
    return result.code


# --- accepted envelopes ----------------------------------------------------------------------


def test_parse_envelope_valid_event_returns_typed_envelope() -> None:
    result = parse_envelope(json.dumps(event()))

    assert result == Envelope(
        event_id="evt-1",
        account_id="acct-42",
        meter="llm_tokens",
        source="api-gateway",
        event_time=LAST_MS_OF_OCT,
        data={"tokens": 812, "model": "small"},
    )


def test_parse_envelope_bytes_input_parses_like_str() -> None:
    text = json.dumps(event(source="gateway-é"), ensure_ascii=False)

    from_bytes = parse_envelope(text.encode())

    assert isinstance(from_bytes, Envelope)
    assert from_bytes == parse_envelope(text)
    assert from_bytes.source == "gateway-é"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "utf-8-sig"])
def test_parse_envelope_non_utf8_bytes_are_malformed_json(encoding: str) -> None:
    # orjson reads UTF-8 only (RFC 8259 section 8.1), with no byte order mark.
    assert rejection_code(json.dumps(event()).encode(encoding)) is ReasonCode.MALFORMED_JSON


def test_parse_envelope_offset_time_converted_to_utc() -> None:
    result = parse_envelope(json.dumps(event(time="2026-11-01T01:59:59.999+02:00")))

    assert isinstance(result, Envelope)
    assert result.event_time == LAST_MS_OF_OCT
    assert result.event_time.utcoffset() == timedelta(0)


def test_parse_envelope_extra_fields_are_ignored() -> None:
    result = parse_envelope(json.dumps(event(traceparent="00-abc", specversion="0.3", extra=[1])))

    assert isinstance(result, Envelope)
    assert result.event_id == "evt-1"
    assert result.schema_version is None


def test_parse_envelope_whitespace_around_document_accepted() -> None:
    assert isinstance(parse_envelope(" \n" + json.dumps(event()) + "\n "), Envelope)


def test_parse_envelope_repeated_key_takes_the_last_value() -> None:
    text = json.dumps(event()).replace('"id": "evt-1"', '"id": "evt-0", "id": "evt-1"')

    result = parse_envelope(text)

    assert isinstance(result, Envelope)
    assert result.event_id == "evt-1"


def test_parse_envelope_id_of_max_length_accepted() -> None:
    result = parse_envelope(json.dumps(event(id="x" * MAX_ID_LENGTH)))

    assert isinstance(result, Envelope)
    assert result.event_id == "x" * MAX_ID_LENGTH


@pytest.mark.parametrize(
    "account",
    ["acct-42", "A", "a" * 128, "user@example.com", "org:team.1_a", "0abc"],
)
def test_parse_envelope_valid_account_accepted(account: str) -> None:
    result = parse_envelope(json.dumps(event(subject=account)))

    assert isinstance(result, Envelope)
    assert result.account_id == account


# --- MALFORMED_JSON --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "",
        " ",
        "{",
        '{"id": "truncated',
        "not json",
        "{'id': 'single quotes'}",
        '{"id": "evt-1",}',
        b"",
        b"\x00\x01\x02",
        b'{"id": "\xff"}',  # invalid UTF-8
        b'{"id": "\xc3\x28"}',  # invalid UTF-8 sequence
        r'{"id": "\ud800"}',  # a JSON escape of a lone surrogate
        '{"id": "\ud800"}',  # a str holding a lone surrogate (not encodable as UTF-8)
        "1" * 5000,  # infinity when read as a double
        '{"id": "evt-1"} trailing',
        '{"id": "tab\there"}',  # raw control character in a string
        '{"n": 01}',
        '{"n": .5}',
        '{"n": +1}',
    ],
)
def test_parse_envelope_not_json_is_malformed_json(raw: str | bytes) -> None:
    result = parse_envelope(raw)

    assert isinstance(result, Rejection)
    assert result.code is ReasonCode.MALFORMED_JSON
    assert result.detail.startswith("not JSON")


def test_parse_envelope_deeply_nested_json_is_malformed_json() -> None:
    assert rejection_code("[" * 100_000) is ReasonCode.MALFORMED_JSON


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "nan", "inf", "1e999"])
def test_parse_envelope_non_finite_number_is_malformed_json(literal: str) -> None:
    # Strict RFC 8259: Python's json would read these as floats; orjson refuses the record.
    text = json.dumps(event()).replace('"tokens": 812', f'"tokens": {literal}')

    assert rejection_code(text) is ReasonCode.MALFORMED_JSON


# --- INVALID_ENVELOPE ------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["[]", "42", "1.5", '"evt"', "null", "true", '[{"id": "e"}]'])
def test_parse_envelope_non_object_is_invalid_envelope(raw: str) -> None:
    result = parse_envelope(raw)

    assert isinstance(result, Rejection)
    assert result.code is ReasonCode.INVALID_ENVELOPE
    assert "JSON object" in result.detail


@pytest.mark.parametrize("name", STRING_FIELDS)
@pytest.mark.parametrize("value", [42, 1.5, True, False, [], ["x"], {}, {"a": "b"}, ""])
def test_parse_envelope_non_string_field_is_invalid_envelope(name: str, value: Any) -> None:
    result = parse_envelope(json.dumps(event(**{name: value})))

    assert isinstance(result, Rejection)
    assert result.code is ReasonCode.INVALID_ENVELOPE
    assert result.detail == f"{name} must be a non-empty string"


@pytest.mark.parametrize("data", [[], [{"tokens": 1}], "tokens=5", 5, 0, True, False, ""])
def test_parse_envelope_data_not_object_is_invalid_envelope(data: Any) -> None:
    result = parse_envelope(json.dumps(event(data=data)))

    assert isinstance(result, Rejection)
    assert result.code is ReasonCode.INVALID_ENVELOPE
    assert result.detail == "data must be a JSON object"


def test_parse_envelope_too_long_id_is_invalid_envelope() -> None:
    result = parse_envelope(json.dumps(event(id="x" * (MAX_ID_LENGTH + 1))))

    assert isinstance(result, Rejection)
    assert result.code is ReasonCode.INVALID_ENVELOPE
    assert str(MAX_ID_LENGTH) in result.detail


# --- MISSING_FIELD ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", REQUIRED)
def test_parse_envelope_absent_field_is_missing_field(name: str) -> None:
    result = parse_envelope(json.dumps(without(name)))

    assert isinstance(result, Rejection)
    assert result.code is ReasonCode.MISSING_FIELD
    assert name in result.detail


@pytest.mark.parametrize("name", REQUIRED)
def test_parse_envelope_null_field_is_missing_field(name: str) -> None:
    result = parse_envelope(json.dumps(event(**{name: None})))

    assert isinstance(result, Rejection)
    assert result.code is ReasonCode.MISSING_FIELD
    assert name in result.detail


def test_parse_envelope_missing_field_detail_lists_every_missing_field() -> None:
    result = parse_envelope(json.dumps(without("subject", "time", "data")))

    assert isinstance(result, Rejection)
    assert result.detail == "missing CloudEvents field(s): subject, time, data"


def test_parse_envelope_empty_object_is_missing_field() -> None:
    assert rejection_code("{}") is ReasonCode.MISSING_FIELD


def test_parse_envelope_specversion_is_not_required() -> None:
    assert isinstance(parse_envelope(json.dumps(without("specversion"))), Envelope)


# --- INVALID_ACCOUNT -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "account",
    ["-acct", ".acct", "_acct", "acct 42", "acct/42", "acct#1", "a" * 129, "ünïcode", " acct"],
)
def test_parse_envelope_bad_subject_is_invalid_account(account: str) -> None:
    result = parse_envelope(json.dumps(event(subject=account)))

    assert isinstance(result, Rejection)
    assert result.code is ReasonCode.INVALID_ACCOUNT
    assert result.detail.startswith("subject (account id)")


def test_parse_envelope_invalid_account_detail_truncates_subject() -> None:
    result = parse_envelope(json.dumps(event(subject="-" + "a" * 500)))

    assert isinstance(result, Rejection)
    assert "a" * 64 not in result.detail


def test_parse_envelope_subject_with_trailing_newline_is_invalid_account() -> None:
    assert rejection_code(json.dumps(event(subject="acct-42\n"))) is ReasonCode.INVALID_ACCOUNT


# --- INVALID_TIMESTAMP -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "2026-10-31T23:59:59",  # naive
        "2026-10-31T23:59:59.250",  # naive, with fraction
        "2026-10-31T23:59:59.250000",  # naive, 20+ characters
        "31/10/2026 23:59",
        "2026-10-31",
        "2026-10-31T23:59Z",  # too short
        "yesterday at noon please",
        "1730419199",
        "1730419199999000000000",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-10-31T25:00:00Z",
        "2026-10-31T23:60:00Z",
        "2026-10-31T23:59:59.250Zjunk",
        "2026-10-31T23:59:59+25:00",
        "2026/10/31T23:59:59Z",
        "2026-10-31X23:59:59Z",
    ],
)
def test_parse_envelope_bad_time_is_invalid_timestamp(value: str) -> None:
    result = parse_envelope(json.dumps(event(time=value)))

    assert isinstance(result, Rejection)
    assert result.code is ReasonCode.INVALID_TIMESTAMP
    assert value[:20] in result.detail


@pytest.mark.parametrize(
    "value",
    [
        "2026-10-31T23:59:59",
        "2026-10-31T23:59:59.999999",
        "2026-10-31T23:59:59.999999999",
    ],
)
def test_parse_time_naive_timestamp_is_none(value: str) -> None:
    assert parse_time(value) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-10-31T23:59:59.250Z", datetime(2026, 10, 31, 23, 59, 59, 250000, tzinfo=UTC)),
        ("2026-10-31T23:59:59Z", datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC)),
        ("2026-10-31T23:59:59+00:00", datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC)),
        ("2026-10-31T23:59:59-00:00", datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC)),
        ("2026-10-31t23:59:59z", datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC)),
        ("2026-11-01T01:30:00+02:00", datetime(2026, 10, 31, 23, 30, tzinfo=UTC)),
        ("2026-10-31T23:59:59.25-05:00", datetime(2026, 11, 1, 4, 59, 59, 250000, tzinfo=UTC)),
        (
            "2026-11-01T05:29:59.123456+05:30",
            datetime(2026, 10, 31, 23, 59, 59, 123456, tzinfo=UTC),
        ),
    ],
)
def test_parse_time_offset_converted_to_utc(value: str, expected: datetime) -> None:
    parsed = parse_time(value)

    assert parsed == expected
    assert parsed is not None
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    [
        "2026-W44-6T23:59:59Z",  # ISO week date
        "2026-10-31T23:59+01:00",  # no seconds
        "2026-10-31T23:59:59,250Z",  # comma before the fraction
        "2026-10-31T23:59:59+0100",  # offset without a colon
        "2026-10-31T235959.000Z",  # basic-format time
        "2026-10-31T23:59:59.250+01:00:30",  # offset with seconds
    ],
)
def test_parse_time_non_rfc3339_iso8601_is_none(value: str) -> None:
    assert parse_time(value) is None


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_parse_time_out_of_range_after_offset_is_none(value: str) -> None:
    assert parse_time(value) is None


# --- dataschema: the schema version an event names -------------------------------------------


@pytest.mark.parametrize(
    ("dataschema", "version"),
    [
        ("schemas/llm_tokens/v2", 2),
        ("schemas/llm_tokens/v1.avsc", 1),
        ("v3", 3),
        ("v3.avsc", 3),
        ("https://schemas.example.com/meters/llm_tokens/v12", 12),
        ("urn:meterstream:llm_tokens:v7", 7),
        ("schemas/llm_tokens/v999999", 999999),
        ("/v1", 1),
    ],
)
def test_parse_envelope_dataschema_names_version_by_last_segment(
    dataschema: str, version: int
) -> None:
    result = parse_envelope(json.dumps(event(dataschema=dataschema)))

    assert isinstance(result, Envelope)
    assert result.schema_version == version


@pytest.mark.parametrize("doc", [event(), event(dataschema=None)])
def test_parse_envelope_absent_or_null_dataschema_means_current_version(
    doc: dict[str, Any],
) -> None:
    result = parse_envelope(json.dumps(doc))

    assert isinstance(result, Envelope)
    assert result.schema_version is None


@pytest.mark.parametrize(
    "dataschema",
    [
        "",
        "x",
        "v",
        "v0",
        "v01",
        "v-1",
        "V2",
        "v2.json",
        "v2.avsc.bak",
        "v1000000",
        "schemas/llm_tokens/v2/",
        "schemas/llm_tokens/version2",
        "schemas/llm_tokens/llm_tokens-v2",
        "schemas/llm_tokens/v2?rev=3",
        "schemas/llm_tokens/v 2",
        2,
        1.5,
        True,
        ["v2"],
        {"version": 2},
    ],
)
def test_parse_envelope_dataschema_without_version_is_invalid_envelope(dataschema: Any) -> None:
    result = parse_envelope(json.dumps(event(dataschema=dataschema)))

    assert isinstance(result, Rejection)
    assert result.code is ReasonCode.INVALID_ENVELOPE
    assert result.detail.startswith("dataschema ")
    assert "v<N>" in result.detail


def test_parse_envelope_dataschema_detail_truncates_value() -> None:
    result = parse_envelope(json.dumps(event(dataschema="x" * 500)))

    assert isinstance(result, Rejection)
    assert "x" * 65 not in result.detail


def test_parse_envelope_dataschema_with_trailing_newline_is_invalid_envelope() -> None:
    assert (
        rejection_code(json.dumps(event(dataschema="schemas/llm_tokens/v2\n")))
        is ReasonCode.INVALID_ENVELOPE
    )


# --- check order inside the envelope ---------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        # Missing fields are reported before any field's type.
        ({"subject": None, "id": 5}, ReasonCode.MISSING_FIELD),
        ({"data": None, "dataschema": 5}, ReasonCode.MISSING_FIELD),
        # Field types, the id length, data and dataschema come before the account and time.
        ({"subject": "bad account", "dataschema": "x"}, ReasonCode.INVALID_ENVELOPE),
        ({"time": "yesterday", "data": []}, ReasonCode.INVALID_ENVELOPE),
        ({"subject": "bad account", "id": "x" * 300}, ReasonCode.INVALID_ENVELOPE),
        # The account is checked before the time.
        ({"subject": "bad account", "time": "yesterday"}, ReasonCode.INVALID_ACCOUNT),
    ],
)
def test_parse_envelope_first_failed_check_gives_the_code(
    overrides: dict[str, Any], code: ReasonCode
) -> None:
    assert rejection_code(json.dumps(event(**overrides))) is code


# --- property tests: Validator.validate never raises ----------------------------------------

PROPERTY = settings(database=None, max_examples=150, deadline=None)

NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([-0.0, 1e29, -1e29, 9.999999999999997e28, 2**31, 2**63, -(2**63) - 1]),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | NUMBERS | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
#: Arbitrary offsets (seconds and microseconds too: isoformat() then writes a non-RFC 3339
#: offset) and RFC 3339 offsets, whole minutes.
ANY_OFFSETS = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
)
OFFSETS = st.integers(min_value=-23 * 60, max_value=23 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
# Any instant parse_time can be given (year 1 and 9999 with an offset overflow: rejected)...
ANY_TIMES = st.datetimes(timezones=ANY_OFFSETS | OFFSETS).map(datetime.isoformat)


def _in_offset(instant: datetime, offset: timezone) -> str:
    return instant.astimezone(offset).isoformat()


# ...and mostly instants inside the time window of the fixed arrival, written in any offset,
# so that draws reach the `data` checks; the window's edges are drawn often.
WINDOW = st.datetimes(
    min_value=(ARRIVED_AT - timedelta(days=35)).replace(tzinfo=None),
    max_value=(ARRIVED_AT + timedelta(minutes=5)).replace(tzinfo=None),
    timezones=st.just(UTC),
)
NEAR_TIMES = st.builds(_in_offset, WINDOW, OFFSETS)
TIMES = NEAR_TIMES | NEAR_TIMES | ANY_TIMES
WELL_TYPED = {
    "string": st.text(max_size=10),
    "int": st.integers(min_value=-(2**31), max_value=2**31 - 1),
    "long": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "double": st.floats(allow_nan=False, allow_infinity=False) | st.integers(),
}
#: The fields of every shipped meter's current version (llm_tokens v2 adds cached_tokens).
SHIPPED_FIELDS = {
    "active_users": {"user_id": "string"},
    "api_calls": {"endpoint": "string", "status": "int"},
    "compute_peak_cores": {"cores": "double", "region": "string"},
    "llm_tokens": {"tokens": "long", "model": "string", "cached_tokens": "long"},
    "prepaid_balance": {"balance_cents": "long"},
    "request_latency_ms": {"latency_ms": "double"},
    "seats": {"seats": "int"},
    "storage_gb_hours": {"gb_hours": "double", "bucket": "string"},
}
METERS = sorted(SHIPPED_FIELDS)
ANY_DATA = st.dictionaries(
    st.sampled_from([*(name for f in SHIPPED_FIELDS.values() for name in f), "other"]),
    JSON_VALUES,
    max_size=5,
)
DATASCHEMAS = st.one_of(
    st.sampled_from(METERS).flatmap(
        lambda meter: st.integers(min_value=0, max_value=4).map(lambda n: f"schemas/{meter}/v{n}")
    ),
    st.integers(min_value=0, max_value=10**7).map(lambda n: f"v{n}.avsc"),
    st.text(max_size=30),
    JSON_VALUES,
)


def meter_data(meter: str) -> st.SearchStrategy[dict[str, Any]]:
    """`data` for `meter`: its fields mostly well typed, so draws reach the quantity."""
    well_formed = st.fixed_dictionaries(
        {
            name: WELL_TYPED[avro_type] | WELL_TYPED[avro_type] | JSON_VALUES
            for name, avro_type in SHIPPED_FIELDS[meter].items()
        }
    )
    return well_formed | well_formed | ANY_DATA


METER_AND_DATA = st.sampled_from(METERS).flatmap(
    lambda meter: st.tuples(st.just(meter), meter_data(meter))
)


def mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a draw from `good`, sometimes any JSON value."""
    return good | good | good | JSON_VALUES


ENVELOPE_FIELDS = {
    "specversion": mostly(st.just("1.0")),
    "id": mostly(st.text(min_size=1, max_size=300)),
    "source": mostly(st.text(min_size=1, max_size=10)),
    "type": mostly(st.sampled_from(METERS) | st.text(max_size=5)),
    "subject": mostly(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,20}", fullmatch=True)),
    "time": mostly(TIMES | st.text(max_size=40)),
    "data": mostly(ANY_DATA),
}
# Every field present (each mostly well formed), or each field maybe absent; maybe a dataschema.
ENVELOPES = st.fixed_dictionaries(ENVELOPE_FIELDS, optional={"dataschema": DATASCHEMAS}) | (
    st.fixed_dictionaries({}, optional={**ENVELOPE_FIELDS, "dataschema": DATASCHEMAS})
)


def assert_one_outcome(
    registry: MeterRegistry, result: ValidEvent | Rejection, arrived_at: datetime = ARRIVED_AT
) -> None:
    """`result` is either a well-formed ValidEvent or a single Rejection with a Validator code."""
    assert isinstance(result, ValidEvent) != isinstance(result, Rejection), result
    if isinstance(result, Rejection):
        assert isinstance(result.code, ReasonCode)
        assert result.code in VALIDATOR_CODES
        assert isinstance(result.detail, str)
        assert result.detail
        return
    meter = registry.version(result.meter, result.version)
    assert meter is not None
    assert result.aggregation is meter.aggregation
    assert result.event_time.utcoffset() == timedelta(0)
    assert arrived_at - timedelta(days=35) <= result.event_time
    assert result.event_time <= arrived_at + timedelta(minutes=5)
    assert result.period_start == date(result.event_time.year, result.event_time.month, 1)
    assert result.dedup_key in (f"id:{result.event_id}", f"ts:{result.meter}:{event_ms(result)}")
    assert -(2**63) <= result.fingerprint < 2**63
    assert (result.dimensions == "") == (not meter.group_by)
    assert result.warning is None  # no shipped version has a sunset
    if result.aggregation is Aggregation.UNIQUE_COUNT:
        assert result.quantity is None
        assert isinstance(result.unique_value, str)
        return
    assert result.unique_value is None
    assert isinstance(result.quantity, Decimal)
    assert result.quantity.is_finite()
    assert abs(result.quantity) < MAX_QUANTITY
    assert result.quantity.as_tuple().exponent in (0, -9)
    if result.aggregation in (Aggregation.SUM, Aggregation.MEAN, Aggregation.COUNT):
        assert result.quantity >= 0


def event_ms(result: ValidEvent) -> int:
    """Epoch milliseconds of the event time, computed without floats."""
    return (result.event_time - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


@PROPERTY
@given(raw=st.text())
def test_validator_arbitrary_text_never_raises(
    registry: MeterRegistry, validator: Validator, raw: str
) -> None:
    assert_one_outcome(registry, validator.validate(raw, ARRIVED_AT))


@PROPERTY
@given(raw=st.binary())
def test_validator_arbitrary_bytes_never_raises(validator: Validator, raw: bytes) -> None:
    result = validator.validate(raw, ARRIVED_AT)

    assert isinstance(result, Rejection)
    assert result.code in VALIDATOR_CODES


@PROPERTY
@given(doc=JSON_VALUES)
def test_validator_arbitrary_json_value_never_raises(
    registry: MeterRegistry, validator: Validator, doc: Any
) -> None:
    assert_one_outcome(registry, validator.validate(json.dumps(doc), ARRIVED_AT))


@PROPERTY
@given(doc=ENVELOPES, as_bytes=st.booleans())
def test_validator_arbitrary_envelope_dict_never_raises(
    registry: MeterRegistry, validator: Validator, doc: dict[str, Any], as_bytes: bool
) -> None:
    text = json.dumps(doc)

    result = validator.validate(text.encode() if as_bytes else text, ARRIVED_AT)

    assert_one_outcome(registry, result)


@PROPERTY
@given(meter_and_data=METER_AND_DATA, time=NEAR_TIMES)
def test_validator_arbitrary_data_for_known_meter_never_raises(
    registry: MeterRegistry,
    validator: Validator,
    meter_and_data: tuple[str, dict[str, Any]],
    time: str,
) -> None:
    meter, data = meter_and_data

    # A valid envelope, so every draw reaches the time window and the meter's field checks.
    result = validator.validate(json.dumps(event(type=meter, data=data, time=time)), ARRIVED_AT)

    assert_one_outcome(registry, result)


# --- property test: random mutations of a valid event ----------------------------------------

MUTATIONS = ("drop", "retype", "text", "dataschema")
ENVELOPE_NAMES = ("specversion", "id", "source", "type", "subject", "time", "data", "dataschema")


def _kind(value: Any) -> type:
    # bool is a subclass of int in Python but another type in JSON.
    return bool if isinstance(value, bool) else type(value)


def mutate(doc: dict[str, Any], meter: str, draw: st.DataObject) -> None:
    """Apply one random mutation to `doc`: drop a field, change a type, a random string or
    a random dataschema, in the envelope or in `data`."""
    mutation = draw.draw(st.sampled_from(MUTATIONS), label="mutation")
    if mutation == "dataschema":
        doc["dataschema"] = draw.draw(DATASCHEMAS, label="dataschema")
        return
    in_data = isinstance(doc.get("data"), dict) and draw.draw(st.booleans(), label="in data")
    target = doc["data"] if in_data else doc
    names = [*SHIPPED_FIELDS[meter], "extra"] if in_data else list(ENVELOPE_NAMES)
    name = draw.draw(st.sampled_from(names), label="field")
    if mutation == "drop":
        target.pop(name, None)
    elif mutation == "retype":
        current = _kind(target.get(name))
        target[name] = draw.draw(
            JSON_VALUES.filter(lambda v: _kind(v) is not current), label="value"
        )
    else:
        target[name] = draw.draw(st.text(max_size=40), label="text")


@settings(database=None, max_examples=300, deadline=None)
@given(meter=st.sampled_from(METERS), mutations=st.integers(1, 4), draw=st.data())
def test_validator_mutated_valid_event_yields_exactly_one_outcome(
    registry: MeterRegistry, validator: Validator, meter: str, mutations: int, draw: st.DataObject
) -> None:
    doc = event(type=meter, data=dict(GOOD_DATA[meter]))
    assert isinstance(validator.validate(json.dumps(doc), ARRIVED_AT), ValidEvent)
    for _ in range(mutations):
        mutate(doc, meter, draw)

    result = validator.validate(json.dumps(doc).encode(), ARRIVED_AT)

    assert_one_outcome(registry, result)
