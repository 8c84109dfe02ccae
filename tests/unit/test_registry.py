"""Unit tests for meterstream.meters.registry: loading and checking `schemas/<meter>/v<N>.avsc`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from meterstream.config import Settings
from meterstream.errors import MeterstreamError, SchemaError
from meterstream.meters.model import Aggregation, MeterDefinition
from meterstream.meters.registry import MeterRegistry, load_registry, parse_meter


def schema(**meta: Any) -> dict[str, Any]:
    """A valid SUM meter `widgets` v1 summing `count`; `meta` overrides its meterstream block."""
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
        ],
        "meterstream": block,
    }


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

    assert registry.names() == ["api_calls", "llm_tokens", "storage_gb_hours"]


@pytest.mark.parametrize(
    ("name", "aggregation", "value_field"),
    [
        ("api_calls", Aggregation.COUNT, None),
        ("llm_tokens", Aggregation.SUM, "tokens"),
        ("storage_gb_hours", Aggregation.SUM, "gb_hours"),
    ],
)
def test_load_registry_shipped_meter_definitions(
    registry: MeterRegistry, name: str, aggregation: Aggregation, value_field: str | None
) -> None:
    meter = registry.current(name)

    assert meter is not None
    assert (meter.name, meter.version, meter.aggregation, meter.value_field) == (
        name,
        1,
        aggregation,
        value_field,
    )
    assert meter.description
    assert meter.avro_schema["type"] == "record"


def test_meter_registry_current_unknown_meter_is_none(registry: MeterRegistry) -> None:
    assert registry.current("no_such_meter") is None


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
        description="Widgets made.",
    )
    assert meter.avro_schema == schema()


def test_load_registry_current_is_newest_version_numerically(tmp_path: Path) -> None:
    write(tmp_path, "widgets/v1.avsc", schema())
    write(tmp_path, "widgets/v2.avsc", schema(version=2))
    write(tmp_path, "widgets/v10.avsc", schema(version=10, aggregation="COUNT"))

    registry = load_registry(tmp_path)

    assert sorted(registry.meters["widgets"]) == [1, 2, 10]
    current = registry.current("widgets")
    assert current is not None
    assert current.version == 10
    assert current.aggregation is Aggregation.COUNT


def test_load_registry_count_meter_drops_value_field(tmp_path: Path) -> None:
    write(tmp_path, "widgets/v1.avsc", schema(aggregation="COUNT", value_field="colour"))

    meter = load_registry(tmp_path).current("widgets")

    assert meter is not None
    assert meter.value_field is None


def test_load_registry_count_meter_needs_no_value_field(tmp_path: Path) -> None:
    doc = schema(aggregation="COUNT")
    del doc["meterstream"]["value_field"]
    write(tmp_path, "widgets/v1.avsc", doc)

    assert load_registry(tmp_path).names() == ["widgets"]


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


@pytest.mark.parametrize("aggregation", ["AVG", "sum", "Count", "", None, 1, ["SUM"]])
def test_load_registry_unknown_aggregation_raises_schema_error(
    tmp_path: Path, aggregation: Any
) -> None:
    write(tmp_path, "widgets/v1.avsc", schema(aggregation=aggregation))

    message = schema_error(tmp_path)

    assert f"aggregation {aggregation!r} is not one of ['SUM', 'COUNT']" in message


@pytest.mark.parametrize("value_field", [None, "nope", "Count", ""])
def test_load_registry_sum_value_field_not_in_record_raises_schema_error(
    tmp_path: Path, value_field: str | None
) -> None:
    doc = schema(value_field=value_field)
    if value_field is None:
        del doc["meterstream"]["value_field"]
    write(tmp_path, "widgets/v1.avsc", doc)

    assert f"value_field {value_field!r} is not a field of the record" in schema_error(tmp_path)


@pytest.mark.parametrize("value_type", ["string", "boolean", "bytes", "null"])
def test_load_registry_non_numeric_value_field_raises_schema_error(
    tmp_path: Path, value_type: str
) -> None:
    doc = schema()
    doc["fields"][0]["type"] = value_type
    write(tmp_path, "widgets/v1.avsc", doc)

    assert f"value_field 'count' must be numeric, not {value_type}" in schema_error(tmp_path)


def test_load_registry_string_value_field_raises_schema_error(tmp_path: Path) -> None:
    write(tmp_path, "widgets/v1.avsc", schema(value_field="colour"))

    assert "value_field 'colour' must be numeric, not string" in schema_error(tmp_path)


@pytest.mark.parametrize("value_type", [["null", "long"], ["string", "null"], {"type": "string"}])
def test_load_registry_complex_value_field_type_raises_schema_error(
    tmp_path: Path, value_type: Any
) -> None:
    doc = schema()
    doc["fields"][0]["type"] = value_type
    write(tmp_path, "widgets/v1.avsc", doc)

    schema_error(tmp_path)


@pytest.mark.parametrize("version", [None, 0, -1, "1", 1.0, 1.5, [1]])
def test_load_registry_bad_version_raises_schema_error(tmp_path: Path, version: Any) -> None:
    doc = schema(version=version)
    if version is None:
        del doc["meterstream"]["version"]
    write(tmp_path, "widgets/v1.avsc", doc)

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
        parse_meter(schema(aggregation="MAX"), "custom/source.avsc")
