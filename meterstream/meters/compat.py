"""Compatibility of meter versions: a new version must read every event an old one accepted.

Checked with fastavro's schema resolution (writer = old version, reader = new version) on
sample records that take every branch of every union, plus the billing rules: a meter's
aggregation, value field, segments and idempotency key never change between versions.
"""

from __future__ import annotations

import io
from itertools import pairwise
from typing import Any

import fastavro
from fastavro.read import SchemaResolutionError

from meterstream.meters.model import MeterDefinition
from meterstream.meters.registry import MeterRegistry

PRIMITIVE_SAMPLES: dict[str, Any] = {
    "null": None,
    "boolean": True,
    "int": 1,
    "long": 1,
    "float": 1.5,
    "double": 1.5,
    "string": "x",
    "bytes": b"x",
}


def _samples(schema: Any, named: dict[str, Any]) -> list[Any]:
    """Values of `schema`: one per branch of each union (a small cover, not every combination)."""
    if isinstance(schema, str):
        if schema in PRIMITIVE_SAMPLES:
            return [PRIMITIVE_SAMPLES[schema]]
        return _samples(named[schema], named)
    if isinstance(schema, list):
        return [value for branch in schema for value in _samples(branch, named)]
    kind = schema["type"]
    if kind == "record":
        named[schema["name"]] = schema
        named[schema.get("namespace", "") + "." + schema["name"]] = schema
        fields = [(f["name"], _samples(f["type"], named)) for f in schema["fields"]]
        base = {name: values[0] for name, values in fields}
        records = [base]
        for name, values in fields:
            records += [{**base, name: value} for value in values[1:]]
        return records
    if kind == "enum":
        named[schema["name"]] = schema
        return [schema["symbols"][0]]
    if kind == "fixed":
        named[schema["name"]] = schema
        return [b"\0" * schema["size"]]
    if kind == "array":
        return [[v] for v in _samples(schema["items"], named)]
    if kind == "map":
        return [{"k": v} for v in _samples(schema["values"], named)]
    return _samples(kind, named)


def _avro(meter: MeterDefinition) -> dict[str, Any]:
    return {k: v for k, v in meter.avro_schema.items() if k != "meterstream"}


def check_pair(old: MeterDefinition, new: MeterDefinition) -> list[str]:
    """Problems that keep `new` from replacing `old`; empty when it is compatible."""
    where = f"{new.name} v{old.version} -> v{new.version}"
    problems: list[str] = []
    if old.billing_semantics() != new.billing_semantics():
        problems.append(
            f"{where}: aggregation, value_field, group_by and idempotency_key must not change "
            f"between versions ({old.billing_semantics()} -> {new.billing_semantics()}); "
            "create a new meter instead"
        )
    writer = fastavro.parse_schema(_avro(old))
    reader = fastavro.parse_schema(_avro(new))
    for record in _samples(_avro(old), {}):
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, writer, record)
        buffer.seek(0)
        try:
            fastavro.schemaless_reader(buffer, writer, reader)
        except SchemaResolutionError as exc:
            problems.append(f"{where}: v{new.version} cannot read v{old.version} data: {exc}")
            break
    return problems


def check_registry(registry: MeterRegistry) -> list[str]:
    """Every compatibility problem between consecutive versions of every meter."""
    problems: list[str] = []
    for name in registry.names():
        versions = [registry.meters[name][v] for v in sorted(registry.meters[name])]
        for old, new in pairwise(versions):
            problems += check_pair(old, new)
        newest = versions[-1]
        if newest.sunset is not None:
            problems.append(
                f"{name} v{newest.version}: the newest version cannot have a sunset; "
                "add a version to replace it"
            )
    return problems
