"""Load meter definitions from `schemas/<meter>/v<N>.avsc`: Avro records with a `meterstream` block.

A schema file looks like::

    {"type": "record", "name": "LlmTokens", "namespace": "meterstream.meters.llm_tokens",
     "fields": [{"name": "tokens", "type": "long"}, {"name": "model", "type": "string"}],
     "meterstream": {"meter": "llm_tokens", "version": 1, "aggregation": "SUM",
                     "value_field": "tokens", "group_by": ["model"],
                     "idempotency_key": "EVENT_ID", "sunset": "2027-01-31T00:00:00Z"}}

Only `meter`, `version` and `aggregation` are required in the block.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import fastavro

from meterstream.errors import SchemaError
from meterstream.events import parse_time
from meterstream.meters.model import (
    IDENTIFIER,
    NUMERIC_AGGREGATIONS,
    Aggregation,
    IdempotencyKey,
    MeterDefinition,
)

VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")
NUMERIC_TYPES = {"int", "long", "float", "double"}
#: Types a segment (group-by) or a UNIQUE_COUNT field may have.
KEY_TYPES = {"string", "int", "long", "boolean"}
BLOCK_KEYS = {
    "meter",
    "version",
    "aggregation",
    "value_field",
    "group_by",
    "idempotency_key",
    "sunset",
}


@dataclass(frozen=True, slots=True)
class MeterRegistry:
    """Every meter version, keyed by name; the newest version of each is current."""

    meters: dict[str, dict[int, MeterDefinition]]

    def current(self, name: str) -> MeterDefinition | None:
        """The newest version of meter `name`, or None when there is no such meter."""
        versions = self.meters.get(name)
        return versions[max(versions)] if versions else None

    def version(self, name: str, version: int) -> MeterDefinition | None:
        """One version of a meter, or None."""
        return self.meters.get(name, {}).get(version)

    def names(self) -> list[str]:
        """The meters' names, sorted."""
        return sorted(self.meters)

    def all(self) -> list[MeterDefinition]:
        """Every version of every meter, by name then version."""
        return [self.meters[n][v] for n in self.names() for v in sorted(self.meters[n])]

    def to_json(self) -> str:
        """Every version's schema document, as JSON: what `from_json` loads again."""
        return json.dumps([meter.avro_schema for meter in self.all()])

    @classmethod
    def from_json(cls, text: str) -> MeterRegistry:
        """The registry of `to_json`'s documents (checked again, as files are)."""
        meters: dict[str, dict[int, MeterDefinition]] = {}
        for index, raw in enumerate(json.loads(text)):
            meter = parse_meter(raw, f"meter document {index}")
            meters.setdefault(meter.name, {})[meter.version] = meter
        return cls(meters)


def _fail(source: str, problem: str) -> SchemaError:
    return SchemaError(f"{source}: {problem}")


def _required_field(
    fields: dict[str, Any], name: object, allowed: set[str], role: str, source: str
) -> str:
    """Check that `name` is a required field of one of the `allowed` primitive types."""
    if not isinstance(name, str) or name not in fields:
        raise _fail(source, f"{role} {name!r} is not a field of the record")
    ftype = fields[name]["type"]
    # Every event must carry the field: no null, no union, no default.
    if not isinstance(ftype, str) or ftype not in allowed:
        raise _fail(
            source, f"{role} {name!r} must be one of {sorted(allowed)}, not {ftype} (no union)"
        )
    if "default" in fields[name]:
        raise _fail(source, f"{role} {name!r} must be required (no default)")
    return name


def _value_field(
    aggregation: Aggregation, fields: dict[str, Any], meta: dict[str, Any], source: str
) -> str | None:
    if aggregation in NUMERIC_AGGREGATIONS:
        return _required_field(
            fields, meta.get("value_field"), NUMERIC_TYPES, "value_field", source
        )
    if aggregation is Aggregation.UNIQUE_COUNT:
        return _required_field(fields, meta.get("value_field"), KEY_TYPES, "value_field", source)
    if meta.get("value_field") is not None:
        raise _fail(source, "a COUNT meter has no value_field")
    return None


def _sunset(value: object, source: str) -> datetime | None:
    if value is None:
        return None
    parsed = parse_time(value) if isinstance(value, str) else None
    if parsed is None:
        raise _fail(
            source, f"sunset {value!r} must be an RFC 3339 timestamp, e.g. 2027-01-31T00:00:00Z"
        )
    return parsed


def parse_meter(raw: dict[str, Any], source: str) -> MeterDefinition:
    """Check one schema document and build its definition; `source` names it in errors."""
    meta = raw.get("meterstream")
    if not isinstance(meta, dict):
        raise _fail(source, "missing the 'meterstream' block (meter, version, aggregation)")
    unknown = set(meta) - BLOCK_KEYS
    if unknown:
        raise _fail(source, f"unknown keys in the meterstream block: {sorted(unknown)}")
    try:
        fastavro.parse_schema({k: v for k, v in raw.items() if k != "meterstream"})
    except Exception as exc:
        msg = f"{source}: not a valid Avro schema: {exc}"
        raise SchemaError(msg) from exc
    if raw.get("type") != "record":
        raise _fail(source, "a meter's schema must be an Avro record")
    name = meta.get("meter")
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
        raise _fail(source, f"meter name {name!r} must match {IDENTIFIER.pattern}")
    try:
        aggregation = Aggregation(meta.get("aggregation"))
    except ValueError as exc:
        msg = (
            f"{source}: aggregation {meta.get('aggregation')!r} is not one of "
            f"{[a.value for a in Aggregation]}"
        )
        raise SchemaError(msg) from exc
    try:
        idempotency = IdempotencyKey(meta.get("idempotency_key", IdempotencyKey.EVENT_ID))
    except ValueError as exc:
        msg = (
            f"{source}: idempotency_key {meta.get('idempotency_key')!r} is not one of "
            f"{[k.value for k in IdempotencyKey]}"
        )
        raise SchemaError(msg) from exc
    fields = {f["name"]: f for f in raw.get("fields", [])}
    value_field = _value_field(aggregation, fields, meta, source)
    group_by = meta.get("group_by", [])
    if not isinstance(group_by, list) or len(set(map(str, group_by))) != len(group_by):
        raise _fail(source, "group_by must be a list of distinct field names")
    for dimension in group_by:
        _required_field(fields, dimension, KEY_TYPES, "group_by field", source)
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _fail(source, "version must be a positive integer")
    return MeterDefinition(
        name=name,
        version=version,
        aggregation=aggregation,
        value_field=value_field,
        avro_schema=raw,
        group_by=tuple(group_by),
        idempotency_key=idempotency,
        sunset=_sunset(meta.get("sunset"), source),
        description=str(raw.get("doc", "")),
    )


def load_registry(schemas_dir: Path) -> MeterRegistry:
    """Load every `schemas/<meter>/v<N>.avsc`; raise `SchemaError` on the first bad file."""
    meters: dict[str, dict[int, MeterDefinition]] = {}
    if not schemas_dir.is_dir():
        msg = f"no schemas directory at {schemas_dir}"
        raise SchemaError(msg)
    for path in sorted(schemas_dir.glob("*/v*.avsc")):
        match = VERSION_FILE.match(path.name)
        if match is None:
            continue
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            msg = f"{path}: not JSON: {exc}"
            raise SchemaError(msg) from exc
        meter = parse_meter(raw, str(path))
        if meter.name != path.parent.name or meter.version != int(match.group(1)):
            msg = f"{path}: declares {meter.name} v{meter.version}; the path must agree"
            raise SchemaError(msg)
        meters.setdefault(meter.name, {})[meter.version] = meter
    if not meters:
        msg = f"no meter schemas (*/v<N>.avsc) under {schemas_dir}"
        raise SchemaError(msg)
    return MeterRegistry(meters)
