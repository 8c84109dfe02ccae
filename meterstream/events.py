"""The event envelope: CloudEvents 1.0 structured JSON, parsed and checked without Flink.

    {"specversion": "1.0", "id": "evt-1", "source": "api-gateway", "type": "llm_tokens",
     "subject": "acct-42", "time": "2026-10-31T23:59:59.250Z", "data": {"tokens": 812, ...}}

`id` is the idempotency key, `subject` the account, `type` the meter, `time` the event time;
the optional `dataschema` names the meter's schema version (e.g. `schemas/llm_tokens/v2`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from meterstream.rules.reasons import ReasonCode, Rejection

REQUIRED = ("id", "source", "type", "subject", "time", "data")
ACCOUNT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
MAX_ID_LENGTH = 256
#: `dataschema` names a version by its last path segment: `.../llm_tokens/v2` or `...:v2.avsc`.
DATASCHEMA = re.compile(r"(?:^|[/:])v([1-9][0-9]{0,5})(?:\.avsc)?\Z")
#: RFC 3339 date-time: full date, `T`, full time with seconds, optional fraction, Z or ±hh:mm.
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


@dataclass(frozen=True, slots=True)
class Envelope:
    """A structurally valid CloudEvent: the fields billing needs, typed."""

    event_id: str
    account_id: str
    meter: str
    source: str
    event_time: datetime
    data: dict[str, Any]
    #: The schema version the event names in `dataschema`, or None for the current one.
    schema_version: int | None = None


def parse_time(value: str) -> datetime | None:
    """Parse an RFC 3339 timestamp with an offset into UTC; None if invalid or naive.

    >>> parse_time("2026-10-31T23:59:59.250Z")
    datetime.datetime(2026, 10, 31, 23, 59, 59, 250000, tzinfo=datetime.timezone.utc)
    >>> parse_time("2026-10-31 23:59:59") is None
    True
    """
    if not RFC3339.fullmatch(value):
        return None
    try:
        return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def parse_envelope(raw: str | bytes) -> Envelope | Rejection:
    """Parse one raw Kafka payload into an `Envelope`, or say why it is rejected."""
    try:
        # orjson: ~3x faster than json, strict RFC 8259 (no NaN/Infinity literals, valid UTF-8).
        doc = orjson.loads(raw)
    except (orjson.JSONDecodeError, RecursionError) as exc:
        return Rejection(ReasonCode.MALFORMED_JSON, f"not JSON: {exc}")
    if not isinstance(doc, dict):
        return Rejection(ReasonCode.INVALID_ENVELOPE, "a CloudEvent must be a JSON object")
    missing = [name for name in REQUIRED if doc.get(name) is None]
    if missing:
        return Rejection(
            ReasonCode.MISSING_FIELD, f"missing CloudEvents field(s): {', '.join(missing)}"
        )
    for name in ("id", "source", "type", "subject", "time"):
        if not isinstance(doc[name], str) or not doc[name]:
            return Rejection(ReasonCode.INVALID_ENVELOPE, f"{name} must be a non-empty string")
    if len(doc["id"]) > MAX_ID_LENGTH:
        return Rejection(
            ReasonCode.INVALID_ENVELOPE, f"id is longer than {MAX_ID_LENGTH} characters"
        )
    if not isinstance(doc["data"], dict):
        return Rejection(ReasonCode.INVALID_ENVELOPE, "data must be a JSON object")
    schema_version: int | None = None
    if doc.get("dataschema") is not None:
        match = DATASCHEMA.search(doc["dataschema"]) if isinstance(doc["dataschema"], str) else None
        if match is None:
            return Rejection(
                ReasonCode.INVALID_ENVELOPE,
                f"dataschema {str(doc['dataschema'])[:64]!r} must end in /v<N> (a schema version)",
            )
        schema_version = int(match.group(1))
    if not ACCOUNT_ID.fullmatch(doc["subject"]):
        return Rejection(
            ReasonCode.INVALID_ACCOUNT,
            f"subject (account id) {doc['subject'][:64]!r} must fully match {ACCOUNT_ID.pattern}",
        )
    event_time = parse_time(doc["time"])
    if event_time is None:
        return Rejection(
            ReasonCode.INVALID_TIMESTAMP,
            f"time {doc['time'][:64]!r} is not an RFC 3339 timestamp with offset",
        )
    return Envelope(
        doc["id"],
        doc["subject"],
        doc["type"],
        doc["source"],
        event_time,
        doc["data"],
        schema_version,
    )
