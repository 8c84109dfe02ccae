"""Reason codes: why an event was rejected. Stable: a code is never renamed or reused."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ReasonCode(StrEnum):
    """Why an event was not counted. Documented in README ("Reason codes")."""

    MALFORMED_JSON = "MALFORMED_JSON"
    INVALID_ENVELOPE = "INVALID_ENVELOPE"
    MISSING_FIELD = "MISSING_FIELD"
    WRONG_TYPE = "WRONG_TYPE"
    INVALID_VALUE = "INVALID_VALUE"
    INVALID_TIMESTAMP = "INVALID_TIMESTAMP"
    INVALID_ACCOUNT = "INVALID_ACCOUNT"
    UNKNOWN_METER = "UNKNOWN_METER"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A rejected event: the code, a human-readable detail naming the field, and the raw payload."""

    code: ReasonCode
    detail: str
