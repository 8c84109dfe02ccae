"""Fixed instants, sample `data` and payload builders shared by the unit tests.

Every instant here is a constant, so the unit tests decide the same way on any day: they pass
`ARRIVED_AT` (or another fixed arrival) to `Validator.validate` instead of relying on the clock.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

from meterstream.meters.registry import MeterRegistry, parse_meter
from meterstream.rules.reasons import ReasonCode
from meterstream.testing import cloud_event

#: The last millisecond of October 2026 and the first instant of November 2026.
LAST_MS_OF_OCT = datetime(2026, 10, 31, 23, 59, 59, 999000, tzinfo=UTC)
NOV_START = datetime(2026, 11, 1, tzinfo=UTC)
OCTOBER = date(2026, 10, 1)
NOVEMBER = date(2026, 11, 1)
#: When the test events reach Kafka: well inside the 35-day window of both instants above.
ARRIVED_AT = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)

#: A valid `data` payload for each shipped meter (the current version).
GOOD_DATA: dict[str, dict[str, Any]] = {
    "active_users": {"user_id": "user-1"},
    "api_calls": {"endpoint": "/v1/search", "status": 200},
    "compute_peak_cores": {"cores": 8.5, "region": "eu"},
    "llm_tokens": {"tokens": 812, "model": "small"},
    "prepaid_balance": {"balance_cents": 1250},
    "request_latency_ms": {"latency_ms": 12.5},
    "seats": {"seats": 40},
    "storage_gb_hours": {"gb_hours": 1.5, "bucket": "logs"},
}


def event(
    meter: str,
    data: dict[str, Any] | None = None,
    *,
    event_id: str = "evt-1",
    account: str = "acct-42",
    moment: datetime = LAST_MS_OF_OCT,
    **envelope: Any,
) -> dict[str, Any]:
    """A CloudEvent for `meter` (its good data unless `data` is given), with `envelope` set."""
    doc = cloud_event(event_id, account, meter, moment, GOOD_DATA[meter] if data is None else data)
    doc.update(envelope)
    return doc


def raw(
    meter: str,
    data: dict[str, Any] | None = None,
    *,
    event_id: str = "evt-1",
    account: str = "acct-42",
    moment: datetime = LAST_MS_OF_OCT,
    **envelope: Any,
) -> str:
    """`event(...)` as the JSON text a client sends."""
    return json.dumps(
        event(meter, data, event_id=event_id, account=account, moment=moment, **envelope)
    )


def custom_schema(fields: list[dict[str, Any]] | None = None, **meta: Any) -> dict[str, Any]:
    """An Avro schema for meter `custom` v1: a SUM of the long `q` unless `meta` says otherwise."""
    block = {"meter": "custom", "version": 1, "aggregation": "SUM", "value_field": "q", **meta}
    return {
        "type": "record",
        "name": "Custom",
        "fields": fields if fields is not None else [{"name": "q", "type": "long"}],
        "meterstream": block,
    }


def registry_of(*schemas: dict[str, Any]) -> MeterRegistry:
    """A registry of the given schema documents (each parsed as the registry would)."""
    meters: dict[str, dict[int, Any]] = {}
    for doc in schemas:
        meter = parse_meter(doc, f"{doc['meterstream']['meter']}/v{doc['meterstream']['version']}")
        meters.setdefault(meter.name, {})[meter.version] = meter
    return MeterRegistry(meters)


#: Codes the HTTP API answers with; the Validator never produces them.
API_CODES = frozenset(
    {
        ReasonCode.ACCOUNT_NOT_IN_ORGANISATION,
        ReasonCode.QUOTA_EXCEEDED,
        ReasonCode.EVENT_TOO_LARGE,
    }
)
#: Codes `Validator.validate` can give one event (DUPLICATE_ID_CONFLICT needs a stream).
VALIDATOR_CODES = frozenset(ReasonCode) - API_CODES - {ReasonCode.DUPLICATE_ID_CONFLICT}
