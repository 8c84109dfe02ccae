"""Unit tests for meterstream.rules.validate: per-meter data checks and the quantity they yield."""

from __future__ import annotations

import json
import math
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from meterstream.errors import SchemaError
from meterstream.meters.model import Aggregation
from meterstream.meters.registry import MeterRegistry, parse_meter
from meterstream.rules.reasons import ReasonCode, Rejection
from meterstream.rules.validate import CompiledMeter, Validator, ValidEvent
from meterstream.testing import LAST_MS_OF_MONTH, PERIOD_START, cloud_event

#: A valid `data` payload for each shipped meter.
GOOD_DATA: dict[str, dict[str, Any]] = {
    "llm_tokens": {"tokens": 812, "model": "small"},
    "storage_gb_hours": {"gb_hours": 1.5, "bucket": "logs"},
    "api_calls": {"endpoint": "/v1/search", "status": 200},
}


def payload(meter: str, data: dict[str, Any], event_id: str = "evt-1") -> str:
    """A raw CloudEvent for `meter` at the last millisecond of October."""
    return json.dumps(cloud_event(event_id, "acct-42", meter, LAST_MS_OF_MONTH, data))


def with_data(meter: str, **changes: Any) -> dict[str, Any]:
    """The meter's good data with `changes` applied."""
    return {**GOOD_DATA[meter], **changes}


def without_field(meter: str, name: str) -> dict[str, Any]:
    """The meter's good data without field `name`."""
    return {k: v for k, v in GOOD_DATA[meter].items() if k != name}


def custom_meter(fields: list[dict[str, Any]], **meta: Any) -> CompiledMeter:
    """A compiled meter `custom` with the given Avro fields (SUM of `q` unless `meta` says)."""
    block = {"meter": "custom", "version": 1, "aggregation": "SUM", "value_field": "q", **meta}
    doc = {"type": "record", "name": "Custom", "fields": fields, "meterstream": block}
    return CompiledMeter.compile(parse_meter(doc, "custom/v1.avsc"))


def rejected(result: ValidEvent | Rejection | Decimal, code: ReasonCode) -> Rejection:
    """Assert `result` is a rejection with `code` and return it."""
    assert isinstance(result, Rejection), result
    assert result.code is code, result
    return result


# --- the shipped meters ----------------------------------------------------------------------


def test_validator_llm_tokens_quantity_is_tokens(validator: Validator) -> None:
    result = validator.validate(payload("llm_tokens", GOOD_DATA["llm_tokens"]))

    assert result == ValidEvent(
        event_id="evt-1",
        account_id="acct-42",
        meter="llm_tokens",
        event_time=LAST_MS_OF_MONTH,
        period_start=date(2026, 10, 1),
        quantity=Decimal("812.000000000"),
    )


def test_validator_storage_gb_hours_quantity_is_gb_hours(validator: Validator) -> None:
    result = validator.validate(payload("storage_gb_hours", GOOD_DATA["storage_gb_hours"]))

    assert isinstance(result, ValidEvent)
    assert result.meter == "storage_gb_hours"
    assert result.quantity == Decimal("1.5")


def test_validator_api_calls_count_meter_quantity_is_one(validator: Validator) -> None:
    result = validator.validate(payload("api_calls", GOOD_DATA["api_calls"]))

    assert isinstance(result, ValidEvent)
    assert result.meter == "api_calls"
    assert result.quantity == Decimal(1)


@pytest.mark.parametrize("status", [200, 500, 0, -(2**31), 2**31 - 1])
def test_validator_count_meter_quantity_ignores_field_values(
    validator: Validator, status: int
) -> None:
    result = validator.validate(payload("api_calls", with_data("api_calls", status=status)))

    assert isinstance(result, ValidEvent)
    assert result.quantity == 1


def test_validator_every_shipped_meter_accepts_its_good_data(validator: Validator) -> None:
    for meter, data in GOOD_DATA.items():
        assert isinstance(validator.validate(payload(meter, data)), ValidEvent), meter


def test_validator_period_start_follows_event_time(validator: Validator) -> None:
    raw = json.dumps(
        cloud_event("evt-2", "acct-42", "llm_tokens", PERIOD_START, GOOD_DATA["llm_tokens"])
    )

    result = validator.validate(raw)

    assert isinstance(result, ValidEvent)
    assert result.period_start == date(2026, 11, 1)


def test_validator_bytes_payload_accepted(validator: Validator) -> None:
    result = validator.validate(payload("llm_tokens", GOOD_DATA["llm_tokens"]).encode())

    assert isinstance(result, ValidEvent)


def test_validator_extra_data_fields_are_ignored(validator: Validator) -> None:
    data = with_data("llm_tokens", region="eu", tokens=3)

    result = validator.validate(payload("llm_tokens", data))

    assert isinstance(result, ValidEvent)
    assert result.quantity == 3


def test_validator_envelope_rejection_passes_through(validator: Validator) -> None:
    rejected(validator.validate("{"), ReasonCode.MALFORMED_JSON)


# --- SUM quantities --------------------------------------------------------------------------


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
        ("storage_gb_hours", {"gb_hours": 12345.0, "bucket": "b"}, "12345.000000000"),
        ("storage_gb_hours", {"gb_hours": 7, "bucket": "b"}, "7.000000000"),  # int for double
        ("storage_gb_hours", {"gb_hours": 1e17, "bucket": "b"}, "100000000000000000.000000000"),
    ],
)
def test_validator_sum_quantity_is_decimal_with_nine_places(
    validator: Validator, meter: str, data: dict[str, Any], expected: str
) -> None:
    result = validator.validate(payload(meter, data))

    assert isinstance(result, ValidEvent)
    assert isinstance(result.quantity, Decimal)
    assert str(result.quantity) == expected
    assert result.quantity.as_tuple().exponent == -9


def test_validator_float_keeps_its_decimal_repr(validator: Validator) -> None:
    # Decimal(0.1) would be 0.1000000000000000055511151231257827...; repr() gives "0.1".
    result = validator.validate(
        payload("storage_gb_hours", with_data("storage_gb_hours", gb_hours=0.1))
    )

    assert isinstance(result, ValidEvent)
    assert result.quantity == Decimal("0.100000000")
    assert sum([result.quantity] * 10) == Decimal(1)


@pytest.mark.parametrize("value", [1e19, 1e20, 1e300, 10**19])
def test_validator_huge_double_value_does_not_raise(validator: Validator, value: float) -> None:
    data = with_data("storage_gb_hours", gb_hours=value)

    result = validator.validate(payload("storage_gb_hours", data))

    assert isinstance(result, ValidEvent | Rejection)


# --- MISSING_FIELD ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meter", "name"),
    [(meter, name) for meter, data in GOOD_DATA.items() for name in data],
)
def test_validator_absent_data_field_is_missing_field(
    validator: Validator, meter: str, name: str
) -> None:
    result = rejected(
        validator.validate(payload(meter, without_field(meter, name))), ReasonCode.MISSING_FIELD
    )

    assert result.detail == f"data.{name} is required"


@pytest.mark.parametrize(
    ("meter", "name"),
    [(meter, name) for meter, data in GOOD_DATA.items() for name in data],
)
def test_validator_null_data_field_is_missing_field(
    validator: Validator, meter: str, name: str
) -> None:
    data = with_data(meter, **{name: None})

    rejected(validator.validate(payload(meter, data)), ReasonCode.MISSING_FIELD)


@pytest.mark.parametrize("meter", GOOD_DATA)
def test_validator_empty_data_is_missing_field(validator: Validator, meter: str) -> None:
    rejected(validator.validate(payload(meter, {})), ReasonCode.MISSING_FIELD)


# --- WRONG_TYPE ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meter", "name", "value", "avro_type"),
    [
        ("llm_tokens", "tokens", "812", "long"),
        ("llm_tokens", "tokens", True, "long"),
        ("llm_tokens", "tokens", False, "long"),
        ("llm_tokens", "tokens", 812.0, "long"),
        ("llm_tokens", "tokens", 1.5, "long"),
        ("llm_tokens", "tokens", math.nan, "long"),
        ("llm_tokens", "tokens", 2**63, "long"),
        ("llm_tokens", "tokens", -(2**63) - 1, "long"),
        ("llm_tokens", "tokens", [812], "long"),
        ("llm_tokens", "tokens", {"n": 812}, "long"),
        ("llm_tokens", "model", 5, "string"),
        ("llm_tokens", "model", False, "string"),
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
    ],
)
def test_validator_wrong_json_type_is_wrong_type(
    validator: Validator, meter: str, name: str, value: Any, avro_type: str
) -> None:
    data = with_data(meter, **{name: value})

    result = rejected(validator.validate(payload(meter, data)), ReasonCode.WRONG_TYPE)

    assert result.detail.startswith(f"data.{name} must be {avro_type}, got ")


def test_validator_wrong_type_detail_names_python_type(validator: Validator) -> None:
    data = with_data("llm_tokens", tokens=True)

    result = rejected(validator.validate(payload("llm_tokens", data)), ReasonCode.WRONG_TYPE)

    assert result.detail == "data.tokens must be long, got bool"


def test_validator_wrong_type_checked_before_value(validator: Validator) -> None:
    # A negative float in a long field is a type error first.
    data = with_data("llm_tokens", tokens=-1.0)

    rejected(validator.validate(payload("llm_tokens", data)), ReasonCode.WRONG_TYPE)


# --- INVALID_VALUE ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meter", "name", "value"),
    [
        ("llm_tokens", "tokens", -1),
        ("llm_tokens", "tokens", -(2**63)),
        ("storage_gb_hours", "gb_hours", -0.5),
        ("storage_gb_hours", "gb_hours", -1e-9),
        ("storage_gb_hours", "gb_hours", -3),
        ("storage_gb_hours", "gb_hours", -1e300),
        ("storage_gb_hours", "gb_hours", math.nan),
        ("storage_gb_hours", "gb_hours", math.inf),
        ("storage_gb_hours", "gb_hours", -math.inf),
    ],
)
def test_validator_negative_or_non_finite_value_is_invalid_value(
    validator: Validator, meter: str, name: str, value: float
) -> None:
    data = with_data(meter, **{name: value})

    result = rejected(validator.validate(payload(meter, data)), ReasonCode.INVALID_VALUE)

    assert result.detail.startswith(f"data.{name} ")


def test_validator_nan_literal_in_json_is_invalid_value(validator: Validator) -> None:
    raw = payload("storage_gb_hours", GOOD_DATA["storage_gb_hours"]).replace("1.5", "NaN")

    result = rejected(validator.validate(raw), ReasonCode.INVALID_VALUE)

    assert result.detail == "data.gb_hours is nan"


def test_validator_overflowing_json_number_is_invalid_value(validator: Validator) -> None:
    # json.loads turns 1e999 into inf.
    raw = payload("storage_gb_hours", GOOD_DATA["storage_gb_hours"]).replace("1.5", "1e999")

    rejected(validator.validate(raw), ReasonCode.INVALID_VALUE)


# --- UNKNOWN_METER ---------------------------------------------------------------------------


@pytest.mark.parametrize("meter", ["no_such_meter", "LLM_TOKENS", "llm_tokens ", "llm-tokens"])
def test_validator_unknown_type_is_unknown_meter(validator: Validator, meter: str) -> None:
    result = rejected(
        validator.validate(payload(meter, GOOD_DATA["llm_tokens"])), ReasonCode.UNKNOWN_METER
    )

    assert repr(meter) in result.detail
    assert "api_calls, llm_tokens, storage_gb_hours" in result.detail


def test_validator_uses_newest_meter_version() -> None:
    v1 = parse_meter(
        {
            "type": "record",
            "name": "M",
            "fields": [{"name": "q", "type": "long"}],
            "meterstream": {"meter": "m", "version": 1, "aggregation": "SUM", "value_field": "q"},
        },
        "m/v1.avsc",
    )
    v2 = parse_meter(
        {
            "type": "record",
            "name": "M",
            "fields": [{"name": "q", "type": "long"}],
            "meterstream": {"meter": "m", "version": 2, "aggregation": "COUNT"},
        },
        "m/v2.avsc",
    )
    validator = Validator(MeterRegistry({"m": {1: v1, 2: v2}}))

    result = validator.validate(payload("m", {"q": 40}))

    assert isinstance(result, ValidEvent)
    assert result.quantity == 1


# --- CompiledMeter: optional fields ----------------------------------------------------------


def test_compiled_meter_shipped_schema_fields_are_required(registry: MeterRegistry) -> None:
    meter = registry.current("llm_tokens")
    assert meter is not None

    compiled = CompiledMeter.compile(meter)

    assert [(r.name, r.required, r.avro_type) for r in compiled.fields] == [
        ("tokens", True, "long"),
        ("model", True, "string"),
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

    assert result.detail == "data.region must be string, got int"


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
    compiled = custom_meter([{"name": "q", "type": "long"}], aggregation="COUNT")

    assert compiled.meter.aggregation is Aggregation.COUNT
    assert compiled.check({"q": 99}) == Decimal(1)


def test_compiled_meter_value_field_with_default_is_refused_at_load() -> None:
    # A value field that may be absent would leave check() nothing to aggregate.
    with pytest.raises(SchemaError, match="must be required"):
        custom_meter([{"name": "q", "type": "long", "default": 0}])
