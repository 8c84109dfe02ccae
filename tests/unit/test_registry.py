"""Unit tests for meterstream.meters.registry: loading and checking `schemas/<meter>/v<N>.avsc`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from meterstream.config import Settings
from meterstream.errors import MeterstreamError, SchemaError
from meterstream.meters.model import Aggregation, IdempotencyKey, MeterDefinition
from meterstream.meters.registry import BLOCK_KEYS, MeterRegistry, load_registry, parse_meter
from meterstream.testing import SAMPLE_METERS

ALL_KINDS = "['SUM', 'COUNT', 'MIN', 'MAX', 'MEAN', 'LATEST', 'UNIQUE_COUNT']"
NUMERIC = "['double', 'float', 'int', 'long']"
KEYS = "['boolean', 'int', 'long', 'string']"


def schema(**meta: Any) -> dict[str, Any]:
    """A valid SUM meter `widgets` v1 summing `count`; `meta` overrides its meterstream block.

    A value of None removes the key from the block.
    """
    block = {"meter": "widgets", "version": 1, "aggregation": "SUM", "value_field": "count"}
    block.update(meta)
    return {
        "type": "record",
        "name": "Widgets",
        "namespace": "meterstream.meters.widgets",
        "doc": "Widgets made.",
        "fields": [
            {"name": "count", "type": "long"},
            {"name": "colour", "type": "string"},
            {"name": "size", "type": "int"},
            {"name": "serial", "type": "long"},
            {"name": "recycled", "type": "boolean"},
            {"name": "weight", "type": "double"},
            {"name": "ratio", "type": "float"},
            {"name": "blob", "type": "bytes"},
            {"name": "label", "type": ["null", "string"], "default": None},
            {"name": "shade", "type": "string", "default": "grey"},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
        ],
        "meterstream": {k: v for k, v in block.items() if v is not None},
    }


def parse_error(**meta: Any) -> str:
    """parse_meter(schema(**meta)), expecting a SchemaError; return its message."""
    with pytest.raises(SchemaError) as info:
        parse_meter(schema(**meta), "widgets/v1.avsc")
    return str(info.value)


def write(root: Path, relative: str, doc: dict[str, Any] | str) -> Path:
    """Write a schema file under `root`; a str is written as is."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def schema_error(root: Path) -> str:
    """Load `root`, expecting a SchemaError; return its message."""
    with pytest.raises(SchemaError) as info:
        load_registry(root)
    return str(info.value)


# --- the shipped schemas ---------------------------------------------------------------------


def test_load_registry_shipped_schemas_load() -> None:
    registry = load_registry(Settings().schemas_dir)

    assert registry.names() == sorted(SAMPLE_METERS)
    assert len(registry.names()) == 8


EVENT_ID = IdempotencyKey.EVENT_ID
SHIPPED = [
    ("active_users", 1, Aggregation.UNIQUE_COUNT, "user_id", (), EVENT_ID),
    ("api_calls", 1, Aggregation.COUNT, None, (), EVENT_ID),
    ("compute_peak_cores", 1, Aggregation.MAX, "cores", ("region",), EVENT_ID),
    ("llm_tokens", 1, Aggregation.SUM, "tokens", ("model",), EVENT_ID),
    ("llm_tokens", 2, Aggregation.SUM, "tokens", ("model",), EVENT_ID),
    ("prepaid_balance", 1, Aggregation.MIN, "balance_cents", (), EVENT_ID),
    ("request_latency_ms", 1, Aggregation.MEAN, "latency_ms", (), EVENT_ID),
    ("seats", 1, Aggregation.LATEST, "seats", (), IdempotencyKey.ACCOUNT_METER_TIMESTAMP),
    ("storage_gb_hours", 1, Aggregation.SUM, "gb_hours", (), EVENT_ID),
]


@pytest.mark.parametrize("row", SHIPPED, ids=[f"{r[0]}-v{r[1]}" for r in SHIPPED])
def test_load_registry_shipped_meter_definitions(
    registry: MeterRegistry,
    row: tuple[str, int, Aggregation, str | None, tuple[str, ...], IdempotencyKey],
) -> None:
    name, version, aggregation, value_field, group_by, idempotency_key = row

    meter = registry.version(name, version)

    assert meter is not None
    assert (
        meter.name,
        meter.version,
        meter.aggregation,
        meter.value_field,
        meter.group_by,
        meter.idempotency_key,
        meter.sunset,
    ) == (name, version, aggregation, value_field, group_by, idempotency_key, None)
    assert meter.description
    assert meter.avro_schema["type"] == "record"


def test_load_registry_shipped_meters_cover_every_aggregation(registry: MeterRegistry) -> None:
    assert {meter.aggregation for meter in registry.all()} == set(Aggregation)


def test_meter_registry_all_lists_every_version_by_name_then_version(
    registry: MeterRegistry,
) -> None:
    assert [(m.name, m.version) for m in registry.all()] == [(s[0], s[1]) for s in SHIPPED]


def test_meter_registry_current_is_newest_shipped_version(registry: MeterRegistry) -> None:
    current = registry.current("llm_tokens")

    assert current is not None
    assert current.version == 2
    assert current is registry.version("llm_tokens", 2)


def test_meter_registry_current_unknown_meter_is_none(registry: MeterRegistry) -> None:
    assert registry.current("no_such_meter") is None


@pytest.mark.parametrize(("name", "version"), [("llm_tokens", 3), ("llm_tokens", 0), ("nope", 1)])
def test_meter_registry_version_unknown_is_none(
    registry: MeterRegistry, name: str, version: int
) -> None:
    assert registry.version(name, version) is None


def test_meter_registry_empty_has_nothing() -> None:
    registry = MeterRegistry({})

    assert (registry.names(), registry.all(), registry.current("x")) == ([], [], None)


# --- loading from a directory ----------------------------------------------------------------


def test_load_registry_valid_schema_builds_definition(tmp_path: Path) -> None:
    write(tmp_path, "widgets/v1.avsc", schema())

    meter = load_registry(tmp_path).current("widgets")

    assert meter == MeterDefinition(
        name="widgets",
        version=1,
        aggregation=Aggregation.SUM,
        value_field="count",
        avro_schema=schema(),
        group_by=(),
        idempotency_key=IdempotencyKey.EVENT_ID,
        sunset=None,
        description="Widgets made.",
    )
    assert meter.avro_schema == schema()


def test_load_registry_current_is_newest_version_numerically(tmp_path: Path) -> None:
    write(tmp_path, "widgets/v1.avsc", schema())
    write(tmp_path, "widgets/v2.avsc", schema(version=2))
    write(tmp_path, "widgets/v10.avsc", schema(version=10, aggregation="COUNT", value_field=None))

    registry = load_registry(tmp_path)

    assert sorted(registry.meters["widgets"]) == [1, 2, 10]
    current = registry.current("widgets")
    assert current is not None
    assert current.version == 10
    assert current.aggregation is Aggregation.COUNT


@pytest.mark.parametrize("value_field", ["colour", "count", "nope"])
def test_parse_meter_count_meter_with_value_field_raises_schema_error(value_field: str) -> None:
    message = parse_error(aggregation="COUNT", value_field=value_field)

    assert message == "widgets/v1.avsc: a COUNT meter has no value_field"


def test_load_registry_count_meter_needs_no_value_field(tmp_path: Path) -> None:
    write(tmp_path, "widgets/v1.avsc", schema(aggregation="COUNT", value_field=None))

    meter = load_registry(tmp_path).current("widgets")

    assert meter is not None
    assert meter.value_field is None


def test_parse_meter_count_meter_null_value_field_is_no_value_field() -> None:
    doc = schema(aggregation="COUNT")
    doc["meterstream"]["value_field"] = None

    assert parse_meter(doc, "widgets/v1.avsc").value_field is None


@pytest.mark.parametrize("value_type", ["int", "long", "float", "double"])
def test_load_registry_numeric_value_field_accepted(tmp_path: Path, value_type: str) -> None:
    doc = schema()
    doc["fields"][0]["type"] = value_type
    write(tmp_path, "widgets/v1.avsc", doc)

    assert load_registry(tmp_path).names() == ["widgets"]


@pytest.mark.parametrize("name", ["notes.txt", "v1.json", "v1.avsc.bak", "schema.avsc"])
def test_load_registry_other_files_are_ignored(tmp_path: Path, name: str) -> None:
    write(tmp_path, "widgets/v1.avsc", schema())
    write(tmp_path, f"widgets/{name}", "not json at all")

    assert load_registry(tmp_path).names() == ["widgets"]


def test_load_registry_file_not_matching_version_pattern_is_ignored(tmp_path: Path) -> None:
    write(tmp_path, "widgets/v1.avsc", schema())
    write(tmp_path, "widgets/vnext.avsc", "not json at all")

    assert load_registry(tmp_path).names() == ["widgets"]


def test_load_registry_schema_at_top_level_is_ignored(tmp_path: Path) -> None:
    write(tmp_path, "widgets/v1.avsc", schema())
    write(tmp_path, "v1.avsc", "not json at all")

    assert load_registry(tmp_path).names() == ["widgets"]


# --- SchemaError: the directory --------------------------------------------------------------


def test_load_registry_empty_dir_raises_schema_error(tmp_path: Path) -> None:
    assert "no meter schemas" in schema_error(tmp_path)


def test_load_registry_dir_without_schemas_raises_schema_error(tmp_path: Path) -> None:
    write(tmp_path, "widgets/README.md", "# widgets")

    assert "no meter schemas" in schema_error(tmp_path)


def test_load_registry_missing_dir_raises_schema_error(tmp_path: Path) -> None:
    assert "no schemas directory" in schema_error(tmp_path / "nope")


def test_load_registry_file_instead_of_dir_raises_schema_error(tmp_path: Path) -> None:
    path = write(tmp_path, "schemas", "{}")

    assert "no schemas directory" in schema_error(path)


def test_schema_error_is_a_meterstream_error() -> None:
    assert issubclass(SchemaError, MeterstreamError)


# --- SchemaError: one file -------------------------------------------------------------------


def test_load_registry_not_json_raises_schema_error(tmp_path: Path) -> None:
    path = write(tmp_path, "widgets/v1.avsc", '{"type": "record",')

    with pytest.raises(SchemaError, match="not JSON") as info:
        load_registry(tmp_path)

    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


@pytest.mark.parametrize("block", [None, "widgets", ["widgets"], 1])
def test_load_registry_missing_meterstream_block_raises_schema_error(
    tmp_path: Path, block: Any
) -> None:
    doc = schema()
    if block is None:
        del doc["meterstream"]
    else:
        doc["meterstream"] = block
    path = write(tmp_path, "widgets/v1.avsc", doc)

    message = schema_error(tmp_path)

    assert message.startswith(f"{path}: missing the 'meterstream' block")


@pytest.mark.parametrize(
    "change",
    [
        {"fields": [{"name": "count", "type": "nosuchtype"}]},
        {"fields": [{"name": "count"}]},
        {"fields": "count"},
        {"type": "nosuchtype"},
        {"name": None},
    ],
)
def test_load_registry_invalid_avro_raises_schema_error(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    path = write(tmp_path, "widgets/v1.avsc", {**schema(), **change})

    with pytest.raises(SchemaError, match="not a valid Avro schema") as info:
        load_registry(tmp_path)

    assert str(info.value).startswith(str(path))
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    "doc",
    [
        {"type": "enum", "name": "Colour", "symbols": ["RED", "BLUE"]},
        {"type": "fixed", "name": "Hash", "size": 16},
        {"type": "array", "items": "long"},
        {"type": "map", "values": "long"},
        {"type": "long"},
        {"type": "string"},
    ],
)
def test_load_registry_non_record_raises_schema_error(tmp_path: Path, doc: dict[str, Any]) -> None:
    write(tmp_path, "widgets/v1.avsc", {**doc, "meterstream": schema()["meterstream"]})

    assert "must be an Avro record" in schema_error(tmp_path)


@pytest.mark.parametrize(
    "name", ["Widgets", "1widgets", "wid-gets", "wid gets", "", "widgets!", "ẃidgets", None, 5]
)
def test_load_registry_bad_meter_name_raises_schema_error(tmp_path: Path, name: Any) -> None:
    write(tmp_path, "widgets/v1.avsc", schema(meter=name))

    assert f"meter name {name!r} must match" in schema_error(tmp_path)


def test_parse_meter_name_with_trailing_newline_raises_schema_error() -> None:
    with pytest.raises(SchemaError, match="meter name"):
        parse_meter(schema(meter="widgets\n"), "widgets/v1.avsc")


@pytest.mark.parametrize(
    "aggregation", ["AVG", "DISTINCT", "sum", "Count", "unique_count", "", 1, ["SUM"], True]
)
def test_load_registry_unknown_aggregation_raises_schema_error(
    tmp_path: Path, aggregation: Any
) -> None:
    write(tmp_path, "widgets/v1.avsc", schema(aggregation=aggregation))

    message = schema_error(tmp_path)

    assert f"aggregation {aggregation!r} is not one of {ALL_KINDS}" in message


def test_parse_meter_missing_aggregation_raises_schema_error() -> None:
    assert f"aggregation None is not one of {ALL_KINDS}" in parse_error(aggregation=None)


@pytest.mark.parametrize("value_field", [None, "nope", "Count", ""])
def test_load_registry_sum_value_field_not_in_record_raises_schema_error(
    tmp_path: Path, value_field: str | None
) -> None:
    write(tmp_path, "widgets/v1.avsc", schema(value_field=value_field))

    assert f"value_field {value_field!r} is not a field of the record" in schema_error(tmp_path)


@pytest.mark.parametrize("value_type", ["string", "boolean", "bytes", "null"])
def test_load_registry_non_numeric_value_field_raises_schema_error(
    tmp_path: Path, value_type: str
) -> None:
    doc = schema()
    doc["fields"][0]["type"] = value_type
    write(tmp_path, "widgets/v1.avsc", doc)

    message = schema_error(tmp_path)

    assert f"value_field 'count' must be one of {NUMERIC}, not {value_type} (no union)" in message


NUMERIC_KINDS = ["SUM", "MIN", "MAX", "MEAN", "LATEST"]


@pytest.mark.parametrize("aggregation", NUMERIC_KINDS)
@pytest.mark.parametrize(
    ("value_field", "avro_type"),
    [("colour", "string"), ("recycled", "boolean"), ("blob", "bytes"), ("tags", "array")],
)
def test_parse_meter_numeric_kind_needs_numeric_value_field(
    aggregation: str, value_field: str, avro_type: str
) -> None:
    message = parse_error(aggregation=aggregation, value_field=value_field)

    assert f"value_field {value_field!r} must be one of {NUMERIC}, not " in message
    assert avro_type in message


@pytest.mark.parametrize("aggregation", NUMERIC_KINDS)
@pytest.mark.parametrize("value_field", ["count", "size", "serial", "weight", "ratio"])
def test_parse_meter_numeric_kind_accepts_numeric_value_field(
    aggregation: str, value_field: str
) -> None:
    meter = parse_meter(schema(aggregation=aggregation, value_field=value_field), "widgets/v1.avsc")

    assert (meter.aggregation, meter.value_field) == (Aggregation(aggregation), value_field)


@pytest.mark.parametrize("aggregation", [*NUMERIC_KINDS, "UNIQUE_COUNT"])
@pytest.mark.parametrize("value_field", [None, "nope", "Count", "", 5, ["count"]])
def test_parse_meter_value_field_not_in_record_raises_schema_error(
    aggregation: str, value_field: Any
) -> None:
    message = parse_error(aggregation=aggregation, value_field=value_field)

    assert f"value_field {value_field!r} is not a field of the record" in message


@pytest.mark.parametrize("value_field", ["colour", "size", "serial", "recycled"])
def test_parse_meter_unique_count_accepts_key_typed_value_field(value_field: str) -> None:
    meter = parse_meter(
        schema(aggregation="UNIQUE_COUNT", value_field=value_field), "widgets/v1.avsc"
    )

    assert (meter.aggregation, meter.value_field) == (Aggregation.UNIQUE_COUNT, value_field)


@pytest.mark.parametrize(
    ("value_field", "avro_type"),
    [("weight", "double"), ("ratio", "float"), ("blob", "bytes"), ("tags", "array")],
)
def test_parse_meter_unique_count_of_non_key_type_raises_schema_error(
    value_field: str, avro_type: str
) -> None:
    message = parse_error(aggregation="UNIQUE_COUNT", value_field=value_field)

    assert f"value_field {value_field!r} must be one of {KEYS}, not " in message
    assert avro_type in message


@pytest.mark.parametrize("aggregation", [*NUMERIC_KINDS, "UNIQUE_COUNT"])
@pytest.mark.parametrize(
    "value_type", [["null", "long"], ["long", "null"], ["long", "string"], {"type": "long"}]
)
def test_parse_meter_union_or_complex_value_field_type_raises_schema_error(
    aggregation: str, value_type: Any
) -> None:
    doc = schema(aggregation=aggregation)
    doc["fields"][0]["type"] = value_type

    with pytest.raises(SchemaError, match=r"value_field 'count' must be one of .* \(no union\)"):
        parse_meter(doc, "widgets/v1.avsc")


@pytest.mark.parametrize("aggregation", [*NUMERIC_KINDS, "UNIQUE_COUNT"])
def test_parse_meter_value_field_with_default_raises_schema_error(aggregation: str) -> None:
    doc = schema(aggregation=aggregation)
    doc["fields"][0]["default"] = 0

    with pytest.raises(SchemaError, match=r"value_field 'count' must be required \(no default\)"):
        parse_meter(doc, "widgets/v1.avsc")


@pytest.mark.parametrize("version", [None, 0, -1, "1", 1.0, 1.5, [1]])
def test_load_registry_bad_version_raises_schema_error(tmp_path: Path, version: Any) -> None:
    write(tmp_path, "widgets/v1.avsc", schema(version=version))

    assert "version must be a positive integer" in schema_error(tmp_path)


def test_load_registry_boolean_version_raises_schema_error(tmp_path: Path) -> None:
    write(tmp_path, "widgets/v1.avsc", schema(version=True))

    assert "version must be a positive integer" in schema_error(tmp_path)


@pytest.mark.parametrize("filename", ["v2.avsc", "v10.avsc"])
def test_load_registry_version_not_matching_file_raises_schema_error(
    tmp_path: Path, filename: str
) -> None:
    path = write(tmp_path, f"widgets/{filename}", schema(version=1))

    message = schema_error(tmp_path)

    assert message == f"{path}: declares widgets v1; the path must agree"


def test_load_registry_meter_not_matching_directory_raises_schema_error(tmp_path: Path) -> None:
    path = write(tmp_path, "gadgets/v1.avsc", schema())

    assert schema_error(tmp_path) == f"{path}: declares widgets v1; the path must agree"


def test_load_registry_first_bad_file_stops_loading(tmp_path: Path) -> None:
    write(tmp_path, "aaa/v1.avsc", schema(meter="aaa"))
    bad = write(tmp_path, "bbb/v1.avsc", schema(meter="bbb", aggregation="AVG"))

    assert schema_error(tmp_path).startswith(str(bad))


def test_parse_meter_errors_name_the_source() -> None:
    with pytest.raises(SchemaError, match=r"^custom/source\.avsc: "):
        parse_meter(schema(aggregation="AVG"), "custom/source.avsc")


# --- the meterstream block: unknown keys -----------------------------------------------------


def test_parse_meter_block_keys_are_the_documented_ones() -> None:
    assert {
        "meter",
        "version",
        "aggregation",
        "value_field",
        "group_by",
        "idempotency_key",
        "sunset",
    } == BLOCK_KEYS


@pytest.mark.parametrize(
    ("extra", "listed"),
    [
        ({"agg": "SUM"}, "['agg']"),
        ({"groupby": ["colour"]}, "['groupby']"),
        ({"description": "widgets"}, "['description']"),
        ({"Sunset": "2027-01-31T00:00:00Z"}, "['Sunset']"),
        ({"zeta": 1, "alpha": 2}, "['alpha', 'zeta']"),
    ],
)
def test_parse_meter_unknown_block_key_raises_schema_error(
    extra: dict[str, Any], listed: str
) -> None:
    # A misspelt key would otherwise be silently ignored (e.g. a sunset that never applies).
    assert parse_error(**extra) == (
        f"widgets/v1.avsc: unknown keys in the meterstream block: {listed}"
    )


def test_parse_meter_unknown_block_key_reported_before_other_problems() -> None:
    message = parse_error(aggregation="AVG", typo=True)

    assert "unknown keys in the meterstream block: ['typo']" in message


def test_load_registry_unknown_block_key_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "widgets/v1.avsc", schema(value_feild="count"))

    assert schema_error(tmp_path) == (
        f"{path}: unknown keys in the meterstream block: ['value_feild']"
    )


# --- idempotency_key -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({}, IdempotencyKey.EVENT_ID),
        ({"idempotency_key": "EVENT_ID"}, IdempotencyKey.EVENT_ID),
        ({"idempotency_key": "ACCOUNT_METER_TIMESTAMP"}, IdempotencyKey.ACCOUNT_METER_TIMESTAMP),
    ],
)
def test_parse_meter_idempotency_key(meta: dict[str, Any], expected: IdempotencyKey) -> None:
    meter = parse_meter(schema(**meta), "widgets/v1.avsc")

    assert meter.idempotency_key is expected


@pytest.mark.parametrize(
    "value", ["event_id", "ID", "TIMESTAMP", "", 1, ["EVENT_ID"], {"k": "EVENT_ID"}]
)
def test_parse_meter_unknown_idempotency_key_raises_schema_error(value: Any) -> None:
    message = parse_error(idempotency_key=value)

    assert f"idempotency_key {value!r} is not one of ['EVENT_ID', 'ACCOUNT_METER_TIMESTAMP']" in (
        message
    )


def test_parse_meter_null_idempotency_key_raises_schema_error() -> None:
    doc = schema()
    doc["meterstream"]["idempotency_key"] = None

    with pytest.raises(SchemaError, match="idempotency_key None is not one of"):
        parse_meter(doc, "widgets/v1.avsc")


# --- group_by --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("group_by", "expected"),
    [
        ([], ()),
        (["colour"], ("colour",)),
        (["size"], ("size",)),
        (["serial"], ("serial",)),
        (["recycled"], ("recycled",)),
        (["recycled", "colour", "size"], ("recycled", "colour", "size")),  # order kept
        (["count"], ("count",)),  # the value field itself is a required long
    ],
)
def test_parse_meter_group_by_of_required_key_fields(
    group_by: list[str], expected: tuple[str, ...]
) -> None:
    assert parse_meter(schema(group_by=group_by), "widgets/v1.avsc").group_by == expected


def test_parse_meter_absent_group_by_is_no_segments() -> None:
    assert parse_meter(schema(), "widgets/v1.avsc").group_by == ()


@pytest.mark.parametrize("group_by", ["colour", {"colour": 1}, 5, True])
def test_parse_meter_group_by_not_a_list_raises_schema_error(group_by: Any) -> None:
    assert "group_by must be a list of distinct field names" in parse_error(group_by=group_by)


def test_parse_meter_null_group_by_raises_schema_error() -> None:
    doc = schema()
    doc["meterstream"]["group_by"] = None

    with pytest.raises(SchemaError, match="group_by must be a list of distinct field names"):
        parse_meter(doc, "widgets/v1.avsc")


@pytest.mark.parametrize("group_by", [["colour", "colour"], ["size", "colour", "size"]])
def test_parse_meter_repeated_group_by_field_raises_schema_error(group_by: list[str]) -> None:
    assert "group_by must be a list of distinct field names" in parse_error(group_by=group_by)


@pytest.mark.parametrize("name", ["nope", "Colour", "", 1, None, ["colour"]])
def test_parse_meter_group_by_unknown_field_raises_schema_error(name: Any) -> None:
    message = parse_error(group_by=[name])

    assert f"group_by field {name!r} is not a field of the record" in message


@pytest.mark.parametrize(
    ("name", "avro_type"),
    [
        ("weight", "double"),
        ("ratio", "float"),
        ("blob", "bytes"),
        ("tags", "array"),
        ("label", "['null', 'string']"),  # nullable: an event could leave it out
    ],
)
def test_parse_meter_group_by_field_of_non_key_type_raises_schema_error(
    name: str, avro_type: str
) -> None:
    message = parse_error(group_by=[name])

    assert f"group_by field {name!r} must be one of {KEYS}, not " in message
    assert avro_type in message


def test_parse_meter_group_by_field_with_default_raises_schema_error() -> None:
    message = parse_error(group_by=["colour", "shade"])

    assert "group_by field 'shade' must be required (no default)" in message


def test_load_registry_group_by_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "widgets/v1.avsc", schema(group_by=["weight"]))

    assert schema_error(tmp_path).startswith(f"{path}: group_by field 'weight'")


# --- sunset ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sunset", "expected"),
    [
        ("2027-01-31T00:00:00Z", datetime(2027, 1, 31, tzinfo=UTC)),
        ("2027-01-31T00:00:00.000Z", datetime(2027, 1, 31, tzinfo=UTC)),
        ("2027-01-31T01:00:00+01:00", datetime(2027, 1, 31, tzinfo=UTC)),
        ("2027-01-30T19:00:00-05:00", datetime(2027, 1, 31, tzinfo=UTC)),
        ("2027-01-31t12:30:15.5z", datetime(2027, 1, 31, 12, 30, 15, 500000, tzinfo=UTC)),
    ],
)
def test_parse_meter_sunset_is_utc_instant(sunset: str, expected: datetime) -> None:
    meter = parse_meter(schema(sunset=sunset), "widgets/v1.avsc")

    assert meter.sunset == expected
    assert meter.sunset is not None
    assert meter.sunset.tzinfo is UTC


def test_parse_meter_absent_or_null_sunset_is_none() -> None:
    doc = schema()
    doc["meterstream"]["sunset"] = None

    assert parse_meter(schema(), "widgets/v1.avsc").sunset is None
    assert parse_meter(doc, "widgets/v1.avsc").sunset is None


@pytest.mark.parametrize(
    "sunset",
    [
        "2027-01-31",  # a date, not an instant
        "2027-01-31T00:00:00",  # naive
        "2027-01-31 00:00:00Z",
        "31/01/2027",
        "tomorrow",
        "",
        "2027-02-30T00:00:00Z",
        1800000000,
        True,
        ["2027-01-31T00:00:00Z"],
    ],
)
def test_parse_meter_bad_sunset_raises_schema_error(sunset: Any) -> None:
    message = parse_error(sunset=sunset)

    assert f"sunset {sunset!r} must be an RFC 3339 timestamp, e.g. 2027-01-31T00:00:00Z" in (
        message
    )


def test_load_registry_sunset_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "widgets/v1.avsc", schema(sunset="soon"))

    assert schema_error(tmp_path).startswith(f"{path}: sunset 'soon'")


def test_load_registry_sunset_on_old_version(tmp_path: Path) -> None:
    write(tmp_path, "widgets/v1.avsc", schema(sunset="2027-01-31T00:00:00Z"))
    write(tmp_path, "widgets/v2.avsc", schema(version=2))

    registry = load_registry(tmp_path)

    old, new = registry.version("widgets", 1), registry.version("widgets", 2)
    assert old is not None
    assert new is not None
    assert (old.sunset, new.sunset) == (datetime(2027, 1, 31, tzinfo=UTC), None)


# --- billing semantics -----------------------------------------------------------------------


def test_meter_definition_billing_semantics_excludes_version_sunset_and_schema() -> None:
    v1 = parse_meter(schema(group_by=["colour"]), "widgets/v1.avsc")
    v2 = parse_meter(
        schema(version=2, group_by=["colour"], sunset="2027-01-31T00:00:00Z"), "widgets/v2.avsc"
    )

    assert (
        v1.billing_semantics()
        == v2.billing_semantics()
        == (
            Aggregation.SUM,
            "count",
            ("colour",),
            IdempotencyKey.EVENT_ID,
        )
    )


@pytest.mark.parametrize(
    "change",
    [
        {"aggregation": "MAX"},
        {"value_field": "size"},
        {"group_by": ["colour"]},
        {"idempotency_key": "ACCOUNT_METER_TIMESTAMP"},
    ],
)
def test_meter_definition_billing_semantics_change_with_billing_keys(
    change: dict[str, Any],
) -> None:
    base = parse_meter(schema(), "widgets/v1.avsc")

    assert parse_meter(schema(**change), "widgets/v1.avsc").billing_semantics() != (
        base.billing_semantics()
    )
