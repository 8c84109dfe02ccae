"""Reason codes: why an event was rejected. Stable: a code is never renamed or reused."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ReasonCode(StrEnum):
    """Why an event was not counted. Documented in docs/meters.md ("Reason codes")."""

    MALFORMED_JSON = "MALFORMED_JSON"
    INVALID_ENVELOPE = "INVALID_ENVELOPE"
    MISSING_FIELD = "MISSING_FIELD"
    WRONG_TYPE = "WRONG_TYPE"
    INVALID_VALUE = "INVALID_VALUE"
    INVALID_TIMESTAMP = "INVALID_TIMESTAMP"
    INVALID_ACCOUNT = "INVALID_ACCOUNT"
    UNKNOWN_METER = "UNKNOWN_METER"
    #: `dataschema` names a version the meter does not have.
    UNKNOWN_SCHEMA_VERSION = "UNKNOWN_SCHEMA_VERSION"
    #: The version is past its sunset (an error), or deprecated before it (a warning: counted).
    DEPRECATED_SCHEMA_VERSION = "DEPRECATED_SCHEMA_VERSION"
    #: `time` is more than 5 minutes after the event reached Kafka.
    TIMESTAMP_IN_FUTURE = "TIMESTAMP_IN_FUTURE"
    #: `time` is more than 35 days before the event reached Kafka (beyond the dedup window).
    TIMESTAMP_TOO_OLD = "TIMESTAMP_TOO_OLD"
    #: A repeat of an idempotency key whose payload differs from the first: counted once.
    DUPLICATE_ID_CONFLICT = "DUPLICATE_ID_CONFLICT"
    # Added by the ingest API (answered synchronously; such events never reach Kafka):
    #: `subject` is a valid account id, but not an account of the token's organisation.
    ACCOUNT_NOT_IN_ORGANISATION = "ACCOUNT_NOT_IN_ORGANISATION"
    #: The account has used up its daily event quota.
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    #: One event (an upload's line or array element) is larger than the API allows.
    EVENT_TOO_LARGE = "EVENT_TOO_LARGE"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A rejected event: the code, a human-readable detail naming the field, and the raw payload."""

    code: ReasonCode
    detail: str
    #: Known when the envelope could be read that far (for per-account and per-meter queries).
    account_id: str | None = None
    meter: str | None = None
    event_id: str | None = None
