"""Load meter definitions from `schemas/<meter>/v<N>.avsc`: Avro records with a `meterstream` block.

A schema file looks like::

    {"type": "record", "name": "LlmTokens", "namespace": "meterstream.meters",
     "fields": [{"name": "tokens", "type": "long"}, {"name": "model", "type": "string"}],
     "meterstream": {"meter": "llm_tokens", "version": 1,
                     "aggregation": "SUM", "value_field": "tokens"}}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro

from meterstream.errors import SchemaError
from meterstream.meters.model import IDENTIFIER, Aggregation, MeterDefinition

VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")
NUMERIC_TYPES = {"int", "long", "float", "double"}


@dataclass(frozen=True, slots=True)
class MeterRegistry:
    """Every meter version, keyed by name; the newest version of each is current."""

    meters: dict[str, dict[int, MeterDefinition]]

    def current(self, name: str) -> MeterDefinition | None:
        """The newest version of meter `name`, or None when there is no such meter."""
        versions = self.meters.get(name)
        return versions[max(versions)] if versions else None

    def names(self) -> list[str]:
        """The meters' names, sorted."""
        return sorted(self.meters)


def parse_meter(raw: dict[str, Any], source: str) -> MeterDefinition:
    """Check one schema document and build its definition; `source` names it in errors."""
    meta = raw.get("meterstream")
    if not isinstance(meta, dict):
        msg = f"{source}: missing the 'meterstream' block (meter, version, aggregation)"
        raise SchemaError(msg)
    try:
        fastavro.parse_schema({k: v for k, v in raw.items() if k != "meterstream"})
    except Exception as exc:
        msg = f"{source}: not a valid Avro schema: {exc}"
        raise SchemaError(msg) from exc
    if raw.get("type") != "record":
        msg = f"{source}: a meter's schema must be an Avro record"
        raise SchemaError(msg)
    name = meta.get("meter")
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
        msg = f"{source}: meter name {name!r} must match {IDENTIFIER.pattern}"
        raise SchemaError(msg)
    try:
        aggregation = Aggregation(meta.get("aggregation"))
    except ValueError as exc:
        msg = (
            f"{source}: aggregation {meta.get('aggregation')!r} is not one of "
            f"{[a.value for a in Aggregation]}"
        )
        raise SchemaError(msg) from exc
    value_field = meta.get("value_field")
    fields = {f["name"]: f for f in raw.get("fields", [])}
    if aggregation is not Aggregation.COUNT:
        if not isinstance(value_field, str) or value_field not in fields:
            msg = f"{source}: value_field {value_field!r} is not a field of the record"
            raise SchemaError(msg)
        vtype = fields[value_field]["type"]
        # Every event must carry the value: no null, no union, no default.
        if not isinstance(vtype, str) or vtype not in NUMERIC_TYPES:
            msg = (
                f"{source}: value_field {value_field!r} must be numeric, not {vtype} "
                "(int, long, float or double; no union)"
            )
            raise SchemaError(msg)
        if "default" in fields[value_field]:
            msg = f"{source}: value_field {value_field!r} must be required (no default)"
            raise SchemaError(msg)
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        msg = f"{source}: version must be a positive integer"
        raise SchemaError(msg)
    return MeterDefinition(
        name=name,
        version=version,
        aggregation=aggregation,
        value_field=value_field if aggregation is not Aggregation.COUNT else None,
        avro_schema=raw,
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
