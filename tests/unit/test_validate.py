"""Unit tests for meterstream.rules.validate: per-meter checks, check order, and the ValidEvent.

Every test passes a fixed `arrived_at` (see tests/unit/samples.py), so none depends on the day.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from meterstream.errors import SchemaError
from meterstream.events import parse_envelope
from meterstream.meters.model import Aggregation
from meterstream.meters.registry import MeterRegistry, parse_meter
from meterstream.rules.reasons import ReasonCode, Rejection
from meterstream.rules.validate import (
    DEDUP_WINDOW,
    MAX_CLOCK_SKEW,
    MAX_QUANTITY,
    CompiledMeter,
    Validator,
    ValidEvent,
    fingerprint,
)
from meterstream.testing import SAMPLE_METERS, cloud_event, rfc3339
from tests.unit.samples import (
    ARRIVED_AT,
    GOOD_DATA,
    LAST_MS_OF_OCT,
    NOV_START,
    NOVEMBER,
    OCTOBER,
    custom_schema,
    raw,
    registry_of,
)

#: The sunset of `custom` v1 in the deprecation tests.
SUNSET = datetime(2026, 11, 1, tzinfo=UTC)


def with_data(meter: str, **changes: Any) -> dict[str, Any]:
    """The meter's good data with `changes` applied."""
    return {**GOOD_DATA[meter], **changes}


def without_field(meter: str, name: str) -> dict[str, Any]:
    """The meter's good data without field `name`."""
    return {k: v for k, v in GOOD_DATA[meter].items() if k != name}


def custom_meter(fields: list[dict[str, Any]], **meta: Any) -> CompiledMeter:
    """A compiled meter `custom` with the given Avro fields (SUM of `q` unless `meta` says)."""
    return CompiledMeter.compile(parse_meter(custom_schema(fields, **meta), "custom/v1.avsc"))


def rejected(result: ValidEvent | Rejection | Decimal | None, code: ReasonCode) -> Rejection:
    """Assert `result` is a rejection with `code` and return it."""
    assert isinstance(result, Rejection), result
    assert result.code is code, result
    return result


def accepted(result: ValidEvent | Rejection) -> ValidEvent:
    """Assert `result` is a ValidEvent and return it."""
    assert isinstance(result, ValidEvent), result
    return result


@pytest.fixture(scope="module")
def sunset_validator() -> Validator:
    """Meter `custom`: v1 deprecated with sunset SUNSET, v2 current (both SUM of `q`)."""
    return Validator(
        registry_of(
            custom_schema(sunset=rfc3339(SUNSET)),
            custom_schema(version=2),
        )
    )


def custom_raw(moment: datetime = LAST_MS_OF_OCT, **envelope: Any) -> str:
    """A `custom` event of q=5."""
    return json.dumps(cloud_event("evt-1", "acct-42", "custom", moment, {"q": 5}) | envelope)


# --- the shipped meters ----------------------------------------------------------------------


def test_validator_llm_tokens_event_becomes_valid_event(validator: Validator) -> None:
    result = validator.validate(raw("llm_tokens"), ARRIVED_AT)

    assert result == ValidEvent(
        event_id="evt-1",
        account_id="acct-42",
        meter="llm_tokens",
        version=2,
        aggregation=Aggregation.SUM,
        event_time=LAST_MS_OF_OCT,
        period_start=OCTOBER,
        dimensions='{"model":"small"}',
        quantity=Decimal("812.000000000"),
        unique_value=None,
        dedup_key="id:evt-1",
        fingerprint=fingerprint("llm_tokens", LAST_MS_OF_OCT, {"tokens": 812, "model": "small"}),
        warning=None,
    )


@pytest.mark.parametrize(
    "case",
    [
        ("active_users", Aggregation.UNIQUE_COUNT, None, "user-1", ""),
        ("api_calls", Aggregation.COUNT, "1", None, ""),
        ("compute_peak_cores", Aggregation.MAX, "8.500000000", None, '{"region":"eu"}'),
        ("llm_tokens", Aggregation.SUM, "812.000000000", None, '{"model":"small"}'),
        ("prepaid_balance", Aggregation.MIN, "1250.000000000", None, ""),
        ("request_latency_ms", Aggregation.MEAN, "12.500000000", None, ""),
        ("seats", Aggregation.LATEST, "40.000000000", None, ""),
        ("storage_gb_hours", Aggregation.SUM, "1.500000000", None, ""),
    ],
)
def test_validator_shipped_meter_gives_its_kinds_quantity(
    validator: Validator, case: tuple[str, Aggregation, str | None, str | None, str]
) -> None:
    meter, aggregation, quantity, unique_value, dimensions = case

    result = accepted(validator.validate(raw(meter), ARRIVED_AT))

    assert result.meter == meter
    assert result.aggregation is aggregation
    assert (None if result.quantity is None else str(result.quantity)) == quantity
    assert result.unique_value == unique_value
    assert result.dimensions == dimensions


def test_validator_every_sample_meter_has_good_data() -> None:
    assert set(GOOD_DATA) == set(SAMPLE_METERS)


@pytest.mark.parametrize("status", [200, 500, 0, -(2**31), 2**31 - 1])
def test_validator_count_meter_quantity_ignores_field_values(
    validator: Validator, status: int
) -> None:
    result = accepted(
        validator.validate(raw("api_calls", with_data("api_calls", status=status)), ARRIVED_AT)
    )

    assert result.quantity == 1


def test_validator_period_start_follows_event_time(validator: Validator) -> None:
    october = accepted(validator.validate(raw("llm_tokens", moment=LAST_MS_OF_OCT), ARRIVED_AT))
    november = accepted(validator.validate(raw("llm_tokens", moment=NOV_START), ARRIVED_AT))

    assert (october.period_start, november.period_start) == (OCTOBER, NOVEMBER)


def test_validator_bytes_payload_accepted(validator: Validator) -> None:
    assert isinstance(validator.validate(raw("llm_tokens").encode(), ARRIVED_AT), ValidEvent)


def test_validator_extra_data_fields_are_ignored(validator: Validator) -> None:
    data = with_data("llm_tokens", region="eu", tokens=3)

    result = accepted(validator.validate(raw("llm_tokens", data), ARRIVED_AT))

    assert result.quantity == 3
    assert result.dimensions == '{"model":"small"}'


def test_validator_envelope_rejection_passes_through_without_identity(
    validator: Validator,
) -> None:
    result = rejected(validator.validate("{", ARRIVED_AT), ReasonCode.MALFORMED_JSON)

    assert (result.account_id, result.meter, result.event_id) == (None, None, None)


def test_validator_rejection_after_envelope_names_account_meter_and_id(
    validator: Validator,
) -> None:
    payload = raw("llm_tokens", with_data("llm_tokens", tokens="x"), event_id="evt-9")

    result = rejected(validator.validate(payload, ARRIVED_AT), ReasonCode.WRONG_TYPE)

    assert (result.account_id, result.meter, result.event_id) == ("acct-42", "llm_tokens", "evt-9")


def test_validator_default_arrival_is_now(validator: Validator) -> None:
    # Holds on any day: the default arrival is the clock, so "now" is in the window and a day
    # ahead is not.
    now = datetime.now(UTC)

    assert isinstance(validator.validate(raw("llm_tokens", moment=now)), ValidEvent)
    rejected(
        validator.validate(raw("llm_tokens", moment=now + timedelta(days=1))),
        ReasonCode.TIMESTAMP_IN_FUTURE,
    )


def test_validator_validate_envelope_matches_validate(validator: Validator) -> None:
    envelope = parse_envelope(raw("seats"))
    assert not isinstance(envelope, Rejection)

    assert validator.validate_envelope(envelope, ARRIVED_AT) == validator.validate(
        raw("seats"), ARRIVED_AT
    )


# --- check order -----------------------------------------------------------------------------

FUTURE = ARRIVED_AT + timedelta(hours=1)
ANCIENT = ARRIVED_AT - timedelta(days=40)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        # The meter before its version, the time window and the data.
        (raw("api_calls", {"status": "x"}, type="nope", moment=FUTURE), ReasonCode.UNKNOWN_METER),
        (
            raw("llm_tokens", {}, moment=FUTURE, dataschema="schemas/llm_tokens/v9"),
            ReasonCode.UNKNOWN_SCHEMA_VERSION,
        ),
        # The time window before the data.
        (raw("llm_tokens", {"tokens": "x"}, moment=FUTURE), ReasonCode.TIMESTAMP_IN_FUTURE),
        (raw("llm_tokens", {}, moment=ANCIENT), ReasonCode.TIMESTAMP_TOO_OLD),
        # Fields in schema order: tokens (wrong type) comes before model (missing)...
        (raw("llm_tokens", {"tokens": "x"}), ReasonCode.WRONG_TYPE),
        # ...and tokens (missing) before model (wrong type).
        (raw("llm_tokens", {"model": 5}), ReasonCode.MISSING_FIELD),
        # Types before values.
        (raw("llm_tokens", {"tokens": -1.0, "model": "m"}), ReasonCode.WRONG_TYPE),
        (raw("llm_tokens", {"tokens": -1, "model": 5}), ReasonCode.WRONG_TYPE),
    ],
)
def test_validator_first_failed_check_gives_the_code(
    validator: Validator, payload: str, code: ReasonCode
) -> None:
    rejected(validator.validate(payload, ARRIVED_AT), code)


@pytest.mark.parametrize(
    ("payload", "arrived_at", "code"),
    [
        # A version past its sunset is refused before the time window and the data.
        (custom_raw(FUTURE, dataschema="v1"), ARRIVED_AT, ReasonCode.DEPRECATED_SCHEMA_VERSION),
        (
            custom_raw(ANCIENT, dataschema="v1", data={"q": "x"}),
            ARRIVED_AT,
            ReasonCode.DEPRECATED_SCHEMA_VERSION,
        ),
        # Before the sunset, the warning does not stop the other checks.
        (
            custom_raw(SUNSET, dataschema="v1"),
            SUNSET - timedelta(minutes=6),
            ReasonCode.TIMESTAMP_IN_FUTURE,
        ),
        (
            custom_raw(dataschema="v1", data={"q": -1}),
            SUNSET - timedelta(milliseconds=1),
            ReasonCode.INVALID_VALUE,
        ),
    ],
)
def test_validator_deprecation_checked_after_version_before_time(
    sunset_validator: Validator, payload: str, arrived_at: datetime, code: ReasonCode
) -> None:
    rejected(sunset_validator.validate(payload, arrived_at), code)


# --- schema versions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataschema", "version"),
    [
        ({}, 2),
        ({"dataschema": None}, 2),
        ({"dataschema": "schemas/llm_tokens/v1"}, 1),
        ({"dataschema": "schemas/llm_tokens/v2.avsc"}, 2),
        ({"dataschema": "v1"}, 1),
    ],
)
def test_validator_version_is_named_by_dataschema_or_current(
    validator: Validator, dataschema: dict[str, Any], version: int
) -> None:
    result = accepted(validator.validate(raw("llm_tokens", **dataschema), ARRIVED_AT))

    assert result.version == version


@pytest.mark.parametrize(
    ("meter", "dataschema", "known"),
    [
        ("llm_tokens", "schemas/llm_tokens/v3", "[1, 2]"),
        ("llm_tokens", "v999999", "[1, 2]"),
        ("api_calls", "schemas/api_calls/v2", "[1]"),
    ],
)
def test_validator_unknown_version_is_unknown_schema_version(
    validator: Validator, meter: str, dataschema: str, known: str
) -> None:
    result = rejected(
        validator.validate(raw(meter, dataschema=dataschema), ARRIVED_AT),
        ReasonCode.UNKNOWN_SCHEMA_VERSION,
    )

    version = dataschema.rsplit("v", 1)[1]
    assert result.detail == f"{meter} has no version {version}; known: {known}"
    assert result.meter == meter


def test_validator_version_decides_which_fields_are_checked(validator: Validator) -> None:
    data = with_data("llm_tokens", cached_tokens="many")

    # v1 has no cached_tokens, so the field is ignored; v2 types it as long.
    v1 = validator.validate(raw("llm_tokens", data, dataschema="v1"), ARRIVED_AT)
    v2 = validator.validate(raw("llm_tokens", data, dataschema="v2"), ARRIVED_AT)

    assert accepted(v1).version == 1
    assert rejected(v2, ReasonCode.WRONG_TYPE).detail == "data.cached_tokens must be long, got str"


@pytest.mark.parametrize("cached", [{}, {"cached_tokens": None}, {"cached_tokens": 10}])
def test_validator_v2_optional_field_may_be_absent_or_null(
    validator: Validator, cached: dict[str, Any]
) -> None:
    data = {**GOOD_DATA["llm_tokens"], **cached}

    assert accepted(validator.validate(raw("llm_tokens", data), ARRIVED_AT)).version == 2


def test_validator_uses_newest_meter_version() -> None:
    validator = Validator(
        registry_of(
            custom_schema(), custom_schema(version=2, aggregation="COUNT", value_field=None)
        )
    )

    result = accepted(validator.validate(custom_raw(), ARRIVED_AT))

    assert (result.version, result.aggregation, result.quantity) == (2, Aggregation.COUNT, 1)


def test_validator_uses_newest_version_numerically() -> None:
    validator = Validator(
        registry_of(custom_schema(version=2), custom_schema(version=10), custom_schema(version=9))
    )

    assert accepted(validator.validate(custom_raw(), ARRIVED_AT)).version == 10


# --- DEPRECATED_SCHEMA_VERSION ---------------------------------------------------------------


def test_validator_deprecated_version_before_sunset_accepted_with_warning(
    sunset_validator: Validator,
) -> None:
    result = accepted(
        sunset_validator.validate(custom_raw(dataschema="v1"), SUNSET - timedelta(milliseconds=1))
    )

    assert result.version == 1
    assert result.quantity == 5
    assert result.warning is not None
    assert result.warning.code is ReasonCode.DEPRECATED_SCHEMA_VERSION
    assert result.warning.detail == (
        "custom v1 is deprecated, sunset 2026-11-01T00:00:00+00:00; send v2"
    )


@pytest.mark.parametrize("after", [timedelta(0), timedelta(milliseconds=1), timedelta(days=30)])
def test_validator_deprecated_version_at_or_after_sunset_is_rejected(
    sunset_validator: Validator, after: timedelta
) -> None:
    result = rejected(
        sunset_validator.validate(custom_raw(dataschema="v1"), SUNSET + after),
        ReasonCode.DEPRECATED_SCHEMA_VERSION,
    )

    assert "sunset 2026-11-01T00:00:00+00:00" in result.detail
    assert (result.meter, result.event_id) == ("custom", "evt-1")


def test_validator_sunset_applies_to_arrival_not_event_time(sunset_validator: Validator) -> None:
    # Sent before the sunset, but reaching Kafka after it: refused.
    payload = custom_raw(SUNSET - timedelta(hours=1), dataschema="v1")

    rejected(sunset_validator.validate(payload, SUNSET), ReasonCode.DEPRECATED_SCHEMA_VERSION)


@pytest.mark.parametrize("dataschema", [{}, {"dataschema": "v2"}])
def test_validator_current_version_has_no_warning(
    sunset_validator: Validator, dataschema: dict[str, Any]
) -> None:
    result = accepted(sunset_validator.validate(custom_raw(**dataschema), SUNSET + timedelta(1)))

    assert (result.version, result.warning) == (2, None)


def test_validator_current_version_with_sunset_warns_without_dataschema() -> None:
    # `schemas check` forbids this, but the validator still honours the sunset.
    validator = Validator(registry_of(custom_schema(sunset=rfc3339(SUNSET))))

    warned = accepted(validator.validate(custom_raw(), SUNSET - timedelta(milliseconds=1)))
    refused = validator.validate(custom_raw(), SUNSET)

    assert warned.warning is not None
    assert warned.warning.detail.endswith("send v1")
    rejected(refused, ReasonCode.DEPRECATED_SCHEMA_VERSION)


# --- TIMESTAMP_IN_FUTURE and TIMESTAMP_TOO_OLD -----------------------------------------------


def test_validator_time_window_constants() -> None:
    assert (timedelta(minutes=5), timedelta(days=35)) == (MAX_CLOCK_SKEW, DEDUP_WINDOW)


@pytest.mark.parametrize(
    "time",
    [
        "2026-11-02T12:05:00Z",  # exactly 5 minutes after arrival
        "2026-11-02T12:05:00.000000Z",
        "2026-11-02T14:05:00+02:00",  # the same instant in another offset
        "2026-11-02T12:00:00Z",  # at arrival
        "2026-09-28T12:00:00Z",  # exactly 35 days before arrival
        "2026-09-28T07:00:00-05:00",
    ],
)
def test_validator_time_at_window_edge_is_accepted(validator: Validator, time: str) -> None:
    assert datetime(2026, 11, 2, 12, tzinfo=UTC) == ARRIVED_AT

    assert isinstance(validator.validate(raw("llm_tokens", time=time), ARRIVED_AT), ValidEvent)


@pytest.mark.parametrize(
    "time",
    [
        "2026-11-02T12:05:00.001Z",  # 5 minutes and 1 ms after arrival
        "2026-11-02T12:05:00.000001Z",  # 5 minutes and 1 microsecond
        "2026-11-02T14:05:00.001+02:00",
        "2026-11-03T12:00:00Z",
        "2100-01-01T00:00:00Z",
    ],
)
def test_validator_time_beyond_skew_is_timestamp_in_future(validator: Validator, time: str) -> None:
    result = rejected(
        validator.validate(raw("llm_tokens", time=time), ARRIVED_AT),
        ReasonCode.TIMESTAMP_IN_FUTURE,
    )

    assert "more than 0:05:00 after its arrival at 2026-11-02T12:00:00+00:00" in result.detail


@pytest.mark.parametrize(
    "time",
    [
        "2026-09-28T11:59:59.999Z",  # 35 days and 1 ms before arrival
        "2026-09-28T11:59:59.999999Z",
        "2026-09-28T06:59:59.999-05:00",
        "2026-01-01T00:00:00Z",
        "1970-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z",
    ],
)
def test_validator_time_beyond_dedup_window_is_timestamp_too_old(
    validator: Validator, time: str
) -> None:
    result = rejected(
        validator.validate(raw("llm_tokens", time=time), ARRIVED_AT),
        ReasonCode.TIMESTAMP_TOO_OLD,
    )

    assert "more than 35 days before its arrival at 2026-11-02T12:00:00+00:00" in result.detail


def test_validator_window_moves_with_arrival(validator: Validator) -> None:
    payload = raw("llm_tokens", moment=LAST_MS_OF_OCT)

    assert isinstance(validator.validate(payload, LAST_MS_OF_OCT + DEDUP_WINDOW), ValidEvent)
    rejected(
        validator.validate(payload, LAST_MS_OF_OCT + DEDUP_WINDOW + timedelta(milliseconds=1)),
        ReasonCode.TIMESTAMP_TOO_OLD,
    )
    assert isinstance(validator.validate(payload, LAST_MS_OF_OCT - MAX_CLOCK_SKEW), ValidEvent)
    rejected(
        validator.validate(payload, LAST_MS_OF_OCT - MAX_CLOCK_SKEW - timedelta(milliseconds=1)),
        ReasonCode.TIMESTAMP_IN_FUTURE,
    )


# --- quantities: SUM and rounding to DECIMAL(38, 9) ------------------------------------------


@pytest.mark.parametrize(
    ("meter", "data", "expected"),
    [
        ("llm_tokens", {"tokens": 0, "model": "m"}, "0E-9"),
        ("llm_tokens", {"tokens": 2**63 - 1, "model": "m"}, "9223372036854775807.000000000"),
        ("storage_gb_hours", {"gb_hours": 0.1, "bucket": "b"}, "0.100000000"),
        ("storage_gb_hours", {"gb_hours": 2.675, "bucket": "b"}, "2.675000000"),
        ("storage_gb_hours", {"gb_hours": 1 / 3, "bucket": "b"}, "0.333333333"),
        ("storage_gb_hours", {"gb_hours": 0.1234567895, "bucket": "b"}, "0.123456790"),
        ("storage_gb_hours", {"gb_hours": 1e-10, "bucket": "b"}, "0E-9"),
        ("storage_gb_hours", {"gb_hours": 5e-324, "bucket": "b"}, "0E-9"),
        ("storage_gb_hours", {"gb_hours": -0.0, "bucket": "b"}, "0E-9"),  # not -0E-9
        ("storage_gb_hours", {"gb_hours": 12345.0, "bucket": "b"}, "12345.000000000"),
        ("storage_gb_hours", {"gb_hours": 7, "bucket": "b"}, "7.000000000"),  # int for double
        ("storage_gb_hours", {"gb_hours": 1e17, "bucket": "b"}, "100000000000000000.000000000"),
        ("storage_gb_hours", {"gb_hours": 10**19, "bucket": "b"}, "10000000000000000000.000000000"),
        ("request_latency_ms", {"latency_ms": -0.0}, "0E-9"),
    ],
)
def test_validator_quantity_is_decimal_with_nine_places(
    validator: Validator, meter: str, data: dict[str, Any], expected: str
) -> None:
    result = accepted(validator.validate(raw(meter, data), ARRIVED_AT))

    assert isinstance(result.quantity, Decimal)
    assert str(result.quantity) == expected
    assert result.quantity.as_tuple().exponent == -9


def test_validator_float_keeps_its_decimal_repr(validator: Validator) -> None:
    # Decimal(0.1) would be 0.1000000000000000055511151231257827...; repr() gives "0.1".
    data = with_data("storage_gb_hours", gb_hours=0.1)

    result = accepted(validator.validate(raw("storage_gb_hours", data), ARRIVED_AT))

    assert result.quantity == Decimal("0.100000000")
    assert sum([result.quantity] * 10) == Decimal(1)


# --- quantities: negatives and the 10^29 limit -----------------------------------------------


@pytest.mark.parametrize(
    ("meter", "data", "expected"),
    [
        ("prepaid_balance", {"balance_cents": -5000}, "-5000.000000000"),
        ("prepaid_balance", {"balance_cents": -(2**63)}, "-9223372036854775808.000000000"),
        ("compute_peak_cores", {"cores": -1.5, "region": "eu"}, "-1.500000000"),
        ("seats", {"seats": -3}, "-3.000000000"),
        ("seats", {"seats": -(2**31)}, "-2147483648.000000000"),
    ],
)
def test_validator_negative_value_accepted_for_min_max_latest(
    validator: Validator, meter: str, data: dict[str, Any], expected: str
) -> None:
    result = accepted(validator.validate(raw(meter, data), ARRIVED_AT))

    assert str(result.quantity) == expected


@pytest.mark.parametrize(
    ("meter", "name", "value"),
    [
        ("llm_tokens", "tokens", -1),
        ("llm_tokens", "tokens", -(2**63)),
        ("storage_gb_hours", "gb_hours", -0.5),
        ("storage_gb_hours", "gb_hours", -1e-9),
        ("storage_gb_hours", "gb_hours", -1e-12),  # rounds to 0, but is still negative
        ("storage_gb_hours", "gb_hours", -3),
        ("storage_gb_hours", "gb_hours", -1e300),
        ("request_latency_ms", "latency_ms", -0.001),
        ("request_latency_ms", "latency_ms", -12),
    ],
)
def test_validator_negative_sum_or_mean_value_is_invalid_value(
    validator: Validator, meter: str, name: str, value: float
) -> None:
    result = rejected(
        validator.validate(raw(meter, with_data(meter, **{name: value})), ARRIVED_AT),
        ReasonCode.INVALID_VALUE,
    )

    assert result.detail == f"data.{name} must be >= 0, got {value}"


@pytest.mark.parametrize(
    ("meter", "name", "value"),
    [
        ("storage_gb_hours", "gb_hours", 1e29),
        ("storage_gb_hours", "gb_hours", 1e300),
        ("storage_gb_hours", "gb_hours", 10**29),  # read as a double: larger than 64 bits
        ("request_latency_ms", "latency_ms", 1.5e29),
        ("compute_peak_cores", "cores", 1e29),
        ("compute_peak_cores", "cores", -1e29),  # MAX allows negatives, not unbounded ones
        ("compute_peak_cores", "cores", -1e300),
    ],
)
def test_validator_value_of_1e29_or_more_is_invalid_value(
    validator: Validator, meter: str, name: str, value: float
) -> None:
    result = rejected(
        validator.validate(raw(meter, with_data(meter, **{name: value})), ARRIVED_AT),
        ReasonCode.INVALID_VALUE,
    )

    assert result.detail.startswith(f"data.{name} is ")
    assert "beyond the limit of ±1e+29" in result.detail


@pytest.mark.parametrize(
    ("meter", "name", "value", "expected"),
    [
        # The largest double below 1e29: 29 integer digits fit DECIMAL(38, 9).
        (
            "storage_gb_hours",
            "gb_hours",
            9.999999999999997e28,
            "99999999999999970000000000000.000000000",
        ),
        (
            "compute_peak_cores",
            "cores",
            -9.999999999999997e28,
            "-99999999999999970000000000000.000000000",
        ),
    ],
)
def test_validator_value_just_below_1e29_accepted(
    validator: Validator, meter: str, name: str, value: float, expected: str
) -> None:
    result = accepted(validator.validate(raw(meter, with_data(meter, **{name: value})), ARRIVED_AT))

    assert math.nextafter(1e29, 0) == abs(value)
    assert str(result.quantity) == expected
    assert result.quantity is not None
    assert abs(result.quantity) < MAX_QUANTITY


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_compiled_meter_non_finite_value_is_invalid_value(
    registry: MeterRegistry, value: float
) -> None:
    # JSON cannot carry these (MALFORMED_JSON), but an Envelope built in code can.
    meter = registry.current("compute_peak_cores")
    assert meter is not None

    result = rejected(
        CompiledMeter.compile(meter).check({"cores": value, "region": "eu"}),
        ReasonCode.INVALID_VALUE,
    )

    assert result.detail == f"data.cores is {value}"


# --- UNIQUE_COUNT ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("avro_type", "value", "unique_value"),
    [
        ("string", "user-1", "user-1"),
        ("string", "", ""),
        ("string", "ünï", "ünï"),
        ("long", 42, "42"),
        ("long", -(2**63), "-9223372036854775808"),
        ("int", 0, "0"),
        ("boolean", True, "true"),
        ("boolean", False, "false"),
    ],
)
def test_validator_unique_count_value_is_canonical_text(
    avro_type: str, value: Any, unique_value: str
) -> None:
    validator = Validator(
        registry_of(
            custom_schema(
                [{"name": "who", "type": avro_type}], aggregation="UNIQUE_COUNT", value_field="who"
            )
        )
    )
    payload = json.dumps(cloud_event("evt-1", "acct-42", "custom", LAST_MS_OF_OCT, {"who": value}))

    result = accepted(validator.validate(payload, ARRIVED_AT))

    assert (result.quantity, result.unique_value) == (None, unique_value)


@pytest.mark.parametrize(
    ("user_id", "code"),
    [
        (42, ReasonCode.WRONG_TYPE),
        (True, ReasonCode.WRONG_TYPE),
        (["u"], ReasonCode.WRONG_TYPE),
        (None, ReasonCode.MISSING_FIELD),
    ],
)
def test_validator_unique_count_value_checked_against_its_type(
    validator: Validator, user_id: Any, code: ReasonCode
) -> None:
    rejected(validator.validate(raw("active_users", {"user_id": user_id}), ARRIVED_AT), code)


# --- dimensions (segments) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meter", "data", "dimensions"),
    [
        ("llm_tokens", {"tokens": 1, "model": "large"}, '{"model":"large"}'),
        ("llm_tokens", {"model": "modèle", "tokens": 1}, '{"model":"modèle"}'),
        ("llm_tokens", {"tokens": 1, "model": 'a"b'}, '{"model":"a\\"b"}'),
        ("llm_tokens", {"tokens": 1, "model": ""}, '{"model":""}'),
        ("compute_peak_cores", {"cores": 2.0, "region": "us"}, '{"region":"us"}'),
        ("storage_gb_hours", {"gb_hours": 1, "bucket": "media"}, ""),  # no group_by
        ("api_calls", {"endpoint": "/v1", "status": 200}, ""),
    ],
)
def test_validator_dimensions_are_canonical_json_of_group_by_values(
    validator: Validator, meter: str, data: dict[str, Any], dimensions: str
) -> None:
    assert accepted(validator.validate(raw(meter, data), ARRIVED_AT)).dimensions == dimensions


def test_validator_dimensions_sort_keys_and_keep_json_types() -> None:
    fields = [
        {"name": "q", "type": "long"},
        {"name": "region", "type": "string"},
        {"name": "tier", "type": "int"},
        {"name": "flag", "type": "boolean"},
    ]
    validator = Validator(registry_of(custom_schema(fields, group_by=["region", "tier", "flag"])))
    data = {"q": 1, "tier": 3, "flag": True, "region": "eu", "other": "x"}
    payload = json.dumps(cloud_event("evt-1", "acct-42", "custom", LAST_MS_OF_OCT, data))

    result = accepted(validator.validate(payload, ARRIVED_AT))

    assert result.dimensions == '{"flag":true,"region":"eu","tier":3}'


# --- dedup_key -------------------------------------------------------------------------------


def test_validator_event_id_meter_dedup_key_is_the_id(validator: Validator) -> None:
    result = accepted(validator.validate(raw("llm_tokens", event_id="evt-77"), ARRIVED_AT))

    assert result.dedup_key == "id:evt-77"


def test_validator_seats_dedup_key_is_meter_and_epoch_ms(validator: Validator) -> None:
    # 2026-10-31T23:59:59.999Z: 20757 days * 86400 s + 86399 s, then 999 ms.
    result = accepted(validator.validate(raw("seats", event_id="evt-77"), ARRIVED_AT))

    assert result.dedup_key == "ts:seats:1793491199999"
    assert (20757 * 86400 + 86399) * 1000 + 999 == 1793491199999


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("2026-10-31T23:59:59.999Z", "2026-11-01T00:59:59.999+01:00", True),  # one instant
        ("2026-10-31T23:59:59.9991Z", "2026-10-31T23:59:59.9999Z", True),  # same millisecond
        ("2026-10-31T23:59:59Z", "2026-10-31T23:59:59.000Z", True),
        ("2026-10-31T23:59:59.998Z", "2026-10-31T23:59:59.999Z", False),
        ("2026-10-31T23:59:59.999Z", "2026-11-01T00:00:00Z", False),
    ],
)
def test_validator_seats_dedup_key_ignores_id_and_offset(
    validator: Validator, first: str, second: str, same: bool
) -> None:
    one = accepted(validator.validate(raw("seats", event_id="a", time=first), ARRIVED_AT))
    two = accepted(validator.validate(raw("seats", event_id="b", time=second), ARRIVED_AT))

    assert (one.dedup_key == two.dedup_key) is same


def test_validator_dedup_key_namespaces_do_not_collide(validator: Validator) -> None:
    result = accepted(validator.validate(raw("llm_tokens", event_id="ts:seats:1"), ARRIVED_AT))

    assert result.dedup_key == "id:ts:seats:1"


# --- fingerprint -----------------------------------------------------------------------------


def test_fingerprint_is_stable_across_releases() -> None:
    # Flink state keeps fingerprints for 35 days: a change would turn retries into conflicts.
    value = fingerprint("llm_tokens", LAST_MS_OF_OCT, {"tokens": 812, "model": "small"})

    assert value == fingerprint("llm_tokens", LAST_MS_OF_OCT, {"model": "small", "tokens": 812})
    assert value == -3716221512283321876


@pytest.mark.parametrize(
    "changes",
    [
        {"event_id": "evt-other"},
        {"source": "another-gateway"},
        {"account": "acct-other"},
        {"time": "2026-11-01T00:59:59.999+01:00"},  # the same instant
        {"data": {"model": "small", "tokens": 812}},  # another key order
    ],
)
def test_fingerprint_ignores_id_source_account_offset_and_key_order(
    validator: Validator, changes: dict[str, Any]
) -> None:
    base = accepted(validator.validate(raw("llm_tokens"), ARRIVED_AT))

    other = accepted(validator.validate(raw("llm_tokens", **changes), ARRIVED_AT))

    assert other.fingerprint == base.fingerprint


def test_fingerprint_ignores_nested_key_order() -> None:
    assert fingerprint("m", LAST_MS_OF_OCT, {"a": {"x": 1, "y": [{"p": 1, "q": 2}]}}) == (
        fingerprint("m", LAST_MS_OF_OCT, {"a": {"y": [{"q": 2, "p": 1}], "x": 1}})
    )


@pytest.mark.parametrize(
    ("meter", "moment", "data"),
    [
        ("llm_tokens", LAST_MS_OF_OCT, {"tokens": 813, "model": "small"}),
        ("llm_tokens", LAST_MS_OF_OCT, {"tokens": 812, "model": "large"}),
        ("llm_tokens", LAST_MS_OF_OCT, {"tokens": 812, "model": "small", "cached_tokens": 0}),
        ("llm_tokens", LAST_MS_OF_OCT - timedelta(milliseconds=1), GOOD_DATA["llm_tokens"]),
        ("storage_gb_hours", LAST_MS_OF_OCT, {"tokens": 812, "model": "small"}),
    ],
)
def test_fingerprint_changes_with_meter_time_or_data(
    meter: str, moment: datetime, data: dict[str, Any]
) -> None:
    base = fingerprint("llm_tokens", LAST_MS_OF_OCT, {"tokens": 812, "model": "small"})

    assert fingerprint(meter, moment, data) != base


def test_validator_deeply_nested_extra_field_does_not_raise(validator: Validator) -> None:
    nested: Any = 1
    for _ in range(300):
        nested = [nested]
    payload = raw("llm_tokens", with_data("llm_tokens", trace=nested))

    result = validator.validate(payload, ARRIVED_AT)

    assert isinstance(result, ValidEvent | Rejection)


# --- MISSING_FIELD ---------------------------------------------------------------------------

SHIPPED_FIELDS = [(meter, name) for meter, data in GOOD_DATA.items() for name in data]


@pytest.mark.parametrize(("meter", "name"), SHIPPED_FIELDS)
def test_validator_absent_data_field_is_missing_field(
    validator: Validator, meter: str, name: str
) -> None:
    result = rejected(
        validator.validate(raw(meter, without_field(meter, name)), ARRIVED_AT),
        ReasonCode.MISSING_FIELD,
    )

    assert result.detail == f"data.{name} is required"


@pytest.mark.parametrize(("meter", "name"), SHIPPED_FIELDS)
def test_validator_null_data_field_is_missing_field(
    validator: Validator, meter: str, name: str
) -> None:
    data = with_data(meter, **{name: None})

    rejected(validator.validate(raw(meter, data), ARRIVED_AT), ReasonCode.MISSING_FIELD)


@pytest.mark.parametrize("meter", sorted(GOOD_DATA))
def test_validator_empty_data_is_missing_field(validator: Validator, meter: str) -> None:
    rejected(validator.validate(raw(meter, {}), ARRIVED_AT), ReasonCode.MISSING_FIELD)


# --- WRONG_TYPE ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meter", "name", "value", "avro_type"),
    [
        ("llm_tokens", "tokens", "812", "long"),
        ("llm_tokens", "tokens", True, "long"),
        ("llm_tokens", "tokens", False, "long"),
        ("llm_tokens", "tokens", 812.0, "long"),
        ("llm_tokens", "tokens", 1.5, "long"),
        ("llm_tokens", "tokens", 2**63, "long"),
        ("llm_tokens", "tokens", 2**64 - 1, "long"),
        ("llm_tokens", "tokens", 2**64, "long"),  # read as a double
        ("llm_tokens", "tokens", -(2**63) - 1, "long"),  # read as a double
        ("llm_tokens", "tokens", [812], "long"),
        ("llm_tokens", "tokens", {"n": 812}, "long"),
        ("llm_tokens", "model", 5, "string"),
        ("llm_tokens", "model", False, "string"),
        ("llm_tokens", "cached_tokens", "3", "long"),
        ("api_calls", "status", True, "int"),
        ("api_calls", "status", "200", "int"),
        ("api_calls", "status", 200.0, "int"),
        ("api_calls", "status", 2**31, "int"),
        ("api_calls", "status", -(2**31) - 1, "int"),
        ("api_calls", "endpoint", {"path": "/v1"}, "string"),
        ("storage_gb_hours", "gb_hours", "1.5", "double"),
        ("storage_gb_hours", "gb_hours", True, "double"),
        ("storage_gb_hours", "gb_hours", [1.5], "double"),
        ("storage_gb_hours", "bucket", ["logs"], "string"),
        ("active_users", "user_id", 42, "string"),
        ("compute_peak_cores", "cores", "8", "double"),
        ("compute_peak_cores", "region", 1, "string"),
        ("prepaid_balance", "balance_cents", 10.5, "long"),
        ("prepaid_balance", "balance_cents", "-100", "long"),
        ("request_latency_ms", "latency_ms", "12", "double"),
        ("request_latency_ms", "latency_ms", False, "double"),
        ("seats", "seats", 1.5, "int"),
        ("seats", "seats", 2**31, "int"),
        ("seats", "seats", "40", "int"),
    ],
)
def test_validator_wrong_json_type_is_wrong_type(
    validator: Validator, meter: str, name: str, value: Any, avro_type: str
) -> None:
    data = with_data(meter, **{name: value})

    result = rejected(validator.validate(raw(meter, data), ARRIVED_AT), ReasonCode.WRONG_TYPE)

    assert result.detail.startswith(f"data.{name} must be {avro_type}, got ")


def test_validator_wrong_type_detail_names_python_type(validator: Validator) -> None:
    data = with_data("llm_tokens", tokens=True)

    result = rejected(
        validator.validate(raw("llm_tokens", data), ARRIVED_AT), ReasonCode.WRONG_TYPE
    )

    assert result.detail == "data.tokens must be long, got bool"


# --- UNKNOWN_METER ---------------------------------------------------------------------------


@pytest.mark.parametrize("meter", ["no_such_meter", "LLM_TOKENS", "llm_tokens ", "llm-tokens"])
def test_validator_unknown_type_is_unknown_meter(validator: Validator, meter: str) -> None:
    result = rejected(
        validator.validate(raw("llm_tokens", type=meter), ARRIVED_AT), ReasonCode.UNKNOWN_METER
    )

    assert repr(meter) in result.detail
    assert result.detail.endswith("known: " + ", ".join(sorted(SAMPLE_METERS)))
    assert result.meter == meter


# --- CompiledMeter: optional fields ----------------------------------------------------------


def test_compiled_meter_shipped_schema_fields(registry: MeterRegistry) -> None:
    meter = registry.current("llm_tokens")
    assert meter is not None

    compiled = CompiledMeter.compile(meter)

    assert [(r.name, r.required, r.avro_type) for r in compiled.fields] == [
        ("tokens", True, "long"),
        ("model", True, "string"),
        ("cached_tokens", False, "long"),
    ]


def test_compiled_meter_check_returns_quantity(registry: MeterRegistry) -> None:
    meter = registry.current("storage_gb_hours")
    assert meter is not None

    assert CompiledMeter.compile(meter).check({"gb_hours": 0.1, "bucket": "b"}) == Decimal("0.1")


@pytest.mark.parametrize("region", [{}, {"region": None}, {"region": "eu"}])
def test_compiled_meter_nullable_union_field_is_optional(region: dict[str, Any]) -> None:
    compiled = custom_meter(
        [
            {"name": "q", "type": "long"},
            {"name": "region", "type": ["null", "string"]},
        ]
    )

    assert compiled.check({"q": 4, **region}) == Decimal(4)


def test_compiled_meter_nullable_union_field_checks_its_type() -> None:
    compiled = custom_meter(
        [
            {"name": "q", "type": "long"},
            {"name": "region", "type": ["null", "string"], "default": None},
        ]
    )

    result = rejected(compiled.check({"q": 4, "region": 5}), ReasonCode.WRONG_TYPE)

    assert result.detail == "data.region must be null or string, got int"


def test_compiled_meter_union_with_null_last_is_optional() -> None:
    compiled = custom_meter(
        [
            {"name": "q", "type": "long"},
            {"name": "tier", "type": ["int", "null"]},
        ]
    )

    assert compiled.check({"q": 4}) == Decimal(4)
    rejected(compiled.check({"q": 4, "tier": "gold"}), ReasonCode.WRONG_TYPE)


@pytest.mark.parametrize("region", [{}, {"region": None}, {"region": "eu"}])
def test_compiled_meter_field_with_default_is_optional(region: dict[str, Any]) -> None:
    compiled = custom_meter(
        [
            {"name": "q", "type": "long"},
            {"name": "region", "type": "string", "default": "eu"},
        ]
    )

    assert compiled.check({"q": 4, **region}) == Decimal(4)


def test_compiled_meter_field_with_default_checks_its_type() -> None:
    compiled = custom_meter(
        [
            {"name": "q", "type": "long"},
            {"name": "region", "type": "string", "default": "eu"},
        ]
    )

    rejected(compiled.check({"q": 4, "region": 7}), ReasonCode.WRONG_TYPE)


def test_compiled_meter_optional_fields_not_required_but_others_are() -> None:
    compiled = custom_meter(
        [
            {"name": "q", "type": "long"},
            {"name": "a", "type": ["null", "string"]},
            {"name": "b", "type": "int", "default": 0},
            {"name": "c", "type": "string"},
        ]
    )

    assert {r.name: r.required for r in compiled.fields} == {
        "q": True,
        "a": False,
        "b": False,
        "c": True,
    }
    assert rejected(compiled.check({"q": 1}), ReasonCode.MISSING_FIELD).detail == (
        "data.c is required"
    )


def test_compiled_meter_float_value_field_accepts_int() -> None:
    compiled = custom_meter([{"name": "q", "type": "float"}])

    assert compiled.check({"q": 2}) == Decimal(2)
    rejected(compiled.check({"q": "2"}), ReasonCode.WRONG_TYPE)


def test_compiled_meter_count_meter_quantity_is_one() -> None:
    compiled = custom_meter([{"name": "q", "type": "long"}], aggregation="COUNT", value_field=None)

    assert compiled.meter.aggregation is Aggregation.COUNT
    assert compiled.check({"q": 99}) == Decimal(1)


def test_compiled_meter_unique_count_quantity_is_none() -> None:
    compiled = custom_meter(
        [{"name": "who", "type": "string"}], aggregation="UNIQUE_COUNT", value_field="who"
    )

    assert compiled.check({"who": "u1"}) is None
    rejected(compiled.check({}), ReasonCode.MISSING_FIELD)


def test_compiled_meter_value_field_with_default_is_refused_at_load() -> None:
    # A value field that may be absent would leave check() nothing to aggregate.
    with pytest.raises(SchemaError, match="must be required"):
        custom_meter([{"name": "q", "type": "long", "default": 0}])
